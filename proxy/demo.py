"""Offline demo: pretrain (or reuse) the tiny CLIP, run base-to-novel, print the table, draw the plot.

``python demo.py`` (from the repository root) needs no download and no GPU. It

1. pretrains the tiny CLIP on rendered shapes (about 5 minutes on 2 cores; cached, see
   ``proxy.pretrain``), or reuses the cached checkpoint;
2. runs base-to-novel generalization (16 shots, ``proxy.runs``) over the synthetic datasets and
   seeds, through ``train.py`` into the usual ``output/base2new/...`` tree (the sweep engine's
   local backend: ``--workers N`` runs N at once), with ZeroshotCLIP,
   CoOp, IVLP and MMLoP by default; ``--methods all`` adds every other registered trainer that
   names a tiny config (its ``tiny_config`` fact, ``trainers/core/methods.py``), in table order;
3. prints base / novel / HM with trainable-parameter counts and writes HM against parameters as a
   PNG (``<output>/proxy_demo/hm_vs_params.png``) plus ``summary.json``.

``--ablation`` runs MMLoP's ablation rows instead (IVLP setting, low-rank, + consistency, + drift
correction, + shared U). ``--quick`` is the CI size (the same tiny CLIP; one dataset, two seeds,
three methods).

These are proxy numbers on a toy domain, not the paper's: they show that the code learns and
generalizes, and how the methods compare at this scale.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence

from dassl.utils.tools import write_json

from .runs import REPO_ROOT, Method, RunResult, harmonic_mean, run_grid_jobs

ABLATION_ROWS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("IVLP (full rank)", "ivlp", ("TRAINER.MMLOP.FULL_RANK", "True", "TRAINER.MMLOP.TEXT_LOSS_WEIGHT", "0.0",
                                 "TRAINER.MMLOP.IMAGE_LOSS_WEIGHT", "0.0", "TRAINER.MMLOP.KL_LOSS_WEIGHT", "0.0",
                                 "TRAINER.MMLOP.DRIFT_CORRECTION", "False")),
    ("+ low-rank", "lowrank", ("TRAINER.MMLOP.SHARE_U", "none", "TRAINER.MMLOP.TEXT_LOSS_WEIGHT", "0.0",
                               "TRAINER.MMLOP.IMAGE_LOSS_WEIGHT", "0.0", "TRAINER.MMLOP.KL_LOSS_WEIGHT", "0.0",
                               "TRAINER.MMLOP.DRIFT_CORRECTION", "False")),
    ("+ consistency", "consistency", ("TRAINER.MMLOP.SHARE_U", "none", "TRAINER.MMLOP.DRIFT_CORRECTION", "False")),
    ("+ drift correction", "drift", ("TRAINER.MMLOP.SHARE_U", "none")),
    ("+ shared U (MMLoP)", "shared_u", ()),
)


@dataclass(frozen=True)
class Preset:
    """Sizes of a demo run."""

    pretrain_steps: int
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    extra_opts: tuple[str, ...] = ()
    output: str = "output"
    methods: Optional[tuple[str, ...]] = None          # None: every method with a tiny config


# Default size: measured 579 s on 2 idle cores with a fresh cache (176 s of it pretraining).
FULL = Preset(pretrain_steps=1200, datasets=("synthetic_warm", "synthetic_fog"), seeds=(1, 2, 3),
              methods=("ZeroshotCLIP", "CoOp", "IVLP", "MMLoP"))
QUICK = Preset(pretrain_steps=1200, datasets=("synthetic_fog",), seeds=(1, 2),
               output="output_quick", methods=("ZeroshotCLIP", "CoOp", "MMLoP"))


def available_methods(wanted: Optional[Sequence[str]] = None) -> list[Method]:
    """The methods of the table: registered trainers with a tiny config (all, or those in
    ``wanted``), in table order."""
    from trainers.core.methods import registered_methods

    return [Method(m.label, m.name, m.tiny_config, trains=m.trains) for m in registered_methods()
            if m.tiny_config and (wanted is None or m.name in wanted)]


def ablation_methods() -> list[Method]:
    """MMLoP's ablation rows (docs/METHOD.md), each in its own output folder."""
    from trainers.core.methods import method_info

    config = method_info("MMLoP").tiny_config
    if config is None:
        raise FileNotFoundError("MMLoP names no tiny config: the ablation needs one")
    return [Method(label, "MMLoP", config, opts, tag=f"{config}_ablation_{tag}") for label, tag, opts in ABLATION_ROWS]


