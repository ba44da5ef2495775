"""dassl/threads.py: torch threads and data-loader workers from the cores the process may use
(a real affinity mask set with os.sched_setaffinity, cgroup quota files, MMLOP_CPUS), the
wait policy set before torch is loaded, and the one log line of train.py."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dassl import threads
from dassl.utils.errors import UserError
from tests.helpers import REPO

pytestmark = pytest.mark.usefixtures("one_thread")

CHILD = """
import os, sys
from dassl.threads import fit_threads, plan_threads
for scenario in sys.argv[1:]:  # "<cpu,cpu,...>:<NUM_WORKERS>:<MMLOP_CPUS or empty>"
    cpus, workers, share = scenario.split(":")
    os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    os.environ.pop("MMLOP_CPUS", None)
    os.environ.update({"MMLOP_CPUS": share} if share else {})
    plan = plan_threads(int(workers))
    print(plan.describe().split(";")[0], "| workers", plan.loader_workers)
os.sched_setaffinity(0, {int(c) for c in sys.argv[1].split(":")[0].split(",")})
os.environ.pop("MMLOP_CPUS", None)
fit_threads(int(sys.argv[1].split(":")[1]))  # before torch is loaded, as demo.py does
import torch
print("torch threads", torch.get_num_threads())
"""


def child_env(**extra) -> dict:
    """The test process's environment without the variables these tests set themselves."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MMLOP_CPUS", "OMP_WAIT_POLICY")}
    return dict(env, PYTHONPATH=str(REPO), **extra)


def quota() -> str:
    """This machine's cgroup quota as the log line states it (the test's children share it)."""
    limit = threads.cgroup_cpu_limit()
    return "none" if limit is None else f"{limit:g}"


