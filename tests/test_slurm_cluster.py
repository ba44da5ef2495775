"""``scripts/sweep.py --backend slurm`` against a real single-node Slurm (tests/slurm_cluster.py:
munged, slurmctld and slurmd on localhost, no accounting, no GPUs), as a cluster user runs it.

Most tests run a stand-in ``train.py`` (a PYTHON wrapper: it sleeps, can be cancelled, resumes
from the "epochs" it saved, fails where ``FAKE_FAIL`` says, and writes the ``results.json`` the
sweep expects), so that what is
tested is the sweep on Slurm (submission, names, dependencies, throttle, reruns, cancellations,
time-outs, reports) in seconds; one test runs the real ``train.py`` on the tiny synthetic setup.
Each test asserts on what a user sees: exit codes, first words, ``squeue``, the run records.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time

import pytest

from sweep import cli
from tests.slurm_cluster import SKIP_REASON, missing_binaries, start_cluster

pytestmark = pytest.mark.slow

FAKE_TRAIN = """\
#!{python}
# PYTHON for the sweep: "train.py ARGS" is faked (see the module docstring), anything else is python.
import json, os, sys, time
if len(sys.argv) < 2 or sys.argv[1] != "train.py":
    os.execv({python!r}, [{python!r}, *sys.argv[1:]])
args = sys.argv[2:]
def opt(key, default=None):
    return args[args.index(key) + 1] if key in args else default
out = opt("--output-dir")
log = os.environ["FAKE_TRAIN_LOG"]
epochs, per_epoch = int(os.environ.get("FAKE_EPOCHS", "1")), float(os.environ.get("FAKE_EPOCH_SECONDS", "1"))
if "--eval-only" in args:                                   # a test: one short "epoch"
    epochs = 1
os.makedirs(out, exist_ok=True)
progress = os.path.join(out, "epoch.txt")
first = int(open(progress).read()) if os.path.isfile(progress) else 0
if first and os.environ.get("FAKE_RESUMED_EPOCHS"):        # a resumed run: only a few epochs left
    epochs = first + int(os.environ["FAKE_RESUMED_EPOCHS"])
with open(log, "a") as f:
    f.write(f"{{time.time()}} {{os.getpid()}} start {{out}} from {{first}} "
            f"{{os.environ.get('CUDA_VISIBLE_DEVICES') or '-'}} {{os.environ.get('MMLOP_CPUS') or '-'}}\\n")
if os.environ.get("FAKE_FAIL") and os.environ["FAKE_FAIL"] in out:   # a failing run: exit 3, no results
    sys.exit(3)
for epoch in range(first + 1, epochs + 1):
    time.sleep(per_epoch)
    with open(progress, "w") as f:
        f.write(str(epoch))
record = {{"trainer": opt("--trainer"), "seed": int(opt("--seed")), "accuracy": 50.0,
          "subsample_classes": opt("DATASET.SUBSAMPLE_CLASSES"), "num_shots": int(opt("DATASET.NUM_SHOTS"))}}
if "--load-epoch" in args:
    record["epoch"] = int(opt("--load-epoch"))
with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(record, f)
with open(log, "a") as f:
    f.write(f"{{time.time()}} {{os.getpid()}} end {{out}}\\n")
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = missing_binaries()
    if missing:
        pytest.skip(f"{SKIP_REASON} (missing: {', '.join(missing)})")
    if os.geteuid() != 0:
        pytest.skip("the real-Slurm tests start slurmd, which runs jobs as root: run them as root (as CI does)")
    c = start_cluster(str(tmp_path_factory.mktemp("slurm")))
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def slurm_env(cluster, tmp_path, monkeypatch):
    return make_slurm_env(cluster, tmp_path, monkeypatch)


def make_slurm_env(cluster, tmp_path, monkeypatch) -> dict:
    """Slurm clients in PATH and SLURM_CONF set (sbatch passes the environment to the jobs), the
    fake train.py as PYTHON, and a sweep file that polls every second."""
    for key in ("SLURM_CONF", "PATH"):
        monkeypatch.setenv(key, cluster.env[key])
    fake = tmp_path / "fake_python"
    fake.write_text(FAKE_TRAIN.format(python=sys.executable))
    fake.chmod(0o755)
    log = tmp_path / "train_calls.log"
    monkeypatch.setenv("FAKE_TRAIN_LOG", str(log))
    sweep_file = tmp_path / "b2n.yaml"
    sweep_file.write_text("protocol: base2new\nshots: [1]\nbackend: {name: slurm, poll_s: 1}\n")
    return {"cluster": cluster, "python": str(fake), "log": log, "file": str(sweep_file), "root": tmp_path}


