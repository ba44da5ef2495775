"""What a sweep knows on disk, so that a rerun, ``--status`` and another machine see the same thing.

``<output>/.sweep/<name>/`` (hidden, so ``parse_test_res.py`` and the tables never read it) holds

* ``state.json``: the sweep (spec, backend, the job list with commands and dependencies, and the
  backend ids of submitted jobs), written atomically by the driver;
* ``runs/<job>.json``: one record per job, written atomically by the process that runs it (the
  driver's worker, a submitit job, a Slurm job): its attempts (host, PIDs, start, end, exit
  code), so durations, failures and live runs are known without the driver;
* ``logs/<job>.<n>.log``: what ``train.py`` printed in attempt n (one file per attempt), the latest
  linked from ``logs/<job>.log``;
* ``submitit/<job id>/``: submitit's own files (submission script, pickles, its logs);
* ``tables/``: the CSV and JSON tables.

Whether a job is finished is never taken from these files: a run is finished when its
``results.json`` exists (as for the scripts), and a finished run whose ``results.json`` or
dependencies do not fit the job is reported as inconsistent instead of being reused.
"""
from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

from .jobs import Job

STATE_DIR = ".sweep"
STATE_FILE = "state.json"
LOCK_FILE = ".lock"            # the engine's output-folder lock (dassl/engine/run_guard.py)

# Job states shown by the driver and --status.
DONE, RUNNING, PENDING, FAILED, BLOCKED, INCONSISTENT, QUEUED = (
    "done", "running", "pending", "failed", "blocked", "inconsistent", "queued")


def state_dir(output_abs: str, name: str) -> str:
    return os.path.join(output_abs, STATE_DIR, name)


def unwritable(output_abs: str) -> Optional[str]:
    """Why a sweep could not write under ``output_abs`` (its state, the job folders), or None.
    Asked of the nearest folder that exists (nothing is created to find out), so a read-only
    output root is one message before any job starts instead of a traceback half-way."""
    path = output_abs
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    if not os.path.isdir(path):
        return f"{path} is not a folder"
    if not os.access(path, os.W_OK | os.X_OK):
        try:
            read_only = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        return f"{path} is on a read-only file system" if read_only else f"{path} is not writable by this user"
    return None


def atomic_write_json(path: str, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file and a rename."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.{time.monotonic_ns()}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: str) -> Optional[Any]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def run_record_path(sdir: str, job: Job) -> str:
    return os.path.join(sdir, "runs", job.slug + ".json")


def log_path(sdir: str, job: Job) -> str:
    """The job's usual log: a link to the log of its latest attempt."""
    return os.path.join(sdir, "logs", job.slug + ".log")


def new_attempt_log(sdir: str, job: Job) -> str:
    """A fresh log file for one attempt (``logs/<job>.<n>.log``, never shared by two attempts, even
    two running at once), linked from :func:`log_path`. A log of the older layout (every attempt
    appended to ``logs/<job>.log``) is kept as ``logs/<job>.0.log``."""
    link = log_path(sdir, job)
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if os.path.isfile(link) and not os.path.islink(link):
        os.replace(link, os.path.join(os.path.dirname(link), f"{job.slug}.0.log"))
    n = 1
    while True:
        path = os.path.join(os.path.dirname(link), f"{job.slug}.{n}.log")
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            break
        except FileExistsError:
            n += 1
    tmp = f"{link}.{os.getpid()}.tmp"
    os.symlink(os.path.basename(path), tmp)
    os.replace(tmp, link)
    return path


def hostname() -> str:
    return socket.gethostname()


def pid_alive(pid: Optional[int]) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, ValueError):
        return False
    # A zombie (finished, not yet reaped by its parent) is not running.
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def lock_holder(directory: str) -> Optional[str]:
    """``"PID n on host"`` of a live ``train.py`` holding the output-folder lock on this machine,
    else None (no lock file, a dead holder, or a holder on another machine that cannot be checked)."""
    try:
        with open(os.path.join(directory, LOCK_FILE)) as f:
            text = f.read(200).strip()
    except OSError:
        return None
    parts = text.split()
    if len(parts) >= 4 and parts[0] == "PID" and parts[2] == "on":
        pid, host = parts[1], parts[3]
        if host == hostname() and pid.isdigit() and pid_alive(int(pid)):
            return text
    return None


# train.py's refusal when another process holds the folder lock (dassl/engine/run_guard.py).
_LOCKED = re.compile(r"is in use by PID (\d+) on (\S+?): another run is writing there")


def in_use_by(sdir: str, job: Job) -> Optional[str]:
    """``"in use by another sweep NAME (PID n, host)"`` when the job's last attempt stopped because
    another process holds its folder lock (``"another run"`` when no other sweep under the same
    output root records that process, e.g. a ``train.py`` started by hand), else None. Such a job
    did not fail: another sweep writes the same folder (possibly from another machine, where its
    lock cannot be checked from here), so it is reported as that, not as "exit code 1"."""
    match = next((m for m in map(_LOCKED.search, reversed(tail(log_path(sdir, job), 15))) if m), None)
    if match is None:
        return None
    pid, host = match.group(1), match.group(2)
    root = os.path.dirname(sdir)
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        other = os.path.join(root, name)
        if other == sdir:
            continue
        for attempt in RunRecord(run_record_path(other, job), job.id).attempts:
            if attempt.get("host") == host and str(pid) in (str(attempt.get("child_pid")), str(attempt.get("pid"))):
                return f"in use by another sweep {name} (PID {pid}, {host})"
    return f"in use by another run (PID {pid}, {host})"


