"""Trainers. Importing this package registers every module's trainers in
``dassl.engine.TRAINER_REGISTRY``; ``extend_cfg`` adds each trainer's ``TRAINER.<NAME>`` node."""
import importlib
import pkgutil

_MODULES = [
    importlib.import_module(f"{__name__}.{_m.name}")
    for _m in pkgutil.iter_modules(__path__)
    if not _m.name.startswith("_")
]


def extend_cfg(cfg) -> None:
    """Call ``add_config(cfg)`` of every trainer module that defines one (adds its config node)."""
    for module in _MODULES:
        add_config = getattr(module, "add_config", None)
        if add_config is not None:
            add_config(cfg)
