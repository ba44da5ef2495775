"""Shared helpers for the dataset and pipeline tests: a minimal dataset config, file writers and
the optional ``../shared/data`` folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from yacs.config import CfgNode as CN

REPO = Path(__file__).resolve().parents[1]
# CoOp's split files and a slice of real images; absent in a user's clone, so tests skip.
SHARED_DATA = REPO.parent / "shared" / "data"


def make_cfg(root, name: str, shots: int = 0, seed: int = 1, subsample: str = "all") -> CN:
    """The config keys a dataset loader reads (``DATASET.*``, ``SEED``, ``VERBOSE`` False)."""
    cfg = CN()
    cfg.SEED = seed
    cfg.VERBOSE = False
    cfg.DATASET = CN()
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NAME = name
    cfg.DATASET.NUM_SHOTS = shots
    cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    return cfg


def touch(path) -> None:
    """An empty file at ``path`` (parent folders created)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").close()


def write(path, text: str) -> None:
    """``text`` into ``path`` (parent folders created)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def skip_unless_dir(path: Path) -> None:
    """Skip the calling test when the folder ``path`` (under ``SHARED_DATA``) is absent."""
    if not Path(path).is_dir():
        pytest.skip(f"{path} is absent")