def run_cli(argv):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        code = cli.main(argv)
    return code, buf.getvalue()


def sweep_argv(env, out, *extra, trainers=("MMLoP",), seeds=("1", "2")):
    return [env["file"], "--trainers", *trainers, "--datasets", "synthetic_clean", "--seeds", *seeds,
            "--data", str(env["root"] / "data"), "--output", out, "--name", "b2n", "--python", env["python"],
            "--gpus-per-job", "0", "--no-tables", *extra]


def calls(log) -> list[dict]:
    """The fake train.py runs: output folder, start, end (None: did not finish), first epoch, and
    its CUDA_VISIBLE_DEVICES and MMLOP_CPUS (None: unset)."""
    runs: dict[int, dict] = {}
    if not os.path.isfile(log):
        return []
    for line in open(log):
        t, pid, what, out, *rest = line.split()
        if what == "start":
            gpu, cpus = (None if v == "-" else v for v in rest[2:4])
            runs[int(pid)] = {"out": out, "start": float(t), "end": None, "from": int(rest[1]), "gpu": gpu,
                              "cpus": cpus}
        else:
            runs[int(pid)]["end"] = float(t)
    return sorted(runs.values(), key=lambda r: r["start"])


def wait_for(predicate, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def state_of(out):
    return json.load(open(os.path.join(out, ".sweep", "b2n", "state.json")))


def record_of(out, job_id):
    return json.load(open(os.path.join(out, ".sweep", "b2n", "runs", job_id.replace("/", "__") + ".json")))


def assert_one_at_a_time(runs):
    for a, b in zip(runs, runs[1:]):
        assert a["end"] is not None and a["end"] <= b["start"] + 0.05, f"two jobs ran at once: {a} {b}"


TRAIN1 = "base2new/train_base/synthetic_clean/shots_1/MMLoP/vit_b16_c2_ep30_batch4_4+4ctx/seed1"


def test_submit_names_rerun_while_queued_status_and_one_job_at_a_time(slurm_env, tmp_path, monkeypatch):
    """With no accounting a rerun submits nothing that Slurm still holds;
    --gpus-per-job 0 is accepted by a partition without GPUs; every job has its readable name;
    --max-running 1 holds for the whole sweep; --no-follow and --status exit 0 for a healthy sweep."""
    cluster = slurm_env["cluster"]
    out = str(tmp_path / "out")
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "2")
    argv = sweep_argv(slurm_env, out, "--no-follow", "--max-running", "1", trainers=("ZeroshotCLIP", "MMLoP"))
    code, text = run_cli(argv)
    assert code == 0, text
    assert "submitted 8 jobs to Slurm" in text and "Running: 8 jobs queued or running" in text
    assert "python scripts/sweep.py --status --name b2n --output " in text
    queue = cluster.squeue()
    names = sorted(j["name"] for j in queue)
    assert names == sorted(f"mmlop/base2new/{t}/synthetic_clean/seed{s}/{k}"
                           for t in ("ZeroshotCLIP", "MMLoP") for s in (1, 2) for k in ("train", "test"))
    assert sum(j["state"] == "RUNNING" for j in queue) <= 1
    submissions = state_of(out)["submissions"]
    # The same command again while they are queued: nothing submitted, the same 8 jobs in the queue.
    code, text = run_cli(argv)
    assert code == 0, text
    assert "nothing to submit: " in text and "submitted" not in text
    assert "sacct" not in text                              # squeue knew every job
    assert state_of(out)["submissions"] == submissions
    assert {j["id"] for j in cluster.squeue()} <= {j["id"] for j in queue}
    code, text = run_cli(["--status", "--output", out, "--name", "b2n"])
    assert code == 0, text
    assert "Running: " in text and "Incomplete" not in text and "Failed" not in text
    cluster.wait_empty(timeout=240)
    code, text = run_cli(["--status", "--output", out, "--name", "b2n"])
    assert code == 0 and "8/8 done" in text and "Complete: every job has its results.json." in text, text
    runs = calls(slurm_env["log"])
    assert len(runs) == 8
    assert_one_at_a_time(runs)
    # One log per attempt, the latest linked from the usual path.
    logs = os.path.join(out, ".sweep", "b2n", "logs")
    link = os.path.join(logs, TRAIN1.replace("/", "__") + ".log")
    assert os.path.islink(link) and os.readlink(link) == TRAIN1.replace("/", "__") + ".1.log"


