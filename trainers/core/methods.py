"""The registered methods and their facts, for scripts, tables, the demo and ``--list-trainers``.

A method is a trainer registered in ``dassl.engine.TRAINER_REGISTRY`` by a file in ``trainers/``
(or in a file named by ``MMLOP_TRAINERS``, see ``trainers/__init__.py``). Its facts are class
attributes of the trainer (``trainers.core.trainer.PromptTrainer``); this module reads them, so
nothing else keeps lists of method names.

The run scripts ask through one call per run (importing torch is the slow part)::

    python -m trainers.core shell TRAINER PROTOCOL DATASET [CFG]

prints shell assignments ``TRAINS=1|0``, ``CFG=<stem>`` (the given one, else the method's default
for PROTOCOL and DATASET) and ``CONFIG_FILE=<path>``, or one error line on stderr with exit code 2.
``python -m trainers.core list`` prints the table of ``train.py --list-trainers``.
"""
from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass
from typing import Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# base2new: base-to-novel; xd: cross-dataset and domain generalization (ImageNet training);
# few_shot: few-shot learning; zeroshot: evaluation of a model without training.
PROTOCOLS = ("base2new", "xd", "few_shot", "zeroshot")


@dataclass(frozen=True)
class AblationRow:
    """One row of a method's ablation table (its ``ablation_rows`` fact), in the one place the
    sweep example, docs/METHOD.md and the proxy demo take it from (``tests/test_method_facts.py``
    holds them to it).

    ``config``: the row's config stem under the method's ``config_dir``. The method's own config
    is the row without switches; every other row is named ``<stem>_abl<k>_<name>``, derives from
    that config (``_BASE_``) and holds only the ``TRAINER.<config_node>`` keys it switches, so the
    same switches apply to any config of the method (the demo's tiny one). ``proxy_label``: the
    row's label in the proxy demo's tables where it differs from ``label`` (the demo's published
    tables keep their labels)."""

    label: str
    config: str
    proxy_label: str = ""


@dataclass(frozen=True)
class MethodInfo:
    """The facts of one registered trainer (see ``PromptTrainer``)."""

    name: str
    label: str
    description: str
    trains: bool
    default_configs: dict
    tiny_config: Optional[str]
    table_order: int
    config_dir: str
    config_node: str = ""
    ablation_rows: tuple[AblationRow, ...] = ()

    def config_file(self, stem: str) -> str:
        """Path of the config ``<config_dir>/<stem>.yaml``."""
        return os.path.join(self.config_dir, f"{stem}.yaml")

    def default_config(self, protocol: str, dataset: str = "") -> str:
        """The config stem for ``protocol`` (a ``"<protocol>:<dataset>"`` entry, e.g. CoOp's
        ``"base2new:imagenet"``, wins for that dataset); ``KeyError`` with the fix when there is none."""
        if protocol not in PROTOCOLS:
            raise KeyError(f"unknown protocol {protocol!r}; one of {', '.join(PROTOCOLS)}")
        stem = self.default_configs.get(f"{protocol}:{dataset}") or self.default_configs.get(protocol)
        if stem is None:
            raise KeyError(f"{self.name} has no default config for the {protocol} protocol; set "
                           f"CFG to a file stem of {os.path.relpath(self.config_dir, REPO_ROOT)}/")
        return stem

    def ablation_switches(self, row: AblationRow) -> tuple[str, ...]:
        """The opts (``TRAINER.<NODE>.<KEY> value`` pairs, in file order) that turn the method's
        config into ``row``: the ``TRAINER.<config_node>`` keys of the row's config file, none for
        a config that derives from no other. ``ValueError`` naming the file when it sets more."""
        import yaml

        path = self.config_file(row.config)
        with open(path) as f:
            data = yaml.safe_load(f) or {}
        if "_BASE_" not in data:
            return ()
        node = (data.get("TRAINER") or {}).get(self.config_node) or {}
        extra = sorted(set(data) - {"_BASE_", "TRAINER"}) + sorted(
            f"TRAINER.{k}" for k in (data.get("TRAINER") or {}) if k != self.config_node)
        if extra or not node:
            raise ValueError(f"{path}: an ablation row's config holds only _BASE_ and the "
                             f"TRAINER.{self.config_node} keys it switches (they are applied to "
                             f"the method's other configs too); "
                             + (f"it also sets {', '.join(extra)}" if extra else "it switches none"))
        return tuple(item for key, value in node.items()
                     for item in (f"TRAINER.{self.config_node}.{key}", str(value)))

    def ablation_name(self, row: AblationRow) -> str:
        """The row's short name, ``<name>`` of its ``<stem>_abl<k>_<name>`` config (the proxy
        demo's folder ``<tiny config>_ablation_<name>``); ``""`` for the method's own config."""
        if not self.ablation_switches(row):
            return ""
        match = re.fullmatch(r".+_abl\d+_([A-Za-z0-9]+)", row.config)
        if match is None:
            raise ValueError(f"{self.name}'s ablation row {row.label!r}: its config {row.config!r} is "
                             "not named <config>_abl<k>_<name> (e.g. ..._abl2_lowrank)")
        return match.group(1)


