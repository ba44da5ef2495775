"""The jobs of a sweep: one ``train.py`` call each, the same call and the same output folder as
``scripts/*.sh`` (see ``scripts/common.sh``; the folders are ``mmlop/results.py``'s layout), so the
scripts and a sweep skip each other's finished runs (``results.json``) and their trees are
indistinguishable.

========================  =========================================================================
script                    job (``mmlop.results`` folder; ``deps``)
========================  =========================================================================
base2new_train.sh D S     train (``base2new_dir("train_base", ...)``)
base2new_test.sh D S      test (``base2new_dir("test_new", ...)``), after the train job
xd_train.sh S             train (``few_shot_dir`` of SOURCE; xd and dg share it)
xd_test.sh D S            test (``evaluation_dir``), after the xd train job
few_shot.sh D S K         train (``few_shot_dir``)
zeroshot.sh D             eval (``zeroshot_dir``)
========================  =========================================================================

Trainers that do not train (their ``trains`` fact) run ``--eval-only`` in the "train" jobs and
their test jobs need no model (no dependency), exactly as the scripts do.
"""
from __future__ import annotations

import functools
import os
import shlex
from dataclasses import dataclass, field
from typing import Optional, Sequence

from mmlop import results
from mmlop.results import RESULTS_FILE

from .spec import CONFIG_PROTOCOL, REPO_ROOT, Paths, SweepSpec, TrainerEntry, absolute, resolve_paths, validate


@dataclass(frozen=True)
class Job:
    """One ``train.py`` run. ``id`` is its output folder relative to the output root (unique)."""

    id: str
    kind: str                        # "train" (trains, or eval-only for a method that does not), "test", "eval"
    protocol: str                    # base2new, xd (also the dg runs), few_shot, zeroshot
    trainer: str
    cfg: str                         # config stem
    folder: str                      # the config's folder name in the tree (cfg unless renamed)
    dataset: str
    seed: Optional[int]
    shots: int
    output_dir: str                  # as train.py gets it
    argv: tuple[str, ...]            # train.py's arguments
    deps: tuple[str, ...] = ()       # ids of the jobs whose results.json must exist first
    expect: tuple[tuple[str, object], ...] = ()   # results.json fields the run must have
    label: str = ""                  # the table row (trainer entry) it belongs to
    protocols: tuple[str, ...] = ()  # every sweep protocol that needs it (xd and dg share runs)
    model_dir: Optional[str] = None  # the model a test job loads

    @property
    def dir(self) -> str:
        """The output folder, absolute."""
        return absolute(self.output_dir)

    @property
    def results_path(self) -> str:
        return os.path.join(self.dir, RESULTS_FILE)

    def command(self, python: str = "python") -> list[str]:
        return [python, "train.py", *self.argv]

    def shell(self, python: str = "python") -> str:
        return shlex.join(self.command(python))

    @property
    def slug(self) -> str:
        """``id`` as one file name."""
        return self.id.replace(os.sep, "__")

    def describe(self) -> str:
        seed = "" if self.seed is None else f" seed {self.seed}"
        shots = f" ({self.shots} shot{'' if self.shots == 1 else 's'})" if self.shots else ""
        return f"{self.kind:5s} {self.trainer}/{self.folder} {self.dataset}{seed}{shots}"

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "protocol": self.protocol, "protocols": list(self.protocols),
                "trainer": self.trainer, "cfg": self.cfg, "folder": self.folder, "dataset": self.dataset,
                "seed": self.seed, "shots": self.shots, "output_dir": self.output_dir, "argv": list(self.argv),
                "deps": list(self.deps), "expect": [list(e) for e in self.expect], "label": self.label,
                "model_dir": self.model_dir}

    @classmethod
    def from_dict(cls, d: dict) -> Job:
        return cls(id=d["id"], kind=d["kind"], protocol=d["protocol"], trainer=d["trainer"], cfg=d["cfg"],
                   folder=d["folder"], dataset=d["dataset"], seed=d["seed"], shots=d["shots"],
                   output_dir=d["output_dir"], argv=tuple(d["argv"]), deps=tuple(d["deps"]),
                   expect=tuple(tuple(e) for e in d.get("expect", ())), label=d.get("label", ""),
                   protocols=tuple(d.get("protocols", ())), model_dir=d.get("model_dir"))


@dataclass
class Plan:
    """The jobs of a sweep in plan order (a test right after its training), and its paths."""

    spec: SweepSpec
    paths: Paths
    jobs: list[Job] = field(default_factory=list)

    def by_id(self) -> dict[str, Job]:
        return {j.id: j for j in self.jobs}