class RunRecord:
    """``runs/<job>.json``: the attempts at one job, written by whoever runs it."""

    def __init__(self, path: str, job_id: str) -> None:
        self.path = path
        self.data = read_json(path) or {"id": job_id, "attempts": []}
        self.data.setdefault("attempts", [])

    @property
    def attempts(self) -> list[dict]:
        return self.data["attempts"]

    @property
    def last(self) -> Optional[dict]:
        return self.attempts[-1] if self.attempts else None

    def start(self, log: str, backend_id: Optional[str] = None, command: Optional[str] = None) -> dict:
        attempt = {"status": RUNNING, "host": hostname(), "pid": os.getpid(), "child_pid": None,
                   "start": time.time(), "end": None, "rc": None, "backend_id": backend_id, "log": log,
                   "command": command}
        self.attempts.append(attempt)
        self.save()
        return attempt

    def update(self, **fields: Any) -> None:
        if self.last is not None:
            self.last.update(fields)
            self.save()

    def save(self) -> None:
        atomic_write_json(self.path, self.data)

    def live(self) -> bool:
        """Whether the last attempt still runs on this machine (its worker or train.py is alive)."""
        a = self.last
        if not a or a.get("status") != RUNNING or a.get("host") != hostname():
            return False
        return pid_alive(a.get("child_pid")) or (a.get("pid") != os.getpid() and pid_alive(a.get("pid")))

    def finished_seconds(self) -> Optional[float]:
        """Duration of the attempt that finished the job (the last one, when it succeeded)."""
        a = self.last
        if a and a.get("status") == DONE and a.get("end") and a.get("start"):
            return float(a["end"]) - float(a["start"])
        return None


@dataclass
class Assessment:
    """What the disk says about one job before anything runs."""

    state: str                      # DONE, PENDING, RUNNING (elsewhere), INCONSISTENT
    reason: str = ""


def check_results(job: Job, jobs: Mapping[str, Job]) -> Assessment:
    """DONE when ``results.json`` exists and fits the job (its recorded settings, its dependencies
    finished before it); INCONSISTENT with the reason otherwise; PENDING when there is none."""
    record = read_json(job.results_path)
    if record is None:
        if os.path.exists(job.results_path):
            return Assessment(INCONSISTENT, f"{job.results_path} is unreadable")
        return Assessment(PENDING)
    if not isinstance(record, dict):
        return Assessment(INCONSISTENT, f"{job.results_path} is not a results record")
    problems = []
    for key, value in job.expect:
        if key in record and record[key] != value:
            problems.append(f"results.json has {key} = {record[key]!r}, this job expects {value!r}")
    mtime = os.path.getmtime(job.results_path)
    for dep_id in job.deps:
        dep = jobs.get(dep_id)
        if dep is None:
            continue
        if not os.path.isfile(dep.results_path):
            problems.append(f"its training {dep.dir} has no results.json (unfinished or removed), so this "
                            "result was not made from a finished training")
        elif os.path.getmtime(dep.results_path) > mtime + 1e-6:
            problems.append(f"its training {dep.dir} finished after this result was written (the model "
                            "changed since)")
    if problems:
        return Assessment(INCONSISTENT, "; ".join(problems) + f". Remove {job.dir} to run it again.")
    return Assessment(DONE)


def assess(jobs: Iterable[Job], sdir: str) -> dict[str, Assessment]:
    """``check_results`` for every job, plus RUNNING for a job that a live process runs on this
    machine (a driver that was killed leaves its workers running: they are waited for, not
    started twice). A dependency that is not DONE makes a finished dependent INCONSISTENT."""
    jobs = list(jobs)
    by_id = {j.id: j for j in jobs}
    out: dict[str, Assessment] = {}
    for job in jobs:
        a = check_results(job, by_id)
        if a.state == PENDING:
            holder = lock_holder(job.dir)
            record = RunRecord(run_record_path(sdir, job), job.id)
            if holder or record.live():
                a = Assessment(RUNNING, holder or f"PID {record.last.get('child_pid') or record.last.get('pid')}")
        out[job.id] = a
    # A dependent whose dependency is itself inconsistent cannot be trusted either.
    for job in jobs:
        if out[job.id].state == DONE:
            bad = [d for d in job.deps if d in out and out[d].state == INCONSISTENT]
            if bad:
                out[job.id] = Assessment(INCONSISTENT, f"its training {by_id[bad[0]].dir} is inconsistent. "
                                                       f"Remove {job.dir} to run it again.")
    return out


def tail(path: Optional[str], lines: int = 12) -> list[str]:
    """The last ``lines`` non-empty lines of a text file (progress bars collapsed)."""
    if not path or not os.path.isfile(path):
        return []
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 64 * 1024))
        text = f.read().decode(errors="replace")
    out = [ln.rsplit("\r", 1)[-1].rstrip() for ln in text.splitlines()]
    return [ln for ln in out if ln.strip()][-lines:]
