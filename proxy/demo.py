"""Offline demo and proxy benchmark: pretrain (or reuse) the tiny CLIP, run the protocols, print
the tables with 95% seed intervals, draw the plots.

``python demo.py`` (from the repository root) needs no download and no GPU. By default it

1. pretrains the tiny CLIP on rendered shapes (about 3 minutes on 2 cores; cached, see
   ``proxy.pretrain``), or reuses the cached checkpoint;
2. runs base-to-novel generalization (16 shots, ``proxy.runs``) over the synthetic datasets and
   seeds, through ``train.py`` into the usual ``output/base2new/...`` tree (the sweep engine's
   local backend: ``--workers N`` runs N at once), with ZeroshotCLIP, CoOp, IVLP and MMLoP;
   ``--methods all`` adds every other registered trainer that names a tiny config (its
   ``tiny_config`` fact, ``trainers/core/methods.py``), in table order;
3. prints base / novel / HM (mean ± 95% CI over seeds, ``proxy.stats``) with trainable-parameter
   counts and MMLoP's paired differences, writes HM against parameters as a PNG
   (``<output>/proxy_demo/hm_vs_params.png``) plus ``summary.json``.

``--full`` runs every protocol with every method (``proxy.protocols``: base-to-novel,
domain generalization, cross-dataset, few-shot, then MMLoP's ablation rows) into one output tree and
writes ``<output>/proxy_demo/benchmark.json`` (tables, per-seed values, intervals, wall time per
part), ``tables.md``, ``few_shot.png`` and the sweep's own tables (``sweep_tables/``);
``--protocol dg xd ...`` runs only those parts. ``--ablation`` runs MMLoP's ablation rows at the
default size (``ablation_methods``). ``--quick`` is
the CI size (the same tiny CLIP; one dataset, two seeds, three methods).

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

from . import protocols as P
from .plot import plot_few_shot, plot_hm_vs_params
from .runs import REPO_ROOT, Method, RunResult, harmonic_mean, run_grid_jobs


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
DEFAULT = Preset(pretrain_steps=1200, datasets=("synthetic_warm", "synthetic_fog"), seeds=(1, 2, 3),
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
    """MMLoP's ablation rows (its ``ablation_rows`` fact, ``trainers/mmlop.py``) on its tiny
    config: each row's switches as opts, each switched row in its own output folder; the row
    without switches is the MMLoP config itself and shares the MMLoP row's runs."""
    from trainers.core.methods import method_info

    info = method_info("MMLoP")
    config = info.tiny_config
    if config is None:
        raise FileNotFoundError("MMLoP names no tiny config: the ablation needs one")
    methods = []
    for row in info.ablation_rows:
        name = info.ablation_name(row)
        methods.append(Method(row.proxy_label or row.label, "MMLoP", config, info.ablation_switches(row),
                              tag=f"{config}_ablation_{name}" if name else ""))
    return methods


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


def _backbone(pretrain_steps: int, pretrain_seed: int, cache_dir: Optional[str], log) -> tuple[str, float]:
    from .pretrain import get_checkpoint
    from .tiny_clip import PretrainConfig

    t0 = time.time()
    config = replace(PretrainConfig(), steps=pretrain_steps)
    return get_checkpoint(pretrain_seed, config, cache_dir, log=log), time.time() - t0


