"""Name -> object registries, as Dassl's (``@REGISTRY.register()`` on a class).

**Duplicate names.** Registering a name that is taken raises ``DuplicateRegistrationError`` (a
``KeyError``, as in Dassl) whose message names both places (class, module and file of the first
and of the second registration) and how to resolve it. Two switches let plug-in code live with
duplicates without editing either file:

* ``allow_override(name, source=None)``: a later registration of ``name`` replaces the earlier
  one; with ``source`` (a file path) the registration made by that file wins whichever comes
  first. ``overridden(name)`` lists the registrations that lost.
* ``deferring_conflicts()``: inside this context manager (used while importing plug-in files) a
  duplicate without an override does not raise. The name is marked conflicting: it is left out of
  ``registered_names()``, ``get(name)`` and ``check_availability`` raise the error naming both
  places, and every other name works. ``conflicts()`` lists them.

``duplicate_advice`` (an attribute, ``(name, first, second) -> str``) lets the owner of a registry
say how its users resolve a duplicate (the trainer registry names ``MMLOP_TRAINER_OVERRIDES``).
"""
from __future__ import annotations

import contextlib
import difflib
import inspect
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional

from .errors import UserError


class DuplicateRegistrationError(UserError, KeyError):
    """A name was registered twice and no override says which registration wins."""


@dataclass(frozen=True)
class Origin:
    """Where an object was registered from: its qualified name, module and source file."""

    qualname: str
    module: str
    file: Optional[str]

    def __str__(self) -> str:
        return f"{self.qualname} in module {self.module} ({self.file or 'no source file'})"


def origin_of(obj: Any) -> Origin:
    """The ``Origin`` of a class or function (its module's file, as far as Python knows it)."""
    module = getattr(obj, "__module__", None) or "?"
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or repr(obj)
    path = getattr(sys.modules.get(module), "__file__", None)
    if path is None:
        try:
            path = inspect.getfile(obj)
        except (TypeError, OSError):
            path = None
    return Origin(qualname, module, os.path.abspath(path) if path else None)


def same_file(a: Optional[str], b: Optional[str]) -> bool:
    """Whether two paths name the same file (after ``~``, symlinks and ``..``)."""
    if not a or not b:
        return False
    return os.path.realpath(os.path.expanduser(a)) == os.path.realpath(os.path.expanduser(b))


def _default_advice(name: str, first: Origin, second: Origin) -> str:
    return ("Rename one of the two (objects are registered under their __name__), or register the "
            "second with register(force=True) to replace the first")


class RegisteredNames(list):
    """``registered_names()``: a plain list of the usable names, which also carries the
    registry's conflicting names (``conflicts``: name -> error) for ``check_availability``."""

    conflicts: dict[str, DuplicateRegistrationError]


