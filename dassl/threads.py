"""CPU threads that fit the cores this process may use.

Left alone, torch starts one intra-op thread per core of the machine and the data loader adds
``DATALOADER.NUM_WORKERS`` processes on top. Where the process may use fewer cores (a CPU
affinity mask from ``taskset``/Slurm, a cgroup CPU quota from Docker/Kubernetes, a share of the
machine given by a sweep) or where other processes compete for the cores, OpenMP's threads then
spin at their barriers waiting for threads that are not running: measured here, the tiny-CLIP
pretraining ran 6-10x slower beside one busy process with two spinning threads than with
threads that sleep while they wait.

* ``usable_cores()``: the fewest of the affinity mask, the cgroup quota (v2 ``cpu.max`` or v1
  ``cpu.cfs_quota_us``, rounded down) and ``$MMLOP_CPUS`` (the share a sweep or the user gives
  this process: torch threads and data-loader workers together).
* ``plan_threads(requested_workers)``: data-loader workers ``min(requested, cores - 1)`` (one core
  stays with the main process), torch intra-op threads the remaining cores (at least 1; at most
  ``$OMP_NUM_THREADS`` when set). A function of the environment only, never of the load, so a run
  and its resumption use the same thread count (CPU results depend on it in the last bits).
* ``prefer_passive_openmp()``: ``OMP_WAIT_POLICY=PASSIVE`` unless set, so idle OpenMP threads
  sleep instead of spinning. OpenMP reads it when torch is imported: entry points call this before
  importing torch; child processes (sweep jobs, test subprocesses) inherit it. This module imports
  no torch at module level, for that reason.
* ``fitted_plan(requested_workers)``: ``plan_threads`` keeping a lower thread count already set in
  this process (what ``fit_threads`` will apply, e.g. for a cache key).
* ``fit_threads(requested_workers)``: all of the above applied (``torch.set_num_threads``) and
  described in one log line.
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, replace
from typing import Callable, Optional

CPUS_ENV = "MMLOP_CPUS"
WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
# Whether OMP_WAIT_POLICY was in the environment when this process loaded torch (None: not known yet).
_PASSIVE_AT_TORCH_IMPORT: Optional[bool] = None


def _user_error(message: str) -> Exception:
    from dassl.utils.errors import UserError

    return UserError(message)


def cgroup_cpu_limit(proc_cgroup: str = "/proc/self/cgroup", mount: str = "/sys/fs/cgroup") -> Optional[float]:
    """The CPU quota of this process's cgroup and its ancestors in cores (``quota / period``, the
    smallest found), or None without a quota. Reads cgroup v2 (``cpu.max``: ``"<quota> <period>"``
    or ``"max <period>"``) and v1 (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, -1 = none)."""
    try:
        with open(proc_cgroup) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    candidates = []  # (controller mount, cgroup path, v2?)
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            candidates.append((mount, path, True))
        elif "cpu" in controllers.split(","):
            for name in (controllers, "cpu", "cpu,cpuacct"):
                if os.path.isdir(os.path.join(mount, name)):
                    candidates.append((os.path.join(mount, name), path, False))
                    break
    limits = []
    for base, path, v2 in candidates:
        folder = os.path.join(base, path.lstrip("/"))
        # A container sees its own cgroup at the mount's root while /proc names the host's path.
        while True:
            limit = _read_quota(folder, v2)
            if limit is not None:
                limits.append(limit)
            if os.path.normpath(folder) == os.path.normpath(base):
                break
            folder = os.path.dirname(folder)
    return min(limits) if limits else None


def _read_quota(folder: str, v2: bool) -> Optional[float]:
    try:
        if v2:
            with open(os.path.join(folder, "cpu.max")) as f:
                quota, period = f.read().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        with open(os.path.join(folder, "cpu.cfs_quota_us")) as f:
            quota = int(f.read().strip())
        with open(os.path.join(folder, "cpu.cfs_period_us")) as f:
            period = int(f.read().strip())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def affinity_cores() -> int:
    """The CPUs in this process's affinity mask (``os.cpu_count()`` where there is no such call)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _env_cores(name: str, what: str) -> Optional[int]:
    """``$name`` as a whole number >= 1, None when unset or empty; a ``UserError`` otherwise."""
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise _user_error(f"{name}={value!r} is not a whole number >= 1 ({what}); unset it or set, "
                          f"e.g., {name}=4")
    return count