def test_a_cancelled_training_is_reported_then_a_rerun_finishes_it_one_job_at_a_time(slurm_env, tmp_path,
                                                                                     monkeypatch):
    """scancel of a running training is reported as
    cancelled (exit 1); the rerun submits it again, never reports it failed while the new job is
    queued or running, keeps --max-running 1 with the jobs still queued from the first
    submission, and finishes the sweep."""
    cluster = slurm_env["cluster"]
    out = str(tmp_path / "out")
    monkeypatch.setenv("FAKE_EPOCHS", "60")                  # long enough to be cancelled while it runs
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "0.5")
    argv = sweep_argv(slurm_env, out, "--no-follow", "--max-running", "1")
    code, text = run_cli(argv)
    assert code == 0, text
    wait_for(lambda: calls(slurm_env["log"]), 60, "the first training to start")
    bid = state_of(out)["submissions"][TRAIN1]
    assert calls(slurm_env["log"])[0]["out"].endswith(TRAIN1)
    cluster.run("scancel", bid)
    wait_for(lambda: bid not in {j["id"] for j in cluster.squeue()}, 60, "the cancelled job to leave the queue")
    code, text = run_cli(["--status", "--output", out, "--name", "b2n"])
    assert code == 1, text
    assert f"{TRAIN1}: cancelled (Slurm CANCELLED, job {bid})" in text, text
    last = record_of(out, TRAIN1)["attempts"][-1]
    assert last["status"] == "failed" and last["error"].startswith("cancelled (Slurm CANCELLED")
    # The rerun (following, 1 s polls): the others finish quickly now.
    monkeypatch.setenv("FAKE_EPOCHS", "2")
    follow = [a for a in argv if a != "--no-follow"]
    code, text = run_cli(follow)
    assert code == 0, text
    assert "FAILED" not in text and "4/4 done" in text and "Complete: every job has its results.json." in text
    attempts = record_of(out, TRAIN1)["attempts"]
    assert [a["status"] for a in attempts] == ["failed", "done"]
    assert attempts[-1]["backend_id"] != bid
    runs = calls(slurm_env["log"])
    cancelled = runs[0]
    assert cancelled["end"] is None
    assert_one_at_a_time(runs[1:])
    assert all(r["start"] >= cancelled["start"] for r in runs[1:])
    cluster.wait_empty(timeout=60)              # the last job ends soon after its results.json


def test_time_outs_requeue_and_resume_then_exhausted_requeues_are_reported(slurm_env, tmp_path, monkeypatch):
    """A job that reaches its time limit is checkpointed and requeued by submitit and
    its train.py resumes from its last epoch; with no requeue left the job is reported as
    "time-outs exhausted" and its run record ends failed, not "requeued". --time must leave
    twice --signal-delay: 1 minute with a 30 s delay (slurmctld checks time limits every 30 s, so
    the signal comes 30 to 60 s after the start, always before the limit)."""
    monkeypatch.setenv("FAKE_EPOCHS", "1000")                # never ends within the time limit ...
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "0.5")
    monkeypatch.setenv("FAKE_RESUMED_EPOCHS", "3")           # ... but a resumed run ends soon
    cluster = slurm_env["cluster"]
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    common = ("--no-follow", "--time", "1", "--signal-delay", "30")
    code, text = run_cli(sweep_argv(slurm_env, a, *common, "--max-requeues", "3", seeds=("1",)))
    assert code == 0, text
    code, text = run_cli(sweep_argv(slurm_env, b, *common, "--max-requeues", "0", seeds=("2",)))
    assert code == 0, text
    cluster.wait_empty(timeout=400, release_requeued=True)
    code, text = run_cli(["--status", "--output", a, "--name", "b2n"])
    assert code == 0 and "Complete" in text, text
    attempts = record_of(a, TRAIN1)["attempts"]
    assert [x["status"] for x in attempts] == ["requeued", "done"]
    assert len({x["backend_id"] for x in attempts}) == 1             # the same Slurm job, requeued
    resumed = [r for r in calls(slurm_env["log"]) if r["out"].endswith(TRAIN1)]
    assert len(resumed) == 2 and resumed[1]["from"] > 0               # resumed from its last epoch
    code, text = run_cli(["--status", "--output", b, "--name", "b2n"])
    train2 = TRAIN1.replace("seed1", "seed2")
    assert code == 1, text
    assert f"{train2}: time-outs exhausted: hit the time limit 1 times (--max-requeues 0); raise --time" in text
    last = record_of(b, train2)["attempts"][-1]
    assert last["status"] == "failed" and last["error"].startswith("time-outs exhausted")