class _Facts:
    """Method facts and load epochs, read once per trainer / config / opts."""

    def __init__(self) -> None:
        self._epochs: dict[tuple, int] = {}

    @staticmethod
    def info(trainer: str):
        from trainers.core.methods import method_info

        return method_info(trainer)

    def config_file(self, trainer: str, stem: str) -> str:
        """The config path as ``python -m trainers.core shell`` prints it for the scripts."""
        path = self.info(trainer).config_file(stem)
        if os.path.abspath(path).startswith(REPO_ROOT + os.sep):
            path = os.path.relpath(path, REPO_ROOT)
        return path

    def load_epoch(self, config_file: str, opts: Sequence[str]) -> int:
        """``OPTIM.MAX_EPOCH`` after the opts, as ``train.py`` reads it (``trainers.core.config_value``)."""
        key = (config_file, tuple(opts))
        if key not in self._epochs:
            from trainers.core.config_value import read_value

            self._epochs[key] = int(read_value(absolute(config_file), "OPTIM.MAX_EPOCH", list(opts)))
        return self._epochs[key]


def check_job_configs(jobs: Sequence[Job]) -> list[str]:
    """The pre-flight checks ``train.py`` runs before it touches data or writes anything (the merged
    config as its ``setup_cfg`` builds it, ``check_config``, ``check_eval_only``), run here for every
    job, so a bad value refuses the sweep before any job starts instead of failing every job on its
    first line. One problem per distinct message, naming the first job it hits and how many more;
    jobs whose config inputs are equal are checked once."""
    import train
    from dassl.config import ConfigError
    from dassl.engine.config_checks import check_config
    from dassl.utils import UserError

    parser = train.build_parser()
    seen: dict[tuple, Optional[str]] = {}
    hits: dict[str, list[str]] = {}
    for job in jobs:
        args = parser.parse_args(list(job.argv))
        for name in ("dataset_config_file", "config_file"):
            if getattr(args, name):
                setattr(args, name, absolute(getattr(args, name)))
        # Every argument but the folders (only whether --model-dir is given counts).
        key = tuple((k, bool(v) if k == "model_dir" else repr(v)) for k, v in sorted(vars(args).items())
                    if k not in ("output_dir", "load_epoch"))
        if key not in seen:
            try:
                cfg = train.setup_cfg(args)
                check_config(cfg)
                train.check_eval_only(args, cfg)
                seen[key] = None
            except (ConfigError, UserError, KeyError, ValueError) as exc:
                seen[key] = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        if seen[key] is not None:
            hits.setdefault(seen[key], []).append(job.id)
    more = {1: "", 2: " (and 1 more job)"}
    return [f"job {ids[0]}: {message}" + more.get(len(ids), f" (and {len(ids) - 1} more jobs)")
            for message, ids in hits.items()]


def zeroshot_trainers() -> list[str]:
    """The registered methods that do not train: those the zeroshot protocol runs."""
    from trainers.core.methods import registered_methods

    return [m.name for m in registered_methods() if not m.trains]


def _entry_label(entry: TrainerEntry, folder: str) -> str:
    return entry.label or f"{entry.trainer}/{folder}"


def plan(spec: SweepSpec) -> Plan:
    """The jobs of ``spec`` (``ValueError`` for anything wrong before running: unknown protocol,
    trainer, config or dataset, an opt train.py would refuse, two jobs writing one folder)."""
    validate(spec)
    paths = resolve_paths(spec)
    facts = _Facts()
    jobs: dict[str, Job] = {}
    order: dict[str, tuple] = {}
    problems: list[str] = []

    def add(job: Job, key: tuple) -> None:
        old = jobs.get(job.id)
        if old is None:
            jobs[job.id] = job
            order[job.id] = key
        elif old.argv != job.argv:
            problems.append(f"two jobs write to {job.output_dir} with different commands (give one of the "
                            f"trainer entries its own 'folder'):\n  {old.shell()}\n  {job.shell()}")
        elif any(p not in old.protocols for p in job.protocols):
            jobs[job.id] = _with_protocols(old, old.protocols + job.protocols)

    for p_index, protocol in enumerate(spec.protocols):
        for e_index, entry in enumerate(spec.trainers):
            try:
                _plan_entry(spec, paths, facts, protocol, entry, functools.partial(_add_ordered, add, p_index, e_index))
            except (KeyError, ValueError, FileNotFoundError) as exc:
                problems.append(f"{entry.describe()} ({protocol}): {exc.args[0] if exc.args else exc}")
    if problems:
        raise ValueError("\n".join(dict.fromkeys(problems)))
    # Plan order: dataset, seed, then trainer (base2new: each test right after its training), so
    # that one worker runs the grid in the order the tables are read; a test follows its training.
    ordered = sorted(jobs.values(), key=lambda j: order[j.id])
    problems = check_job_configs(ordered)
    if problems:
        raise ValueError("\n".join(problems))
    return Plan(spec, paths, ordered)