class Registry:
    """A map from names to classes or functions, filled by the ``register`` decorator.

    >>> TRAINER_REGISTRY = Registry("TRAINER")
    >>> @TRAINER_REGISTRY.register()
    ... class MyTrainer: ...
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._obj_map: dict[str, Any] = {}
        self._origins: dict[str, Origin] = {}
        self._overrides: dict[str, Optional[str]] = {}
        self._overridden: dict[str, list[tuple[Any, Origin]]] = {}
        self._conflicts: dict[str, list[Origin]] = {}
        self._conflict_objs: dict[str, list[Any]] = {}
        self._conflict_notes: dict[str, str] = {}
        self._defer_depth = 0
        self.duplicate_advice: Callable[[str, Origin, Origin], str] = _default_advice

    # ----------------------------------------------------------------------------- registering

    def _do_register(self, name: str, obj: Any, force: bool = False) -> None:
        origin = origin_of(obj)
        if name in self._conflicts:               # a third registration of a conflicting name
            self._conflicts[name].append(origin)
            self._conflict_objs.setdefault(name, []).append(obj)
            return
        if name not in self._obj_map or force:
            self._obj_map[name], self._origins[name] = obj, origin
            return
        first = self._origins[name]
        if name in self._overrides:
            source = self._overrides[name]
            if source is None or same_file(origin.file, source):
                self._overridden.setdefault(name, []).append((self._obj_map[name], first))
                self._obj_map[name], self._origins[name] = obj, origin
            else:                                 # the named file's registration stays
                self._overridden.setdefault(name, []).append((obj, origin))
            return
        if self._defer_depth:
            self._conflicts[name] = [first, origin]
            self._conflict_objs[name] = [self._obj_map[name], obj]
            return
        raise self._duplicate_error(name, [first, origin])

    def register(self, obj: Any = None, force: bool = False) -> Callable | None:
        """Register ``obj`` under its ``__name__``; without ``obj``, return a decorator."""
        if obj is None:

            def wrapper(fn_or_class: Any) -> Any:
                self._do_register(fn_or_class.__name__, fn_or_class, force=force)
                return fn_or_class

            return wrapper
        self._do_register(obj.__name__, obj, force=force)
        return None

    def allow_override(self, name: str, source: Optional[str] = None) -> None:
        """Let a later registration of ``name`` replace the current one, or (``source``) let the
        registration made by the file ``source`` win whichever comes first."""
        self._overrides[name] = os.path.abspath(os.path.expanduser(source)) if source else None

    @contextlib.contextmanager
    def deferring_conflicts(self) -> Iterator[Registry]:
        """Within the block, a duplicate without an override marks the name conflicting instead
        of raising (see the module docstring)."""
        self._defer_depth += 1
        try:
            yield self
        finally:
            self._defer_depth -= 1

    def prefer(self, name: str, obj: Any) -> None:
        """Make ``obj``, one of the registrations an override set aside for ``name``, the
        registered one (the current one is set aside in its place)."""
        lost = self._overridden.get(name, [])
        index = next(i for i, (o, _) in enumerate(lost) if o is obj)
        _, origin = lost.pop(index)
        lost.append((self._obj_map[name], self._origins[name]))
        self._obj_map[name], self._origins[name] = obj, origin

    def mark_conflict(self, name: str, note: str) -> None:
        """Make ``name`` unusable: ``get(name)`` raises ``DuplicateRegistrationError(note)``."""
        self._conflicts.setdefault(name, [])
        self._conflict_notes[name] = note

    # ----------------------------------------------------------------------------- reading

    def _duplicate_error(self, name: str, places: list[Origin]) -> DuplicateRegistrationError:
        if name in self._conflict_notes:
            return DuplicateRegistrationError(self._conflict_notes[name])
        listed = "; ".join(f"{i + 1}. {p}" for i, p in enumerate(places))
        return DuplicateRegistrationError(
            f'An object named "{name}" was registered {len(places)} times in the "{self._name}" '
            f"registry: {listed}. {self.duplicate_advice(name, places[0], places[-1])}")

    def get(self, name: str) -> Any:
        if name in self._conflicts:
            raise self._duplicate_error(name, self._conflicts[name])
        if name not in self._obj_map:
            raise KeyError(f'Object name "{name}" does not exist in "{self._name}" registry')
        return self._obj_map[name]

    def origin(self, name: str) -> Optional[Origin]:
        """Where the object now registered as ``name`` comes from (None if unknown)."""
        return self._origins.get(name)

    def overridden(self, name: str) -> list[tuple[Any, Origin]]:
        """The ``(object, origin)`` registrations of ``name`` that an override set aside."""
        return list(self._overridden.get(name, []))

    def candidates(self, name: str) -> list[Any]:
        """Every object registered as ``name``, usable or not: the registered one, those an
        override set aside, those in conflict (for facts that do not depend on which one wins,
        such as the config keys they declare)."""
        objs = [self._obj_map[name]] if name in self._obj_map else []
        objs += [obj for obj, _ in self._overridden.get(name, [])]
        return objs + [obj for obj in self._conflict_objs.get(name, []) if obj not in objs]

    def all_names(self) -> list[str]:
        """Every name registered, usable or conflicting, in registration order."""
        return list(dict.fromkeys([*self._obj_map, *self._conflicts]))

    def conflict_origins(self) -> dict[str, list[Origin]]:
        """Conflicting names -> the registrations that collided (empty for ``mark_conflict``)."""
        return {name: list(places) for name, places in self._conflicts.items()}

    def conflicts(self) -> dict[str, str]:
        """Conflicting names -> the message ``get`` raises for them."""
        return {name: str(self._duplicate_error(name, places))
                for name, places in self._conflicts.items()}

    def registered_names(self) -> RegisteredNames:
        """The usable names (conflicting ones left out), in registration order."""
        names = RegisteredNames(n for n in self._obj_map if n not in self._conflicts)
        names.conflicts = {n: self._duplicate_error(n, p) for n, p in self._conflicts.items()}
        return names

    def __contains__(self, name: str) -> bool:
        return name in self._obj_map or name in self._conflicts


def check_availability(requested: str, available: Iterable[str]) -> None:
    """Raise ``ValueError`` naming the closest available name when ``requested`` is unknown.

    ``available`` as returned by ``Registry.registered_names()`` also knows the registry's
    conflicting names: requesting one raises its ``DuplicateRegistrationError`` instead.
    """
    conflicts = getattr(available, "conflicts", None) or {}
    if requested in conflicts:
        raise conflicts[requested]
    available = list(available)
    if requested in available:
        return
    scores = [difflib.SequenceMatcher(None, requested, name).ratio() for name in available]
    suggestion = available[scores.index(max(scores))] if available else None
    raise ValueError(
        f"The requested one is expected to belong to {available}, "
        f"but got [{requested}] (do you mean [{suggestion}]?)"
    )
