"""A yacs ``CfgNode`` whose merge errors name the offending key and its source (file or opts).

Semantics follow yacs: string values go through ``ast.literal_eval`` when they parse, a value
must keep the type of the default (list and tuple convert into each other, ``None`` on either side
is accepted) and unknown keys are refused. One relaxation: an int is accepted where the default is
a float, and a float with an integral value (``25.0``) where the default is an int, converted to
the default's type. Upstream ``train.py`` files declare some float settings as ints
(PromptSRC's ``TEXT_LOSS_WEIGHT = 25``) and their configs and scripts write them either way
(``GPA_MEAN 45``), so both spellings must load whichever side declared the default. ``True`` and
``False`` stay booleans (never 1 / 0), and ``2.5`` for an int default is still an error. Nested
nodes are matched with ``isinstance``, so a node that a trainer adds with a plain
``yacs.config.CfgNode`` merges like any other.

A YAML file may start from another one with a top-level ``_BASE_: path`` (or a list of paths,
merged in order), so that each variant file states only what differs from its base. A relative
path is taken from the directory of the file that names it (``~`` is expanded). Bases merge
first, recursively, then the file's own keys override; ``_BASE_`` is never a config key. Errors
met inside a base name the base file; a missing base, a cycle or a bad ``_BASE_`` value raise
:class:`ConfigError`.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Iterable

import yaml
from yacs.config import CfgNode as _YacsCfgNode

from dassl.utils.errors import UserError

_VALID_TYPES = (tuple, list, str, int, float, bool, type(None))
_BASE_KEY = "_BASE_"


class ConfigError(UserError, KeyError):
    """Bad config input: an unknown key, a wrong type or an odd opts list. Names key and source."""


def _coerce(value: Any, original: Any, full_key: str, source: str) -> Any:
    """Return ``value`` converted to the type of ``original`` as yacs allows, else raise."""
    if type(value) is type(original):
        return value
    if value is None or original is None:
        if isinstance(value, _VALID_TYPES) and isinstance(original, _VALID_TYPES):
            return value
    if isinstance(value, (list, tuple)) and isinstance(original, (list, tuple)):
        return type(original)(value)
    if type(original) is float and type(value) is int:
        return float(value)
    if type(original) is int and type(value) is float and value.is_integer():
        return int(value)
    raise ConfigError(
        f"Type mismatch for config key {full_key} in {source}: the default {original!r} is "
        f"{type(original).__name__} but got {value!r} ({type(value).__name__}); "
        f"write the value as a {type(original).__name__}"
    )


def _unknown_key(full_key: str, source: str, missing: str) -> ConfigError:
    """The error for ``full_key``, whose part ``missing`` the config lacks; for a whole missing
    ``TRAINER.<NODE>``, how such a node comes to exist (a trainer file from an upstream repository
    declares none)."""
    message = f"Non-existent config key: {full_key} (in {source})"
    parts = missing.split(".")
    if parts[0] == "TRAINER" and len(parts) == 2:
        message += (f". No registered trainer declares the node {missing}: an upstream trainer "
                    "file leaves its keys to its repository's train.py (extend_cfg), so run it "
                    "with that train.py, or give its trainer class an add_config(cfg) class "
                    "method that defines them (docs/UPSTREAM.md)")
    return ConfigError(message)


def _load_yaml_mapping(cfg_filename: str) -> dict:
    """The top-level mapping of a YAML file (empty for an empty file); other content raises."""
    with open(cfg_filename) as f:
        try:
            content = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            raise ConfigError(f"Cannot parse config file {cfg_filename}: {exc}") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(f"Config file {cfg_filename} must hold a mapping of keys, got {type(content).__name__}")
    return content


class CfgNode(_YacsCfgNode):
    """Dassl's config node (yacs) with errors that say which key and which file are wrong."""

    def merge_from_file(self, cfg_filename: str) -> None:
        """Merge a YAML file and, first, its ``_BASE_`` files; unknown keys raise :class:`ConfigError`."""
        if not os.path.isfile(cfg_filename):
            raise FileNotFoundError(f"Config file not found: {cfg_filename}")
        self._merge_file_with_bases(cfg_filename, [])

    def _merge_file_with_bases(self, cfg_filename: str, chain: list[str]) -> None:
        """Merge the bases of ``cfg_filename``, then the file; ``chain``: the files that led here."""
        chain = chain + [cfg_filename]
        content = _load_yaml_mapping(cfg_filename)
        bases = content.pop(_BASE_KEY, [])
        if isinstance(bases, str):
            bases = [bases]
        if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
            raise ConfigError(
                f"{_BASE_KEY} in config file {cfg_filename} must be a path or a list of paths, got {bases!r}"
            )
        for written in bases:
            path = os.path.join(os.path.dirname(cfg_filename), os.path.expanduser(written))
            if not os.path.isfile(path):
                raise ConfigError(
                    f"Base config not found: config file {cfg_filename} has {_BASE_KEY}: {written!r}, "
                    f"which resolves to {path}"
                )
            if os.path.realpath(path) in [os.path.realpath(p) for p in chain]:
                raise ConfigError(f"Cycle in {_BASE_KEY} configs: {' -> '.join(chain + [path])}")
            self._merge_file_with_bases(path, chain)
        self._merge_mapping(content, [], f"config file {cfg_filename}")

    def merge_from_other_cfg(self, cfg_other: _YacsCfgNode) -> None:
        """Merge another config node into this one."""
        self._merge_mapping(cfg_other, [], "the merged config")

    def merge_from_list(self, cfg_list: Iterable[Any]) -> None:
        """Merge ``[KEY, VALUE, KEY, VALUE, ...]`` pairs, as given after the flags of train.py."""
        cfg_list = list(cfg_list)
        source = "the command-line opts"
        if len(cfg_list) % 2 != 0:
            raise ConfigError(
                f"Override list has odd length in {source}: {cfg_list}; it must be KEY VALUE pairs"
            )
        for full_key, raw in zip(cfg_list[0::2], cfg_list[1::2]):
            node: _YacsCfgNode = self
            parts = str(full_key).split(".")
            for depth, part in enumerate(parts):
                if not isinstance(node, _YacsCfgNode) or part not in node:
                    raise _unknown_key(full_key, source, ".".join(parts[:depth + 1]))
                if depth < len(parts) - 1:
                    node = node[part]
            value = self._decode_cfg_value(raw)
            value = self._coerce_declared(value, node[parts[-1]], full_key, source)
            node[parts[-1]] = value

    def _coerce_declared(self, value: Any, original: Any, full_key: str, source: str) -> Any:
        """``_coerce`` against the current value; for a ``TRAINER.<NODE>.<KEY>`` that an upstream
        ``extend_cfg`` redeclared, a value that fits our trainer's default is accepted too (its
        ``GPA_MEAN = 15`` is an int, our configs may say 7.5)."""
        try:
            return _coerce(value, original, full_key, source)
        except ConfigError:
            parts = full_key.split(".")
            trainer_nodes = self.get("TRAINER")
            if len(parts) != 3 or parts[0] != "TRAINER" or not isinstance(trainer_nodes, TrainerNodes):
                raise
            declared = trainer_nodes.contributed_default(parts[1], parts[2])
            if declared is None:
                raise
            return _coerce(value, declared, full_key, source)

    def _merge_mapping(self, mapping: Any, key_list: list[str], source: str, target: Any = None) -> None:
        target = self if target is None else target
        for key, raw in mapping.items():
            full_key = ".".join(key_list + [str(key)])
            if key not in target:
                if target.is_new_allowed():
                    target[key] = self._decode_cfg_value(raw)
                    continue
                raise _unknown_key(full_key, source, full_key)
            original = target[key]
            if isinstance(original, _YacsCfgNode):
                if not isinstance(raw, dict):
                    raise ConfigError(
                        f"Config key {full_key} in {source} is a group of keys; got the value {raw!r}"
                    )
                self._merge_mapping(raw, key_list + [str(key)], source, original)
                continue
            value = self._decode_cfg_value(raw)
            target[key] = self._coerce_declared(value, original, full_key, source)