def test_restricted_affinity_sets_the_threads_and_workers():
    """A real affinity mask (os.sched_setaffinity in a child process), then the choice applied."""
    cpus = sorted(os.sched_getaffinity(0))
    two = len(cpus) >= 2 and (threads.cgroup_cpu_limit() or 2) >= 2
    scenarios = [f"{cpus[0]}:4:"] + ([f"{cpus[0]},{cpus[1]}:4:", f"{cpus[0]},{cpus[1]}:0:1"] if two else [])
    r = subprocess.run([sys.executable, "-c", CHILD, *scenarios], cwd=REPO, env=child_env(), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    one_core = ("CPU threads: 1 torch intra-op, 0 data-loader workers (DATALOADER.NUM_WORKERS 4) for 1 usable core "
                f"(affinity 1, cgroup quota {quota()}, MMLOP_CPUS unset)")
    assert lines[0] == one_core + " | workers 0"
    assert lines[-2:] == [one_core + "; OMP_WAIT_POLICY=PASSIVE", "torch threads 1"]
    if two:
        assert lines[1] == ("CPU threads: 1 torch intra-op, 1 data-loader worker (DATALOADER.NUM_WORKERS 4) for 2 "
                            f"usable cores (affinity 2, cgroup quota {quota()}, MMLOP_CPUS unset) | workers 1")
        assert lines[2] == ("CPU threads: 1 torch intra-op, 0 data-loader workers (DATALOADER.NUM_WORKERS 0) for 1 "
                            f"usable core (affinity 2, cgroup quota {quota()}, MMLOP_CPUS 1) | workers 0")


def test_passive_wait_policy_only_takes_effect_before_torch_is_loaded():
    code = "import torch\nfrom dassl.threads import fit_threads\nfit_threads()"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=child_env(), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("; OpenMP spins while waiting (OMP_WAIT_POLICY was unset when torch was loaded)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=child_env(OMP_WAIT_POLICY="ACTIVE"),
                       capture_output=True, text=True, timeout=300)
    assert r.stdout.strip().endswith("; OMP_WAIT_POLICY=ACTIVE")  # the user's choice is kept


@pytest.mark.slow
def test_train_py_logs_the_choice_under_a_restricted_affinity(data_root, trainer_yaml, tmp_path):
    cpu = min(os.sched_getaffinity(0))
    out = tmp_path / "run"
    argv = [sys.executable, "train.py", "--root", data_root, "--trainer", "ToyDasslTrainer", "--config-file",
            trainer_yaml, "--output-dir", str(out), "--seed", "1", "DATASET.NAME", "ToyColorsTrainCli",
            "USE_CUDA", "False", "OPTIM.MAX_EPOCH", "1", "DATALOADER.NUM_WORKERS", "2"]
    # train.py registers the toy dataset and trainer only through tests.toy_run: import it first.
    code = "import runpy, sys, tests.toy_run; sys.argv = sys.argv[1:]; runpy.run_path('train.py', run_name='__main__')"
    r = subprocess.run([sys.executable, "-c", code, *argv[1:]], cwd=REPO, env=child_env(OMP_WAIT_POLICY="PASSIVE"),
                       preexec_fn=lambda: os.sched_setaffinity(0, {cpu}), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert ("CPU threads: 1 torch intra-op, 0 data-loader workers (DATALOADER.NUM_WORKERS 2) for 1 usable core "
            f"(affinity 1, cgroup quota {quota()}, MMLOP_CPUS unset); OMP_WAIT_POLICY=PASSIVE") in log


def test_plan_leaves_a_core_to_the_main_process_and_honours_omp_num_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    budget = threads.CoreBudget(cores=8, affinity=8, cgroup_quota=None, share=None)
    assert (threads.plan_threads(0, budget).torch_threads, threads.plan_threads(0, budget).loader_workers) == (8, 0)
    plan = threads.plan_threads(4, budget)
    assert (plan.torch_threads, plan.loader_workers) == (4, 4)
    plan = threads.plan_threads(32, budget)
    assert (plan.torch_threads, plan.loader_workers) == (1, 7)
    one = threads.CoreBudget(cores=1, affinity=1, cgroup_quota=None, share=None)
    assert (threads.plan_threads(8, one).torch_threads, threads.plan_threads(8, one).loader_workers) == (1, 0)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.plan_threads(0, budget).torch_threads == 2


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_meaningless_share_names_the_variable(monkeypatch, value):
    monkeypatch.setenv("MMLOP_CPUS", value)
    with pytest.raises(UserError) as info:
        threads.usable_cores()
    assert str(info.value) == (f"MMLOP_CPUS={value!r} is not a whole number >= 1 (the cores this process may use); "
                               "unset it or set, e.g., MMLOP_CPUS=4")


def test_a_thread_count_set_lower_before_is_kept(monkeypatch):
    monkeypatch.delenv("MMLOP_CPUS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    lines: list[str] = []
    assert torch.get_num_threads() == 1  # the one_thread fixture
    plan = threads.fit_threads(0, log=lines.append)
    assert torch.get_num_threads() == 1 and plan.torch_threads == 1
    if plan.budget.cores > 1:
        assert lines[0].startswith("CPU threads: 1 torch intra-op (set lower before, kept), 0 data-loader workers")


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_of_the_process_or_an_ancestor(tmp_path):
    mount = tmp_path / "cgroup"
    write(tmp_path / "self_cgroup", "0::/user.slice/job42/step0\n")
    proc = str(tmp_path / "self_cgroup")
    assert threads.cgroup_cpu_limit(proc, str(mount)) is None  # no files: no quota
    write(mount / "user.slice" / "cpu.max", "max 100000\n")
    write(mount / "user.slice" / "job42" / "cpu.max", "250000 100000\n")
    write(mount / "user.slice" / "job42" / "step0" / "cpu.max", "max 100000\n")
    assert threads.cgroup_cpu_limit(proc, str(mount)) == 2.5
    write(mount / "user.slice" / "job42" / "step0" / "cpu.max", "50000 100000\n")
    assert threads.cgroup_cpu_limit(proc, str(mount)) == 0.5


def test_cgroup_v1_quota_and_a_container_that_sees_its_cgroup_at_the_root(tmp_path):
    mount = tmp_path / "cgroup"
    write(tmp_path / "self_cgroup", "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n")
    (mount / "cpu,cpuacct").mkdir(parents=True)
    proc = str(tmp_path / "self_cgroup")
    write(mount / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1\n")
    write(mount / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    assert threads.cgroup_cpu_limit(proc, str(mount)) is None
    # Inside the container /proc names the host's path, absent here; the quota is at the root.
    write(mount / "cpu,cpuacct" / "cpu.cfs_quota_us", "300000\n")
    assert threads.cgroup_cpu_limit(proc, str(mount)) == 3.0


def test_usable_cores_rounds_a_quota_down_and_takes_the_smallest_limit(monkeypatch):
    monkeypatch.delenv("MMLOP_CPUS", raising=False)
    monkeypatch.setattr(threads, "affinity_cores", lambda: 16)
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 2.5)
    budget = threads.usable_cores()
    assert budget.cores == 2 and budget.describe() == "affinity 16, cgroup quota 2.5, MMLOP_CPUS unset"
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 0.5)
    assert threads.usable_cores().cores == 1
    monkeypatch.setenv("MMLOP_CPUS", "32")
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    assert threads.usable_cores().cores == 16  # a share never raises the count above the affinity
