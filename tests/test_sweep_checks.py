"""A sweep refuses what every one of its jobs would refuse, and bad sweep input, before any job
starts: one message (first line pinned, exit code 2, no traceback) and nothing written."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sweep import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B2N_TRAIN = "base2new/train_base/dtd/shots_16/MMLoP/vit_b16_c2_ep30_batch4_4+4ctx/seed1"


def sweep_argv(tmp_path, *extra: str, output=None) -> list[str]:
    return ["--protocol", "base2new", "--trainers", "MMLoP", "--datasets", "dtd", "--seeds", "1",
            "--data", str(tmp_path / "data"), "--output", str(output or tmp_path / "out"), "--workers", "1", *extra]


@pytest.mark.parametrize("opts,first_line", [
    (("OPTIM.LR", "-1"), f"error: job {B2N_TRAIN}: OPTIM.LR = -1.0 is not allowed: it must be > 0 (and 1 more job)"),
    (("OPTIM.MAX_EPOCH", "0"), f"error: job {B2N_TRAIN}: OPTIM.MAX_EPOCH = 0 is not allowed: it must be >= 1 "
                               "(and 1 more job)"),
    (("TRAINER.MMLOP.RANK", "0"), f"error: job {B2N_TRAIN}: TRAINER.MMLOP.RANK = 0 is not allowed"),
])
def test_a_value_train_py_refuses_refuses_the_sweep_before_any_job(tmp_path, capsys, opts, first_line):
    assert cli.main(sweep_argv(tmp_path, "--", *opts)) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0].startswith(first_line)
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_the_dry_run_refuses_it_too(tmp_path, capsys):
    assert cli.main(sweep_argv(tmp_path, "--dry-run", "--", "OPTIM.LR", "-1")) == 2
    assert capsys.readouterr().err.startswith(f"error: job {B2N_TRAIN}: OPTIM.LR = -1.0 is not allowed")


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("protocol: base2new\ntrainers: [MMLoP\nseeds: [1]\n")
    before = sorted(os.listdir(tmp_path))
    proc = subprocess.run([sys.executable, "scripts/sweep.py", str(path), "--output", str(tmp_path / "out")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == (
        f"error: {path}, line 3, column 6: not valid YAML (while parsing a flow sequence expected ',' or "
        "']', but got ':'); fix the file and rerun")
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert sorted(os.listdir(tmp_path)) == before


def run_sweep_read_only(ro_dir, argv: list[str]) -> subprocess.CompletedProcess:
    """``scripts/sweep.py argv`` with ``ro_dir`` really read-only: a read-only bind mount in a
    private mount namespace as root (who may write anywhere else), file permissions otherwise."""
    command = [sys.executable, "scripts/sweep.py", *argv]
    if os.geteuid() != 0:
        os.chmod(ro_dir, 0o555)
        try:
            return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
        finally:
            os.chmod(ro_dir, 0o755)
    script = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"'
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(ro_dir), *command], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    if proc.stderr.startswith(("unshare:", "mount:")):
        pytest.skip(f"cannot make a read-only mount here: {proc.stderr.strip()}")
    return proc


def test_read_only_output_is_one_message_and_nothing_written(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    proc = run_sweep_read_only(ro, sweep_argv(tmp_path, output=ro / "out"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines()[0].startswith(f"error: the sweep cannot write its output {ro / 'out'}: {ro} is ")
    assert "Traceback" not in proc.stderr
    assert os.listdir(ro) == []
