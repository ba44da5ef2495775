"""The sweep driver: what runs when, progress, status, the final report.

Dependencies
    A test job depends on its training job (base2new: ``test_new`` on ``train_base``; xd/dg: each
    evaluation on the ImageNet training of that trainer and seed). Trainers that do not train have
    no such dependency (as in the scripts). The job itself also refuses to start while a
    dependency has no ``results.json`` (:mod:`sweep.runner`).

    * local backends: the driver starts a job when a worker is free and its dependencies have
      finished (plan order: a test right after its training, so results come early).
    * Slurm: everything is submitted at once and Slurm holds the tests: the jobs whose
      dependencies have finished form one array; the tests of trainings in that array form
      arrays aligned with it (task i of a test array is a test of training i) submitted with
      ``--dependency=aftercorr:<array>`` (task i starts once task i of the training array
      succeeded; a single job gets ``afterok:<id>``), and ``--kill-on-invalid-dep=yes`` cancels a
      test whose training failed. Tests of trainings still queued from an earlier submission
      get ``afterok:<that job>``. So the driver may exit (``--no-follow``, or a lost login
      session) and the sweep still completes in order; the arrays' throttle
      (``slurm_array_parallelism``) caps the running tasks of each array.

Rerunning a sweep
    Finished jobs (``results.json``) are skipped; jobs still run by a process of an earlier driver
    (its worker outlived it) are waited for, not started twice; interrupted ones run the same
    command again, which resumes from the last saved epoch; failed ones run again; inconsistent
    ones are reported and left alone (see :func:`sweep.state.check_results`).
"""
from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, TextIO

from .backends import SLURM_ACTIVE, Handle, Outcome, WatchHandle
from .jobs import Job
from .runner import REQUEUED, TrainPyCall, default_python
from .state import (
    BLOCKED,
    DONE,
    FAILED,
    INCONSISTENT,
    PENDING,
    QUEUED,
    RUNNING,
    STATE_FILE,
    RunRecord,
    assess,
    atomic_write_json,
    check_results,
    lock_holder,
    log_path,
    read_json,
    run_record_path,
    tail,
)

ORDER = (DONE, RUNNING, QUEUED, FAILED, BLOCKED, INCONSISTENT, PENDING)


def fmt_seconds(seconds: Optional[float]) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass
class SweepResult:
    """Where every job of a sweep stands, and why the unfinished ones are not finished."""

    jobs: list[Job]
    statuses: dict[str, str]
    details: dict[str, str] = field(default_factory=dict)       # failure / inconsistency / blocking reason
    logs: dict[str, str] = field(default_factory=dict)
    started: list[str] = field(default_factory=list)            # ids started by this run
    interrupted: bool = False

    def counts(self) -> Counter:
        return Counter(self.statuses.values())

    @property
    def complete(self) -> bool:
        return all(s == DONE for s in self.statuses.values())

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 0 if self.complete else 1


def summary_line(name: str, counts: Counter, total: int, elapsed: Optional[float] = None,
                 eta: Optional[float] = None) -> str:
    parts = [f"{counts.get(DONE, 0)}/{total} done", f"{counts.get(RUNNING, 0)} running"]
    if counts.get(QUEUED):
        parts.append(f"{counts[QUEUED]} queued")
    parts += [f"{counts.get(FAILED, 0)} failed", f"{counts.get(PENDING, 0)} pending"]
    if counts.get(BLOCKED):
        parts.append(f"{counts[BLOCKED]} blocked")
    if counts.get(INCONSISTENT):
        parts.append(f"{counts[INCONSISTENT]} inconsistent")
    text = f"[{name}] " + " · ".join(parts)
    if elapsed is not None:
        text += f" | elapsed {fmt_seconds(elapsed)}"
        if counts.get(PENDING, 0) + counts.get(RUNNING, 0) + counts.get(QUEUED, 0):
            text += f" · ETA {fmt_seconds(eta)}"
    return text