def method_info(name: str) -> MethodInfo:
    """The facts of the registered trainer ``name`` (``KeyError`` naming the known ones)."""
    import trainers  # noqa: F401  (registers the trainers)
    from dassl.engine import TRAINER_REGISTRY

    if name not in TRAINER_REGISTRY:
        raise KeyError(f"no trainer named {name!r} is registered; registered: "
                       f"{', '.join(sorted(TRAINER_REGISTRY.registered_names()))}")
    cls = TRAINER_REGISTRY.get(name)
    return MethodInfo(
        name=name,
        label=getattr(cls, "label", "") or name,
        description=getattr(cls, "description", "") or (cls.__doc__ or "").strip().split("\n")[0],
        trains=bool(getattr(cls, "trains", True)),
        default_configs=dict(getattr(cls, "default_configs", {}) or {}),
        tiny_config=getattr(cls, "tiny_config", None),
        table_order=int(getattr(cls, "table_order", 100)),
        config_dir=getattr(cls, "config_dir", "") or os.path.join(REPO_ROOT, "configs",
                                                                   "trainers", name),
        config_node=getattr(cls, "config_node", "") or "",
        ablation_rows=tuple(getattr(cls, "ablation_rows", ()) or ()),
    )


def registered_methods() -> list[MethodInfo]:
    """Every registered trainer, in table order (then by name)."""
    import trainers  # noqa: F401
    from dassl.engine import TRAINER_REGISTRY

    infos = [method_info(n) for n in TRAINER_REGISTRY.registered_names()]
    return sorted(infos, key=lambda m: (m.table_order, m.name))


def format_methods(methods: list[MethodInfo]) -> str:
    """The ``--list-trainers`` table: name, what it is, default configs per protocol."""
    from tabulate import tabulate

    rows = []
    for m in methods:
        configs = ", ".join(f"{p}: {c}" for p, c in m.default_configs.items()) or "-"
        rows.append([m.name, m.description + ("" if m.trains else " (evaluation only)"), configs])
    # Wrapped to fit a 100-column terminal: the config lists are long.
    return tabulate(rows, headers=["trainer", "what it is", "default configs"], maxcolwidths=[None, 36, 46])


def shell_assignments(name: str, protocol: str, dataset: str = "", cfg: str = "") -> str:
    """``TRAINS=..; CFG=..; CONFIG_FILE=..`` for the run scripts (see the module docstring)."""
    info = method_info(name)
    stem = cfg or info.default_config(protocol, dataset)
    path = info.config_file(stem)
    if os.path.abspath(path).startswith(REPO_ROOT + os.sep):
        path = os.path.relpath(path, REPO_ROOT)          # the scripts run from the repository root
    values = {"TRAINS": "1" if info.trains else "0", "CFG": stem, "CONFIG_FILE": path}
    return "\n".join(f"{k}={shlex.quote(v)}" for k, v in values.items())


def main(argv: list[str]) -> int:
    usage = ("usage: python -m trainers.core shell TRAINER PROTOCOL DATASET [CFG]\n"
             "       python -m trainers.core list")
    if argv[:1] in (["-h"], ["--help"]):
        print(usage)
        return 0
    try:
        if argv[:1] == ["list"] and len(argv) == 1:
            print(format_methods(registered_methods()))
            return 0
        if argv[:1] == ["shell"] and len(argv) in (4, 5):
            print(shell_assignments(*argv[1:]))
            return 0
    except KeyError as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    print(usage, file=sys.stderr)
    return 2

