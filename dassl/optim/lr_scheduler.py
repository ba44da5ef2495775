"""``build_lr_scheduler``: Dassl's per-epoch schedules (with warm-up) as a pure function of the epoch.

Epoch ``e`` (0-based, = ``scheduler.last_epoch``) gets, for each param group with base LR ``b``:

* warm-up (``WARMUP_EPOCH = W > 0``), for ``e < W``: ``constant`` -> ``WARMUP_CONS_LR``;
  ``linear`` -> ``WARMUP_MIN_LR`` at ``e = 0`` and ``b * e / W`` after;
* afterwards the main schedule at step ``s = e - W`` (``WARMUP_RECOUNT``) or ``s = e`` (not):
  ``cosine``: ``b * (1 + cos(pi * s / MAX_EPOCH)) / 2``; ``single_step``: ``b * GAMMA ** (s // STEP)``
  with ``STEP = STEPSIZE[-1]`` (or ``MAX_EPOCH`` if <= 0); ``multi_step``:
  ``b * GAMMA ** (number of milestones in STEPSIZE that are <= s)``.

For the CoOp recipe (cosine, W=1 constant 1e-5) this is Dassl's sequence: 1e-5, then the cosine
shifted by one epoch. The state dict holds only plain numbers, so checkpoints load with
``weights_only=True``, and a resumed run continues the schedule where it stopped.
"""
from __future__ import annotations

import bisect
import math
from typing import Sequence

import torch
from torch.optim.lr_scheduler import LRScheduler

AVAI_SCHEDS = ["single_step", "multi_step", "cosine"]
AVAI_WARMUPS = ["constant", "linear"]


def scheduled_lr(
    epoch: int,
    base_lr: float,
    *,
    scheduler: str,
    max_epoch: int,
    stepsize: Sequence[int] = (-1,),
    gamma: float = 0.1,
    warmup_epoch: int = -1,
    warmup_type: str = "linear",
    warmup_cons_lr: float = 1e-5,
    warmup_min_lr: float = 1e-5,
    warmup_recount: bool = True,
) -> float:
    """The learning rate of 0-based ``epoch`` for a group whose base LR is ``base_lr``."""
    if warmup_epoch > 0 and epoch < warmup_epoch:
        if warmup_type == "constant":
            return warmup_cons_lr
        if epoch == 0:
            return warmup_min_lr
        return base_lr * epoch / warmup_epoch
    step = epoch - warmup_epoch if (warmup_epoch > 0 and warmup_recount) else epoch
    if scheduler == "cosine":
        return base_lr * (1 + math.cos(math.pi * step / float(max_epoch))) / 2
    if scheduler == "single_step":
        size = stepsize[-1] if stepsize[-1] > 0 else max_epoch
        return base_lr * gamma ** (step // size)
    return base_lr * gamma ** bisect.bisect_right(sorted(stepsize), step)


class EpochLRScheduler(LRScheduler):
    """An ``LRScheduler`` whose LR is :func:`scheduled_lr` of ``last_epoch``; step it once per epoch."""

    def __init__(self, optimizer: torch.optim.Optimizer, last_epoch: int = -1, **schedule) -> None:
        self.schedule = dict(schedule)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [scheduled_lr(self.last_epoch, base_lr, **self.schedule) for base_lr in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()

    def state_dict(self) -> dict:
        """Plain values only: ``last_epoch``, ``base_lrs``, ``_step_count``, ``_last_lr``."""
        return {
            "last_epoch": int(self.last_epoch),
            "base_lrs": [float(v) for v in self.base_lrs],
            "_step_count": int(self._step_count),
            "_last_lr": [float(v) for v in self._last_lr],
        }

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the epoch counter and set each group's LR to the schedule's value for it.

        Also accepts the state of upstream Dassl's warm-up wrapper (trusted legacy checkpoints):
        only its epoch counter is used and the schedule itself comes from the config.
        """
        if "last_epoch" not in state_dict:
            raise ValueError(f"Scheduler state without 'last_epoch' (keys: {sorted(state_dict)})")
        if "successor" in state_dict:
            print("Note: legacy Dassl scheduler state; continuing the configured schedule at its epoch counter")
        self.last_epoch = int(state_dict["last_epoch"])
        base_lrs = state_dict.get("base_lrs")
        if isinstance(base_lrs, (list, tuple)) and len(base_lrs) == len(self.base_lrs):
            self.base_lrs = [float(v) for v in base_lrs]
        self._step_count = int(state_dict.get("_step_count", self.last_epoch + 1))
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = list(lrs)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, optim_cfg) -> EpochLRScheduler:
    """Scheduler for ``optim_cfg.LR_SCHEDULER`` (single_step, multi_step, cosine) and its warm-up."""
    name = optim_cfg.LR_SCHEDULER
    if name not in AVAI_SCHEDS:
        raise ValueError(f"scheduler must be one of {AVAI_SCHEDS}, but got {name}")
    stepsize = optim_cfg.STEPSIZE
    if isinstance(stepsize, int):
        stepsize = [stepsize]
    stepsize = [int(s) for s in stepsize]
    if name == "multi_step" and not stepsize:
        raise ValueError("OPTIM.STEPSIZE must list the milestone epochs for multi_step")
    if name == "single_step" and not stepsize:
        stepsize = [-1]
    warmup_epoch = int(optim_cfg.WARMUP_EPOCH)
    if warmup_epoch > 0 and optim_cfg.WARMUP_TYPE not in AVAI_WARMUPS:
        raise ValueError(f"warm-up type must be one of {AVAI_WARMUPS}, but got {optim_cfg.WARMUP_TYPE}")
    return EpochLRScheduler(
        optimizer,
        scheduler=name,
        max_epoch=int(optim_cfg.MAX_EPOCH),
        stepsize=tuple(stepsize),
        gamma=float(optim_cfg.GAMMA),
        warmup_epoch=warmup_epoch,
        warmup_type=str(optim_cfg.WARMUP_TYPE),
        warmup_cons_lr=float(optim_cfg.WARMUP_CONS_LR),
        warmup_min_lr=float(optim_cfg.WARMUP_MIN_LR),
        warmup_recount=bool(optim_cfg.WARMUP_RECOUNT),
    )