class Progress:
    """A live progress line (rewritten in place on a terminal, one line per change otherwise) with
    event lines printed above it."""

    def __init__(self, stream: TextIO, enabled: bool = True, every_s: float = 60.0) -> None:
        self.stream, self.enabled, self.every_s = stream, enabled, every_s
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._last_text, self._last_key, self._last_time, self._shown = "", None, 0.0, False

    def event(self, text: str) -> None:
        if not self.enabled:
            return
        if self.tty and self._shown:
            self.stream.write("\r\x1b[K")
        self.stream.write(text + "\n")
        if self.tty and self._shown:
            self.stream.write(self._last_text)
        self.stream.flush()

    def update(self, text: str, key) -> None:
        if not self.enabled:
            return
        now = time.time()
        if self.tty:
            self.stream.write("\r\x1b[K" + text)
            self._shown = True
        elif key != self._last_key or now - self._last_time >= self.every_s:
            self.stream.write(text + "\n")
            self._last_time = now
        self._last_text, self._last_key = text, key
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty and self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False


def durations(jobs: Sequence[Job], sdir: str) -> dict[str, float]:
    """Seconds of the attempt that finished each job, for the jobs that have one (any run)."""
    out = {}
    for job in jobs:
        seconds = RunRecord(run_record_path(sdir, job), job.id).finished_seconds()
        if seconds is not None:
            out[job.id] = seconds
    return out


def estimate_eta(jobs: Sequence[Job], statuses: dict[str, str], done_seconds: dict[str, float],
                 running_since: dict[str, float], parallelism: int, now: Optional[float] = None) -> Optional[float]:
    """Remaining wall time: the mean duration of finished jobs of the same kind (train / test /
    eval; else of any kind) for each pending job, the rest of it for each running job, divided
    by the number of jobs that can run at once. None until a job has finished."""
    now = time.time() if now is None else now
    by_id = {j.id: j for j in jobs}
    by_kind: dict[str, list[float]] = defaultdict(list)
    for jid, s in done_seconds.items():
        if jid in by_id:
            by_kind[by_id[jid].kind].append(s)
    everything = [s for v in by_kind.values() for s in v]
    if not everything:
        return None

    def est(job: Job) -> float:
        values = by_kind.get(job.kind) or everything
        return sum(values) / len(values)

    work, left = 0.0, 0
    for job in jobs:
        st = statuses.get(job.id)
        if st in (PENDING, QUEUED):
            work += est(job)
            left += 1
        elif st == RUNNING:
            work += max(est(job) - (now - running_since.get(job.id, now)), 0.0)
            left += 1
    if not left:
        return 0.0
    return work / max(1, min(parallelism, left))


def block_dependents(jobs: Sequence[Job], statuses: dict[str, str], details: dict[str, str]) -> None:
    """PENDING jobs whose dependency failed, is inconsistent or blocked become BLOCKED."""
    for job in jobs:
        if statuses[job.id] != PENDING:
            continue
        bad = [d for d in job.deps if statuses.get(d) in (FAILED, INCONSISTENT, BLOCKED)]
        if bad:
            statuses[job.id] = BLOCKED
            details[job.id] = f"its dependency {bad[0]} is {statuses[bad[0]]}"


