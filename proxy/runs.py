"""Base-to-novel runs through ``train.py``, in the output tree of ``scripts/base2new_*.sh``
(``mmlop/results.py``'s layout; results are read and combined there too).

One run of a method on a dataset and seed is two ``train.py`` calls, as in CoOp/MaPLe/PromptSRC:

* ``output/base2new/train_base/<dataset>/shots_16/<Trainer>/<cfg>/seed<S>``: train on the base
  classes (16 shots), then test on the base classes (``results.json`` -> base accuracy);
* ``output/base2new/test_new/<dataset>/shots_16/<Trainer>/<cfg>/seed<S>``: ``--eval-only`` with
  the weights of the last epoch, on the new classes (-> novel accuracy).

Methods without training (``ZeroshotCLIP``) are evaluated with ``--eval-only`` in both folders.
The calls are the sweep engine's jobs (``sweep/``: the commands of the scripts, a test after its
training, N local workers); a finished job (its ``results.json``) is reused, not repeated, and one
made with another backbone is reported, not reused.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from mmlop import results
from mmlop.results import harmonic_mean, read_results

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHOTS = 16


@dataclass(frozen=True)
class Method:
    """A row of the table: ``trainer`` with ``config`` (``configs/trainers/<trainer>/<config>.yaml``)
    and extra ``opts``; ``tag`` names its output folder (default: the config name)."""

    label: str
    trainer: str
    config: str
    opts: tuple[str, ...] = ()
    trains: bool = True
    tag: str = ""

    @property
    def folder(self) -> str:
        return self.tag or self.config

    def config_file(self) -> str:
        from trainers.core.methods import method_info

        return method_info(self.trainer).config_file(self.config)


@dataclass
class RunResult:
    """Accuracies (%) of one method on one dataset and seed."""

    method: str
    dataset: str
    seed: int
    base: float
    novel: float
    params: int
    seconds: float = 0.0
    reused: bool = False
    dirs: dict = field(default_factory=dict)

    @property
    def hm(self) -> float:
        return harmonic_mean(self.base, self.novel)


def run_dirs(output_root: str, dataset: str, method: Method, seed: int) -> tuple[str, str]:
    """The ``train_base`` and ``test_new`` folders of a run (upstream layout)."""
    return tuple(os.path.join(output_root, results.base2new_dir(split, dataset, SHOTS, method.trainer,
                                                                method.folder, seed))
                 for split in results.BASE2NEW_SPLITS)


class TrainPyError(RuntimeError):
    """``train.py`` calls failed (or found results they cannot reuse); the message names each job,
    its log and the end of its error."""


def sweep_entry(method: Method):
    """The sweep's trainer entry of a method (its folder name when the method has a tag)."""
    from sweep.spec import TrainerEntry

    return TrainerEntry(method.trainer, method.config, tuple(method.opts),
                        folder=method.tag or None, label=method.label)


def grid_plan(methods: Sequence[Method], datasets: Sequence[str], seeds: Sequence[int], backbone: str,
              data_root: str, output_root: str, extra_opts: Sequence[str] = ()):
    """The sweep plan of a method x dataset x seed grid: the base2new scripts' commands, with
    ``MODEL.BACKBONE.NAME <backbone>`` and ``extra_opts`` appended to every job."""
    from sweep.jobs import plan
    from sweep.spec import SweepSpec

    spec = SweepSpec(protocols=("base2new",), trainers=tuple(sweep_entry(m) for m in methods),
                     datasets=tuple(datasets), seeds=tuple(seeds), shots=(SHOTS,), data=data_root,
                     output=output_root, opts=("MODEL.BACKBONE.NAME", backbone, *extra_opts), name="proxy_demo")
    return plan(spec)


