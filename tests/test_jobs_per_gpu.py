"""``scripts/sweep.py --jobs-per-gpu K``: K jobs share each GPU.

Local: 2 GPU ids x K=2 run 4 real child processes at once, each with ``CUDA_VISIBLE_DEVICES`` of
its GPU and ``MMLOP_CPUS`` = its share of the cores (an explicit user choice kept); ``--status``
and its ETA count 4 slots; submitit's local executor shares a GPU the same way. The memory guard
refuses, before anything is written, K jobs that do not fit in a GPU, naming both figures. Slurm
(the real single-node cluster of tests/slurm_cluster.py, CPU jobs): K jobs packed into one
allocation run side by side, a failed one is reported per job (its test blocked, its pack mate's
test run), and a rerun submits only what is missing; a pack at its time limit is checkpointed and
requeued whole, each job resuming. The jobs are the Slurm tests' stand-in ``train.py`` (a PYTHON
wrapper that records its GPU and core share, sleeps and writes the ``results.json`` the sweep
expects), so each test takes seconds.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys

import pytest

from dassl.threads import usable_cores
from sweep import cli
from sweep.backends import LocalBackend, SlurmBackend, check_gpu_memory
from tests.test_slurm_cluster import (
    FAKE_TRAIN,
    calls,
    cluster,  # noqa: F401  (the real single-node Slurm fixture)
)

CFG = "vit_b16_c2_ep30_batch4_4+4ctx"


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """The stand-in train.py of the Slurm tests as PYTHON, its call log, and no thread setting of the user's."""
    for key in ("MMLOP_CPUS", "OMP_NUM_THREADS", "FAKE_FAIL"):
        monkeypatch.delenv(key, raising=False)
    python = tmp_path / "fake_python"
    python.write_text(FAKE_TRAIN.format(python=sys.executable))
    python.chmod(0o755)
    log = tmp_path / "train_calls.log"
    monkeypatch.setenv("FAKE_TRAIN_LOG", str(log))
    return {"python": str(python), "log": log, "root": tmp_path}


def run_cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def most_at_once(runs) -> int:
    """The most runs whose [start, end] intervals overlap at one instant."""
    events = sorted([(r["start"], 1) for r in runs] + [(r["end"], -1) for r in runs], key=lambda e: (e[0], e[1]))
    now = best = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def local_argv(fake, out, *extra, trainers=("ZeroshotCLIP",), seeds=("1", "2")):
    return ["--protocol", "base2new", "--trainers", *trainers, "--datasets", "synthetic_clean", "--seeds", *seeds,
            "--shots", "1", "--data", str(fake["root"] / "data"), "--output", out, "--name", "b2n",
            "--python", fake["python"], "--no-tables", *extra]


