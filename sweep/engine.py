"""The sweep driver: what runs when, progress, status, the final report.

Dependencies
    A test job depends on its training job (base2new: ``test_new`` on ``train_base``; xd/dg: each
    evaluation on the ImageNet training of that trainer and seed). Trainers that do not train have
    no such dependency (as in the scripts). The job itself also refuses to start while a
    dependency has no ``results.json`` (:mod:`sweep.runner`).

    * local backends: the driver starts a job when a worker is free and its dependencies have
      finished (plan order: a test right after its training, so results come early).
    * Slurm: everything is submitted at once, one Slurm job per sweep job (its own name, see
      :func:`sweep.backends.slurm_job_name`), and Slurm holds the tests: a test whose training is
      submitted now or still held from an earlier submission gets ``afterok:<that job>`` and
      ``--kill-on-invalid-dep=yes`` (cancelled if its training fails). ``--max-running N`` is N
      chains of ``afterany`` dependencies over the whole sweep (:meth:`Engine._lanes`). So the
      driver may exit (``--no-follow``, or a lost login session) and the sweep still completes in
      order. Where each job stands comes from :func:`observe`.
    * Slurm with ``--jobs-per-gpu K``: K jobs per Slurm job (:class:`sweep.backends.PackedCall`),
      packed by dependency level (:meth:`Engine._packs`); a test's allocation starts ``afterany`` its
      training's, and a test whose training left no results is reported blocked. ``--max-running``
      then counts allocations.

    ETA: the remaining work over the jobs that run at once, the backend's ``parallelism`` (its
    slots: GPUs x ``--jobs-per-gpu``, or CPU workers; on Slurm ``--max-running`` x K).

Rerunning a sweep
    Finished jobs (``results.json``) are skipped; jobs still run by a process of an earlier driver
    (its worker outlived it) are waited for, not started twice; interrupted ones run the same
    command again, which resumes from the last saved epoch; failed ones run again; inconsistent
    ones are reported and left alone (see :func:`sweep.state.check_results`).
    On Slurm a job that Slurm still holds (pending, running, requeued, held) is never submitted
    again, and a job is judged only by its latest submission.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, TextIO

from .backends import (
    SLURM_ACTIVE,
    SLURM_ENDED,
    SLURM_RUNNING,
    Handle,
    Outcome,
    WatchHandle,
    pack_job_name,
    submitit_log,
)
from .jobs import Job
from .runner import DEPENDENCY_MISSING, INTERRUPTED, REQUEUED, TrainPyCall, default_python
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
    in_use_by,
    lock_holder,
    log_path,
    read_json,
    run_record_path,
    tail,
)

RERUN_WHEN_FREE = "; rerun this sweep once that one has finished (the job is then skipped or resumed)"
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
    detached: bool = False          # Slurm: the driver left (--no-follow); the jobs go on without it
    driver_alive: bool = False      # --status: a driver still runs the pending jobs

    def counts(self) -> Counter:
        return Counter(self.statuses.values())

    @property
    def complete(self) -> bool:
        return all(s == DONE for s in self.statuses.values())

    @property
    def broken(self) -> bool:
        """Some job failed, is blocked or inconsistent: it needs the user (or a rerun)."""
        return any(s in (FAILED, BLOCKED, INCONSISTENT) for s in self.statuses.values())

    @property
    def healthy(self) -> bool:
        """Not complete, but every unfinished job is queued or running (or a live driver will start it)."""
        unfinished = [s for s in self.statuses.values() if s != DONE]
        allowed = (QUEUED, RUNNING, PENDING) if self.driver_alive else (QUEUED, RUNNING)
        return bool(unfinished) and all(s in allowed for s in unfinished)

    @property
    def exit_code(self) -> int:
        """0 complete or healthy (running, queued), 1 failed / blocked / inconsistent / left
        unfinished with nothing to run it, 130 interrupted."""
        if self.interrupted:
            return 130
        if self.complete or (not self.broken and self.healthy):
            return 0
        return 1


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
            self.save_state(driver=None)            # --status: no driver runs this sweep any more
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
                index = next((i for i in free if slots[i] == handle.gpu), free[0] if free else None)
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
            self._event_line(self._failed_line(job, outcome.message.splitlines()[0] if outcome.message else "failed"))
            self._emit("failed", job, message=outcome.message)

    def _failed_line(self, job: Job, first: str) -> str:
        """The event line of a job that ended without results: ``BUSY`` when another sweep holds its
        folder (``in_use_by``), else ``FAILED`` and the first line of why."""
        busy = in_use_by(self.sdir, job)
        return f"  BUSY {job.id}: {busy}{RERUN_WHEN_FREE}" if busy else f"  FAILED {first}"

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
    def _note_backend(self) -> None:
        """What the backend has to say once (sacct unavailable), printed once per driver."""
        for note in getattr(self.backend, "notes", ()):
            if note not in self._noted:
                self._noted.add(note)
                self._event_line(f"  note: {note}")

    def _run_slurm(self) -> SweepResult:
        self._noted: set[str] = set()
        t0 = time.time()
        observed = observe(self.jobs, self.sdir, self.submissions, self.backend)
        self._note_backend()
        statuses = {k: v[0] for k, v in observed.items()}
        details = {k: v[1] for k, v in observed.items() if v[1]}
        for job in self.jobs:
            if statuses[job.id] == DONE:
                self._emit("skip", job)
        result = SweepResult(self.jobs, statuses, details)
        # A job Slurm still holds (pending, running, requeued, held) is never submitted again.
        held = {jid: self.submissions[jid] for jid, st in statuses.items() if st in (QUEUED, RUNNING)
                and jid in self.submissions}
        for jid, st in statuses.items():
            if st in (FAILED, BLOCKED) or (st == PENDING and jid not in held):
                statuses[jid] = PENDING                         # failed / blocked / never run: run again
                details.pop(jid, None)
        lanes = self._lanes(held)
        k = getattr(self.backend, "jobs_per_gpu", 1)
        # One job per allocation: a test waits for its training's success. K per allocation: for the
        # end of the training's allocation, whatever its pack mates did; the test then checks its
        # training's results.json itself and is reported blocked without it (_slurm_outcome).
        kind = "afterok" if k == 1 else "afterany"
        submitted: list[tuple[Job, str]] = []
        allocations = 0
        try:
            for pack in self._packs([j for j in self.jobs if statuses[j.id] == PENDING], k):
                members, after = [], []
                for job in pack:
                    waits = []
                    for dep in job.deps:
                        if statuses.get(dep) == DONE:
                            continue
                        if statuses.get(dep) in (QUEUED, RUNNING) and dep in self.submissions:
                            waits.append(f"{kind}:{self.submissions[dep]}")
                        else:
                            statuses[job.id] = BLOCKED
                            details[job.id] = f"its dependency {dep} is {statuses.get(dep)}"
                            break
                    if statuses[job.id] != BLOCKED:
                        members.append(job)
                        after += waits
                if not members:
                    continue
                lane = None
                if lanes is not None:
                    lane = min(range(len(lanes)), key=lambda i: len(lanes[i]))   # least busy lane
                    if lanes[lane]:
                        after += [f"afterany:{b}" for b in lanes[lane]]
                bid = self.backend.submit([self.call(j) for j in members], pack_job_name(members),
                                          ",".join(dict.fromkeys(after)) or None)
                if lane is not None:
                    lanes[lane] = [bid]
                allocations += 1
                for job in members:
                    submitted.append((job, bid))
                    self.submissions[job.id] = bid
                    statuses[job.id] = QUEUED
                    result.started.append(job.id)
        finally:
            self.save_state(last_submission={"time": time.time(), "jobs": len(submitted)},
                            lanes=lanes)
        if submitted:
            first, last = submitted[0][1], submitted[-1][1]
            ids = first if first == last else f"{first} to {last}"
            packed = f" in {allocations} allocations of up to {k} jobs" if k > 1 else ""
            self._event_line(f"  submitted {len(submitted)} jobs to Slurm{packed} (job ids {ids}); "
                             f"submitit folder {self.backend.folder}")
        elif held:
            self._event_line(f"  nothing to submit: {len(held)} jobs are still queued or running on Slurm")
        block_dependents(self.jobs, statuses, details)
        if not self.follow:
            result.detached = True
            return result
        done_seconds = durations(self.jobs, self.sdir)
        try:
            while True:
                observed = observe(self.jobs, self.sdir, self.submissions, self.backend)
                self._note_backend()
                for jid, (st, why) in observed.items():
                    if st != statuses.get(jid):
                        job = self.by_id[jid]
                        if st == DONE:
                            self._event_line(f"  done  {jid}")
                            self._emit("done", job)
                        elif st == FAILED:
                            self._event_line(self._failed_line(job, f"{jid}: {why.splitlines()[0] if why else ''}"))
                            result.logs[jid] = log_path(self.sdir, job)
                        elif st == RUNNING:
                            self._event_line(f"  start {jid} (job {self.submissions.get(jid)})")
                        statuses[jid] = st
                    if why:
                        details[jid] = why
                    else:
                        details.pop(jid, None)
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
            result.detached = result.interrupted = True
        self.progress.close()
        self.save_state(last_run=self._run_summary(result, t0))
        return result

    def _lanes(self, held: dict[str, str]) -> Optional[list[list[str]]]:
        """``--max-running N`` over the whole sweep: N lanes, each new job submitted ``afterany`` the
        last job of the least busy lane, so at most N jobs of the sweep run at once. The jobs
        still held from an earlier submission start the lanes (shared out in turn), so a rerun
        adds to them instead of running N more."""
        n = getattr(self.backend, "max_running", None)
        if not n:
            return None
        lanes: list[list[str]] = [[] for _ in range(int(n))]
        for i, bid in enumerate(sorted(set(held.values()), key=_bid_key)):
            lanes[i % len(lanes)].append(bid)
        return lanes


    @staticmethod
    def _packs(jobs: Sequence[Job], k: int) -> list[list[Job]]:
        """The Slurm jobs to submit, in order, each a list of sweep jobs: one each in plan order
        (``k`` = 1); else the jobs by dependency level (first those none of whose dependencies is
        submitted now, then their dependents, ...), each level cut in plan order into packs of
        ``k``, so that no pack waits for one of its own members."""
        if k == 1:
            return [[job] for job in jobs]
        level: dict[str, int] = {}
        for job in jobs:                            # plan order: a dependency before its dependents
            level[job.id] = 1 + max((level[d] for d in job.deps if d in level), default=-1)
        packs = []
        for lv in sorted(set(level.values())):
            row = [job for job in jobs if level[job.id] == lv]
            packs += [row[i:i + k] for i in range(0, len(row), k)]
        return packs


def _bid_key(bid: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in str(bid).split("_"))


def _attempts_of(record: RunRecord, bid: str) -> list[dict]:
    """The attempts that ran as Slurm job ``bid`` (several when it was requeued)."""
    return [a for a in record.attempts if str(a.get("backend_id")) == str(bid)]


def _slurm_outcome(job: Job, sdir: str, bid: str, sstate: str, record: RunRecord, backend) -> tuple[str, str]:
    """State and reason of a job whose latest submission ``bid`` Slurm no longer holds, judged by
    that submission only (an earlier attempt's record never decides). Writes the true end of the
    attempt into the run record when its own process could not (killed, timed out)."""
    mine = _attempts_of(record, bid)
    last = mine[-1] if mine else None
    sub_log = submitit_log(getattr(backend, "folder", os.path.join(sdir, "submitit")), bid)
    not_requeued = ""
    for ln in tail(sub_log, 40):
        if "Job not requeued because:" in ln:
            not_requeued = ln.split("Job not requeued because:", 1)[1].strip().rstrip(".")
    if last is None:
        if sstate == "CANCELLED" and job.deps:
            return BLOCKED, f"Slurm cancelled job {bid} before it started (its dependency failed)"
        if sstate in SLURM_ENDED:
            return FAILED, f"{job.id}: {SLURM_ENDED[sstate]} before it started (Slurm {sstate}, job {bid})"
        if sstate == "COMPLETED":
            return FAILED, f"{job.id}: Slurm job {bid} ended without running train.py; submitit log: {sub_log}"
        return PENDING, f"Slurm no longer knows job {bid} and it never started: rerun to submit it again"
    status = last.get("status")
    if status == FAILED and str(last.get("error", "")).startswith(DEPENDENCY_MISSING):
        return BLOCKED, f"its dependency did not finish ({last['error']}; Slurm job {bid})"
    if status == RUNNING and last.get("host") == os.uname().nodename and RunRecord(record.path, job.id).live():
        return RUNNING, ""
    if "too many times" in not_requeued or (sstate == "TIMEOUT"):
        limit = getattr(backend, "max_requeues", None)
        why = (f"time-outs exhausted: hit the time limit {len(mine)} times"
               + (f" (--max-requeues {limit})" if limit is not None else "") + "; raise --time")
    elif sstate in SLURM_ENDED and sstate != "FAILED":
        why = f"{SLURM_ENDED[sstate]} (Slurm {sstate}, job {bid})"
        if last.get("rc") is not None:
            why += f"; train.py stopped with exit code {last.get('rc')}"
    elif status == FAILED:
        why = last.get("error") or f"exit code {last.get('rc')}"
        why = why if why.startswith("train.py") or why.startswith("dependency") else f"train.py failed ({why})"
    elif sstate in ("UNKNOWN", "") and status in (RUNNING, REQUEUED, INTERRUPTED):
        why = f"stopped without finishing (Slurm no longer knows job {bid}); it runs again when rerun"
    else:
        why = f"ended without results.json (Slurm {sstate or 'state unknown'}, job {bid}, last attempt {status})"
    if status != FAILED or last.get("error") != why:
        fields = {"status": FAILED, "error": why, "slurm_state": sstate}
        if not last.get("end"):
            fields["end"] = time.time()
        _update_attempt(record, last, fields)
    return FAILED, f"{job.id}: {why}; log: {last.get('log')}"


def _update_attempt(record: RunRecord, attempt: dict, fields: dict) -> None:
    fresh = RunRecord(record.path, record.data.get("id", ""))
    for a in fresh.attempts:
        if a.get("start") == attempt.get("start") and a.get("backend_id") == attempt.get("backend_id"):
            a.update(fields)
            fresh.save()
            return


def observe(jobs: Sequence[Job], sdir: str, submissions: dict[str, str], backend=None) -> dict[str, tuple[str, str]]:
    """Where each job stands now, from the disk (results.json, the run records, the lock of a
    running train.py) and, for Slurm jobs, Slurm itself (``squeue``, ``sacct`` when it answers).
    A Slurm job is judged by its latest submission only. Used by ``--status`` and while following."""
    by_id = {j.id: j for j in jobs}
    slurm = backend is not None and getattr(backend, "follows_dependencies", False)
    slurm_states: dict[str, str] = {}
    if slurm:
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
        bid = submissions.get(job.id)
        if slurm and bid:
            sstate = slurm_states.get(bid, "UNKNOWN")
            if sstate in SLURM_ACTIVE:
                mine = _attempts_of(record, bid)
                running = sstate in SLURM_RUNNING and not (mine and mine[-1].get("status") == REQUEUED)
                out[job.id] = (RUNNING if running else QUEUED, f"Slurm {sstate} (job {bid})")
            else:
                out[job.id] = _slurm_outcome(job, sdir, bid, sstate, record, backend)
            continue
        last = record.last or {}
        holder = lock_holder(job.dir)
        if holder or record.live():
            out[job.id] = (RUNNING, holder or "")
        elif last.get("status") == FAILED:
            error = in_use_by(sdir, job) or last.get("error") or f"exit code {last.get('rc')}"
            out[job.id] = (FAILED, f"{job.id}: {error}; log: {last.get('log')}")
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
    busy = {jid: why for jid in failed if (why := in_use_by(sdir, by_id[jid]))}
    if busy:
        print(f"In use by another sweep ({len(busy)}; not run here){RERUN_WHEN_FREE}:", file=stream)
        for jid, why in busy.items():
            print(f"  {jid}: {why}", file=stream)
    failed = [jid for jid in failed if jid not in busy]
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
    elif result.broken or not result.healthy:
        print("Incomplete: rerun the same command to run what is missing or failed.", file=stream)
    else:
        active = sum(1 for s in result.statuses.values() if s in (QUEUED, RUNNING, PENDING))
        print(f"Running: {active} jobs queued or running. Follow with --status (or the same command, which "
              "submits nothing that is still queued or running).", file=stream)


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
