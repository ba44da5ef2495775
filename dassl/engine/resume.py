"""Which checkpoint a rerun continues from, and whether it may.

A run folder holds, per registered model, ``<name>/model.pth.tar-<epoch>`` files (each one complete
unit: weights, optimizer, scheduler, RNG, best-so-far value and whatever the trainer adds, written
atomically) and the ``<name>/checkpoint`` pointer that upstream tools read. The pointer moves only
after its file is complete, but a kill, a full disk or a hand edit can still leave a pointer to a
deleted file, an empty pointer or a damaged file. So a resume does not trust the pointer: it takes
the newest epoch that every model has *and* that reads back, names each newer one it skips and why,
and stops with one message only when nothing is usable (rather than quietly training from scratch
over the user's files).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

from dassl.utils.errors import ResumeMismatchError
from dassl.utils.torchtools import POINTER_FILE, CheckpointReadError, epoch_files, load_checkpoint

from .run_guard import new_default_keys, run_settings, settings_differences

# ``(name, path, checkpoint) -> reason`` it cannot be resumed from (None: it can).
CompletenessCheck = Callable[[str, str, dict], Optional[str]]


@dataclass
class ResumePoint:
    """The epoch to continue from, each model's file and loaded checkpoint, and the lines saying
    which newer files were passed over."""

    epoch: int
    paths: dict[str, str]
    checkpoints: dict[str, dict]
    skipped: list[str] = field(default_factory=list)


def checkpoint_names(directory: str) -> list[str]:
    """The sub-folders of ``directory`` that hold a pointer or epoch checkpoints (sorted)."""
    if not os.path.isdir(directory):
        return []
    return sorted(name for name in os.listdir(directory)
                  if os.path.isfile(os.path.join(directory, name, POINTER_FILE)) or _model_epochs(
                      os.path.join(directory, name)))


def _model_epochs(fdir: str) -> dict[int, str]:
    return {epoch: path for epoch, paths in epoch_files(fdir).items() for path in paths
            if os.path.basename(path).startswith("model.pth.tar-")}


def _pointer_problem(fdir: str) -> Optional[str]:
    pointer = os.path.join(fdir, POINTER_FILE)
    if not os.path.isfile(pointer):
        return None
    with open(pointer, errors="replace") as f:
        target = f.readline().strip()
    if not target:
        return f'the pointer "{pointer}" is empty'
    if not os.path.isfile(os.path.join(fdir, target)):
        return f'the pointer "{pointer}" names {target}, which does not exist'
    return None


def find_resume_point(directory: str, names: list[str],
                      check: Optional[CompletenessCheck] = None) -> Optional[ResumePoint]:
    """The newest epoch whose checkpoint every model in ``names`` has, readable and complete
    (``check``); None when none of them has any checkpoint or pointer (a fresh run).

    ``CheckpointReadError`` when checkpoints exist but none can be used: its message lists each one
    and why."""
    fdirs = {name: os.path.join(directory, name) for name in names}
    epochs = {name: _model_epochs(fdir) for name, fdir in fdirs.items()}
    skipped = [p for p in (_pointer_problem(fdir) for fdir in fdirs.values()) if p]
    if not any(epochs.values()) and not skipped:
        return None
    every = set.intersection(*(set(e) for e in epochs.values())) if epochs else set()
    for epoch in sorted(set().union(*(set(e) for e in epochs.values())) - every, reverse=True):
        have = [n for n in names if epoch in epochs[n]]
        skipped.append(f"epoch {epoch} was saved for {', '.join(have)} only (its save was interrupted)")
    for epoch in sorted(every, reverse=True):
        loaded: dict[str, dict] = {}
        for name in names:
            path = epochs[name][epoch]
            try:
                checkpoint = load_checkpoint(path)
            except CheckpointReadError as exc:
                skipped.append(str(exc))
                break
            reason = check(name, path, checkpoint) if check is not None else None
            if reason:
                skipped.append(f'Checkpoint "{path}" {reason}')
                break
            loaded[name] = checkpoint
        else:
            return ResumePoint(epoch, {n: epochs[n][epoch] for n in names}, loaded, skipped)
    raise CheckpointReadError(
        f"No usable checkpoint to resume in {directory}: " + "; ".join(skipped) + ". Restore the files "
        "from a copy, or move them away (or choose another --output-dir) to train from scratch")


def check_resume_settings(path: str, checkpoint: dict, current: Optional[Mapping[str, str]],
                          defaults: Mapping[str, str]) -> list[str]:
    """Refuse (``ResumeMismatchError``) to continue ``checkpoint`` (read from ``path``) with other
    settings; return the note lines to print (keys added to the code since the checkpoint was
    written, whose values here are their defaults). Checkpoints without settings are accepted."""
    stored = checkpoint.get("run_settings")
    if current is None or stored is None:
        return []
    version = checkpoint.get("code_version") or "a version that did not record itself"
    diffs = settings_differences(stored, current, defaults)
    if diffs:
        shown = "\n  ".join(diffs[:15]) + (f"\n  ... and {len(diffs) - 15} more" if len(diffs) > 15 else "")
        raise ResumeMismatchError(
            f"{path} was written by a run with other settings (code version {version}), so this run would "
            f"not continue it:\n  {shown}\nRerun with the original values to resume it, or use another "
            "--output-dir for these settings")
    added = new_default_keys(stored, current, defaults)
    if not added:
        return []
    return [f"Note: {path} was written by {version}, before the keys {', '.join(added)} existed; "
            "this run has their defaults, so it continues that run"]


def check_before_writing(cfg, default_cfg) -> None:
    """What a rerun into ``cfg.OUTPUT_DIR`` (or from ``cfg.RESUME``) would continue must allow it,
    checked before the run writes anything (``config.yaml``, a log): a refused rerun leaves the
    folder as it was. ``default_cfg`` is the config with every key at its default."""
    directory = cfg.RESUME or cfg.OUTPUT_DIR
    names = checkpoint_names(directory) if directory else []
    point = find_resume_point(directory, names) if names else None
    if point is not None:
        first = names[0]
        check_resume_settings(point.paths[first], point.checkpoints[first], run_settings(cfg),
                              run_settings(default_cfg))