@pytest.mark.slow
def test_two_gpus_times_two_jobs_run_four_at_once_each_with_its_gpu_and_cpu_share(fake, monkeypatch):
    """ZeroshotCLIP base-to-novel x 2 seeds = 4 independent jobs on --gpus 0,1 --jobs-per-gpu 2:
    all 4 run at once, 2 per GPU, each with MMLOP_CPUS = usable cores // 4 (at least 1);
    --status then names the 2 jobs per GPU and its ETA divides the work by 4 slots."""
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "3")
    out = str(fake["root"] / "out")
    code, text, err = run_cli(local_argv(fake, out, "--gpus", "0,1", "--jobs-per-gpu", "2"))
    assert code == 0, text + err
    assert "4/4 done" in text and "Complete: every job has its results.json." in text
    runs = calls(fake["log"])
    assert len(runs) == 4 and most_at_once(runs) == 4
    assert sorted(r["gpu"] for r in runs) == ["0", "0", "1", "1"]
    share = str(max(1, usable_cores().cores // 4))
    assert {r["cpus"] for r in runs} == {share}
    assert sorted(re.findall(r"start \S+ on GPU (\d)", text)) == ["0", "0", "1", "1"]
    # --status of the finished jobs' sweep with their results removed: 4 pending jobs of ~3 s each,
    # 4 at once: an ETA of about one job, not four.
    for r in runs:
        os.remove(os.path.join(r["out"], "results.json"))
    code, text, err = run_cli(["--status", "--output", out, "--name", "b2n"])
    assert "(local backend, 2 jobs per GPU, 4 at once; driver not running; ETA " in text, text
    h, m, s = re.search(r"ETA (?:(\d+):)?(\d+):(\d+)", text).groups()
    longest = max(r["end"] - r["start"] for r in runs)
    assert int(h or 0) * 3600 + int(m) * 60 + int(s) <= 1.5 * longest + 1, text


@pytest.mark.slow
def test_submitit_local_runs_two_jobs_at_once_on_one_gpu(fake, monkeypatch):
    """submitit's LocalExecutor with --gpus 0 --jobs-per-gpu 2: the 2 jobs of a ZeroshotCLIP row run
    at once, both on GPU 0 (submitit's visible_gpus), each with half the cores."""
    pytest.importorskip("submitit")
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "3")
    out = str(fake["root"] / "out")
    argv = local_argv(fake, out, "--backend", "submitit-local", "--gpus", "0", "--jobs-per-gpu", "2", seeds=("1",))
    code, text, err = run_cli(argv)
    assert code == 0, text + err
    runs = calls(fake["log"])
    assert len(runs) == 2 and most_at_once(runs) == 2
    assert {r["gpu"] for r in runs} == {"0"} and {r["cpus"] for r in runs} == {str(max(1, usable_cores().cores // 2))}


def test_each_job_gets_its_share_of_the_cores_unless_the_user_chose(monkeypatch):
    """One rule for CPU workers and GPU slots: MMLOP_CPUS = cores // slots when several share the
    machine; a user's MMLOP_CPUS or OMP_NUM_THREADS is inherited unchanged (no share set); the sweep
    file's threads_per_job is the share itself; a job alone gets no share."""
    for key in ("MMLOP_CPUS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(key, raising=False)
    cores = usable_cores().cores
    gpus = LocalBackend(gpus=["0", "1"], jobs_per_gpu=2)
    assert gpus.slots == ["0", "1", "0", "1"] and gpus.parallelism == 4
    assert gpus.job_env("1") == {"CUDA_VISIBLE_DEVICES": "1", "MMLOP_CPUS": str(max(1, cores // 4))}
    assert LocalBackend(workers=2).job_env(None) == {"MMLOP_CPUS": str(max(1, cores // 2))}
    assert LocalBackend(gpus=["0"]).job_env("0") == {"CUDA_VISIBLE_DEVICES": "0"}
    assert LocalBackend(workers=1).job_env(None) == {}
    assert LocalBackend(workers=3, threads_per_job=5).job_env(None) == {"MMLOP_CPUS": "5"}
    for key in ("MMLOP_CPUS", "OMP_NUM_THREADS"):
        monkeypatch.setenv(key, "3")
        assert gpus.job_env("0") == {"CUDA_VISIBLE_DEVICES": "0"}
        monkeypatch.delenv(key)


def test_jobs_that_would_not_fit_in_gpu_memory_are_refused_before_anything_runs(fake):
    """4 x 12 GiB on a 40 GiB GPU: exit 2, both figures and the K that fits named, no sweep state
    written, no job run. Bad K and K without GPUs are refused the same way."""
    out = str(fake["root"] / "out")
    code, text, err = run_cli(local_argv(fake, out, "--gpus", "0,1", "--jobs-per-gpu", "4",
                                         "--gpu-mem-per-job", "12", "--gpu-memory", "40"))
    assert code == 2
    assert err == ("error: --jobs-per-gpu 4 x --gpu-mem-per-job 12 GiB = 48 GiB does not fit in the 40.0 GiB of "
                   "one GPU (given by --gpu-memory); at most 3 such jobs fit: use --jobs-per-gpu 3\n")
    assert not os.path.exists(out) and calls(fake["log"]) == []
    code, _, err = run_cli(local_argv(fake, out, "--workers", "2", "--jobs-per-gpu", "2"))
    assert code == 2 and err.startswith("error: --jobs-per-gpu 2 runs that many jobs on each GPU of --gpus: give "
                                        "--gpus"), err
    code, _, err = run_cli(local_argv(fake, out, "--gpus", "0", "--jobs-per-gpu", "0"))
    assert code == 2 and err == "error: --jobs-per-gpu 0: give a whole number of jobs, 1 or more\n"
    assert not os.path.exists(out)
    with pytest.raises(ValueError, match=r"= 50 GiB does not fit in the 40.0 GiB of one GPU \(given by "
                                         r"--gpu-memory\); not even one such job fits"):
        check_gpu_memory(1, 50, 40)
    assert check_gpu_memory(3, 12, 40) == "GPU memory: 3 x 12 GiB = 36 GiB per GPU, of 40.0 GiB (given by --gpu-memory)"
    assert check_gpu_memory(2, None).startswith("GPU memory not checked for --jobs-per-gpu 2: give --gpu-mem-per-job")
    assert check_gpu_memory(1, None) == ""


def test_slurm_parallelism_and_pack_names():
    """On Slurm --max-running counts allocations, each running K jobs: the ETA's parallelism is both."""
    backend = SlurmBackend("/nonexistent", max_running=3, jobs_per_gpu=2, gpus_per_job=0)
    assert backend.parallelism == 6 and backend.describe()["jobs_per_gpu"] == 2


def test_slurm_packs_never_wait_for_their_own_members(tmp_path):
    """Cross-dataset + DG for 2 seeds (2 ImageNet trainings, 28 evaluations that depend on them) in
    packs of 4: the trainings first, every job in exactly one pack, no pack holding a job and its
    dependency, the evaluations in plan order; K=1 keeps one job per Slurm job in plan order."""
    from sweep.engine import Engine
    from sweep.jobs import plan
    from sweep.spec import SweepSpec, TrainerEntry

    jobs = plan(SweepSpec(protocols=("xd", "dg"), trainers=(TrainerEntry("MaPLe"),), seeds=(1, 2),
                          data=str(tmp_path / "data"), output=str(tmp_path / "out"))).jobs
    packs = Engine._packs(jobs, 4)
    assert [len(p) for p in packs] == [2] + [4] * 7
    assert [j.kind for j in packs[0]] == ["train", "train"]
    assert sorted(j.id for p in packs for j in p) == sorted(j.id for j in jobs)
    assert all(not set(j.deps) & {m.id for m in p} for p in packs for j in p)
    tests = [j for j in jobs if j.kind != "train"]
    assert [j.id for p in packs[1:] for j in p] == [j.id for j in tests]
    assert Engine._packs(jobs, 1) == [[j] for j in jobs]


@pytest.mark.slow
def test_a_pack_at_its_time_limit_is_checkpointed_requeued_and_each_job_resumes(fake, monkeypatch):
    """submitit's checkpointing protocol, for real with its LocalExecutor (what Slurm's signal before
    a time-out or a preemption triggers): a pack of 2 trainings that cannot finish in a 12 s limit is
    signalled 6 s before it, both train.py are stopped and the same pack is requeued; each job then
    resumes from the epochs it saved and finishes, its record "requeued" then "done"."""
    submitit = pytest.importorskip("submitit")
    from sweep.backends import PackedCall, importable_repo
    from sweep.jobs import plan
    from sweep.runner import TrainPyCall
    from sweep.spec import SweepSpec, TrainerEntry

    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    importable_repo()
    for key, value in (("FAKE_EPOCHS", "1000"), ("FAKE_EPOCH_SECONDS", "0.5"), ("FAKE_RESUMED_EPOCHS", "2")):
        monkeypatch.setenv(key, value)
    root = fake["root"]
    spec = SweepSpec(protocols=("base2new",), trainers=(TrainerEntry("MMLoP"),), datasets=("synthetic_clean",),
                     seeds=(1, 2), shots=(1,), data=str(root / "data"), output=str(root / "out"))
    jobs = [j for j in plan(spec).jobs if j.kind == "train"]
    executor = submitit.LocalExecutor(folder=str(root / "submitit" / "%j"), max_num_timeout=3)
    executor.update_parameters(timeout_min=0.2, signal_delay_s=6)
    sdir = str(root / "state")
    submitted = executor.submit(PackedCall([TrainPyCall(j, sdir, fake["python"]) for j in jobs]))
    result = submitted.result()
    assert [r["status"] for r in result] == ["done", "done"], result
    runs = calls(fake["log"])
    for job in jobs:
        mine = [r for r in runs if r["out"] == job.output_dir]
        assert len(mine) == 2 and mine[0]["end"] is None and mine[1]["from"] > 0, runs   # stopped, then resumed
        record = json.load(open(os.path.join(sdir, "runs", job.id.replace("/", "__") + ".json")))
        assert [a["status"] for a in record["attempts"]] == ["requeued", "done"]
        assert os.path.isfile(job.results_path)
    assert most_at_once([r for r in runs if r["end"]]) == 2                  # the resumed pair side by side


# ---- Slurm: K jobs per allocation on the real test cluster ---------------------------------------------------
def job_dir(out, kind, seed):
    return os.path.join(out, "base2new", kind, "synthetic_clean", "shots_1", "MMLoP", CFG, f"seed{seed}")


@pytest.mark.slow
def test_slurm_packs_two_jobs_per_allocation_reports_a_failed_one_per_job_and_reruns_it(fake, cluster, tmp_path,  # noqa: F811
                                                                                        monkeypatch):
    """MMLoP base-to-novel x 2 seeds, --jobs-per-gpu 2 on a CPU partition: 2 allocations (the two
    trainings, then the two tests), named after their first job; the two trainings run at once in
    one Slurm job, each with half the cores. Seed 2's training fails: it is reported failed with its
    own exit code and log, its test blocked, while seed 1's test runs and finishes. The rerun submits
    only seed 2's two jobs and completes the sweep."""
    for key in ("SLURM_CONF", "PATH"):
        monkeypatch.setenv(key, cluster.env[key])
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "2")
    monkeypatch.setenv("FAKE_FAIL", "train_base/synthetic_clean/shots_1/MMLoP/" + CFG + "/seed2")
    sweep_file = tmp_path / "b2n.yaml"
    sweep_file.write_text("backend: {name: slurm, poll_s: 1}\n")
    out = str(tmp_path / "out")
    argv = [str(sweep_file), *local_argv(fake, out, "--gpus-per-job", "0", "--jobs-per-gpu", "2", "--max-running", "1",
                                         trainers=("MMLoP",))]
    code, text, err = run_cli(argv + ["--no-follow"])
    assert code == 0, text + err
    assert "submitted 4 jobs to Slurm in 2 allocations of up to 2 jobs" in text, text
    names = sorted(j["name"] for j in cluster.squeue())
    assert names == ["mmlop/base2new/MMLoP/synthetic_clean/seed1/test+1",
                     "mmlop/base2new/MMLoP/synthetic_clean/seed1/train+1"]
    code, text, err = run_cli(["--status", "--output", out, "--name", "b2n"])
    assert code == 0 and "(slurm backend, 2 jobs per allocation; driver not running" in text, text + err
    cluster.wait_empty(timeout=120)
    code, text, err = run_cli(["--status", "--output", out, "--name", "b2n"])
    assert code == 1, text
    train2 = f"base2new/train_base/synthetic_clean/shots_1/MMLoP/{CFG}/seed2"
    assert f"  {train2}: train.py failed (exit code 3)" in text and "log: " in text, text
    assert re.search(rf"  base2new/test_new/\S+/seed2: its dependency did not finish \(dependency not finished: "
                     rf"{re.escape(job_dir(out, 'train_base', 2))}/results.json does not exist; Slurm job \d+\)", text)
    assert "2/4 done" in text and "1 failed" in text and "1 blocked" in text, text
    runs = calls(fake["log"])
    assert len(runs) == 3 and [r["end"] is None for r in runs].count(True) == 1      # seed 2's training failed
    assert os.path.isfile(os.path.join(job_dir(out, "test_new", 1), "results.json"))
    records = {s: json.load(open(os.path.join(out, ".sweep", "b2n", "runs",
                                              f"{'base2new/train_base/synthetic_clean/shots_1/MMLoP/' + CFG}/seed{s}"
                                              .replace("/", "__") + ".json")))["attempts"][-1] for s in (1, 2)}
    assert records[1]["backend_id"] == records[2]["backend_id"]    # one allocation ran both trainings
    assert abs(records[1]["start"] - records[2]["start"]) < 2.0    # side by side, not one after the other
    assert {r["cpus"] for r in runs} == {str(max(1, usable_cores().cores // 2))}
    # The rerun: only seed 2's training and test, followed to the end.
    monkeypatch.delenv("FAKE_FAIL")
    code, text, err = run_cli(argv)
    assert code == 0, text + err
    assert "submitted 2 jobs to Slurm in 2 allocations of up to 2 jobs" in text, text
    assert "4/4 done" in text and "Complete: every job has its results.json." in text and "FAILED" not in text
    assert len(calls(fake["log"])) == 5
    cluster.wait_empty(timeout=60)
