"""Configuration: ``get_cfg_default()`` returns a fresh copy of Dassl's defaults."""
from .config_node import CfgNode, ConfigError
from .defaults import _C as cfg_default


def get_cfg_default() -> CfgNode:
    """A mutable clone of the default config; trainers add ``TRAINER.<NAME>`` nodes to it."""
    return cfg_default.clone()


__all__ = ["CfgNode", "ConfigError", "get_cfg_default", "cfg_default"]
