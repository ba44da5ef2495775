"""``UserError``: a failure caused by the run's input (paths, config, data, checkpoints, settings).

``train.py`` prints such an error as one message (it names the file or key and says what to do)
on the terminal and in ``log.txt``, without a traceback unless ``--debug`` or ``MMLOP_DEBUG=1``
is given; any other exception is a bug and keeps its full traceback (also written to
``log.txt``). The error classes of the config, data and checkpoint code derive from it as well as
from the built-in type callers already catch (``KeyError``, ``FileNotFoundError``, ...).
"""
from __future__ import annotations


class UserError(Exception):
    """An error whose message alone tells the user what is wrong and how to fix it."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ModelNotFoundError(UserError, FileNotFoundError):
    """``--model-dir``/``--load-epoch`` name a checkpoint that does not exist."""


class CheckpointMismatchError(UserError, KeyError):
    """A checkpoint does not fit the model built from this run's config (other trainer keys)."""


class NonFiniteLossError(UserError, FloatingPointError):
    """The training loss became NaN or infinite."""


class OutputDirError(UserError, OSError):
    """The output directory cannot be created or written."""


class OutputLockedError(UserError, RuntimeError):
    """Another process is writing into the same output directory."""


class ResumeMismatchError(UserError, ValueError):
    """The checkpoint to resume was written by a run with other settings."""
