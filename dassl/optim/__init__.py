"""Optimizers and per-epoch learning-rate schedulers built from ``cfg.OPTIM``."""
from .lr_scheduler import AVAI_SCHEDS, EpochLRScheduler, build_lr_scheduler, scheduled_lr
from .optimizer import AVAI_OPTIMS, build_optimizer