def _add_ordered(add, p_index: int, e_index: int, job: Job, key: tuple) -> None:
    add(job, (p_index, *key, e_index))


def _with_protocols(job: Job, protocols: tuple[str, ...]) -> Job:
    d = job.to_dict()
    d["protocols"] = list(dict.fromkeys(protocols))
    return Job.from_dict(d)


def _plan_entry(spec: SweepSpec, paths: Paths, facts: _Facts, protocol: str, entry: TrainerEntry, add) -> None:
    info = facts.info(entry.trainer)
    if protocol == "zeroshot" and info.trains:
        names = zeroshot_trainers()
        raise ValueError(f"the zeroshot protocol runs {' or '.join(names)} only (the methods that do not train, as "
                         f"scripts/zeroshot.sh); {info.name} trains: give --trainers {names[0]}[:CFG]")
    opts = tuple(entry.opts) + tuple(spec.opts)
    if len(opts) % 2:
        raise ValueError(f"opts are KEY VALUE pairs, got {list(opts)}")
    trains = info.trains
    # The table row is named after the protocol's default config even where a dataset has its own
    # (CoOp's base-to-novel ImageNet recipe): the tables put those runs in the same row.
    label = _entry_label(entry, entry.folder or entry.cfg_for(protocol)
                         or info.default_config(CONFIG_PROTOCOL[protocol]))
    expect_opts = _expected_from_opts(opts)
    out, data, t = paths.output, paths.data, entry.trainer

    @functools.cache
    def config(dataset: str) -> tuple[str, str, str, Optional[int]]:
        """(stem, config file, folder, load epoch) for ``dataset``, as ``use_config`` in the scripts."""
        stem = entry.cfg_for(protocol) or info.default_config(CONFIG_PROTOCOL[protocol], dataset)
        config_file = facts.config_file(entry.trainer, stem)
        if not os.path.isfile(absolute(config_file)):
            raise FileNotFoundError(f"{config_file} not found")
        epoch = None
        if trains and protocol in ("base2new", "xd", "dg"):
            epoch = facts.load_epoch(config_file, opts)      # raises for an opt train.py would refuse
        return stem, config_file, entry.folder or stem, epoch

    def argv(dataset: str, seed: Optional[int], output_dir: str, config_file: str, *rest: str) -> tuple[str, ...]:
        seed_args = ("--seed", str(seed)) if seed is not None else ()
        return ("--root", data, *seed_args, "--trainer", t, "--dataset-config-file",
                f"configs/datasets/{dataset}.yaml", "--config-file", config_file, "--output-dir", output_dir, *rest)

    def job(kind, jprotocol, dataset, seed, shots, rel, args, stem, folder, deps=(), expect=(),
            model_dir=None) -> Job:
        expect = (("trainer", t),) + ((("seed", seed),) if seed is not None else ()) + tuple(expect) + expect_opts
        return Job(id=rel, kind=kind, protocol=jprotocol, trainer=t, cfg=stem, folder=folder, dataset=dataset,
                   seed=seed, shots=shots, output_dir=_join(out, rel), argv=args, deps=tuple(deps),
                   expect=expect, label=label, protocols=(protocol,), model_dir=model_dir)

    def model_args(train_rel: str, epoch: Optional[int]) -> tuple[str, ...]:
        return ("--model-dir", _join(out, train_rel), "--load-epoch", str(epoch)) if trains else ()

    eval_only = () if trains else ("--eval-only",)
    if protocol == "base2new":
        for k, shots in enumerate(spec.shots_for(protocol)):
            for d_index, dataset in enumerate(spec.datasets_for(protocol)):
                stem, config_file, folder, epoch = config(dataset)
                for s_index, seed in enumerate(spec.seeds):
                    key = (k, d_index, s_index)
                    train_rel, test_rel = (results.base2new_dir(split, dataset, shots, t, folder, seed)
                                           for split in results.BASE2NEW_SPLITS)
                    shot_opts = ("DATASET.NUM_SHOTS", str(shots))
                    add(job("train", "base2new", dataset, seed, shots, train_rel,
                            argv(dataset, seed, _join(out, train_rel), config_file, *eval_only, *shot_opts,
                                 "DATASET.SUBSAMPLE_CLASSES", "base", *opts), stem, folder,
                            expect=(("subsample_classes", "base"), ("num_shots", shots))), key)
                    add(job("test", "base2new", dataset, seed, shots, test_rel,
                            argv(dataset, seed, _join(out, test_rel), config_file,
                                 *model_args(train_rel, epoch), "--eval-only", *shot_opts,
                                 "DATASET.SUBSAMPLE_CLASSES", "new", *opts), stem, folder,
                            deps=(train_rel,) if trains else (),
                            expect=(("subsample_classes", "new"), ("num_shots", shots))
                            + ((("epoch", epoch),) if trains else ()),
                            model_dir=_join(out, train_rel) if trains else None), key)
    elif protocol in ("xd", "dg"):
        source = spec.source
        stem, config_file, folder, epoch = config(source)     # the source's config, for its targets too
        for k, shots in enumerate(spec.shots_for(protocol)):
            for s_index, seed in enumerate(spec.seeds):
                key = (k, s_index)
                train_rel = results.few_shot_dir(source, t, folder, shots, seed)
                add(job("train", "xd", source, seed, shots, train_rel,
                        argv(source, seed, _join(out, train_rel), config_file, *eval_only,
                             "DATASET.NUM_SHOTS", str(shots), *opts), stem, folder,
                        expect=(("num_shots", shots),)), key + (0,))
                for d_index, dataset in enumerate(spec.datasets_for(protocol), 1):
                    rel = results.evaluation_dir(dataset, t, folder, shots, seed)
                    add(job("test", "xd", dataset, seed, shots, rel,
                            argv(dataset, seed, _join(out, rel), config_file, *model_args(train_rel, epoch),
                                 "--eval-only", *opts), stem, folder,
                            deps=(train_rel,) if trains else (),
                            expect=(("epoch", epoch),) if trains else (),
                            model_dir=_join(out, train_rel) if trains else None), key + (d_index,))
    elif protocol == "few_shot":
        for d_index, dataset in enumerate(spec.datasets_for(protocol)):
            stem, config_file, folder, _ = config(dataset)
            for k, shots in enumerate(spec.shots_for(protocol)):
                for s_index, seed in enumerate(spec.seeds):
                    rel = results.few_shot_dir(dataset, t, folder, shots, seed)
                    add(job("train", "few_shot", dataset, seed, shots, rel,
                            argv(dataset, seed, _join(out, rel), config_file, *eval_only,
                                 "DATASET.NUM_SHOTS", str(shots), *opts), stem, folder,
                            expect=(("num_shots", shots),)), (d_index, k, s_index))
    elif protocol == "zeroshot":
        for d_index, dataset in enumerate(spec.datasets_for(protocol)):
            stem, config_file, folder, _ = config(dataset)
            rel = results.zeroshot_dir(folder, dataset)
            add(job("eval", "zeroshot", dataset, None, 0, rel,
                    argv(dataset, None, _join(out, rel), config_file, "--eval-only", *opts), stem, folder),
                (d_index,))


