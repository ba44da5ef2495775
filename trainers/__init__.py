"""Trainers: one file per method on the shared core in ``trainers/core/``.

Importing this package imports every module of the folder (each registers its trainer in
``dassl.engine.TRAINER_REGISTRY``) and then the user's method files named by the environment
variable ``MMLOP_TRAINERS`` (paths of ``.py`` files or of folders of them, separated by
``os.pathsep``), so a new method is one file, here or anywhere (docs/ADDING_A_METHOD.md).
``extend_cfg`` adds the ``TRAINER.<NODE>`` keys of every registered trainer.
"""
import importlib
import importlib.util
import os
import pkgutil
import sys

from dassl.engine import TRAINER_REGISTRY

USER_TRAINERS_ENV = "MMLOP_TRAINERS"

_MODULES = [
    importlib.import_module(f"{__name__}.{_m.name}")
    for _m in pkgutil.iter_modules(__path__)
    if not _m.name.startswith("_") and not _m.ispkg
]


def _user_files(value: str) -> list[str]:
    files = []
    for entry in filter(None, value.split(os.pathsep)):
        path = os.path.abspath(os.path.expanduser(entry))
        if os.path.isdir(path):
            files += sorted(os.path.join(path, f) for f in os.listdir(path)
                            if f.endswith(".py") and not f.startswith("_"))
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise FileNotFoundError(f"{USER_TRAINERS_ENV} names {entry!r}, which is neither a "
                                    ".py file nor a folder")
    return files


def _import_file(path: str):
    """Import the method file ``path`` as module ``mmlop_user_trainers.<stem>``."""
    name = f"mmlop_user_trainers.{os.path.splitext(os.path.basename(path))[0]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_USER_MODULES = [_import_file(p) for p in _user_files(os.environ.get(USER_TRAINERS_ENV, ""))]


def extend_cfg(cfg) -> None:
    """Add the config node of every registered trainer that defines ``add_config``."""
    for name in TRAINER_REGISTRY.registered_names():
        add_config = getattr(TRAINER_REGISTRY.get(name), "add_config", None)
        if add_config is not None:
            add_config(cfg)