def summarize(results: Sequence[RunResult], methods: Sequence[Method], datasets: Sequence[str]) -> list[dict]:
    """One row per method: base and novel averaged over seeds per dataset, then over datasets; HM
    of those averages (as the papers' tables); ``hm_seed_std``: population standard deviation over
    seeds of the HM of each seed's dataset-averaged base and novel accuracy."""
    rows = []
    for m in methods:
        mine = [r for r in results if r.method == m.label]
        if not mine:
            continue
        per_dataset = {}
        for d in datasets:
            rs = [r for r in mine if r.dataset == d]
            if rs:
                b = statistics.fmean(r.base for r in rs)
                n = statistics.fmean(r.novel for r in rs)
                per_dataset[d] = {"base": b, "novel": n, "hm": harmonic_mean(b, n), "seeds": len(rs)}
        base = statistics.fmean(v["base"] for v in per_dataset.values())
        novel = statistics.fmean(v["novel"] for v in per_dataset.values())
        # Seed spread: per seed, base and novel averaged over the datasets that seed ran on, then HM.
        hms = []
        for seed in sorted({r.seed for r in mine}):
            rs = [r for r in mine if r.seed == seed]
            hms.append(harmonic_mean(statistics.fmean(r.base for r in rs), statistics.fmean(r.novel for r in rs)))
        rows.append({
            "method": m.label, "trainer": m.trainer, "config": m.config, "opts": list(m.opts),
            "params": mine[0].params, "base": base, "novel": novel, "hm": harmonic_mean(base, novel),
            "hm_seed_std": statistics.pstdev(hms) if len(hms) > 1 else 0.0, "per_dataset": per_dataset,
        })
    return rows


def format_table(rows: Sequence[dict], datasets: Sequence[str]) -> str:
    """The printed table: average over datasets, then one HM column per dataset."""
    from tabulate import tabulate

    headers = ["method", "trainable params", "base", "novel", "HM"] + [f"HM {d}" for d in datasets]
    body = []
    for r in rows:
        body.append([r["method"], f"{r['params']:,}", f"{r['base']:.2f}", f"{r['novel']:.2f}", f"{r['hm']:.2f}"]
                    + [f"{r['per_dataset'][d]['hm']:.2f}" if d in r["per_dataset"] else "-" for d in datasets])
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)


def run_grid(methods: Sequence[Method], datasets: Sequence[str], seeds: Sequence[int], backbone: str,
             data_root: str, output_root: str, extra_opts: Sequence[str] = (),
             log: Callable[[str], None] = print, workers: int = 1) -> list[RunResult]:
    """Every method x dataset x seed through the sweep engine on ``workers`` local workers, with a
    progress line when a run starts and one when it ends (in grid order with one worker)."""
    total = len(methods) * len(datasets) * len(seeds)
    start, counts = time.time(), {"ended": 0, "fresh": 0}

    def started(i: int, m: Method, d: str, s: int) -> None:
        log(f"[{i}/{total}] {m.label} on {d}, seed {s} ...")

    def ended(i: int, r: RunResult) -> None:
        counts["ended"] += 1
        counts["fresh"] += not r.reused
        elapsed = time.time() - start
        left = total - counts["ended"]
        eta = elapsed / counts["fresh"] * left / max(1, min(workers, left)) if counts["fresh"] and left else 0.0
        how = "reused" if r.reused else f"{r.seconds:.0f}s"
        log(f"[{i}/{total}] {r.method} on {r.dataset}, seed {r.seed}: base {r.base:.2f} novel {r.novel:.2f} "
            f"HM {r.hm:.2f} ({how}; elapsed {elapsed:.0f}s, eta {eta:.0f}s)")

    return run_grid_jobs(methods, datasets, seeds, backbone, data_root, output_root, tuple(extra_opts), workers,
                         on_start=started, on_result=ended)