class Engine:
    """Run the jobs of one sweep on a backend (see the module docstring)."""

    def __init__(self, jobs: Sequence[Job], sdir: str, backend, name: str = "sweep", python: Optional[str] = None,
                 stream: Optional[TextIO] = None, progress: bool = True,
                 on_event: Optional[Callable[[str, Job, dict], None]] = None, poll_s: float = 0.5,
                 state: Optional[dict] = None, follow: bool = True) -> None:
        self.jobs = list(jobs)
        self.by_id = {j.id: j for j in self.jobs}
        self.sdir = sdir
        self.backend = backend
        self.name = name
        self.python = python or default_python()
        self.progress = Progress(stream or sys.stdout, progress)
        self.on_event = on_event
        self.poll_s = poll_s
        self.follow = follow
        self.state = dict(state or {})
        self.state_path = os.path.join(sdir, STATE_FILE)
        previous = read_json(self.state_path) or {}
        self.submissions: dict[str, str] = dict(previous.get("submissions") or {})

    # ---- bookkeeping -------------------------------------------------------------------------
    def call(self, job: Job) -> TrainPyCall:
        deps = tuple(self.by_id[d].results_path for d in job.deps if d in self.by_id)
        return TrainPyCall(job, self.sdir, self.python, deps)

    def save_state(self, **extra) -> None:
        self.state.update(extra)
        self.state.update({"name": self.name, "updated": time.time(), "backend": self.backend.describe(),
                           "python": self.python, "jobs": [j.to_dict() for j in self.jobs],
                           "submissions": self.submissions})
        atomic_write_json(self.state_path, self.state)

    def _emit(self, kind: str, job: Job, **info) -> None:
        if self.on_event is not None:
            self.on_event(kind, job, info)

    def _event_line(self, text: str) -> None:
        self.progress.event(text)

    # ---- entry point -------------------------------------------------------------------------
    def run(self) -> SweepResult:
        os.makedirs(self.sdir, exist_ok=True)
        lock = _driver_lock(self.sdir)
        try:
            self.save_state(driver={"pid": os.getpid(), "host": os.uname().nodename, "started": time.time(),
                                    "argv": sys.argv})
            if getattr(self.backend, "follows_dependencies", False):
                return self._run_slurm()
            return self._run_local()
        finally:
            os.close(lock)

    def _initial(self) -> tuple[dict[str, str], dict[str, str]]:
        statuses, details = {}, {}
        for jid, a in assess(self.jobs, self.sdir).items():
            statuses[jid] = a.state
            if a.reason:
                details[jid] = a.reason
        for job in self.jobs:
            if statuses[job.id] == DONE:
                self._emit("skip", job)
        return statuses, details

    # ---- local backends ----------------------------------------------------------------------
    def _run_local(self) -> SweepResult:
        statuses, details = self._initial()
        result = SweepResult(self.jobs, statuses, details)
        handles: dict[str, Handle] = {}
        started_at: dict[str, float] = {}
        slots = list(self.backend.slots)
        busy: dict[str, Optional[str]] = {}
        free = list(range(len(slots)))
        for job in self.jobs:                       # still run by a process of an earlier driver
            if statuses[job.id] == RUNNING:
                handle = WatchHandle(self.call(job))
                index = slots.index(handle.gpu) if handle.gpu in slots and slots.index(handle.gpu) in free \
                    else (free[0] if free else None)
                if index is not None:
                    free.remove(index)
                busy[job.id] = index
                handles[job.id] = handle
                started_at[job.id] = time.time()
                self._event_line(f"  waiting for {job.id} ({details.get(job.id) or 'already running'})")
                self._emit("adopt", job)
        details = {k: v for k, v in details.items() if statuses[k] != RUNNING}
        result.details = details
        done_seconds = durations(self.jobs, self.sdir)
        t0 = time.time()
        stop = {"flag": False}
        previous_handlers = _install_stop_handlers(stop)
        try:
            while True:
                for jid, handle in list(handles.items()):
                    outcome = handle.poll()
                    if outcome is None:
                        continue
                    del handles[jid]
                    index = busy.pop(jid, None)
                    if index is not None:
                        free.append(index)
                        free.sort()
                    self._finish(self.by_id[jid], outcome, statuses, details, result, started_at, done_seconds)
                block_dependents(self.jobs, statuses, details)
                if stop["flag"]:
                    if not handles:
                        break
                else:
                    for job in self.jobs:
                        if not free:
                            break
                        if statuses[job.id] != PENDING or any(statuses.get(d) != DONE for d in job.deps):
                            continue
                        index = free.pop(0)
                        gpu = slots[index]
                        handle = self.backend.start(self.call(job), gpu)
                        handles[job.id], busy[job.id] = handle, index
                        statuses[job.id] = RUNNING
                        started_at[job.id] = time.time()
                        result.started.append(job.id)
                        where = f" on GPU {gpu}" if gpu is not None else ""
                        bid = getattr(handle, "backend_id", None)
                        if bid:
                            self.submissions[job.id] = bid
                        self._event_line(f"  start {job.id}{where}" + (f" (job {bid})" if bid else ""))
                        self._emit("start", job, gpu=gpu)
                    if not handles:
                        break
                self._show(statuses, t0, done_seconds, started_at)
                time.sleep(self.poll_s)
        except KeyboardInterrupt:
            stop["flag"] = True
        finally:
            if stop["flag"]:
                result.interrupted = True
                self._event_line("  interrupted: stopping the running jobs (rerun the same command to resume)")
                for jid, handle in handles.items():
                    handle.stop()
                    statuses[jid] = PENDING
                for jid in list(handles):
                    _wait_stopped(handles[jid])
            _restore_handlers(previous_handlers)
            self.backend.shutdown()
            if self.progress.tty:
                self._show(statuses, t0, done_seconds, started_at)
            self.progress.close()
            self.save_state(last_run=self._run_summary(result, t0))
        return result

    def _finish(self, job: Job, outcome: Outcome, statuses, details, result, started_at, done_seconds) -> None:
        record = RunRecord(run_record_path(self.sdir, job), job.id)
        seconds = record.finished_seconds()
        if outcome.status == DONE:
            statuses[job.id] = DONE
            if seconds is not None:
                done_seconds[job.id] = seconds
            self._event_line(f"  done  {job.id}" + (f" ({fmt_seconds(seconds)})" if seconds else ""))
            self._emit("done", job, seconds=seconds or 0.0)
        elif outcome.status == PENDING:
            statuses[job.id] = PENDING
            self._event_line(f"  {job.id}: {outcome.message}")
        else:
            statuses[job.id] = FAILED
            details[job.id] = outcome.message
            result.logs[job.id] = log_path(self.sdir, job)
            first = outcome.message.splitlines()[0] if outcome.message else "failed"
            self._event_line(f"  FAILED {first}")
            self._emit("failed", job, message=outcome.message)

    def _show(self, statuses, t0, done_seconds, started_at) -> None:
        counts = Counter(statuses.values())
        eta = estimate_eta(self.jobs, statuses, done_seconds, started_at, self.backend.parallelism)
        key = tuple(sorted(counts.items()))
        self.progress.update(summary_line(self.name, counts, len(self.jobs), time.time() - t0, eta), key)

    @staticmethod
    def _run_summary(result: SweepResult, t0: float) -> dict:
        return {"start": t0, "end": time.time(), "counts": dict(result.counts()), "exit_code": result.exit_code,
                "started": result.started}

    # ---- Slurm -------------------------------------------------------------------------------
    def _run_slurm(self) -> SweepResult:
        statuses, details = self._initial()
        result = SweepResult(self.jobs, statuses, details)
        t0 = time.time()
        # Jobs still queued or running from an earlier submission are not submitted again.
        earlier = {jid: bid for jid, bid in self.submissions.items()
                   if jid in statuses and statuses[jid] in (PENDING, RUNNING)}
        active: dict[str, str] = {}
        if earlier:
            states = self.backend.states(list(earlier.values()))
            for jid, bid in earlier.items():
                if states.get(bid, "UNKNOWN").split()[0] in SLURM_ACTIVE:
                    active[jid] = bid
                    statuses[jid] = QUEUED if states[bid].startswith("PENDING") else RUNNING
        to_run = [j for j in self.jobs if statuses[j.id] == PENDING]
        roots = [j for j in to_run if all(statuses.get(d) == DONE for d in j.deps)]
        root_ids = {j.id for j in roots}
        children: dict[str, list[Job]] = defaultdict(list)
        on_active: dict[str, list[Job]] = defaultdict(list)
        for job in to_run:
            if job.id in root_ids:
                continue
            dep = next(d for d in job.deps if statuses.get(d) != DONE)
            if dep in root_ids:
                children[dep].append(job)
            elif dep in active:
                on_active[active[dep]].append(job)
            else:
                statuses[job.id] = BLOCKED
                details[job.id] = f"its dependency {dep} is {statuses.get(dep)}"
        # Trainings with tests first, most tests first: test layer k is then a prefix of the array.
        with_children = sorted((j for j in roots if children.get(j.id)), key=lambda j: -len(children[j.id]))
        ordered = with_children + [j for j in roots if not children.get(j.id)]
        submitted: list[tuple[Job, str]] = []
        try:
            ids = self.backend.submit([self.call(j) for j in ordered])
            submitted += list(zip(ordered, ids))
            for k in range(max((len(v) for v in children.values()), default=0)):
                layer_roots = [j for j in with_children if len(children[j.id]) > k]
                layer = [children[j.id][k] for j in layer_roots]
                root_bids = [ids[ordered.index(j)] for j in layer_roots]
                if len(layer) == 1:
                    dependency = f"afterok:{root_bids[0]}"
                else:
                    dependency = f"aftercorr:{root_bids[0].split('_')[0]}"
                submitted += list(zip(layer, self.backend.submit([self.call(j) for j in layer], dependency)))
            for bid, jobs in on_active.items():
                submitted += list(zip(jobs, self.backend.submit([self.call(j) for j in jobs], f"afterok:{bid}")))
        finally:
            for job, bid in submitted:
                self.submissions[job.id] = bid
                statuses[job.id] = QUEUED
                result.started.append(job.id)
            self.save_state(last_submission={"time": time.time(), "jobs": len(submitted)})
        if submitted:
            arrays = sorted({bid.split("_")[0] for _, bid in submitted})
            self._event_line(f"  submitted {len(submitted)} jobs to Slurm (job ids {', '.join(arrays)}); "
                             f"submitit folder {self.backend.folder}")
        if not self.follow:
            self.progress.update(summary_line(self.name, Counter(statuses.values()), len(self.jobs)), None)
            self.progress.close()
            self._event_line(f"  not following: python scripts/sweep.py --status --output ... --name {self.name} "
                             "shows where it stands")
            result.interrupted = False
            return result
        done_seconds = durations(self.jobs, self.sdir)
        try:
            while True:
                observed = observe(self.jobs, self.sdir, self.submissions, self.backend)
                for jid, (st, why) in observed.items():
                    if st != statuses.get(jid):
                        job = self.by_id[jid]
                        if st == DONE:
                            self._event_line(f"  done  {jid}")
                            self._emit("done", job)
                        elif st == FAILED:
                            self._event_line(f"  FAILED {jid}: {why.splitlines()[0] if why else ''}")
                            result.logs[jid] = log_path(self.sdir, job)
                        statuses[jid] = st
                        if why:
                            details[jid] = why
                done_seconds.update(durations([j for j in self.jobs if statuses[j.id] == DONE], self.sdir))
                started_at = {j.id: (RunRecord(run_record_path(self.sdir, j), j.id).last or {}).get("start") or t0
                              for j in self.jobs if statuses[j.id] == RUNNING}
                self._show(statuses, t0, done_seconds, started_at)
                if not any(s in (RUNNING, QUEUED) for s in statuses.values()):
                    break
                time.sleep(max(self.poll_s, 1.0))
        except KeyboardInterrupt:
            self.progress.close()
            self._event_line("  stopped following; the Slurm jobs keep running (--status shows them)")
            result.interrupted = True
        self.progress.close()
        self.save_state(last_run=self._run_summary(result, t0))
        return result


