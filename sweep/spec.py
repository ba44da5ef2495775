"""What a sweep runs: protocols, trainers (with their configs and opts), datasets, seeds, shots.

A :class:`SweepSpec` comes from command-line flags or from a YAML sweep file (the flags override
the file). It names no job yet: :func:`sweep.jobs.plan` turns it into the ``train.py`` commands of
``scripts/*.sh``.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ``dg`` (domain generalization) is the ``xd`` training run evaluated on the ImageNet variants.
PROTOCOLS = ("base2new", "xd", "dg", "few_shot", "zeroshot")
# The protocol whose default config a trainer uses (trainers/core/methods.py knows no ``dg``).
CONFIG_PROTOCOL = {"base2new": "base2new", "xd": "xd", "dg": "xd", "few_shot": "few_shot",
                   "zeroshot": "zeroshot"}

BENCHMARK_11 = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
                "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101")
IMAGENET_VARIANTS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
# The domain-generalization targets of a source: datasets with the source's classes in other
# styles. The tables tell DG targets from cross-dataset ones by this, and ``--datasets all`` of
# ``dg`` means the source's entry. A new source with shifted copies gets a line here.
DOMAIN_SHIFTS: dict[str, tuple[str, ...]] = {
    "imagenet": IMAGENET_VARIANTS,
    "synthetic_src": ("synthetic_src_warm", "synthetic_src_texture", "synthetic_src_sketch",
                      "synthetic_src_small"),     # the offline proxy benchmark (proxy/protocols.py)
}
SHIFTED_DATASETS = frozenset(d for targets in DOMAIN_SHIFTS.values() for d in targets)
DEFAULT_SOURCE = "imagenet"
DEFAULT_SEEDS = (1, 2, 3)
DEFAULT_SHOTS = {"few_shot": (1, 2, 4, 8, 16)}
DEFAULT_SHOTS_OTHER = (16,)


def all_datasets(protocol: str, source: str = DEFAULT_SOURCE) -> tuple[str, ...]:
    """The datasets ``all`` stands for: the 11 (base2new, few_shot, zeroshot), the 10 targets other
    than the source (xd), the source's shifted copies (dg: the 4 ImageNet variants for ImageNet;
    none for a source without an entry in ``DOMAIN_SHIFTS``)."""
    if protocol == "xd":
        return tuple(d for d in BENCHMARK_11 if d != source)
    if protocol == "dg":
        return DOMAIN_SHIFTS.get(source, ())
    return BENCHMARK_11


@dataclass(frozen=True)
class TrainerEntry:
    """One row of the tables: ``trainer`` with a config (``None``: its default for the protocol;
    a mapping protocol -> stem for several protocols), extra ``opts`` (KEY VALUE ...) and an
    optional output ``folder`` name used instead of the config stem (needed when one config runs
    with different opts; the bash scripts cannot write such folders)."""

    trainer: str
    cfg: Any = None
    opts: tuple[str, ...] = ()
    folder: Optional[str] = None
    label: Optional[str] = None

    def cfg_for(self, protocol: str) -> Optional[str]:
        if isinstance(self.cfg, Mapping):
            return self.cfg.get(protocol) or (self.cfg.get("xd") if protocol == "dg" else None)
        return self.cfg

    def describe(self) -> str:
        text = self.trainer
        if self.cfg:
            text += ":" + (self.cfg if isinstance(self.cfg, str) else ",".join(f"{k}={v}" for k, v in self.cfg.items()))
        if self.opts:
            text += " " + " ".join(self.opts)
        return text


@dataclass(frozen=True)
class SweepSpec:
    """Everything that determines the jobs of a sweep."""

    protocols: tuple[str, ...] = ("base2new",)
    trainers: tuple[TrainerEntry, ...] = (TrainerEntry("MMLoP"),)
    datasets: tuple[str, ...] = ("all",)
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    shots: Optional[tuple[int, ...]] = None       # None: 16, or 1 2 4 8 16 for few_shot
    source: str = DEFAULT_SOURCE
    opts: tuple[str, ...] = ()                    # appended to every job, after the trainer's opts
    data: Optional[str] = None                    # None: ./data (as the scripts)
    output: Optional[str] = None                  # None: output (as the scripts)
    name: Optional[str] = None

    def shots_for(self, protocol: str) -> tuple[int, ...]:
        if self.shots:
            return tuple(self.shots)
        return DEFAULT_SHOTS.get(protocol, DEFAULT_SHOTS_OTHER)

    def datasets_for(self, protocol: str) -> tuple[str, ...]:
        out: list[str] = []
        for d in self.datasets:
            for name in (all_datasets(protocol, self.source) if d == "all" else (d,)):
                if name not in out:
                    out.append(name)
        return tuple(out)

    def sweep_name(self) -> str:
        """The name of the sweep's state folder (``<output>/.sweep/<name>``): given, or made from
        the protocols and trainers (plus a hash of the rest when it would be long)."""
        if self.name:
            return _slug(self.name)
        trainers = "+".join(dict.fromkeys(e.trainer for e in self.trainers))
        base = f"{'+'.join(self.protocols)}_{trainers}"
        detail = repr((self.trainers, self.datasets, self.seeds, self.shots, self.source, self.opts))
        digest = hashlib.sha1(detail.encode()).hexdigest()[:8]
        return _slug(base)[:60] + "_" + digest

    def to_dict(self) -> dict:
        return {
            "protocols": list(self.protocols), "datasets": list(self.datasets), "seeds": list(self.seeds),
            "shots": list(self.shots) if self.shots else None, "source": self.source, "opts": list(self.opts),
            "data": self.data, "output": self.output, "name": self.name,
            "trainers": [{"trainer": e.trainer, "cfg": e.cfg, "opts": list(e.opts), "folder": e.folder,
                          "label": e.label} for e in self.trainers],
        }


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "-", text).strip("-") or "sweep"


def parse_trainer(text: str) -> TrainerEntry:
    """``NAME`` or ``NAME:CFG`` (command line)."""
    name, _, cfg = text.partition(":")
    if not name:
        raise ValueError(f"bad trainer {text!r}: use NAME or NAME:CFG")
    return TrainerEntry(name, cfg or None)


def _as_tuple(value: Any, what: str, kind=str) -> tuple:
    if value is None:
        return ()
    if isinstance(value, (str, int, float)):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{what}: expected a list, got {value!r}")
    try:
        return tuple(kind(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: {exc}") from None


def _opts(value: Any, what: str) -> tuple[str, ...]:
    """KEY VALUE opts from a list (``[KEY, VALUE, ...]``) or a mapping (``{KEY: VALUE}``)."""
    if isinstance(value, Mapping):
        out: list[str] = []
        for k, v in value.items():
            out += [str(k), _yaml_scalar(v)]
        return tuple(out)
    items = _as_tuple(value, what, _yaml_scalar)
    if len(items) % 2:
        raise ValueError(f"{what}: KEY VALUE pairs expected, got an odd number of items: {list(items)}")
    return items


def _yaml_scalar(v: Any) -> str:
    """A YAML value as train.py's command line would spell it (``True``, ``0.5``, ``a b``)."""
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(_yaml_scalar(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return str(v)


TRAINER_KEYS = {"trainer", "cfg", "opts", "folder", "label"}
FILE_KEYS = {"name", "protocol", "protocols", "trainers", "datasets", "seeds", "shots", "source", "opts", "data",
             "output", "backend"}


def trainer_from_yaml(item: Any, where: str) -> TrainerEntry:
    if isinstance(item, str):
        return parse_trainer(item)
    if not isinstance(item, Mapping) or "trainer" not in item:
        raise ValueError(f"{where}: a trainer is NAME, NAME:CFG or a mapping with 'trainer' "
                         f"(and optional cfg, opts, folder, label); got {item!r}")
    unknown = set(item) - TRAINER_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(TRAINER_KEYS)})")
    cfg = item.get("cfg")
    if cfg is not None and not isinstance(cfg, (str, Mapping)):
        raise ValueError(f"{where}: cfg is a config stem or a mapping protocol -> stem")
    if isinstance(cfg, Mapping):
        bad = set(cfg) - set(PROTOCOLS)
        if bad:
            raise ValueError(f"{where}: cfg keys must be protocols ({', '.join(PROTOCOLS)}), got {sorted(bad)}")
        cfg = dict(cfg)
    return TrainerEntry(str(item["trainer"]), cfg, _opts(item.get("opts"), f"{where}.opts"),
                        item.get("folder"), item.get("label"))


