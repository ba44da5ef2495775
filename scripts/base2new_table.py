"""Base / novel / harmonic-mean table of base-to-novel runs, over datasets and seeds.

    python scripts/base2new_table.py output/base2new --trainer MMLoP \
        --cfg vit_b16_c2_ep30_batch4_4+4ctx [--shots 16] [--json table.json]

Reads ``<root>/train_base/<dataset>/shots_<S>/<trainer>/<cfg>/seed*/`` (base accuracy, the test
after training) and ``<root>/test_new/...`` (novel accuracy), reading each run and combining them
as ``mmlop/results.py`` defines (``results.json``, else the logs). Per dataset: mean over the
seeds of base and of novel, and ``HM = 2 b n / (b + n)`` of those means; the ``Average`` row is the
mean of the per-dataset base and novel accuracies and their HM (how the MaPLe and PromptSRC READMEs
report it). A dataset with no novel result yet shows ``-``.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Optional, Sequence

from tabulate import tabulate

from mmlop.results import BASE2NEW, base2new_average, base2new_dir, collect_results, harmonic_mean, summarize


def _seed_mean(run_parent: str) -> tuple[Optional[float], int]:
    if not os.path.isdir(run_parent):
        return None, 0
    values = [r["accuracy"] for r in collect_results(run_parent, test_log=True)
              if r["run"].startswith("seed")]
    return (summarize(values)[0], len(values)) if values else (None, 0)


def build_table(root: str, trainer: str, cfg: str, shots: int = 16) -> list[dict]:
    """One row per dataset with results, then the ``Average`` row (datasets with both numbers)."""
    def runs(split: str, dataset: str) -> str:       # ROOT is the base2new folder, of any name
        return os.path.join(root, os.path.relpath(base2new_dir(split, dataset, shots, trainer, cfg), BASE2NEW))

    base_root = os.path.join(root, "train_base")
    if not os.path.isdir(base_root):
        raise FileNotFoundError(f"{base_root} not found: give the {BASE2NEW} output folder "
                                "(the one holding train_base/ and test_new/)")
    rows = []
    for dataset in sorted(os.listdir(base_root)):
        base, n_base = _seed_mean(runs("train_base", dataset))
        novel, n_novel = _seed_mean(runs("test_new", dataset))
        if base is None and novel is None:
            continue
        hm = harmonic_mean(base, novel) if base is not None and novel is not None else None
        rows.append({"dataset": dataset, "base": base, "novel": novel, "hm": hm,
                     "seeds_base": n_base, "seeds_novel": n_novel})
    avg = base2new_average([(r["base"], r["novel"]) for r in rows])
    if avg:
        rows.append({"dataset": "Average", "base": avg[0], "novel": avg[1], "hm": avg[2],
                     "seeds_base": None, "seeds_novel": None})
    return rows


def format_table(rows: Sequence[dict]) -> str:
    def cell(v):
        return "-" if v is None else f"{v:.2f}"

    body = [[r["dataset"], cell(r["base"]), cell(r["novel"]), cell(r["hm"]),
             "" if r["seeds_base"] is None else f"{r['seeds_base']}/{r['seeds_novel']}"]
            for r in rows]
    return tabulate(body, headers=["Dataset", "Base", "Novel", "HM", "Seeds (base/novel)"],
                    disable_numparse=True)


def main(argv: Optional[Sequence[str]] = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="base2new output folder, e.g. output/base2new")
    parser.add_argument("--trainer", default="MMLoP")
    parser.add_argument("--cfg", default="vit_b16_c2_ep30_batch4_4+4ctx")
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    try:
        rows = build_table(args.root, args.trainer, args.cfg, args.shots)
    except FileNotFoundError as e:
        parser.error(str(e))
    if not rows:
        parser.error(f"no results for trainer {args.trainer} and config {args.cfg} "
                     f"(shots_{args.shots}) under {args.root}")
    print(f"Base-to-novel: {args.trainer} / {args.cfg} / {args.shots} shots")
    print(format_table(rows))
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(rows, f, indent=2)
        os.replace(tmp, args.json)
    return rows


if __name__ == "__main__":
    main()
