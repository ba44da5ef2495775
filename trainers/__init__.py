"""Trainers: one file per method on the shared core in ``trainers/core/``.

Importing this package imports every module of the folder, in alphabetical order (each registers
its trainer in ``dassl.engine.TRAINER_REGISTRY`` under its class name), then the user's method
files named by the environment variable ``MMLOP_TRAINERS`` (paths of ``.py`` files or of folders
of them, separated by ``os.pathsep``, imported in that order), so a new method is one file, here or
anywhere (docs/ADDING_A_METHOD.md). Each trainer's ``add_config`` declares its ``TRAINER.<NODE>``
keys, which ``dassl.config.get_cfg_default()`` adds (``dassl.engine.build.add_trainer_configs``).

**Two trainers under one name.** A user's file may register a name this project already uses,
e.g. upstream CoOp's ``trainers/coop.py`` saved as ``trainers/coop_upstream.py`` or named in
``MMLOP_TRAINERS`` registers ``CoOp`` as ours does. Such a conflict never stops the import: every
other trainer stays usable, ``import trainers`` prints one warning line (on stderr) naming the two
files, and using the name (``--trainer CoOp``) stops with a message naming both places and the
ways out. To choose, set ``MMLOP_TRAINER_OVERRIDES`` (comma-separated entries):

* ``MMLOP_TRAINER_OVERRIDES="CoOp,CoCoOp"``: for each name listed, the registration that is not
  this project's wins, wherever it lies and whichever file sorts first (upstream's
  ``independentVL.py`` in this folder over our ``ivlp.py``). Ours are the trainers on the shared
  core (``PromptTrainer`` subclasses) defined by this package's modules. Two or more registrations
  that are not ours: the name is refused, the message lists their files (use the form below).
  Only ours: the registration made last wins.
* ``MMLOP_TRAINER_OVERRIDES="CoOp=/path/to/coop.py"``: the registration made by that file wins,
  whatever the order; the file is imported (after the others) if neither this folder nor
  ``MMLOP_TRAINERS`` holds it. If it does not register that name, the name is unusable with a
  message saying so. Entries of both forms can be mixed.

An override prints one line (stderr) naming the file that provides the name. The config keys of
the replaced trainer (``TRAINER.COOP``: upstream's keys plus ours) are still added when the winning
class defines none (upstream's trainer files leave that to upstream's ``train.py``), so upstream
config files load; a conflicting name keeps its node too, so using it gives the clash message
rather than an unknown-key error. ``TRAINER_REGISTRY.overridden(name)`` lists what was set aside and
``TRAINER_REGISTRY.conflicts()`` the unresolved names.
"""
import importlib
import importlib.util
import os
import pkgutil
import sys
from typing import Optional

from dassl.engine import TRAINER_REGISTRY
from dassl.engine.build import add_trainer_configs
from dassl.utils.registry import Origin, origin_of, same_file

USER_TRAINERS_ENV = "MMLOP_TRAINERS"
OVERRIDES_ENV = "MMLOP_TRAINER_OVERRIDES"


def _short(origin: Optional[Origin]) -> str:
    """The file of a registration, relative to the working directory when it lies below it."""
    if origin is None or not origin.file:
        return f"module {origin.module}" if origin else "an unknown place"
    rel = os.path.relpath(origin.file)
    return origin.file if rel.startswith("..") else rel


def parse_overrides(value: str) -> dict[str, Optional[str]]:
    """``MMLOP_TRAINER_OVERRIDES`` -> ``{name: absolute file path or None}`` (see the docstring)."""
    overrides: dict[str, Optional[str]] = {}
    for entry in filter(None, (e.strip() for e in value.split(","))):
        name, sep, path = (part.strip() for part in entry.partition("="))
        if not name.isidentifier() or (sep and not path):
            raise ValueError(f"{OVERRIDES_ENV}={value!r}: {entry!r} is not a trainer name or "
                             "NAME=path/to/file.py (entries are separated by commas)")
        if path:
            path = os.path.abspath(os.path.expanduser(path))
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{OVERRIDES_ENV} names {path} for the trainer {name}, "
                                        "but that file does not exist")
        overrides[name] = path or None
    return overrides


def _theirs(name: str, first: Origin, second: Origin) -> Origin:
    """Of two registrations of ``name``, the one that is not this project's (else the second)."""
    for obj in TRAINER_REGISTRY.candidates(name):
        origin = origin_of(obj)
        if not _is_ours(obj) and origin in (first, second):
            return origin
    return second


def _duplicate_advice(name: str, first: Origin, second: Origin) -> str:
    theirs = _theirs(name, first, second)
    return (f'The name "{name}" is unusable until this is resolved (the other trainers work). To '
            f"use {theirs.file or theirs.module}, set {OVERRIDES_ENV}={name} (the registration that "
            f"is not this project's wins) or {OVERRIDES_ENV}={name}={theirs.file or theirs.module} "
            f"(that file wins); to keep this project's, remove that file from trainers/ or from "
            f"{USER_TRAINERS_ENV}, or rename its class (a trainer is registered under its class "
            "name). See trainers/__init__.py")


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