def observe(jobs: Sequence[Job], sdir: str, submissions: dict[str, str], backend=None) -> dict[str, tuple[str, str]]:
    """Where each job stands now, from the disk (results.json, the run records, the lock of a
    running train.py) and, for Slurm jobs, sacct. Used by ``--status`` and while following."""
    by_id = {j.id: j for j in jobs}
    slurm_states: dict[str, str] = {}
    if backend is not None and getattr(backend, "follows_dependencies", False):
        pending_ids = [submissions[j.id] for j in jobs
                       if j.id in submissions and not os.path.isfile(j.results_path)]
        if pending_ids:
            slurm_states = backend.states(pending_ids)
    out: dict[str, tuple[str, str]] = {}
    for job in jobs:
        a = check_results(job, by_id)
        if a.state != PENDING:
            out[job.id] = (a.state, a.reason)
            continue
        record = RunRecord(run_record_path(sdir, job), job.id)
        last = record.last or {}
        holder = lock_holder(job.dir)
        bid = submissions.get(job.id)
        sstate = slurm_states.get(bid, "").split()[0] if bid else ""
        if holder or record.live():
            out[job.id] = (RUNNING, holder or "")
        elif sstate in SLURM_ACTIVE:
            running = sstate in ("RUNNING", "COMPLETING", "CONFIGURING")
            out[job.id] = (RUNNING if running else QUEUED, f"Slurm {sstate} ({bid})")
        elif last.get("status") == FAILED:
            error = last.get("error") or f"exit code {last.get('rc')}"
            out[job.id] = (FAILED, f"{job.id}: {error}; log: {last.get('log')}")
        elif sstate and sstate not in ("UNKNOWN", "COMPLETED"):
            cancelled = sstate.startswith("CANCELLED") and not last
            out[job.id] = (BLOCKED if cancelled else FAILED, f"Slurm {sstate} ({bid})")
        elif bid and last.get("status") in (RUNNING, REQUEUED) and last.get("host") != os.uname().nodename:
            out[job.id] = (RUNNING, f"per its record, on {last.get('host')} ({bid})")
        elif bid and not last and sstate in ("", "UNKNOWN"):
            out[job.id] = (QUEUED, f"submitted as {bid}; Slurm state unknown")
        else:
            out[job.id] = (PENDING, "")
    statuses = {k: v[0] for k, v in out.items()}
    details = {k: v[1] for k, v in out.items()}
    block_dependents(jobs, statuses, details)
    return {k: (statuses[k], details.get(k, "")) for k in out}


