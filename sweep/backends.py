"""Where jobs run. Every backend runs the same :class:`sweep.runner.TrainPyCall`.

* :class:`LocalBackend` (``local``): a ``concurrent.futures`` thread pool of slots on this machine,
  each running its train.py as a child process: K slots per GPU (``--gpus 0,1 --jobs-per-gpu K``,
  ``CUDA_VISIBLE_DEVICES`` set per job), or N CPU workers (``--workers N``). No extra dependency
  (the offline demo uses it).
* :class:`SubmititLocalBackend` (``submitit-local``): submitit's ``LocalExecutor``; every job is
  its own submitit process (pickled call, logs and result in submitit's folder), ``CUDA_VISIBLE_DEVICES``
  from submitit's ``visible_gpus``; at most one job per slot at once.
* :class:`SlurmBackend` (``slurm``): submitit's ``AutoExecutor`` on Slurm, one Slurm job per sweep job
  with Slurm's own dependencies (see :mod:`sweep.engine`), or with ``--jobs-per-gpu K`` one Slurm job
  per K sweep jobs (:class:`PackedCall`: K train.py side by side in one allocation).

Jobs that share a machine's cores each get their share through ``MMLOP_CPUS`` (:func:`cpu_share`),
which :mod:`dassl.threads` turns into torch threads and data-loader workers. GPU memory is checked
before anything runs (:func:`check_gpu_memory`).

The driver (:mod:`sweep.engine`) decides what runs when; a backend only starts a job and tells
whether it has ended (``Handle.poll``).
"""
from __future__ import annotations

import concurrent.futures
import os
import re
import shlex
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from dassl.threads import CPUS_ENV, usable_cores

from .runner import JobFailed, TrainPyCall
from .state import DONE, FAILED, PENDING, RunRecord, lock_holder, run_record_path, tail

DEFAULT_TIMEOUT_MIN = 7 * 24 * 60          # local jobs: a week (submitit's LocalExecutor default is 2 minutes)


@dataclass
class Outcome:
    status: str                 # DONE, FAILED, or PENDING (stopped without finishing: run it again)
    message: str = ""


