"""Pre-flight checks of the engine's config keys (``OPTIM.*``, ``DATALOADER.*``, ``DATASET.*``,
``TRAIN.*``, ``TEST.*``) and, through ``check_config``, of the trainer's own keys.

yacs refuses unknown keys and wrong types; these checks refuse what yacs cannot (a negative LR, a
misspelt optimizer or scheduler, a batch size of 0, ``MAX_EPOCH -2``), within a second and before
any data, backbone or run record is touched, with one message naming the key, the value and what is
allowed (``ConfigError``). The same function serves ``train.py`` and the sweep's pre-check, so a
sweep never starts jobs that would fail on their first line.
"""
from __future__ import annotations

from typing import Sequence

from dassl.config import ConfigError

FINAL_MODELS = ("last_step", "best_val")
TEST_SPLITS = ("val", "test")
SUBSAMPLES = ("all", "base", "new")
IMAGE_CHECKS = ("header", "full", "off")


def fail(key: str, value, allowed: str) -> None:
    """Raise the one-line error for ``key`` = ``value``."""
    raise ConfigError(f"{key} = {value!r} is not allowed: {allowed}")


def check_choice(node, prefix: str, name: str, choices: Sequence) -> None:
    value = node[name]
    if value not in choices:
        fail(f"{prefix}.{name}", value, "choose one of " + ", ".join(repr(c) for c in choices))


def check_range(node, prefix: str, name: str, low: float | None = None,
                high: float | None = None) -> None:
    """``low <= value <= high`` (either bound optional)."""
    value = node[name]
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = (f"between {low} and {high}" if low is not None and high is not None
                  else f">= {low}" if low is not None else f"<= {high}")
        fail(f"{prefix}.{name}", value, f"it must be {bounds}")


def check_whole(node, prefix: str, name: str, low: int) -> None:
    """A whole number ``>= low`` (``True`` and ``2.5`` are not)."""
    value = node[name]
    if isinstance(value, bool) or not isinstance(value, int):
        fail(f"{prefix}.{name}", value, f"it must be a whole number >= {low}")
    check_range(node, prefix, name, low=low)


def check_engine_config(cfg) -> None:
    """The engine's numeric and choice keys (see the module docstring)."""
    from dassl.optim import AVAI_OPTIMS, AVAI_SCHEDS
    from dassl.optim.lr_scheduler import AVAI_WARMUPS

    optim = cfg.OPTIM
    check_choice(optim, "OPTIM", "NAME", AVAI_OPTIMS)
    check_choice(optim, "OPTIM", "LR_SCHEDULER", AVAI_SCHEDS)
    if optim.LR <= 0:
        fail("OPTIM.LR", optim.LR, "it must be > 0")
    for name in ("WEIGHT_DECAY", "MOMENTUM", "WARMUP_CONS_LR", "WARMUP_MIN_LR"):
        check_range(optim, "OPTIM", name, low=0.0)
    check_whole(optim, "OPTIM", "MAX_EPOCH", 1)
    check_whole(optim, "OPTIM", "WARMUP_EPOCH", -1)
    if optim.WARMUP_EPOCH > 0:
        check_choice(optim, "OPTIM", "WARMUP_TYPE", AVAI_WARMUPS)
    if optim.GAMMA <= 0:
        fail("OPTIM.GAMMA", optim.GAMMA, "it must be > 0")
    loader = cfg.DATALOADER
    check_whole(loader, "DATALOADER", "NUM_WORKERS", 0)
    check_whole(loader.TRAIN_X, "DATALOADER.TRAIN_X", "BATCH_SIZE", 1)
    check_whole(loader.TEST, "DATALOADER.TEST", "BATCH_SIZE", 1)
    check_whole(loader, "DATALOADER", "K_TRANSFORMS", 1)
    dataset = cfg.DATASET
    check_whole(dataset, "DATASET", "NUM_SHOTS", -1)
    check_choice(dataset, "DATASET", "SUBSAMPLE_CLASSES", SUBSAMPLES)
    check_choice(dataset, "DATASET", "CHECK_IMAGES", IMAGE_CHECKS)
    check_range(dataset, "DATASET", "VAL_PERCENT", low=0.0, high=1.0)
    check_whole(cfg.TRAIN, "TRAIN", "CHECKPOINT_FREQ", 0)
    check_choice(cfg.TEST, "TEST", "FINAL_MODEL", FINAL_MODELS)
    check_choice(cfg.TEST, "TEST", "SPLIT", TEST_SPLITS)


def check_config(cfg) -> None:
    """Every pre-flight check of a merged config: the engine's keys, then those of the trainer
    ``TRAINER.NAME`` names (its ``check_config(cfg, node, prefix)`` class method, when it has a
    config node). ``ConfigError`` on the first bad value; nothing is loaded or written."""
    from dassl.engine import TRAINER_REGISTRY

    check_engine_config(cfg)
    name = cfg.TRAINER.NAME
    trainer = TRAINER_REGISTRY.get(name) if name in TRAINER_REGISTRY else None
    node_name = getattr(trainer, "config_node", "")
    if node_name and node_name in cfg.TRAINER and hasattr(trainer, "check_config"):
        trainer.check_config(cfg, cfg.TRAINER[node_name], f"TRAINER.{node_name}")