def yaml_error(path: str, exc: Exception) -> str:
    """One line for a YAML syntax error: the file, the line and column, and what the parser saw."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else path
    what = " ".join(str(p) for p in (getattr(exc, "context", None), getattr(exc, "problem", None)) if p)
    return f"{where}: not valid YAML ({what or exc}); fix the file and rerun"


def load_sweep_file(path: str) -> tuple[SweepSpec, dict]:
    """The spec and the ``backend`` mapping of a YAML sweep file (see README, "Sweeps")."""
    import yaml

    with open(path) as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as exc:
            raise ValueError(yaml_error(path, exc)) from None
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: a sweep file is a YAML mapping")
    unknown = set(data) - FILE_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)} (known: {sorted(FILE_KEYS)})")
    spec = SweepSpec(name=data.get("name") or os.path.splitext(os.path.basename(path))[0])
    protocols = data.get("protocols", data.get("protocol"))
    changes: dict[str, Any] = {}
    if protocols is not None:
        changes["protocols"] = _as_tuple(protocols, f"{path}: protocol")
    if data.get("trainers") is not None:
        items = data["trainers"] if isinstance(data["trainers"], list) else [data["trainers"]]
        changes["trainers"] = tuple(trainer_from_yaml(t, f"{path}: trainers[{i}]") for i, t in enumerate(items))
    if data.get("datasets") is not None:
        changes["datasets"] = _as_tuple(data["datasets"], f"{path}: datasets")
    if data.get("seeds") is not None:
        changes["seeds"] = _as_tuple(data["seeds"], f"{path}: seeds", int)
    if data.get("shots") is not None:
        changes["shots"] = _as_tuple(data["shots"], f"{path}: shots", int)
    for key in ("source", "data", "output"):
        if data.get(key) is not None:
            changes[key] = str(data[key])
    if data.get("opts") is not None:
        changes["opts"] = _opts(data["opts"], f"{path}: opts")
    backend = data.get("backend") or {}
    if isinstance(backend, str):
        backend = {"name": backend}
    if not isinstance(backend, Mapping):
        raise ValueError(f"{path}: backend is a name or a mapping (name, workers, gpus, partition, ...)")
    return replace(spec, **changes), dict(backend)


def validate(spec: SweepSpec) -> None:
    """Raise ``ValueError`` naming every problem that can be seen without loading the trainers."""
    problems = []
    for p in spec.protocols:
        if p not in PROTOCOLS:
            problems.append(f"unknown protocol {p!r} (one of {', '.join(PROTOCOLS)})")
    if not spec.trainers:
        problems.append("no trainer given")
    if not spec.seeds and any(p != "zeroshot" for p in spec.protocols):
        problems.append("no seed given")
    if any(s < 0 for s in spec.seeds):
        problems.append("seeds must be >= 0")
    if spec.shots and any(s < 1 for s in spec.shots):
        problems.append("shots must be >= 1")
    if len(spec.opts) % 2:
        problems.append(f"opts are KEY VALUE pairs, got an odd number: {list(spec.opts)}")
    missing = sorted({d for p in spec.protocols if p in PROTOCOLS for d in spec.datasets_for(p)
                      + ((spec.source,) if p in ("xd", "dg") else ())
                      if not os.path.isfile(os.path.join(REPO_ROOT, "configs", "datasets", f"{d}.yaml"))})
    if missing:
        problems.append("no configs/datasets/<name>.yaml for: " + ", ".join(missing))
    if "dg" in spec.protocols and not spec.datasets_for("dg"):
        problems.append(f"no domain-generalization targets known for source {spec.source!r} "
                        f"(known: {', '.join(DOMAIN_SHIFTS)}); name them with --datasets")
    if problems:
        raise ValueError("; ".join(problems))


@dataclass
class Paths:
    """The data and output roots as train.py gets them (``as_given``) and as absolute paths."""

    data: str
    output: str
    output_abs: str = field(init=False)

    def __post_init__(self) -> None:
        self.output_abs = absolute(self.output)


def command_path(path: Optional[str], default: str) -> str:
    """A path as the scripts would pass it: the scripts run from the repository root, so a relative
    path given while the current folder is the repository root is passed unchanged (the same
    command lines, the same ``results.json``); any other path is made absolute."""
    if path is None:
        return default
    if not os.path.isabs(path) and os.path.realpath(os.getcwd()) == os.path.realpath(REPO_ROOT):
        return path
    return os.path.abspath(path)


def absolute(path: str) -> str:
    """Absolute form of a path as passed to train.py (relative ones are relative to the repository root)."""
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(REPO_ROOT, path))


def missing_data_warning(paths: Paths) -> Optional[str]:
    """What to say when the data root the jobs get is not a folder here (None: it is). A warning,
    not a refusal: on a cluster the folder may exist only where the jobs run."""
    data = absolute(paths.data)
    if os.path.isdir(data):
        return None
    return (f"warning: the data folder {data} does not exist here: every job would stop at its dataset. "
            "Give --data (or 'data:' in the sweep file) the folder that holds the datasets (DATASETS.md); "
            "on a cluster, the folder as the compute nodes see it")


def resolve_paths(spec: SweepSpec) -> Paths:
    return Paths(command_path(spec.data, "./data"), command_path(spec.output, "output"))
