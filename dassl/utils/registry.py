"""Name -> object registries, as Dassl's (``@REGISTRY.register()`` on a class)."""
from __future__ import annotations

import difflib
from typing import Any, Callable, Iterable


class Registry:
    """A map from names to classes or functions, filled by the ``register`` decorator.

    >>> TRAINER_REGISTRY = Registry("TRAINER")
    >>> @TRAINER_REGISTRY.register()
    ... class MyTrainer: ...
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._obj_map: dict[str, Any] = {}

    def _do_register(self, name: str, obj: Any, force: bool = False) -> None:
        if name in self._obj_map and not force:
            raise KeyError(f'An object named "{name}" was already registered in "{self._name}" registry')
        self._obj_map[name] = obj

    def register(self, obj: Any = None, force: bool = False) -> Callable | None:
        """Register ``obj`` under its ``__name__``; without ``obj``, return a decorator."""
        if obj is None:

            def wrapper(fn_or_class: Any) -> Any:
                self._do_register(fn_or_class.__name__, fn_or_class, force=force)
                return fn_or_class

            return wrapper
        self._do_register(obj.__name__, obj, force=force)
        return None

    def get(self, name: str) -> Any:
        if name not in self._obj_map:
            raise KeyError(f'Object name "{name}" does not exist in "{self._name}" registry')
        return self._obj_map[name]

    def registered_names(self) -> list[str]:
        return list(self._obj_map.keys())

    def __contains__(self, name: str) -> bool:
        return name in self._obj_map


def check_availability(requested: str, available: Iterable[str]) -> None:
    """Raise ``ValueError`` naming the closest available name when ``requested`` is unknown."""
    available = list(available)
    if requested in available:
        return
    scores = [difflib.SequenceMatcher(None, requested, name).ratio() for name in available]
    suggestion = available[scores.index(max(scores))] if available else None
    raise ValueError(
        f"The requested one is expected to belong to {available}, "
        f"but got [{requested}] (do you mean [{suggestion}]?)"
    )