# Opts whose value results.json records (so a finished run made with another value is reported).
_OPT_FIELDS = {"MODEL.BACKBONE.NAME": ("backbone", str)}


def _expected_from_opts(opts: Sequence[str]) -> tuple[tuple[str, object], ...]:
    out = {}
    for key, value in zip(opts[::2], opts[1::2]):
        if key in _OPT_FIELDS:
            name, kind = _OPT_FIELDS[key]
            out[name] = kind(value)
    return tuple(out.items())


def _join(root: str, rel: str) -> str:
    """``${OUTPUT}/rel`` as the scripts spell it."""
    return f"{root.rstrip('/')}/{rel}" if root else rel


def script_equivalent(job: Job, data: str, output: str) -> str:
    """The ``scripts/*.sh`` call that runs the same command (for --dry-run and the docs)."""
    env = f"TRAINER={job.trainer} CFG={job.cfg} DATA={shlex.quote(data)} OUTPUT={shlex.quote(output)}"
    seed = "" if job.seed is None else str(job.seed)
    if job.protocol == "base2new":
        script = f"SHOTS={job.shots} {env} bash scripts/base2new_{'train' if job.kind == 'train' else 'test'}.sh " \
                 f"{job.dataset} {seed}"
    elif job.protocol == "xd" and job.kind == "train":
        script = f"SHOTS={job.shots} SOURCE={job.dataset} {env} bash scripts/xd_train.sh {seed}"
    elif job.protocol == "xd":
        script = f"SHOTS={job.shots} {env} bash scripts/xd_test.sh {job.dataset} {seed}"
    elif job.protocol == "few_shot":
        script = f"{env} bash scripts/few_shot.sh {job.dataset} {seed} {job.shots}"
    else:
        script = f"CFG={job.cfg} DATA={shlex.quote(data)} OUTPUT={shlex.quote(output)} bash scripts/zeroshot.sh " \
                 f"{job.dataset}"
    return script
