"""``build_evaluator``: instantiate ``cfg.TEST.EVALUATOR`` from ``EVALUATOR_REGISTRY``."""
from __future__ import annotations

from dassl.utils.registry import check_availability

from .evaluator import EVALUATOR_REGISTRY


def build_evaluator(cfg, **kwargs):
    """``EVALUATOR_REGISTRY[cfg.TEST.EVALUATOR](cfg, **kwargs)``, e.g. ``lab2cname=...``."""
    check_availability(cfg.TEST.EVALUATOR, EVALUATOR_REGISTRY.registered_names())
    if cfg.VERBOSE:
        print(f"Loading evaluator: {cfg.TEST.EVALUATOR}")
    return EVALUATOR_REGISTRY.get(cfg.TEST.EVALUATOR)(cfg, **kwargs)