class TrainerNodes(CfgNode):
    """``cfg.TRAINER``: a node that remembers the trainer nodes contributed by the registered
    trainers (``remember_contributed``, called by ``get_cfg_default``). A node assigned anew
    under one of those names (an upstream ``extend_cfg`` does ``cfg.TRAINER.COOP = CN()`` and
    then sets upstream's keys) is given the remembered keys it lacks, with their default values,
    at once; the values it sets afterwards win. Our YAML files and overrides then merge under an
    upstream ``train.py``, and upstream's own defaults stay upstream's."""

    _CONTRIBUTED = "__contributed__"

    def remember_contributed(self) -> None:
        """Remember the trainer nodes held now as the contributed ones."""
        self.__dict__[self._CONTRIBUTED] = {k: copy.deepcopy(v) for k, v in self.items()
                                            if isinstance(v, _YacsCfgNode)}

    def contributed_default(self, node: str, key: str) -> Any:
        """The default our trainer declared for ``TRAINER.<node>.<key>`` (None if none)."""
        declared = self.__dict__.get(self._CONTRIBUTED, {}).get(node)
        return None if declared is None else declared.get(key)

    def __setitem__(self, key: Any, value: Any) -> None:
        contributed = self.__dict__.get(self._CONTRIBUTED, {}).get(key)
        if contributed is not None and isinstance(value, _YacsCfgNode) and not value.is_frozen():
            for name, default in contributed.items():
                if name not in value:
                    dict.__setitem__(value, name, copy.deepcopy(default))
        super().__setitem__(key, value)