def run_demo(preset: Preset, ablation: bool = False, data_root: str = "data", pretrain_seed: int = 1,
             cache_dir: Optional[str] = None, log: Callable[[str], None] = print, workers: int = 1) -> dict:
    """Pretrain or reuse, run the grid, write ``summary.json`` (and the plot); return the summary."""
    t0 = time.time()
    backbone, pretrain_seconds = _backbone(preset.pretrain_steps, pretrain_seed, cache_dir, log)
    methods = ablation_methods() if ablation else available_methods(preset.methods)
    log(f"Methods: {', '.join(m.label for m in methods)}; datasets: {', '.join(preset.datasets)}; "
        f"seeds: {', '.join(map(str, preset.seeds))}")
    t1 = time.time()
    results = run_grid(methods, preset.datasets, preset.seeds, backbone, os.path.abspath(data_root),
                       os.path.abspath(preset.output), preset.extra_opts, log, workers)
    runs_seconds = time.time() - t1
    rows = summarize(results, methods, preset.datasets)
    stats = P.base2new_tables(results, preset.datasets, methods)
    table = format_table(rows, preset.datasets)
    out_dir = os.path.join(os.path.abspath(preset.output), "proxy_demo")
    name = "ablation" if ablation else "summary"
    summary = {
        "backbone": backbone, "pretrain_seed": pretrain_seed, "pretrain_steps": preset.pretrain_steps,
        "datasets": list(preset.datasets), "seeds": list(preset.seeds), "extra_opts": list(preset.extra_opts),
        "rows": rows, "runs": [vars(r) | {"hm": r.hm} for r in results], "table": table,
        "stats": stats, "table_ci": stats["table"], "paired_table": stats["paired_table"],
        "pretrain_seconds": round(pretrain_seconds, 1), "runs_seconds": round(runs_seconds, 1),
        "load_average": _load_average(), "workers": workers,
    }
    if not ablation:
        summary["plot"] = _plot(stats["rows"], os.path.join(out_dir, "hm_vs_params.png"), preset.datasets)
    summary["wall_seconds"] = round(time.time() - t0, 1)
    write_json(summary, os.path.join(out_dir, f"{name}.json"))
    log("")
    log(f"Base-to-novel on {', '.join(preset.datasets)} (16 shots, seeds {', '.join(map(str, preset.seeds))}; "
        "tiny CLIP, proxy numbers, not the paper's; mean ± 95% CI over seeds):" if not ablation
        else "MMLoP ablation (tiny CLIP, proxy numbers; mean ± 95% CI over seeds):")
    log(stats["table"])
    if stats["paired_table"]:
        log("")
        log(f"Paired differences, {stats['reference']} minus each row (same seeds and datasets; * = 95% CI "
            "excludes 0):")
        log(stats["paired_table"])
    if "plot" in summary:
        log(f"Plot: {summary['plot']}")
    log(f"Summary: {os.path.join(out_dir, name + '.json')} (pretraining {pretrain_seconds:.0f}s, runs "
        f"{runs_seconds:.0f}s, total {summary['wall_seconds']:.0f}s)")
    return summary


