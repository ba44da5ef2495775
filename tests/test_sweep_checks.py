"""A sweep refuses what every one of its jobs would refuse, and bad sweep input, before any job
starts: one message (first line pinned, exit code 2, no traceback) and nothing written."""
from __future__ import annotations

import json
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


def test_the_dry_run_warns_of_a_missing_data_folder(tmp_path, capsys):
    assert cli.main(sweep_argv(tmp_path, "--dry-run")) == 0
    out, err = capsys.readouterr()
    assert err.startswith(f"warning: the data folder {tmp_path / 'data'} does not exist here")
    assert "Give --data" in err and "[1/2]" in out            # the plan is still shown
    (tmp_path / "data").mkdir()
    assert cli.main(sweep_argv(tmp_path, "--dry-run")) == 0
    assert "warning" not in capsys.readouterr().err


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


HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(os.path.join(sys.argv[1], ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.ftruncate(fd, 0)
os.write(fd, b"PID 4242 on node-b\\n")
print("held", flush=True)
time.sleep(600)
"""


def test_job_locked_by_another_sweep_is_reported_as_in_use_not_failed(tmp_path, capsys):
    """Another sweep over the same output root runs the job from another machine (its lock file
    names PID 4242 on node-b, which cannot be checked from here, so this sweep starts the job):
    train.py stops at the lock and the sweep says whose run it is, not "exit code 1"."""
    out = tmp_path / "out"
    job_id = "ZeroshotCLIP/vit_b16/dtd"
    job_dir = out / job_id
    job_dir.mkdir(parents=True)
    other_runs = out / ".sweep" / "other_sweep" / "runs"
    other_runs.mkdir(parents=True)
    (other_runs / f"{job_id.replace('/', '__')}.json").write_text(json.dumps(
        {"id": job_id, "attempts": [{"status": "running", "host": "node-b", "pid": 4241, "child_pid": 4242}]}))
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(job_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        rc = cli.main(["--protocol", "zeroshot", "--datasets", "dtd", "--data", str(tmp_path / "data"),
                       "--output", str(out), "--workers", "1", "--no-tables"])
    finally:
        holder.kill()
        holder.wait()
    text = capsys.readouterr().out
    assert rc == 1
    busy = "in use by another sweep other_sweep (PID 4242, node-b)"
    assert f"  BUSY {job_id}: {busy}; rerun this sweep once that one has finished" in text
    assert "In use by another sweep (1; not run here); rerun" in text and f"  {job_id}: {busy}" in text
    assert "FAILED" not in text and "exit code 1" not in text.split("In use by another sweep")[1]
    assert sorted(os.listdir(job_dir)) == [".lock"]
    # --status says the same afterwards.
    assert cli.main(["--status", "--protocol", "zeroshot", "--datasets", "dtd", "--output", str(out)]) == 1
    assert f"  {job_id}: {busy}" in capsys.readouterr().out