def run_demo(preset: Preset, ablation: bool = False, data_root: str = "data", pretrain_seed: int = 1,
             cache_dir: Optional[str] = None, log: Callable[[str], None] = print, workers: int = 1) -> dict:
    """Pretrain or reuse, run the grid, write ``summary.json`` (and the plot); return the summary."""
    from .pretrain import get_checkpoint
    from .tiny_clip import PretrainConfig

    t0 = time.time()
    config = replace(PretrainConfig(), steps=preset.pretrain_steps)
    backbone = get_checkpoint(pretrain_seed, config, cache_dir, log=log)
    pretrain_seconds = time.time() - t0
    methods = ablation_methods() if ablation else available_methods(preset.methods)
    log(f"Methods: {', '.join(m.label for m in methods)}; datasets: {', '.join(preset.datasets)}; "
        f"seeds: {', '.join(map(str, preset.seeds))}")
    results = run_grid(methods, preset.datasets, preset.seeds, backbone, os.path.abspath(data_root),
                       os.path.abspath(preset.output), preset.extra_opts, log, workers)
    rows = summarize(results, methods, preset.datasets)
    table = format_table(rows, preset.datasets)
    out_dir = os.path.join(os.path.abspath(preset.output), "proxy_demo")
    name = "ablation" if ablation else "summary"
    summary = {
        "backbone": backbone, "pretrain_seed": pretrain_seed, "pretrain_steps": preset.pretrain_steps,
        "datasets": list(preset.datasets), "seeds": list(preset.seeds), "extra_opts": list(preset.extra_opts),
        "rows": rows, "runs": [vars(r) | {"hm": r.hm} for r in results], "table": table,
        "pretrain_seconds": round(pretrain_seconds, 1), "wall_seconds": round(time.time() - t0, 1),
    }
    if not ablation:
        summary["plot"] = _plot(rows, os.path.join(out_dir, "hm_vs_params.png"), preset)
    write_json(summary, os.path.join(out_dir, f"{name}.json"))
    log("")
    log(f"Base-to-novel on {', '.join(preset.datasets)} (16 shots, seeds {', '.join(map(str, preset.seeds))}; "
        "tiny CLIP, proxy numbers, not the paper's):" if not ablation else "MMLoP ablation (tiny CLIP, proxy numbers):")
    log(table)
    if "plot" in summary:
        log(f"Plot: {summary['plot']}")
    log(f"Summary: {os.path.join(out_dir, name + '.json')} (total {summary['wall_seconds']:.0f}s)")
    return summary


def _plot(rows, path: str, preset: Preset) -> str:
    from .plot import plot_hm_vs_params

    title = f"Tiny-CLIP proxy: base-to-novel HM ({', '.join(preset.datasets)})"
    return plot_hm_vs_params(rows, path, title)


def _print(line: str) -> None:
    print(line, flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Offline MMLoP demo on a tiny CLIP and synthetic datasets.")
    parser.add_argument("--quick", action="store_true", help="CI size: one dataset (synthetic_fog), 2 seeds, 3 methods")
    parser.add_argument("--ablation", action="store_true", help="run MMLoP's ablation rows instead of the methods")
    parser.add_argument("--seeds", type=int, nargs="+", help="training seeds (default 1 2 3; quick: 1 2)")
    parser.add_argument("--datasets", nargs="+",
                        help="dataset config names under configs/datasets/ (default synthetic_warm synthetic_fog)")
    parser.add_argument("--methods", nargs="+", choices=[m.trainer for m in available_methods()] + ["all"],
                        help="trainers to run (default ZeroshotCLIP CoOp IVLP MMLoP; 'all': every registered "
                             "trainer with a tiny config)")
    parser.add_argument("--output", help="output root (default output; quick: output_quick)")
    parser.add_argument("--data", default="data", help="dataset root; synthetic datasets are generated there")
    parser.add_argument("--pretrain-seed", type=int, default=1, help="seed of the tiny CLIP's pretraining")
    parser.add_argument("--workers", type=int, default=1,
                        help="train.py runs at once (local workers of the sweep engine; default 1)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    preset = QUICK if args.quick else FULL
    if args.seeds:
        preset = replace(preset, seeds=tuple(args.seeds))
    if args.datasets:
        missing = [d for d in args.datasets
                   if not os.path.isfile(os.path.join(REPO_ROOT, "configs", "datasets", f"{d}.yaml"))]
        if missing:
            parser.error(f"no configs/datasets/<name>.yaml for: {', '.join(missing)}")
        preset = replace(preset, datasets=tuple(args.datasets))
    if args.output:
        preset = replace(preset, output=args.output)
    if args.methods:
        preset = replace(preset, methods=None if "all" in args.methods else tuple(args.methods))
    try:
        run_demo(preset, ablation=args.ablation, data_root=args.data, pretrain_seed=args.pretrain_seed, log=_print,
                 workers=args.workers)
    except KeyboardInterrupt:
        _print("Interrupted: run the same command again to continue (finished runs are reused).")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
