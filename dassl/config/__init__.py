"""Configuration: ``get_cfg_default()`` returns a fresh copy of Dassl's defaults plus the
``TRAINER.<NODE>`` keys of the trainers registered so far."""
from .config_node import CfgNode, ConfigError
from .defaults import _C as cfg_default


def get_cfg_default() -> CfgNode:
    """A mutable clone of the default config with every registered trainer's node
    (``dassl.engine.build.add_trainer_configs``): an upstream ``train.py`` that imports
    ``trainers`` first, then calls this and its own ``extend_cfg``, merges YAML files and
    overrides that use any of our trainers' keys. ``cfg.TRAINER`` remembers these nodes: a node
    that ``extend_cfg`` assigns anew (``cfg.TRAINER.COOP = CN()``) keeps the keys it does not set
    (``config_node.TrainerNodes``)."""
    from dassl.engine.build import add_trainer_configs  # imported here: the engine imports torch

    cfg = cfg_default.clone()
    add_trainer_configs(cfg)
    cfg.TRAINER.remember_contributed()
    return cfg


__all__ = ["CfgNode", "ConfigError", "get_cfg_default", "cfg_default"]