def _load_average() -> Optional[list[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


@dataclass(frozen=True)
class Benchmark:
    """Sizes of the full proxy benchmark (``--full``): every protocol of ``proxy.protocols``."""

    pretrain_steps: int = 1200
    b2n_datasets: tuple[str, ...] = ("synthetic_warm", "synthetic_fog")
    # Five seeds: with three, one bad seed (MMLoP's seed 3 on synthetic_warm) made the intervals
    # too wide to tell most gaps apart (t = 4.30 for 3 seeds, 2.78 for 5).
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5)
    source: str = P.SOURCE
    dg_targets: tuple[str, ...] = P.DG_TARGETS
    xd_targets: tuple[str, ...] = P.XD_TARGETS
    shots: tuple[int, ...] = P.FEW_SHOTS
    methods: Optional[tuple[str, ...]] = None           # None: every method with a tiny config
    extra_opts: tuple[str, ...] = ()
    output: str = "output"


BENCHMARK = Benchmark()


def run_benchmark(bench: Benchmark, protocols: Sequence[str] = P.PROTOCOLS, data_root: str = "data",
                  pretrain_seed: int = 1, cache_dir: Optional[str] = None, log: Callable[[str], None] = print,
                  workers: int = 1) -> dict:
    """Run ``protocols`` (in ``P.PROTOCOLS`` order) at ``bench``'s size; print each part's tables
    and wall time; write ``<output>/proxy_demo/benchmark.json``, ``tables.md``, the plots and the
    sweep's tables. The xd and dg parts share the source trainings; the few-shot 16-shot runs are
    those trainings too."""
    unknown = [p for p in protocols if p not in P.PROTOCOLS]
    if unknown:
        raise ValueError(f"unknown protocols {unknown}; known: {', '.join(P.PROTOCOLS)}")
    t0 = time.time()
    backbone, pretrain_seconds = _backbone(bench.pretrain_steps, pretrain_seed, cache_dir, log)
    out_root, data = os.path.abspath(bench.output), os.path.abspath(data_root)
    out_dir = os.path.join(out_root, "proxy_demo")
    methods = available_methods(bench.methods)
    parts: dict[str, dict] = {}
    opts = tuple(bench.extra_opts)
    for protocol in (p for p in P.PROTOCOLS if p in protocols):
        start = time.time()
        log("")
        log(f"== {protocol} ==")
        if protocol in ("base2new", "ablation"):
            rows_methods = ablation_methods() if protocol == "ablation" else methods
            results = run_grid(rows_methods, bench.b2n_datasets, bench.seeds, backbone, data, out_root, opts, log,
                               workers)
            part = P.base2new_tables(results, bench.b2n_datasets, rows_methods)
            part["datasets"] = list(bench.b2n_datasets)
            part["runs"] = [vars(r) | {"hm": r.hm} for r in results]
            if protocol == "ablation":
                part["steps"] = P.step_differences(part["rows"], part["columns"])
                part["steps_table"] = P.format_paired(part["steps"], part["columns"], "row",
                                                      ["base", "novel", "HM"] + [f"HM {P.short_name(d)}"
                                                                                 for d in bench.b2n_datasets])
            title = "Base-to-novel" if protocol == "base2new" else "MMLoP ablation (base-to-novel)"
            title += f" on {', '.join(bench.b2n_datasets)}, 16 shots"
            if protocol == "base2new":
                part["plot"] = _plot(part["rows"], os.path.join(out_dir, "hm_vs_params.png"), bench.b2n_datasets)
        elif protocol in ("dg", "xd"):
            targets = bench.dg_targets if protocol == "dg" else bench.xd_targets
            p = P.transfer_plan(methods, targets, bench.seeds, backbone, data, out_root, bench.source,
                                extra_opts=opts)
            records = P.run_jobs(p.jobs, out_root, "proxy_transfer", workers, log, _labels(methods))
            part = P.transfer_tables(records, targets, bench.source)
            part["targets"] = list(targets)
            part["runs"] = [vars(r) for r in records]
            title = ("Domain generalization" if protocol == "dg" else "Cross-dataset") + \
                f" (source {bench.source}, 16 shots)"
        else:
            jobs = P.few_shot_plan(methods, bench.source, bench.seeds, backbone, data, out_root, bench.shots,
                                   extra_opts=opts)
            records = P.run_jobs(jobs, out_root, "proxy_few_shot", workers, log, _labels(methods))
            part = P.few_shot_tables(records, bench.shots)
            part["dataset"] = bench.source
            part["runs"] = [vars(r) for r in records]
            part["plot"] = plot_few_shot(part["rows"], bench.shots, os.path.join(out_dir, "few_shot.png"),
                                         f"Tiny-CLIP proxy: few-shot accuracy on {bench.source} (25 classes)")
            title = f"Few-shot on {bench.source}"
        part["title"] = title
        part["wall_seconds"] = round(time.time() - start, 1)
        part["load_average"] = _load_average()
        parts[protocol] = part
        _print_part(part, log)
    summary = {"backbone": backbone, "pretrain_seed": pretrain_seed, "pretrain_steps": bench.pretrain_steps,
               "pretrain_seconds": round(pretrain_seconds, 1), "seeds": list(bench.seeds), "workers": workers,
               "extra_opts": list(opts), "parts": parts, "wall_seconds": round(time.time() - t0, 1),
               "load_average": _load_average()}
    summary["sweep_tables"] = _sweep_tables(bench, protocols, methods, out_root)
    write_json(summary, os.path.join(out_dir, "benchmark.json"))
    with open(os.path.join(out_dir, "tables.md"), "w") as f:
        f.write(benchmark_markdown(summary))
    log("")
    log("Wall time: pretraining " + f"{pretrain_seconds:.0f}s; " + "; ".join(
        f"{k} {v['wall_seconds']:.0f}s" for k, v in parts.items()) + f"; total {summary['wall_seconds']:.0f}s")
    log(f"Summary: {os.path.join(out_dir, 'benchmark.json')}; tables: {os.path.join(out_dir, 'tables.md')}")
    return summary


def _labels(methods: Sequence[Method]) -> dict:
    return {(m.trainer, m.folder): m.label for m in methods}


def _print_part(part: dict, log: Callable[[str], None]) -> None:
    log("")
    log(f"{part['title']} (tiny CLIP, proxy numbers; mean ± 95% CI over seeds; {part['wall_seconds']:.0f}s):")
    log(part["table"])
    if part.get("paired_table"):
        log("")
        log(f"Paired differences, {part['reference']} minus each row (* = 95% CI excludes 0):")
        log(part["paired_table"])
    if part.get("steps_table"):
        log("")
        log("Each ablation row minus the row above it (paired over seeds; * = 95% CI excludes 0):")
        log(part["steps_table"])
    if part.get("plot"):
        log(f"Plot: {part['plot']}")


def benchmark_markdown(summary: dict) -> str:
    """All parts' tables as one markdown page (``tables.md``)."""
    lines = [f"Tiny CLIP {summary['backbone']} (pretraining {summary['pretrain_seconds']:.0f}s); seeds "
             f"{', '.join(map(str, summary['seeds']))}; {summary['workers']} worker(s); mean ± 95% CI over seeds "
             "(Student t); paired differences: * = the 95% CI excludes 0.", ""]
    for name, part in summary["parts"].items():
        lines += [f"## {name}: {part['title']} ({part['wall_seconds']:.0f}s)", "", part["table"], ""]
        if part.get("paired_table"):
            lines += [f"Paired differences, {part['reference']} minus each row:", "", part["paired_table"], ""]
        if part.get("steps_table"):
            lines += ["Each row minus the row above it:", "", part["steps_table"], ""]
    return "\n".join(lines)


def _sweep_tables(bench: Benchmark, protocols: Sequence[str], methods: Sequence[Method], out_root: str) -> list:
    """The sweep's own tables over the output root (``sweep.tables``), written beside the summary."""
    from sweep.tables import Selection, Tree, build_tables, write_tables

    want = [p for p in protocols if p in ("base2new", "dg", "xd", "few_shot")]
    if not want:
        return []
    sel = Selection(protocols=want, methods=[(m.trainer, m.folder) for m in methods],
                    datasets={"base2new": list(bench.b2n_datasets), "dg": list(bench.dg_targets),
                              "xd": list(bench.xd_targets), "few_shot": [bench.source]},
                    shots={"few_shot": list(bench.shots), "xd": [P.TRANSFER_SHOTS], "dg": [P.TRANSFER_SHOTS]},
                    source=bench.source, labels=_labels(methods))
    tables = build_tables(Tree(out_root), sel=sel)
    return write_tables(tables, os.path.join(out_root, "proxy_demo", "sweep_tables"))


def _plot(stat_rows, path: str, datasets: Sequence[str]) -> str:
    """HM against trainable parameters from ``proxy.protocols.base2new_tables`` rows (mean and
    95% interval over seeds)."""
    rows = [{"method": r["method"], "params": r["params"], "hm": r["mean"]["hm"], "hm_ci": r["ci"]["hm"]}
            for r in stat_rows]
    title = f"Tiny-CLIP proxy: base-to-novel HM ({', '.join(datasets)})\nbars: 95% CI over seeds"
    return plot_hm_vs_params(rows, path, title)


def _print(line: str) -> None:
    print(line, flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Offline MMLoP demo on a tiny CLIP and synthetic datasets.")
    parser.add_argument("--quick", action="store_true", help="CI size: one dataset (synthetic_fog), 2 seeds, 3 methods")
    parser.add_argument("--ablation", action="store_true", help="run MMLoP's ablation rows instead of the methods")
    parser.add_argument("--full", action="store_true",
                        help="the whole proxy benchmark: every protocol, every method (see --protocol)")
    parser.add_argument("--protocol", nargs="+", choices=list(P.PROTOCOLS),
                        help="run only these parts of the full benchmark (implies --full)")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="training seeds (default 1 2 3; quick: 1 2; --full: 1 2 3 4 5)")
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
    if args.full or args.protocol:
        if args.quick or args.ablation:
            parser.error("--full/--protocol run the whole benchmark; use --protocol ablation for the ablation")
        return _main_benchmark(parser, args)
    preset = _with_args(parser, args, QUICK if args.quick else DEFAULT, "datasets")
    return _interruptible(lambda: run_demo(preset, ablation=args.ablation, data_root=args.data,
                                           pretrain_seed=args.pretrain_seed, log=_print, workers=args.workers))


def _with_args(parser, args, sizes, datasets_field: str):
    """``sizes`` (a :class:`Preset` or :class:`Benchmark`) with the seeds, datasets (into
    ``datasets_field``), output and methods given on the command line."""
    if args.seeds:
        sizes = replace(sizes, seeds=tuple(args.seeds))
    if args.datasets:
        missing = [d for d in args.datasets
                   if not os.path.isfile(os.path.join(REPO_ROOT, "configs", "datasets", f"{d}.yaml"))]
        if missing:
            parser.error(f"no configs/datasets/<name>.yaml for: {', '.join(missing)}")
        sizes = replace(sizes, **{datasets_field: tuple(args.datasets)})
    if args.output:
        sizes = replace(sizes, output=args.output)
    if args.methods:
        sizes = replace(sizes, methods=None if "all" in args.methods else tuple(args.methods))
    return sizes


def _interruptible(run: Callable[[], object]) -> int:
    """Run; on Ctrl-C say how to continue and return 130 (finished runs are reused)."""
    try:
        run()
    except KeyboardInterrupt:
        _print("Interrupted: run the same command again to continue (finished runs are reused).")
        return 130
    return 0


def _main_benchmark(parser, args) -> int:
    bench = _with_args(parser, args, BENCHMARK, "b2n_datasets")
    return _interruptible(lambda: run_benchmark(bench, tuple(args.protocol or P.PROTOCOLS), data_root=args.data,
                                                pretrain_seed=args.pretrain_seed, log=_print,
                                                workers=args.workers))


if __name__ == "__main__":
    sys.exit(main())