def test_without_accounting_sacct_is_said_unavailable_once(slurm_env, tmp_path):
    """A job squeue has forgotten is looked up with sacct, which fails without accounting: said once
    (one note however many polls), never submitit's "Bypassing sacct error", and the job's state is
    unknown rather than failed."""
    from sweep.backends import SlurmBackend

    backend = SlurmBackend(str(tmp_path))
    for _ in range(3):
        assert backend.states(["999999"]) == {"999999": "UNKNOWN"}
    assert backend.accounting is False and len(backend.notes) == 1
    assert backend.notes[0].startswith("sacct is unavailable (Slurm accounting storage is disabled)")


TINY = dict(vision_layers=2, transformer_layers=2, vision_width=64, transformer_width=64,
            transformer_heads=1, image_resolution=32, vision_patch_size=8, embed_dim=32)


def test_base2new_sweep_of_real_training_runs_on_the_cluster(slurm_env, tmp_path):
    """The real train.py on the tiny synthetic setup: 2 trainers x 1 dataset x 2 seeds of
    base-to-novel on a CPU partition (--gpus-per-job 0), followed to the end; its table is
    parse_test_res.py's and counts 2 of 2 seeds."""
    import torch

    import parse_test_res
    from clip.model import build_model_from_config
    from datasets.synthetic import SyntheticShapes, ensure_generated

    torch.manual_seed(0)
    ckpt = tmp_path / "tiny_clip.pt"
    torch.save(build_model_from_config("ViT-B/16", **TINY).state_dict(), ckpt)
    data = str(tmp_path / "data")
    ensure_generated(data, SyntheticShapes.dataset_dir, SyntheticShapes.style, SyntheticShapes.split_file)
    out = str(tmp_path / "out")
    argv = [slurm_env["file"], "--trainers", "ZeroshotCLIP", "MMLoP", "--datasets", "synthetic_clean",
            "--seeds", "1", "2", "--data", data, "--output", out, "--name", "b2n", "--gpus-per-job", "0",
            "--", "MODEL.BACKBONE.NAME", str(ckpt), "INPUT.SIZE", "(32, 32)", "OPTIM.MAX_EPOCH", "1",
            "DATALOADER.NUM_WORKERS", "0", "TRAINER.MMLOP.PROMPT_DEPTH", "2", "DATALOADER.TEST.BATCH_SIZE", "250"]
    t0 = time.time()
    code, text = run_cli(argv)
    assert code == 0, text[-4000:]
    assert "8/8 done" in text and "Complete: every job has its results.json." in text and "FAILED" not in text
    row = next(line for line in text.splitlines() if line.startswith("| synthetic_clean")
               and "4+4ctx" in text.split(line)[0].rsplit("###", 1)[-1])
    assert [c.strip() for c in row.split("|")[1:-1]][-1] == "2/2"             # the Seeds column
    folder = os.path.join(out, "base2new", "test_new", "synthetic_clean", "shots_1", "MMLoP",
                          "vit_b16_c2_ep30_batch4_4+4ctx")
    with contextlib.redirect_stdout(io.StringIO()):
        novel = parse_test_res.parse_function(folder, test_log=True)["accuracy"]
    data = json.load(open(os.path.join(out, ".sweep", "b2n", "tables", "tables.json")))
    mmlop = next(t for t in data if t["method"]["trainer"] == "MMLoP")
    assert mmlop["rows"][0]["cells"]["ours"]["Novel"]["mean"] == novel
    print(f"real-training sweep on Slurm: {time.time() - t0:.0f} s")