@dataclass(frozen=True)
class CoreBudget:
    """``cores`` this process may use, and what each limit said (None: no such limit)."""

    cores: int
    affinity: int
    cgroup_quota: Optional[float]
    share: Optional[int]

    def describe(self) -> str:
        quota = "none" if self.cgroup_quota is None else f"{self.cgroup_quota:g}"
        share = "unset" if self.share is None else str(self.share)
        return f"affinity {self.affinity}, cgroup quota {quota}, {CPUS_ENV} {share}"


def usable_cores() -> CoreBudget:
    """The cores this process may use (see the module docstring); at least 1."""
    affinity = affinity_cores()
    quota = cgroup_cpu_limit()
    share = _env_cores(CPUS_ENV, "the cores this process may use")
    cores = affinity
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota)))
    if share is not None:
        cores = min(cores, share)
    return CoreBudget(max(1, cores), affinity, quota, share)


@dataclass(frozen=True)
class ThreadPlan:
    """Torch intra-op threads and data-loader workers for a budget of cores."""

    torch_threads: int
    loader_workers: int
    requested_workers: int
    budget: CoreBudget
    kept_lower: bool = False

    def describe(self) -> str:
        cores = self.budget.cores
        waits = os.environ.get(WAIT_POLICY_ENV, "").upper()
        if _PASSIVE_AT_TORCH_IMPORT is False and "torch" in sys.modules:
            wait = f"OpenMP spins while waiting ({WAIT_POLICY_ENV} was unset when torch was loaded)"
        else:
            wait = f"{WAIT_POLICY_ENV}={waits or 'unset'}"
        kept = " (set lower before, kept)" if self.kept_lower else ""
        return (f"CPU threads: {self.torch_threads} torch intra-op{kept}, {self.loader_workers} data-loader "
                f"worker{'s' if self.loader_workers != 1 else ''} (DATALOADER.NUM_WORKERS {self.requested_workers}) "
                f"for {cores} usable core{'s' if cores != 1 else ''} ({self.budget.describe()}); {wait}")


def plan_threads(requested_workers: int = 0, budget: Optional[CoreBudget] = None) -> ThreadPlan:
    """Workers ``min(requested, cores - 1)``, torch threads the rest (>= 1, <= ``$OMP_NUM_THREADS``)."""
    budget = budget or usable_cores()
    requested = max(0, int(requested_workers))
    workers = min(requested, budget.cores - 1)
    threads = max(1, budget.cores - workers)
    omp = _env_cores("OMP_NUM_THREADS", "torch's intra-op threads")
    if omp is not None:
        threads = min(threads, omp)
    return ThreadPlan(threads, workers, requested, budget)


def prefer_passive_openmp() -> None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it; effective in this process
    only when torch is not imported yet, and in every child process started afterwards."""
    global _PASSIVE_AT_TORCH_IMPORT
    if _PASSIVE_AT_TORCH_IMPORT is None:
        _PASSIVE_AT_TORCH_IMPORT = "torch" not in sys.modules or WAIT_POLICY_ENV in os.environ
    os.environ.setdefault(WAIT_POLICY_ENV, "PASSIVE")


def fitted_plan(requested_workers: int = 0) -> ThreadPlan:
    """``plan_threads``, keeping a thread count already set lower in this process
    (``torch.set_num_threads``): in a fresh process torch starts with one thread per CPU of the
    affinity mask, so a lower count is a deliberate choice (a test, a caller). Applies nothing."""
    import torch

    plan = plan_threads(requested_workers)
    current = torch.get_num_threads()
    if current < plan.torch_threads:
        plan = replace(plan, torch_threads=current, kept_lower=True)
    return plan


def fit_threads(requested_workers: int = 0, log: Callable[[str], None] = print) -> ThreadPlan:
    """Apply ``fitted_plan`` to torch (and ``prefer_passive_openmp``); log the one-line choice."""
    prefer_passive_openmp()
    import torch

    plan = fitted_plan(requested_workers)
    torch.set_num_threads(plan.torch_threads)
    log(plan.describe())
    return plan
