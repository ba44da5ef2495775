"""Base-to-novel runs through ``train.py``, in the output tree of ``scripts/base2new_*.sh``.

One run of a method on a dataset and seed is two ``train.py`` calls, as in CoOp/MaPLe/PromptSRC:

* ``output/base2new/train_base/<dataset>/shots_16/<Trainer>/<cfg>/seed<S>``: train on the base
  classes (16 shots), then test on the base classes (``results.json`` -> base accuracy);
* ``output/base2new/test_new/<dataset>/shots_16/<Trainer>/<cfg>/seed<S>``: ``--eval-only`` with
  the weights of the last epoch, on the new classes (-> novel accuracy).

Methods without training (``ZeroshotCLIP``) are evaluated with ``--eval-only`` in both folders.
A run whose two ``results.json`` exist with the same backbone is reused, not repeated.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

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


def harmonic_mean(base: float, novel: float) -> float:
    """``2 * base * novel / (base + novel)`` (0 when both are 0)."""
    return 0.0 if base + novel == 0 else 2.0 * base * novel / (base + novel)


def run_dirs(output_root: str, dataset: str, method: Method, seed: int) -> tuple[str, str]:
    """The ``train_base`` and ``test_new`` folders of a run (upstream layout)."""
    tail = os.path.join(dataset, f"shots_{SHOTS}", method.trainer, method.folder, f"seed{seed}")
    return (os.path.join(output_root, "base2new", "train_base", tail),
            os.path.join(output_root, "base2new", "test_new", tail))


def _read_results(directory: str) -> Optional[dict]:
    try:
        with open(os.path.join(directory, "results.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class TrainPyError(RuntimeError):
    """A ``train.py`` call failed; the message holds the command and the end of its output."""


def call_train_py(args: list[str], log_path: str, threads: Optional[int] = None) -> None:
    """Run ``python train.py ARGS`` from the repository root, output to ``log_path``."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, os.path.join(REPO_ROOT, "train.py"), *args]
    with open(log_path, "w") as out:
        proc = subprocess.run(cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        with open(log_path) as f:
            tail = "".join(f.readlines()[-25:])
        raise TrainPyError(f"train.py failed (exit {proc.returncode}): {' '.join(cmd)}\n--- {log_path} ---\n{tail}")


def base2new(method: Method, dataset: str, seed: int, backbone: str, data_root: str, output_root: str,
             extra_opts: tuple[str, ...] = (), threads: Optional[int] = None) -> RunResult:
    """Train on base and test on new (or reuse both results); returns the accuracies."""
    train_dir, test_dir = run_dirs(output_root, dataset, method, seed)
    done = [_read_results(d) for d in (train_dir, test_dir)]
    if all(r is not None and r.get("backbone") == backbone for r in done):
        base, new = done
        return RunResult(method.label, dataset, seed, base["accuracy"], new["accuracy"],
                         int(base["num_trainable_params"]), reused=True,
                         dirs={"train_base": train_dir, "test_new": test_dir})
    start = time.time()
    common = [
        "--root", data_root, "--seed", str(seed), "--trainer", method.trainer,
        "--dataset-config-file", os.path.join(REPO_ROOT, "configs", "datasets", f"{dataset}.yaml"),
        "--config-file", method.config_file(),
    ]
    opts = ["MODEL.BACKBONE.NAME", backbone, "DATASET.NUM_SHOTS", str(SHOTS), *method.opts, *extra_opts]
    if method.trains:
        call_train_py([*common, "--output-dir", train_dir, *opts, "DATASET.SUBSAMPLE_CLASSES", "base"],
                      os.path.join(train_dir, "stdout.txt"), threads)
        base = _read_results(train_dir)
        epoch = base.get("epoch") if base else None
        load = ["--model-dir", train_dir] + (["--load-epoch", str(epoch)] if epoch else [])
    else:
        call_train_py([*common, "--output-dir", train_dir, "--eval-only", *opts, "DATASET.SUBSAMPLE_CLASSES", "base"],
                      os.path.join(train_dir, "stdout.txt"), threads)
        base = _read_results(train_dir)
        load = []
    call_train_py([*common, "--output-dir", test_dir, "--eval-only", *load, *opts, "DATASET.SUBSAMPLE_CLASSES", "new"],
                  os.path.join(test_dir, "stdout.txt"), threads)
    new = _read_results(test_dir)
    if base is None or new is None:
        raise TrainPyError(f"train.py wrote no results.json in {train_dir if base is None else test_dir}")
    return RunResult(method.label, dataset, seed, base["accuracy"], new["accuracy"], int(base["num_trainable_params"]),
                     seconds=time.time() - start, dirs={"train_base": train_dir, "test_new": test_dir})
