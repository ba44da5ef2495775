"""``python -m mmlop <command>``: one entry for every command, an instant top-level ``--help``, each
command's own options behind it."""
import subprocess
import sys
from pathlib import Path

import pytest

import mmlop

REPO = Path(__file__).resolve().parents[1]


def test_top_level_help_lists_every_command_without_loading_torch():
    probe = ("import sys, mmlop; code = mmlop.main(['--help']); "
             "print('TORCH' if 'torch' in sys.modules else 'NO TORCH', code)")
    r = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "NO TORCH 0"
    for name, command in mmlop.COMMANDS.items():
        assert f"  {name}" in r.stdout and command.summary in r.stdout


def test_module_entry_runs_a_command_and_refuses_an_unknown_one():
    r = subprocess.run([sys.executable, "-m", "mmlop", "trainers"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("trainer ") and "MMLoP" in r.stdout
    # The trainers table fits a 100-column terminal.
    assert max(map(len, r.stdout.splitlines())) <= 100
    bad = subprocess.run([sys.executable, "-m", "mmlop", "trian"], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown command 'trian'")


@pytest.mark.parametrize("name", sorted(mmlop.COMMANDS))
def test_every_command_answers_its_help(name, capsys):
    try:
        code = mmlop.run(name, ["--help"])
    except SystemExit as exc:          # argparse's --help
        code = exc.code
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("usage: "), out[:200]