def _check_overrides(overrides: dict[str, Optional[str]]) -> None:
    """Make a ``NAME=path`` override whose file did not register NAME an error of that name."""
    for name, source in overrides.items():
        if source is None or name in TRAINER_REGISTRY.conflicts():
            continue
        origin = TRAINER_REGISTRY.origin(name)
        if origin is not None and same_file(origin.file, source):
            continue
        places = [o for o in [origin] + [o for _, o in TRAINER_REGISTRY.overridden(name)] if o]
        found = ", ".join(_short(o) for o in places) or "no file"
        TRAINER_REGISTRY.mark_conflict(
            name, f'{OVERRIDES_ENV} asks for the trainer "{name}" of {source}, but that file '
                  f'registers no class named "{name}" (it is registered by: {found}). Fix the path '
                  "or the class name (a trainer is registered under its class name), or drop the "
                  "entry")


def _is_ours(cls) -> bool:
    """Whether ``cls`` is one of this project's trainers (see the docstring)."""
    from .core.trainer import PromptTrainer

    return (isinstance(cls, type) and issubclass(cls, PromptTrainer)
            and cls.__module__.startswith(f"{__name__}."))


def _prefer_theirs(overrides: dict[str, Optional[str]]) -> None:
    """For each name-only override: the one registration that is not ours wins; several: the
    name is refused, naming their files."""
    for name, source in overrides.items():
        if source is not None or name in TRAINER_REGISTRY.conflicts() or name not in TRAINER_REGISTRY:
            continue
        theirs = [obj for obj in TRAINER_REGISTRY.candidates(name) if not _is_ours(obj)]
        if len(theirs) == 1 and TRAINER_REGISTRY.get(name) is not theirs[0]:
            TRAINER_REGISTRY.prefer(name, theirs[0])
        elif len(theirs) > 1:
            files = [_short(origin_of(obj)) for obj in theirs]
            TRAINER_REGISTRY.mark_conflict(
                name, f'{OVERRIDES_ENV}={name} names no file, and "{name}" is registered by '
                      f"{len(theirs)} files that are not this project's: {', '.join(files)}. Say "
                      f"which with {OVERRIDES_ENV}={name}=<one of them>, or remove the others")


def _report(overrides: dict[str, Optional[str]]) -> None:
    """One stderr line per override applied and per unresolved name."""
    origins = TRAINER_REGISTRY.conflict_origins()
    for name, message in TRAINER_REGISTRY.conflicts().items():
        places = origins.get(name, [])
        if len(places) >= 2:
            message = (f"registered by {' and by '.join(_short(o) for o in places)}; set "
                       f"{OVERRIDES_ENV}={name} to use {_short(_theirs(name, places[0], places[-1]))}, "
                       f"or remove one file (--trainer {name} explains, the other trainers work)")
        print(f"warning: trainer {name} is unusable: {message}", file=sys.stderr)
    for name in overrides:
        lost = TRAINER_REGISTRY.overridden(name)
        if lost and name not in TRAINER_REGISTRY.conflicts():
            others = ", ".join(_short(o) for _, o in lost)
            print(f"note: trainer {name} comes from {_short(TRAINER_REGISTRY.origin(name))} "
                  f"({OVERRIDES_ENV}), not from {others}", file=sys.stderr)


_OVERRIDES = parse_overrides(os.environ.get(OVERRIDES_ENV, ""))
for _name, _source in _OVERRIDES.items():
    TRAINER_REGISTRY.allow_override(_name, _source)
TRAINER_REGISTRY.duplicate_advice = _duplicate_advice

with TRAINER_REGISTRY.deferring_conflicts():
    _MODULES = [
        importlib.import_module(f"{__name__}.{_m.name}")
        for _m in pkgutil.iter_modules(__path__)
        if not _m.name.startswith("_") and not _m.ispkg
    ]
    _files = _user_files(os.environ.get(USER_TRAINERS_ENV, ""))
    _imported = [m.__file__ for m in _MODULES] + _files
    _files += [p for p in dict.fromkeys(s for s in _OVERRIDES.values() if s)
               if not any(same_file(p, q) for q in _imported)]
    _USER_MODULES = [_import_file(p) for p in _files]
_check_overrides(_OVERRIDES)
_prefer_theirs(_OVERRIDES)
_report(_OVERRIDES)


def extend_cfg(cfg) -> None:
    """Add every registered trainer's ``TRAINER.<NODE>`` keys (``get_cfg_default`` already
    does; kept for code written against the upstream ``extend_cfg(cfg)`` call)."""
    add_trainer_configs(cfg)