def run_grid_jobs(methods: Sequence[Method], datasets: Sequence[str], seeds: Sequence[int], backbone: str,
                  data_root: str, output_root: str, extra_opts: Sequence[str] = (), workers: int = 1,
                  on_start: Optional[Callable[[int, Method, str, int], None]] = None,
                  on_result: Optional[Callable[[int, RunResult], None]] = None) -> list[RunResult]:
    """Every run of the grid (datasets, then seeds, then methods) through the sweep engine on
    ``workers`` local workers; ``on_start(i, method, dataset, seed)`` when a run's first job starts
    (or is found finished) and ``on_result(i, result)`` when its last one ends (``i`` from 1, in
    grid order). Raises :class:`TrainPyError` after the other jobs ran when some failed."""
    p = grid_plan(methods, datasets, seeds, backbone, data_root, output_root, extra_opts)
    by_label = {m.label: m for m in methods}
    runs = [(m, d, s) for d in datasets for s in seeds for m in methods]
    index = {(m.label, d, s): i for i, (m, d, s) in enumerate(runs, 1)}
    pair: dict[tuple, dict[str, object]] = {}
    for job in p.jobs:
        pair.setdefault((job.label, job.dataset, job.seed), {})[job.kind] = job
    state = {key: {"started": False, "seconds": 0.0, "fresh": False, "ended": set()} for key in pair}
    results: dict[tuple, RunResult] = {}

    def event(kind: str, job, info: dict) -> None:
        key = (job.label, job.dataset, job.seed)
        st = state[key]
        if kind in ("start", "skip") and not st["started"]:
            st["started"] = True
            if on_start:
                on_start(index[key], by_label[job.label], job.dataset, job.seed)
        if kind == "start":
            st["fresh"] = True
        if kind in ("done", "skip"):
            st["seconds"] += float(info.get("seconds") or 0.0)
            st["ended"].add(job.kind)
            if st["ended"] == {"train", "test"}:
                result = _run_result(by_label[job.label], key, pair[key], st)
                results[key] = result
                if on_result:
                    on_result(index[key], result)

    run_engine(p.jobs, output_root, "proxy_demo", workers, event)
    return [results[(m.label, d, s)] for m, d, s in runs]


def run_engine(jobs, output_root: str, name: str, workers: int, on_event) -> None:
    """Run ``jobs`` through the sweep engine on ``workers`` local workers (state under
    ``<output_root>/.sweep/<name>``; ``on_event(kind, job, info)`` as the engine calls it). Raises
    ``KeyboardInterrupt`` when interrupted and :class:`TrainPyError` after the other jobs ran when
    some did not finish."""
    from sweep.backends import LocalBackend
    from sweep.engine import Engine
    from sweep.state import DONE, state_dir

    sdir = state_dir(os.path.abspath(output_root), name)
    engine = Engine(list(jobs), sdir, LocalBackend(workers=workers), name=name, progress=False,
                    on_event=on_event, poll_s=0.2)
    outcome = engine.run()
    if outcome.interrupted:
        raise KeyboardInterrupt("interrupted: the running train.py calls were stopped")
    if not outcome.complete:
        problems = [f"{jid}: {outcome.statuses[jid]}: {outcome.details.get(jid, '')}"
                    for jid, st in outcome.statuses.items() if st != DONE]
        raise TrainPyError("train.py runs did not finish:\n" + "\n".join(problems))


def _run_result(method: Method, key: tuple, jobs: dict, st: dict) -> RunResult:
    train, test = jobs["train"], jobs["test"]
    base, new = read_results(train.dir), read_results(test.dir)
    if base is None or new is None:
        raise TrainPyError(f"train.py wrote no results.json in {train.dir if base is None else test.dir}")
    return RunResult(method.label, key[1], key[2], base["accuracy"], new["accuracy"], int(base["num_trainable_params"]),
                     seconds=st["seconds"], reused=not st["fresh"],
                     dirs={"train_base": train.dir, "test_new": test.dir})


def base2new(method: Method, dataset: str, seed: int, backbone: str, data_root: str, output_root: str,
             extra_opts: tuple[str, ...] = ()) -> RunResult:
    """Train on base and test on new (or reuse both results); returns the accuracies."""
    return run_grid_jobs([method], [dataset], [seed], backbone, data_root, output_root, extra_opts)[0]