class Handle:
    """A started job."""

    backend_id: Optional[str] = None
    gpu: Optional[str] = None

    def poll(self) -> Optional[Outcome]:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the job (driver interrupted); its train.py resumes when it runs again."""


def _failure_message(exc: BaseException) -> str:
    text = str(exc)
    # submitit wraps the job's exception in a traceback: keep the JobFailed message.
    match = re.search(r"JobFailed: (.*)", text, re.S)
    return match.group(1).strip() if match else text.strip()


class _FutureHandle(Handle):
    def __init__(self, future: concurrent.futures.Future, call: TrainPyCall, gpu: Optional[str]) -> None:
        self.future, self.call, self.gpu = future, call, gpu

    def poll(self) -> Optional[Outcome]:
        if not self.future.done():
            return None
        exc = self.future.exception()
        if exc is None:
            if self.future.result().get("status") in ("interrupted", "requeued"):
                return Outcome(PENDING, "stopped before it finished")
            return Outcome(DONE)
        if isinstance(exc, JobFailed):
            return Outcome(FAILED, str(exc))
        return Outcome(FAILED, f"{type(exc).__name__}: {exc}")

    def stop(self) -> None:
        self.call._terminate()


class WatchHandle(Handle):
    """A job that a process not started by this driver runs (a killed driver's worker): ended
    when its train.py and worker are gone; finished if it left ``results.json``."""

    def __init__(self, call: TrainPyCall) -> None:
        self.call = call
        record = RunRecord(run_record_path(call.state_dir, call.job), call.job.id)
        self.gpu = (record.last or {}).get("gpu")

    def poll(self) -> Optional[Outcome]:
        job = self.call.job
        record = RunRecord(run_record_path(self.call.state_dir, job), job.id)
        if lock_holder(job.dir) or record.live():
            return None
        if os.path.isfile(job.results_path):
            return Outcome(DONE)
        return Outcome(PENDING, "stopped without results (it runs again)")


def cpu_share(jobs_at_once: int, explicit: Optional[int] = None) -> dict:
    """The environment giving each of ``jobs_at_once`` jobs that share this machine (CPU workers, the
    K jobs of each GPU, the K jobs of one Slurm allocation) its share of the usable cores:
    ``MMLOP_CPUS`` = cores // jobs (at least 1), which :mod:`dassl.threads` splits into torch threads
    and data-loader workers. ``explicit`` (the sweep file's ``threads_per_job``) is the share itself.
    Nothing when one job runs alone, or when the user set ``MMLOP_CPUS`` or ``OMP_NUM_THREADS``:
    each job then inherits that choice unchanged."""
    if explicit:
        return {CPUS_ENV: str(int(explicit))}
    if jobs_at_once <= 1 or any(os.environ.get(k, "").strip() for k in (CPUS_ENV, "OMP_NUM_THREADS")):
        return {}
    return {CPUS_ENV: str(max(1, usable_cores().cores // jobs_at_once))}


def check_jobs_per_gpu(jobs_per_gpu) -> int:
    """``--jobs-per-gpu`` as a whole number >= 1 (ValueError otherwise)."""
    try:
        k = int(jobs_per_gpu)
    except (TypeError, ValueError):
        k = 0
    if k < 1 or str(jobs_per_gpu).strip() != str(k):
        raise ValueError(f"--jobs-per-gpu {jobs_per_gpu}: give a whole number of jobs, 1 or more")
    return k


def _slots(workers: Optional[int], gpus: Optional[Sequence[str]], jobs_per_gpu: int = 1) -> list[Optional[str]]:
    """One slot per job that may run at once: ``jobs_per_gpu`` per GPU, in turns (``0,1,0,1``) so
    that the first jobs spread over the GPUs; else ``workers`` CPU slots."""
    if gpus:
        return [str(g) for _ in range(jobs_per_gpu) for g in gpus]
    return [None] * max(1, int(workers or 1))


class LocalBackend:
    """N local workers (see the module docstring)."""

    name = "local"
    follows_dependencies = False            # the driver starts a job once its dependencies finished

    def __init__(self, workers: Optional[int] = None, gpus: Optional[Sequence[str]] = None,
                 threads_per_job: Optional[int] = None, jobs_per_gpu: int = 1) -> None:
        self.jobs_per_gpu = check_jobs_per_gpu(jobs_per_gpu)
        if self.jobs_per_gpu > 1 and not gpus:
            raise ValueError(f"--jobs-per-gpu {jobs_per_gpu} runs that many jobs on each GPU of --gpus: give "
                             "--gpus (e.g. --gpus 0,1), or --workers N for N jobs at once on the CPU")
        self.slots = _slots(workers, gpus, self.jobs_per_gpu)
        self.threads_per_job = threads_per_job
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None

    @property
    def parallelism(self) -> int:
        return len(self.slots)

    def job_env(self, gpu: Optional[str]) -> dict:
        """``CUDA_VISIBLE_DEVICES`` of the slot's GPU, and the job's share of the cores when several
        slots share them (:func:`cpu_share`)."""
        env = {} if gpu is None else {"CUDA_VISIBLE_DEVICES": gpu}
        env.update(cpu_share(len(self.slots), self.threads_per_job))
        return env

    def start(self, call: TrainPyCall, gpu: Optional[str]) -> Handle:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(self.slots),
                                                               thread_name_prefix="sweep-job")
        call.env.update(self.job_env(gpu))
        return _FutureHandle(self._pool.submit(call), call, gpu)

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def describe(self) -> dict:
        return {"name": self.name, "slots": self.slots, "jobs_per_gpu": self.jobs_per_gpu,
                "parallelism": self.parallelism}


class _SubmititHandle(Handle):
    def __init__(self, job: Any, call: TrainPyCall, gpu: Optional[str]) -> None:
        self.job, self.call, self.gpu = job, call, gpu
        self.backend_id = str(job.job_id)

    def poll(self) -> Optional[Outcome]:
        if not self.job.done():
            return None
        try:
            self.job.result()
        except Exception as exc:  # submitit re-raises the job's exception as FailedJobError
            message = _failure_message(exc)
            if "JobFailed" not in str(exc) and not message.startswith(self.call.job.id):
                log = self.job.paths.stderr
                lines = "\n".join("    " + ln for ln in tail(str(log), 10))
                message = f"{self.call.job.id}: the submitit job {self.backend_id} failed; log: {log}\n{lines}"
            return Outcome(FAILED, message)
        return Outcome(DONE)

    def stop(self) -> None:
        self.job.cancel(check=False)


def importable_repo() -> None:
    """submitit unpickles the job's call in a new Python process: let it import ``sweep`` from the
    repository root, whatever the current folder (the environment is inherited by local jobs and
    exported to Slurm jobs, whose setup line also sets it)."""
    from .spec import REPO_ROOT

    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if REPO_ROOT not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([REPO_ROOT, *parts])


class SubmititLocalBackend(LocalBackend):
    """submitit's LocalExecutor, at most N jobs at once (see the module docstring)."""

    name = "submitit-local"

    def __init__(self, folder: str, workers: Optional[int] = None, gpus: Optional[Sequence[str]] = None,
                 timeout_min: float = DEFAULT_TIMEOUT_MIN, max_requeues: int = 3,
                 threads_per_job: Optional[int] = None, signal_delay_s: int = 60, jobs_per_gpu: int = 1) -> None:
        super().__init__(workers, gpus, threads_per_job, jobs_per_gpu)
        import submitit

        importable_repo()
        self.folder = folder
        self.executor = submitit.LocalExecutor(folder=os.path.join(folder, "%j"), max_num_timeout=max_requeues)
        self.timeout_min, self.signal_delay_s = timeout_min, signal_delay_s

    def start(self, call: TrainPyCall, gpu: Optional[str]) -> Handle:
        env = self.job_env(gpu)
        env.pop("CUDA_VISIBLE_DEVICES", None)            # submitit sets it from visible_gpus
        call.env.update(env)
        params: dict[str, Any] = {"timeout_min": self.timeout_min, "signal_delay_s": self.signal_delay_s,
                                  "gpus_per_node": 0, "visible_gpus": ()}
        if gpu is not None:
            params.update(gpus_per_node=1, visible_gpus=(int(gpu),))
        self.executor.update_parameters(**params)
        return _SubmititHandle(self.executor.submit(call), call, gpu)

    def shutdown(self) -> None:
        pass

    def describe(self) -> dict:
        return {**super().describe(), "folder": self.folder}


# Slurm states of a job that Slurm still holds (it runs, or will run, without being submitted again).
SLURM_ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
                "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "PREEMPTED", "RESV_DEL_HOLD", "STOPPED"}
SLURM_RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT", "RESIZING"}
# Why a job ended without finishing, in words, by its final Slurm state.
SLURM_ENDED = {"CANCELLED": "cancelled", "TIMEOUT": "time limit reached", "NODE_FAIL": "node failure",
               "OUT_OF_MEMORY": "out of memory", "BOOT_FAIL": "node boot failure", "DEADLINE": "deadline reached",
               "PREEMPTED": "preempted", "FAILED": "failed", "REVOKED": "revoked"}
GPU_KEYS = {"gpus", "gpus-per-node", "gpus_per_node", "gres", "gpus-per-task", "gpus_per_task"}
NAME_LIMIT = 200                             # characters of a job name shown by squeue -o %j / sacct


def parse_time_minutes(text: Any) -> int:
    """Slurm's time formats (``MM``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``) or a number of minutes."""
    if isinstance(text, (int, float)):
        return max(1, int(text))
    s = str(text).strip()
    days = 0
    if "-" in s:
        d, s = s.split("-", 1)
        days = int(d)
        parts = [int(p) for p in s.split(":")] + [0, 0]
        hours, minutes, seconds = parts[0], parts[1], parts[2]
    else:
        parts = [int(p) for p in s.split(":")]
        if len(parts) == 1:
            hours, minutes, seconds = 0, parts[0], 0
        elif len(parts) == 2:
            hours, minutes, seconds = 0, parts[0], parts[1]
        else:
            hours, minutes, seconds = parts[-3], parts[-2], parts[-1]
    total = days * 1440 + hours * 60 + minutes + (1 if seconds else 0)
    if total <= 0:
        raise ValueError(f"bad time limit {text!r}")
    return total


def slurm_job_name(job) -> str:
    """``mmlop/<protocol>/<trainer>/<dataset>/seed<N>/<train|test>`` (few-shot runs add the shots),
    what ``squeue -o %j`` and ``sacct`` show for the job."""
    parts = ["mmlop", job.protocol, job.trainer, job.dataset]
    if job.seed is not None:
        parts.append(f"seed{job.seed}")
    if job.protocol == "few_shot":
        parts.append(f"{job.shots}shots")
    parts.append("train" if job.kind == "train" else "test")
    name = "/".join(re.sub(r"[^A-Za-z0-9_.+-]", "_", str(p)) for p in parts)
    return name[:NAME_LIMIT]


class PackedCall:
    """K sweep jobs in one Slurm allocation (``--jobs-per-gpu K``): their train.py processes run side
    by side on its GPU(s), each with its share of the allocation's cores (:func:`cpu_share`, from the
    cores the allocation gives), its own log, run record and ``results.json``. One failing does not
    stop the others; once all have ended the failures are raised together (the Slurm job ends
    FAILED), and the sweep judges each job by its own run record. submitit's checkpointing
    (time limit, preemption) stops all K and requeues the same pack; each resumes from its last epoch."""

    def __init__(self, calls: Sequence[TrainPyCall]) -> None:
        self.calls = list(calls)

    def __call__(self) -> list[dict]:
        share = cpu_share(len(self.calls))
        for call in self.calls:
            call.env.update(share)
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(self.calls)) as pool:
            futures = [pool.submit(call) for call in self.calls]
            concurrent.futures.wait(futures)
        failures = [f.exception() for f in futures if f.exception() is not None]
        if failures:
            raise JobFailed(f"{len(failures)} of the {len(self.calls)} jobs of this allocation failed:\n"
                            + "\n".join(str(e) for e in failures))
        return [f.result() for f in futures]

    def checkpoint(self, *args: Any, **kwargs: Any):
        """submitit's checkpointing protocol: every job stopped and requeued (see the class docstring)."""
        from submitit.helpers import DelayedSubmission

        fresh = [call.checkpoint().function for call in self.calls]
        return DelayedSubmission(PackedCall(fresh), *args, **kwargs)

    def __repr__(self) -> str:
        return f"PackedCall({[c.job.id for c in self.calls]!r})"


def pack_job_name(jobs: Sequence) -> str:
    """The Slurm name of a pack: its first job's name and how many more it runs (``.../train+3``)."""
    name = slurm_job_name(jobs[0])
    more = f"+{len(jobs) - 1}" if len(jobs) > 1 else ""
    return name[:NAME_LIMIT - len(more)] + more


class SlurmBackend:
    """Slurm through submitit: one Slurm job per sweep job (see :mod:`sweep.engine`)."""

    name = "slurm"
    follows_dependencies = True              # Slurm holds a test until its training succeeded

    def __init__(self, folder: str, partition: Optional[str] = None, gpus_per_job: int = 1,
                 cpus_per_job: Optional[int] = None, mem_gb: Optional[float] = None, time: Any = "24:00:00",
                 account: Optional[str] = None, qos: Optional[str] = None, max_running: Optional[int] = None,
                 extra: Optional[dict] = None, max_requeues: int = 3, signal_delay_s: int = 120,
                 setup: Optional[Sequence[str]] = None, jobs_per_gpu: int = 1) -> None:
        self.folder = folder
        self.jobs_per_gpu = check_jobs_per_gpu(jobs_per_gpu)
        self.partition, self.gpus_per_job, self.cpus_per_job = partition, int(gpus_per_job), cpus_per_job
        if self.gpus_per_job < 0:
            raise ValueError(f"--gpus-per-job {gpus_per_job}: give 0 (a CPU partition) or more")
        self.mem_gb, self.timeout_min = mem_gb, parse_time_minutes(time)
        self.account, self.qos, self.max_running = account, qos, max_running
        if max_running is not None and int(max_running) < 1:
            raise ValueError(f"--max-running {max_running}: give 1 or more")
        self.extra = dict(extra or {})
        self.max_requeues, self.signal_delay_s = max_requeues, int(signal_delay_s)
        if self.signal_delay_s < 1:
            raise ValueError(f"--signal-delay {signal_delay_s}: give a number of seconds (1 or more)")
        if self.timeout_min * 60 < 2 * self.signal_delay_s:
            raise ValueError(f"--time {time} ({self.timeout_min * 60} s) leaves too little to run: submitit "
                             f"checkpoints and requeues a job {self.signal_delay_s} s before its time limit "
                             f"(--signal-delay), so --time must be at least twice that "
                             f"({2 * self.signal_delay_s} s); raise --time or lower --signal-delay")
        from .spec import REPO_ROOT

        self.setup = [f"export PYTHONPATH={shlex.quote(REPO_ROOT)}${{PYTHONPATH:+:$PYTHONPATH}}", *(setup or [])]
        self._executor = None
        self.accounting: Optional[bool] = None   # sacct answers (None: not asked yet)
        self.notes: list[str] = []                # said once to the user (sacct unavailable)
        self._sacct_failed_at = 0.0

    @property
    def parallelism(self) -> int:
        """Sweep jobs running at once: ``--max-running`` allocations of ``--jobs-per-gpu`` jobs each."""
        return (self.max_running or 256) * self.jobs_per_gpu

    def parameters(self, name: str = "mmlop", dependency: Optional[str] = None) -> dict:
        """The ``update_parameters`` of submitit's AutoExecutor for one job."""
        additional = {"requeue": True}           # Slurm may requeue on preemption / node failure
        if dependency:
            additional["kill-on-invalid-dep"] = "yes"
        additional.update(self.extra)
        params: dict[str, Any] = {
            "name": name, "timeout_min": self.timeout_min, "nodes": 1, "tasks_per_node": 1,
            "slurm_signal_delay_s": self.signal_delay_s, "slurm_additional_parameters": additional,
        }
        # No GPU line for --gpus-per-job 0 (a CPU partition refuses one), nor when --slurm-param asks itself.
        if self.gpus_per_job > 0 and not GPU_KEYS & set(self.extra):
            params["gpus_per_node"] = self.gpus_per_job
        if self.cpus_per_job:
            params["cpus_per_task"] = self.cpus_per_job
        if self.mem_gb:
            params["mem_gb"] = self.mem_gb
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.account:
            params["slurm_account"] = self.account
        if self.qos:
            params["slurm_qos"] = self.qos
        if dependency:
            params["slurm_dependency"] = dependency
        if self.setup:
            params["slurm_setup"] = self.setup
        return params

    def submit(self, calls: Sequence[TrainPyCall], name: str, dependency: Optional[str] = None) -> str:
        """Submit one Slurm job running ``calls`` (one, or a :class:`PackedCall` of several); its Slurm id."""
        if self._executor is None:
            import submitit

            importable_repo()
            self._executor = submitit.AutoExecutor(folder=os.path.join(self.folder, "%j"), cluster="slurm",
                                                   slurm_max_num_timeout=self.max_requeues)
        self._executor.update_parameters(**self.parameters(name, dependency))
        calls = list(calls)
        return str(self._executor.submit(calls[0] if len(calls) == 1 else PackedCall(calls)).job_id)

    # A failed sacct is asked again after this long, not at every poll: a cluster without accounting
    # answers the same each time, but a driver following for days outlives a slurmdbd restart.
    sacct_retry_s = 600.0

    def states(self, backend_ids: Sequence[str]) -> dict[str, str]:
        """Slurm state of each id: ``squeue`` for the jobs Slurm holds or ended a few minutes ago
        (no accounting needed), ``sacct`` for older ones when it answers, else ``UNKNOWN``."""
        ids = [str(b) for b in backend_ids]
        out = {b: "UNKNOWN" for b in ids}
        if not ids:
            return out
        r = _run_client(["squeue", "-h", "-t", "all", "-o", "%i|%T", "-j", ",".join(sorted(set(ids)))])
        if r is not None and r.returncode == 0:
            for line in r.stdout.splitlines():
                jid, _, state = line.strip().partition("|")
                if jid in out:
                    out[jid] = state.strip().split()[0] if state.strip() else "UNKNOWN"
        unknown = [b for b in ids if out[b] == "UNKNOWN"]
        if unknown and (self.accounting is not False or time.time() - self._sacct_failed_at >= self.sacct_retry_s):
            r = _run_client(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(unknown)])
            if r is None or r.returncode != 0:
                self._sacct_failed_at = time.time()
                if self.accounting is not False:
                    why = (r.stderr or r.stdout).strip().splitlines()[0] if r is not None and (r.stderr or r.stdout) \
                        else "sacct not found"
                    self.notes.append(f"sacct is unavailable ({why}): job states come from squeue, which forgets "
                                      "a finished job after a few minutes (MinJobAge), and from the files on disk")
                self.accounting = False
            else:
                self.accounting = True
                for line in r.stdout.splitlines():
                    jid, _, state = line.strip().partition("|")
                    if jid in out and state.strip():
                        out[jid] = state.strip().split()[0]
        return out

    def describe(self) -> dict:
        return {"name": self.name, "folder": self.folder, "parameters": self.parameters(),
                "max_requeues": self.max_requeues, "max_running": self.max_running,
                "gpus_per_job": self.gpus_per_job, "jobs_per_gpu": self.jobs_per_gpu, "parallelism": self.parallelism}


