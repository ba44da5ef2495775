"""What keeps a run folder consistent: one writer at a time, resume only with the same settings.

* ``OutputLock(directory)``: an exclusive ``fcntl`` lock on ``<directory>/.lock`` for the life of
  the run (the file holds the owner's PID and host; it is removed at the end). A second run into
  the folder stops at once with ``OutputLockedError`` naming that PID; the kernel drops the lock
  when its owner dies, so a killed run never leaves a stale lock behind (its file is reused).
* ``run_settings(cfg)``: the config as ``{"KEY.PATH": repr(value)}`` minus the keys that cannot
  change a result (output and data locations, printing, checkpoint bookkeeping, the exact
  speed-up switches). Checkpoints store it; ``settings_differences`` lists what a resume would
  change, and the engine refuses such a resume (``ResumeMismatchError``).
* ``remove_temp_files(directory)``: the hidden ``.<name>.XXXX.tmp`` files an interrupted atomic
  write leaves (only ever called while holding the lock; never inside another run's folder).
"""
from __future__ import annotations

import os
import socket
from typing import Iterable, Mapping, Optional

from dassl.utils.errors import OutputLockedError

LOCK_FILE = ".lock"
# Keys (or key prefixes ending with ".") that change no result of a run.
IGNORED_KEYS = (
    "OUTPUT_DIR", "RESUME", "DATASET.ROOT", "VERBOSE", "USE_CUDA", "DATALOADER.NUM_WORKERS",
    "DATALOADER.TEST.BATCH_SIZE", "TRAIN.PRINT_FREQ", "TRAIN.CHECKPOINT_FREQ", "TRAIN.SAVE_EVERY_EPOCH",
    "TRAIN.KEEP_ALL_CHECKPOINTS", "TEST.", "DATASET.CHECK_IMAGES", "DATALOADER.CACHE_TEST",
    "DATALOADER.CACHE_TRAIN", "DATALOADER.CACHE_DIR",
)
IGNORED_SUFFIXES = (".TRUNCATE_TEXT", ".CACHE_TEXT", ".SHARED_PREFIX")


class OutputLock:
    """Exclusive lock on an output folder (see the module docstring); a context manager."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, LOCK_FILE)
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "an unknown process"
            os.close(fd)
            raise OutputLockedError(
                f"{os.path.dirname(self.path)} is in use by {holder}: another run is writing there. "
                "Wait for it to finish (rerun this command then: it resumes or skips), or choose "
                "another --output-dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"PID {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file (so finished output trees hold only the run's files), then drop
        the lock by closing it."""
        if self._fd is not None:
            try:
                os.remove(self.path)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _flatten(node, prefix: str = "") -> Iterable[tuple[str, object]]:
    for key in sorted(node):
        value = node[key]
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, full + ".")
        else:
            yield full, value


def _ignored(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in IGNORED_KEYS) or \
        key.endswith(IGNORED_SUFFIXES)


def run_settings(cfg) -> dict[str, str]:
    """``{"KEY.PATH": repr(value)}`` of every key that can change the run's results."""
    return {k: repr(v) for k, v in _flatten(cfg) if not _ignored(k)}


def new_default_keys(stored: Mapping[str, str], current: Mapping[str, str],
                     defaults: Mapping[str, str]) -> list[str]:
    """Keys absent from ``stored`` whose value in ``current`` is their default: keys added to the
    code after the checkpoint was written, which leave the run as it was."""
    return sorted(k for k in current if k not in stored and not _ignored(k) and defaults.get(k) == current[k])


def settings_differences(stored: Mapping[str, str], current: Mapping[str, str],
                         defaults: Optional[Mapping[str, str]] = None) -> list[str]:
    """``"KEY: stored -> current"`` for every key whose value differs (or exists on one side only);
    with ``defaults``, a key only ``current`` has is no difference when it holds its default."""
    added = set(new_default_keys(stored, current, defaults)) if defaults else set()
    lines = []
    for key in sorted(set(stored) | set(current)):
        if _ignored(key) or key in added:
            continue
        old, new = stored.get(key, "(absent)"), current.get(key, "(absent)")
        if old != new:
            lines.append(f"{key}: {old} -> {new}")
    return lines


def is_run_folder(directory: str) -> bool:
    """Whether ``directory`` holds a run of its own (its lock, config or log)."""
    return any(os.path.exists(os.path.join(directory, name)) for name in (LOCK_FILE, "config.yaml", "log.txt"))


def remove_temp_files(directory: str) -> list[str]:
    """Delete ``.<name>.XXXX.tmp`` files in ``directory`` and its sub-folders; return them.

    Sub-folders that are runs of their own (``is_run_folder``: a run nested under this one's
    ``--output-dir``, possibly live) are left alone: their temporary files are not ours."""
    removed = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if not is_run_folder(os.path.join(root, d))]
        for name in files:
            if name.startswith(".") and name.endswith(".tmp"):
                path = os.path.join(root, name)
                os.remove(path)
                removed.append(path)
    return removed
