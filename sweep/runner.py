"""The code that runs one job wherever it runs: a local worker, a submitit job, a Slurm job.

:class:`TrainPyCall` is a picklable callable (what submitit pickles and runs). It

1. stops at once when a dependency has no ``results.json`` (so a test never starts before its
   training finished, whatever the backend);
2. skips a job whose ``results.json`` exists (as the scripts: "Oops! The results exist at ...");
3. runs ``$PYTHON train.py ...`` from the repository root, its output in a log of its own per
   attempt (the latest linked from the job's usual log path), and records the attempt in
   ``runs/<job>.json``;
4. fails (raises :class:`JobFailed`) when train.py fails or writes no ``results.json``, so that
   Slurm's ``afterok``/``aftercorr`` keep the job's tests from running.

It follows submitit's checkpointing protocol: on preemption or before the time limit submitit
calls :meth:`TrainPyCall.checkpoint`, which stops train.py and returns a ``DelayedSubmission`` of
the same call; the requeued job reruns the same command, and train.py resumes from the last
epoch it saved.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, Optional

from .jobs import Job
from .spec import REPO_ROOT
from .state import DONE, FAILED, RunRecord, log_path, new_attempt_log, pid_alive, run_record_path, tail

SKIPPED = "skipped"
INTERRUPTED = "interrupted"
REQUEUED = "requeued"
DEPENDENCY_MISSING = "dependency not finished"      # the error of a job whose dependency has no results


class JobFailed(RuntimeError):
    """A job's train.py failed (the message names the log and ends with its last lines)."""


def _backend_id() -> Optional[str]:
    """The Slurm or submitit-local job id of the current process, if any."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or env.get("SUBMITIT_LOCAL_JOB_ID")


def _ignore_usr2() -> None:
    # Slurm signals every process of the job before its time limit; train.py must not die of it
    # before submitit's handler in the parent has checkpointed and requeued the job.
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


class TrainPyCall:
    """Run one job (see the module docstring). ``env`` is added to the environment of train.py."""

    def __init__(self, job: Job, state_dir: str, python: str, deps: tuple[str, ...] = (),
                 env: Optional[dict] = None) -> None:
        self.job = job
        self.state_dir = state_dir
        self.python = python
        self.deps = tuple(deps)            # results.json paths that must exist first
        self.env = dict(env or {})
        self._proc: Optional[subprocess.Popen] = None
        self._stopped = False              # stopped by submitit's checkpoint (requeued)
        self._stopping = False             # stopped by the driver (interrupted)

    # submitit pickles the callable; a running child process is not part of its state.
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_proc"] = None
        state["_stopped"] = state["_stopping"] = False
        return state

    def __call__(self) -> dict:
        job = self.job
        record = RunRecord(run_record_path(self.state_dir, job), job.id)
        log = log_path(self.state_dir, job)
        missing = [p for p in self.deps if not os.path.isfile(p)]
        if missing:
            record.start(log, _backend_id())
            record.update(status=FAILED, end=time.time(), rc=None,
                          error=f"{DEPENDENCY_MISSING}: {missing[0]} does not exist")
            raise JobFailed(f"{job.id}: not started, its dependency has no results: {missing[0]} does not exist")
        if os.path.isfile(job.results_path):
            return {"id": job.id, "status": SKIPPED, "seconds": 0.0}
        command = job.command(self.python)
        log = new_attempt_log(self.state_dir, job)
        attempt = record.start(log, _backend_id(), shlex.join(command))
        env = dict(os.environ)
        env.update(self.env)
        start = time.time()
        with open(log, "a") as out:
            out.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} attempt {len(record.attempts)} on "
                      f"{attempt['host']} (pid {os.getpid()}): cd {REPO_ROOT} && {shlex.join(command)}\n")
            out.flush()
            in_submitit = bool(os.environ.get("SUBMITIT_EXECUTOR"))
            self._proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL,
                                          preexec_fn=_ignore_usr2 if in_submitit else None)
            record.update(child_pid=self._proc.pid, gpu=env.get("CUDA_VISIBLE_DEVICES"))
            try:
                rc = self._proc.wait()
            except BaseException:  # noqa: B036 (re-raised)
                # Interrupted (Ctrl-C, SIGTERM) or requeued by submitit (its handler exits the
                # process from inside this wait, after checkpoint() has stopped train.py).
                self._terminate()
                record = RunRecord(record.path, job.id)
                record.update(status=REQUEUED if self._stopped else INTERRUPTED, end=time.time())
                raise
            finally:
                self._proc = None
            out.write(f"=== exit code {rc} after {time.time() - start:.1f}s\n")
        seconds = time.time() - start
        if self._stopped or self._stopping:
            status = REQUEUED if self._stopped else INTERRUPTED
            record.update(status=status, end=time.time(), rc=rc)
            return {"id": job.id, "status": status, "seconds": seconds, "rc": rc}
        if rc == 0 and os.path.isfile(job.results_path):
            record.update(status=DONE, end=time.time(), rc=0)
            return {"id": job.id, "status": DONE, "seconds": seconds, "rc": 0}
        why = f"exit code {rc}" if rc != 0 else "exit code 0 but no results.json"
        record.update(status=FAILED, end=time.time(), rc=rc, error=why)
        lines = "\n".join("    " + ln for ln in tail(log, 15))
        raise JobFailed(f"{job.id}: train.py failed ({why}); log: {log}\n{lines}")

    def _terminate(self, grace: float = 20.0) -> None:
        """Stop train.py (SIGTERM, then SIGKILL after ``grace`` seconds) without reaping it: the
        thread or frame blocked in ``wait()`` does that (this may run in a signal handler that
        interrupted that very ``wait()``, or in another thread)."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        self._stopping = True
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        end = time.time() + grace
        while pid_alive(proc.pid):
            if time.time() > end:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                break
            time.sleep(0.05)

    def checkpoint(self, *args: Any, **kwargs: Any):
        """submitit's checkpointing protocol: stop train.py (it resumes from its last saved epoch
        when the same command runs again) and requeue this same call."""
        from submitit.helpers import DelayedSubmission

        running = self._proc is not None and self._proc.returncode is None
        self._stopped = True
        self._terminate()
        if running:         # a signal after train.py ended leaves its attempt's status as it is
            RunRecord(run_record_path(self.state_dir, self.job), self.job.id).update(status=REQUEUED, end=time.time())
        return DelayedSubmission(TrainPyCall(self.job, self.state_dir, self.python, self.deps, self.env),
                                 *args, **kwargs)

    def __repr__(self) -> str:
        return f"TrainPyCall({self.job.id!r})"


def default_python() -> str:
    """The interpreter of the jobs: ``$PYTHON`` (as the scripts), else this one."""
    return os.environ.get("PYTHON") or sys.executable
