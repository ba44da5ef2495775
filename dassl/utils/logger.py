"""``setup_logger``: mirror ``sys.stdout`` into ``<output>/log.txt``, as Dassl does, undoably."""
from __future__ import annotations

import os
import sys
import time
from typing import IO, Optional

from .tools import mkdir_if_missing


class Logger:
    """A stdout tee: every write goes to the console stream and to the log file, flushed per line.

    ``close()`` restores the stream that was ``sys.stdout`` when the tee was installed and closes
    the file, so in-process callers (tests, notebooks) do not leak a redirected stdout.
    """

    def __init__(self, fpath: str, console: Optional[IO[str]] = None) -> None:
        self.console = console if console is not None else sys.stdout
        self.fpath = fpath
        mkdir_if_missing(os.path.dirname(os.path.abspath(fpath)))
        self.file: Optional[IO[str]] = open(fpath, "w", buffering=1)

    def write(self, msg: str) -> int:
        self.console.write(msg)
        if self.file is not None:
            self.file.write(msg)
            if "\n" in msg:
                self.file.flush()
        return len(msg)

    def log_only(self, msg: str) -> None:
        """Write ``msg`` to the log file only (long records the terminal does not need)."""
        if self.file is not None:
            self.file.write(msg)
            self.file.flush()

    def flush(self) -> None:
        self.console.flush()
        if self.file is not None:
            self.file.flush()

    def isatty(self) -> bool:
        return bool(getattr(self.console, "isatty", lambda: False)())

    @property
    def encoding(self) -> str:
        return getattr(self.console, "encoding", "utf-8")

    def fileno(self) -> int:
        return self.console.fileno()

    def close(self) -> None:
        """Stop mirroring: restore ``sys.stdout`` (if it is this tee) and close the log file."""
        if sys.stdout is self:
            sys.stdout = self.console
        if self.file is not None:
            self.file.close()
            self.file = None

    def __enter__(self) -> Logger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _log_path(output: str) -> str:
    if output.endswith(".txt") or output.endswith(".log"):
        fpath = output
    else:
        fpath = os.path.join(output, "log.txt")
    if os.path.exists(fpath):
        stamped = fpath + time.strftime("-%Y-%m-%d-%H-%M-%S")
        candidate, n = stamped, 1
        while os.path.exists(candidate):
            candidate = f"{stamped}-{n}"
            n += 1
        fpath = candidate
    return fpath


def setup_logger(output: Optional[str] = None) -> Optional[Logger]:
    """Mirror stdout into ``output/log.txt`` (or ``output`` itself if it ends in .txt/.log).

    If that file exists, the new log is written next to it with ``-YYYY-MM-DD-HH-MM-SS`` appended
    (Dassl's rule), so earlier logs are never overwritten. Returns the installed :class:`Logger`
    (call ``.close()`` to undo), or None when ``output`` is None/empty.
    """
    if not output:
        return None
    current = sys.stdout
    if isinstance(current, Logger):
        current.close()
        current = sys.stdout
    logger = Logger(_log_path(output), console=current)
    sys.stdout = logger
    return logger