def report(result: SweepResult, sdir: str, stream: Optional[TextIO] = None, lines: int = 12) -> None:
    """The end-of-sweep (and --status) report: counts, then every failed job with its log and the
    last lines of its error, every inconsistent and blocked job with the reason."""
    stream = stream or sys.stdout
    counts = result.counts()
    total = len(result.jobs)
    print(summary_line(os.path.basename(sdir), counts, total), file=stream)
    by_id = {j.id: j for j in result.jobs}
    failed = [jid for jid, s in result.statuses.items() if s == FAILED]
    if failed:
        print(f"Failed ({len(failed)}):", file=stream)
        for jid in failed:
            job = by_id[jid]
            log = log_path(sdir, job)
            record = RunRecord(run_record_path(sdir, job), jid)
            last = record.last or {}
            why = last.get("error") or (f"exit code {last['rc']}" if last.get("rc") is not None else "")
            print(f"  {jid}: {why or 'failed'}", file=stream)
            print(f"    log: {log}", file=stream)
            for ln in tail(log, lines):
                print(f"    | {ln}", file=stream)
            if not os.path.isfile(log) and result.details.get(jid):
                for ln in result.details[jid].splitlines()[:lines]:
                    print(f"    | {ln}", file=stream)
    for title, state in (("Inconsistent (not reused, not rerun)", INCONSISTENT),
                         ("Blocked (a dependency did not finish)", BLOCKED)):
        ids = [jid for jid, s in result.statuses.items() if s == state]
        if ids:
            print(f"{title} ({len(ids)}):", file=stream)
            for jid in ids:
                print(f"  {jid}: {result.details.get(jid, '')}", file=stream)
    if result.complete:
        print("Complete: every job has its results.json.", file=stream)
    elif result.interrupted:
        print("Interrupted: rerun the same command to continue.", file=stream)
    else:
        print("Incomplete: rerun the same command to run what is missing or failed.", file=stream)


class SweepBusy(RuntimeError):
    """Another driver runs this sweep."""


def _driver_lock(sdir: str) -> int:
    """One driver per sweep: an exclusive ``flock`` on ``<state>/driver.lock`` (dropped by the
    kernel when the driver ends, however it ends)."""
    import fcntl

    fd = os.open(os.path.join(sdir, "driver.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise SweepBusy(f"this sweep is being run by {holder} ({sdir}); follow it with --status") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"PID {os.getpid()} on {os.uname().nodename}\n".encode())
    return fd


def _install_stop_handlers(stop: dict):
    """SIGTERM / SIGHUP stop the driver like Ctrl-C (the local jobs are stopped, not orphaned)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum, frame):
        stop["flag"] = True
        raise KeyboardInterrupt

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            previous[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):
            pass
    return previous


def _restore_handlers(previous: dict) -> None:
    for sig, h in previous.items():
        try:
            signal.signal(sig, h)
        except (ValueError, OSError):
            pass


def _wait_stopped(handle: Handle, timeout: float = 30.0) -> None:
    end = time.time() + timeout
    while time.time() < end and handle.poll() is None:
        time.sleep(0.2)
