"""``scripts/sweep.py --backend slurm`` on a real single-node Slurm WITH accounting
(tests/slurm_cluster.py, ``accounting=True``: MariaDB and slurmdbd beside munged, slurmctld and
slurmd), where ``squeue`` forgets a job 2 s after it ends, so that the sweep has to take the state
of its finished and cancelled jobs from ``sacct``. Runs the stand-in ``train.py`` of
tests/test_slurm_cluster.py.
"""
from __future__ import annotations

import os
import shutil

import pytest

from sweep.backends import SlurmBackend
from tests.slurm_cluster import ACCOUNTING_SKIP_REASON, SKIP_REASON, missing_binaries, start_cluster
from tests.test_slurm_cluster import TRAIN1, calls, make_slurm_env, record_of, run_cli, state_of, sweep_argv, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = missing_binaries()
    if missing:
        pytest.skip(f"{SKIP_REASON} (missing: {', '.join(missing)})")
    missing = missing_binaries(accounting=True)
    if missing:
        pytest.skip(f"{ACCOUNTING_SKIP_REASON} (missing: {', '.join(missing)})")
    if os.geteuid() != 0:
        pytest.skip("the real-Slurm tests start slurmd, which runs jobs as root: run them as root (as CI does)")
    root = tmp_path_factory.mktemp("slurm_acct")
    c = start_cluster(str(root), accounting=True)
    try:
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)            # the database alone is ~200 MB


@pytest.fixture
def slurm_env(cluster, tmp_path, monkeypatch):
    return make_slurm_env(cluster, tmp_path, monkeypatch)


def forgotten(cluster, ids) -> bool:
    """squeue no longer knows any of ``ids`` (not even as a finished job)."""
    r = cluster.run("squeue", "-h", "-t", "all", "-o", "%i", check=False)
    return not set(ids) & set(r.stdout.split())


def test_jobs_squeue_forgot_are_judged_from_sacct_and_a_rerun_submits_only_what_is_missing(slurm_env, tmp_path,
                                                                                          monkeypatch):
    """A cancelled training and a finished one that squeue has forgotten: sacct says CANCELLED and
    COMPLETED (no "sacct is unavailable" note), --status reports the cancelled one with its reason
    and exits 1, and the rerun submits only the cancelled training and its test, then completes."""
    cluster = slurm_env["cluster"]
    out = str(tmp_path / "out")
    monkeypatch.setenv("FAKE_EPOCHS", "8")
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "0.5")
    argv = sweep_argv(slurm_env, out, "--no-follow", "--max-running", "1")
    code, text = run_cli(argv)
    assert code == 0 and "submitted 4 jobs to Slurm" in text, text
    first = dict(state_of(out)["submissions"])
    train2 = TRAIN1.replace("seed1", "seed2")
    bid1, bid2 = first[TRAIN1], first[train2]
    wait_for(lambda: calls(slurm_env["log"]), 60, "the first training to start")
    assert calls(slurm_env["log"])[0]["out"].endswith(TRAIN1)
    cluster.run("scancel", bid1)
    wait_for(lambda: os.path.isfile(os.path.join(out, train2, "results.json")), 120, "the second training to end")
    wait_for(lambda: forgotten(cluster, [bid1, bid2]), 120, "squeue to forget both trainings")

    backend = SlurmBackend(str(tmp_path / "probe"))
    assert backend.states([bid1, bid2]) == {bid1: "CANCELLED", bid2: "COMPLETED"}
    assert backend.accounting is True and backend.notes == []

    code, text = run_cli(["--status", "--output", out, "--name", "b2n"])
    assert code == 1, text
    assert f"{TRAIN1}: cancelled (Slurm CANCELLED, job {bid1})" in text, text
    assert "sacct" not in text
    last = record_of(out, TRAIN1)["attempts"][-1]
    assert last["status"] == "failed" and last["error"].startswith("cancelled (Slurm CANCELLED")
    assert last["slurm_state"] == "CANCELLED"

    # The rerun (following): only the cancelled training and its test are submitted again.
    monkeypatch.setenv("FAKE_EPOCHS", "2")
    code, text = run_cli([a for a in argv if a != "--no-follow"])
    assert code == 0, text
    assert "submitted 2 jobs to Slurm" in text and "sacct" not in text and "FAILED" not in text, text
    assert "4/4 done" in text and "Complete: every job has its results.json." in text, text
    again = state_of(out)["submissions"]
    assert again[train2] == bid2 and again[TRAIN1.replace("train_base", "test_new")] != first[
        TRAIN1.replace("train_base", "test_new")]
    assert again[TRAIN1] != bid1
    assert [a["status"] for a in record_of(out, TRAIN1)["attempts"]] == ["failed", "done"]
    assert [r["out"].endswith(train2) for r in calls(slurm_env["log"])].count(True) == 1   # not run again
    cluster.wait_empty(timeout=60)


def test_sacct_is_asked_again_after_slurmdbd_comes_back(slurm_env, tmp_path):
    """slurmdbd stopped: sacct fails, said once, the state unknown, and not asked again at every
    poll; slurmdbd back: after ``sacct_retry_s`` sacct answers again for the same backend (a driver
    following for days outlives a slurmdbd restart)."""
    cluster = slurm_env["cluster"]
    bid = cluster.run("sbatch", "--parsable", "--wrap", "true", "-o", "/dev/null").stdout.strip()
    wait_for(lambda: forgotten(cluster, [bid]) and "COMPLETED" in cluster.run(
        "sacct", "-n", "-P", "-X", "-o", "State", "-j", bid).stdout, 120, "the job to be only in sacct")
    backend = SlurmBackend(str(tmp_path / "probe"))
    cluster.stop_daemon("slurmdbd")
    back = False
    try:
        for _ in range(2):
            assert backend.states([bid]) == {bid: "UNKNOWN"}
        assert backend.accounting is False and len(backend.notes) == 1
        assert backend.notes[0].startswith("sacct is unavailable (")
        cluster.start_slurmdbd()
        back = True
        assert backend.states([bid]) == {bid: "UNKNOWN"}           # within sacct_retry_s: not asked
        backend.sacct_retry_s = 0
        wait_for(lambda: backend.states([bid]) == {bid: "COMPLETED"}, 60, "sacct to answer again")
        assert backend.accounting is True and len(backend.notes) == 1
    finally:
        if not back:
            cluster.start_slurmdbd()
