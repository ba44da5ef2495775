"""The trainer registry, ``build_trainer``, and the config keys registered trainers declare."""
from __future__ import annotations

from dassl.utils.registry import Registry, check_availability

TRAINER_REGISTRY = Registry("TRAINER")


def build_trainer(cfg):
    """Instantiate ``TRAINER_REGISTRY[cfg.TRAINER.NAME](cfg)``; unknown names get a did-you-mean error."""
    check_availability(cfg.TRAINER.NAME, TRAINER_REGISTRY.registered_names())
    if cfg.VERBOSE:
        print(f"Loading trainer: {cfg.TRAINER.NAME}")
    return TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)


def add_trainer_configs(cfg) -> None:
    """Add the ``TRAINER.<NODE>`` keys of every registered trainer to ``cfg``.

    A trainer declares them with a class method ``add_config(cfg)``. Every name counts, usable or
    not: for a name whose winning class declares nothing (an upstream trainer file, which leaves
    its keys to upstream's ``train.py``) the keys of the class it replaced are used, and a name
    registered twice still gets its node, so that using it reaches the registry's clash message
    instead of stopping earlier at an unknown config key. Called by ``get_cfg_default``, so the
    keys are known before any YAML file or command-line override is merged, whichever
    ``train.py`` runs.
    """
    for name in TRAINER_REGISTRY.all_names():
        for cls in TRAINER_REGISTRY.candidates(name):
            add_config = getattr(cls, "add_config", None)
            if add_config is not None:
                add_config(cfg)
                break
