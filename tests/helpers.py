"""Shared helpers for the dataset and pipeline tests: a minimal dataset config, file writers and
the optional shared data folder (``$MMLOP_SHARED_DATA``, default ``<repo>/../shared/data``)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from yacs.config import CfgNode as CN

REPO = Path(__file__).resolve().parents[1]
# CoOp's split files, a slice of real images and upstream fixtures; absent in a user's clone, so the
# tests that need them skip. The environment variable MMLOP_SHARED_DATA points the tests elsewhere.
SHARED_DATA_ENV = "MMLOP_SHARED_DATA"
SHARED_DATA = Path(os.path.expanduser(os.environ.get(SHARED_DATA_ENV) or str(REPO.parent / "shared" / "data")))
SHARED_DATA_HINT = (
    f"set {SHARED_DATA_ENV} to a folder with coop_splits/, real/ and upstream_fixtures/ to run this test"
)


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


def shared_data_skip_reason(path) -> str:
    """The skip reason for a missing ``path`` under ``SHARED_DATA``: what is absent, how to enable the test."""
    return f"{path} is absent: {SHARED_DATA_HINT}"


def skip_unless_dir(path: Path) -> None:
    """Skip the calling test when the folder ``path`` (under ``SHARED_DATA``) is absent."""
    if not Path(path).is_dir():
        pytest.skip(shared_data_skip_reason(path))
