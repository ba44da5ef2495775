"""The machine-readable ``results.json`` written next to ``log.txt`` by the final test.

Schema (one JSON object):

==========================  =========================================================================
key                         value
==========================  =========================================================================
split                       "test" or "val": the split that was evaluated
accuracy                    top-1 accuracy in percent (float, full precision)
error_rate                  100 - accuracy
macro_f1                    macro-averaged F1 over the labels present, in percent
perclass_accuracy           mean of per-class accuracies (only with TEST.PER_CLASS_RESULT)
total, correct              number of evaluated images / of correct predictions (int or null)
num_classes                 number of classes of the dataset the model was evaluated on
trainer, dataset            cfg.TRAINER.NAME, cfg.DATASET.NAME
subsample_classes           cfg.DATASET.SUBSAMPLE_CLASSES ("all", "base" or "new")
num_shots                   cfg.DATASET.NUM_SHOTS (-1: all images)
seed                        cfg.SEED
backbone                    cfg.MODEL.BACKBONE.NAME
epoch                       training epochs behind the evaluated weights (null when unknown)
num_trainable_params        elements of the parameters with requires_grad in the registered models
output_dir                  cfg.OUTPUT_DIR
git_commit                  ``git rev-parse HEAD`` of the repository holding the code (null: no git/repo)
git_dirty                   whether tracked files differ from that commit (null when git_commit is null)
versions                    {"python": ..., "torch": ..., "torchvision": ...} (null for one not installed)
command                     the run's command line, shell-quoted (null when not started from train.py)
==========================  =========================================================================

The provenance fields (``git_*``, ``versions``) are computed once per process and cached
(:func:`provenance`); ``train.py`` computes them before building the trainer, so they describe the
code that was loaded at start, not a checkout made while the run was training.
"""
from __future__ import annotations

import functools
import os
import platform
import re
import subprocess
from typing import Any, Iterable, Mapping, Optional

import torch
import torch.nn as nn

from dassl.utils.tools import write_json

RESULTS_FILE = "results.json"
# The folder that contains ``dassl/``: the repository whose commit is recorded.
CODE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")


def _git(*args: str) -> str | None:
    """stdout of ``git args`` run in :data:`CODE_ROOT`, or None when git fails or is missing."""
    try:
        proc = subprocess.run(
            ["git", *args], cwd=CODE_ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _package_version(name: str) -> str | None:
    try:
        module = __import__(name)
    except ImportError:
        return None
    version = getattr(module, "__version__", None)
    return None if version is None else str(version)


@functools.cache
def provenance() -> dict[str, Any]:
    """``git_commit``, ``git_dirty`` and ``versions``, computed once per process (the cached dict
    is shared: copy it before changing it)."""
    record: dict[str, Any] = {"git_commit": None, "git_dirty": None}
    head = _git("rev-parse", "HEAD")
    commit = head.strip() if head is not None else ""
    if _SHA_RE.match(commit):
        record["git_commit"] = commit
        status = _git("status", "--porcelain", "--untracked-files=no")
        if status is not None:
            record["git_dirty"] = bool(status.strip())
    record["versions"] = {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": _package_version("torchvision"),
    }
    return record


def code_version() -> str:
    """The code's git commit (``+dirty`` with uncommitted changes), or ``unknown`` outside git:
    recorded in every checkpoint, so a refused resume can say which code wrote it."""
    record = provenance()
    commit = record.get("git_commit")
    if not commit:
        return "unknown"
    return commit[:12] + ("+dirty" if record.get("git_dirty") else "")


def count_trainable_params(models: Iterable[nn.Module]) -> int:
    """Elements of the distinct parameters with ``requires_grad`` over ``models``."""
    seen: set[int] = set()
    total = 0
    for model in models:
        for param in model.parameters():
            if param.requires_grad and id(param) not in seen:
                seen.add(id(param))
                total += param.numel()
    return total


def build_results(
    cfg,
    split: str,
    metrics: Mapping[str, float],
    *,
    total: Optional[int],
    correct: Optional[int],
    num_classes: int,
    epoch: Optional[int],
    num_trainable_params: int,
    command: str | None = None,
) -> dict[str, Any]:
    """The results record described in the module docstring."""
    record: dict[str, Any] = {"split": split}
    record.update({key: float(value) for key, value in metrics.items()})
    record.update(
        {
            "total": total,
            "correct": correct,
            "num_classes": int(num_classes),
            "trainer": cfg.TRAINER.NAME,
            "dataset": cfg.DATASET.NAME,
            "subsample_classes": cfg.DATASET.SUBSAMPLE_CLASSES,
            "num_shots": int(cfg.DATASET.NUM_SHOTS),
            "seed": int(cfg.SEED),
            "backbone": cfg.MODEL.BACKBONE.NAME,
            "epoch": epoch,
            "num_trainable_params": int(num_trainable_params),
            "output_dir": cfg.OUTPUT_DIR,
        }
    )
    info = provenance()
    record.update(
        {
            "git_commit": info["git_commit"],
            "git_dirty": info["git_dirty"],
            "versions": dict(info["versions"]),
            "command": command,
        }
    )
    return record


def write_results(record: Mapping[str, Any], output_dir: str) -> str:
    """Write ``record`` atomically to ``output_dir/results.json``; return the path."""
    fpath = os.path.join(output_dir, RESULTS_FILE)
    write_json(dict(record), fpath)
    return fpath