def _run_client(argv: Sequence[str]):
    """A Slurm client command (None when it is not installed or hangs)."""
    import subprocess

    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None


def submitit_log(folder: str, backend_id: Optional[str]) -> Optional[str]:
    """submitit's stderr log of a Slurm job (its own messages: requeues, why it stopped)."""
    if not backend_id:
        return None
    path = os.path.join(folder, backend_id, f"{backend_id}_0_log.err")
    return path if os.path.isfile(path) else None


GIB = 1024 ** 3


def _cuda_memory_gib(gpus: Sequence[str]) -> dict[str, float]:
    """Total memory of each listed GPU that this process's CUDA sees (GiB); none without CUDA."""
    try:
        import torch
    except ImportError:
        return {}
    if not torch.cuda.is_available():
        return {}
    count = torch.cuda.device_count()
    return {g: torch.cuda.get_device_properties(int(g)).total_memory / GIB
            for g in gpus if str(g).isdigit() and int(g) < count}


def check_gpu_memory(jobs_per_gpu: int, mem_per_job_gib: Optional[float], gpu_memory_gib: Optional[float] = None,
                     gpus: Sequence[str] = ()) -> str:
    """Refuse (ValueError, both figures named) ``jobs_per_gpu`` jobs of ``mem_per_job_gib`` each that
    do not fit in a GPU: ``gpu_memory_gib`` when given, else the total memory of each GPU of ``gpus``
    as CUDA reports it (local backends). Returns what was checked, or why nothing could be, in words."""
    if mem_per_job_gib is None:
        return ("" if jobs_per_gpu == 1 else
                f"GPU memory not checked for --jobs-per-gpu {jobs_per_gpu}: give --gpu-mem-per-job GiB "
                "(a job's peak, e.g. from bench/bench_jobs_per_gpu.py) to have it checked")
    per_job = float(mem_per_job_gib)
    if per_job <= 0:
        raise ValueError(f"--gpu-mem-per-job {mem_per_job_gib}: give a job's GPU memory in GiB (more than 0)")
    if gpu_memory_gib is not None:
        if float(gpu_memory_gib) <= 0:
            raise ValueError(f"--gpu-memory {gpu_memory_gib}: give one GPU's memory in GiB (more than 0)")
        totals = {"given by --gpu-memory": float(gpu_memory_gib)}
    else:
        totals = {f"GPU {g}": t for g, t in _cuda_memory_gib(gpus).items()}
        if not totals:
            return ("GPU memory not checked: no GPU visible here to measure; give --gpu-memory GiB "
                    "(one GPU's memory) to have it checked")
    where, total = min(totals.items(), key=lambda kv: kv[1])
    need = jobs_per_gpu * per_job
    if need > total:
        fits = int(total // per_job)
        hint = (f"at most {fits} such job{'s' if fits != 1 else ''} fit: use --jobs-per-gpu {fits}" if fits else
                "not even one such job fits: use a GPU with more memory or a smaller batch")
        raise ValueError(f"--jobs-per-gpu {jobs_per_gpu} x --gpu-mem-per-job {per_job:g} GiB = {need:g} GiB does "
                         f"not fit in the {total:.1f} GiB of one GPU ({where}); {hint}")
    return (f"GPU memory: {jobs_per_gpu} x {per_job:g} GiB = {need:g} GiB per GPU, of {total:.1f} GiB "
            f"({where})")
