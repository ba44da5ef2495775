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


# The scripts users type, each with arguments that only print its usage: (script, argv, exit code).
# They find the project's packages without editing sys.path, through ``pip install -e .``; the
# top-level ones, scripts/sweep.py (python -m sweep.cli) and those that import the packages only
# once they run also from the repository root without it.
SCRIPT_HELP = [
    ("train.py", ["--help"], 0),
    ("parse_test_res.py", ["--help"], 0),
    ("scripts/sweep.py", ["--help"], 0),
    ("scripts/base2new_table.py", ["--help"], 0),
    ("scripts/trained_epoch.py", [], 2),
    ("bench/bench_mmlop.py", ["--help"], 0),
    ("bench/bench_pipeline.py", ["--help"], 0),
    ("bench/bench_threads.py", ["--help"], 0),
]
# Scripts in a subfolder that import the packages at once: need the install even from the root.
NEED_INSTALL = {"scripts/base2new_table.py"}
# Scripts in a subfolder that load torch before they parse (seconds each): run together, once, from
# another directory (their imports are what the test is about).
HEAVY_SCRIPT_HELP = [
    ("scripts/read_cfg.py", [], 2),
    ("tools/make_split.py", ["--help"], 0),
    ("tools/import_upstream_checkpoint.py", ["--help"], 0),
    ("bench/factor_scales.py", ["--help"], 0),
    ("bench/gpu_check.py", ["--help"], 0),
]


def _installed_here() -> bool:
    """Whether ``pip install -e .`` of this checkout makes its packages importable elsewhere."""
    probe = "import importlib.util as u; s = u.find_spec('sweep'); print(s.origin if s else '')"
    r = subprocess.run([sys.executable, "-c", probe], cwd="/", capture_output=True, text=True, timeout=60)
    return r.stdout.strip().startswith(str(REPO / "sweep") + "/")


def _start(script: str, argv: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / script), *argv], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _check_usage(script: str, code: int, process: subprocess.Popen) -> None:
    out, err = process.communicate(timeout=300)
    assert process.returncode == code, f"{script}: {err[-2000:]}"
    assert "usage:" in (out + err).lower().split("\n", 1)[0], (out + err)[:300]


def _answers_usage(script: str, argv: list[str], code: int, cwd: Path) -> None:
    _check_usage(script, code, _start(script, argv, cwd))


@pytest.mark.parametrize("script,argv,code", SCRIPT_HELP, ids=[s for s, _, _ in SCRIPT_HELP])
def test_script_prints_its_usage_from_the_repository_root(script, argv, code):
    if script in NEED_INSTALL and not _installed_here():
        pytest.skip(f"the packages of {REPO} are not installed: pip install -e . there")
    _answers_usage(script, argv, code, REPO)


@pytest.mark.slow
def test_scripts_print_their_usage_from_another_directory(tmp_path):
    if not _installed_here():
        pytest.skip(f"the packages of {REPO} are not importable from another directory: pip install -e . there")
    started = [(script, code, _start(script, argv, tmp_path)) for script, argv, code in SCRIPT_HELP + HEAVY_SCRIPT_HELP]
    for script, code, process in started:
        _check_usage(script, code, process)


def test_no_project_file_edits_sys_path():
    """The packages are found by the import system (cwd or the editable install), never by a
    script that puts its repository on sys.path."""
    packages = ("clip", "dassl", "datasets", "trainers", "proxy", "sweep", "mmlop", "tools", "scripts", "bench")
    files = sorted(REPO.glob("*.py")) + sorted(p for name in packages for p in (REPO / name).rglob("*.py"))
    assert len(files) > 50
    offenders = [str(p.relative_to(REPO)) for p in files
                 if "sys.path.insert" in p.read_text() or "sys.path.append" in p.read_text()]
    assert offenders == []


@pytest.mark.parametrize("command", [["train.py", "--help"], ["parse_test_res.py", "--help"],
                                     ["-m", "mmlop", "train", "--help"], ["-m", "mmlop", "tables", "--help"],
                                     ["-m", "mmlop", "sweep", "--help"]])
def test_help_answers_before_loading_torch(command):
    """Parse first, import torch after: ``--help`` (and a mistyped flag) costs no torch import."""
    r = subprocess.run([sys.executable, "-X", "importtime", *command], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("usage: "), r.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "argparse" in imported          # the probe sees the imports
    assert not imported & {"torch", "torchvision", "numpy"}, sorted(imported & {"torch", "torchvision", "numpy"})
