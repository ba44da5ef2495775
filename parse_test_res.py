r"""Aggregate test results over seeds (CoOp's ``parse_test_res.py``, plus results.json and a table).

    python parse_test_res.py output/base2new/train_base/dtd/shots_16/MMLoP/vit_b16_c2_ep30_batch4_4+4ctx
    python parse_test_res.py output/base2new/test_new/dtd/shots_16/MMLoP/vit_b16_c2_ep30_batch4_4+4ctx --test-log
    python parse_test_res.py --test-log --multi-exp \
        output/evaluation/MMLoP/vit_b16_c2_ep30_batch4_4+4ctx_cross_datasets_16shots
    python parse_test_res.py output/base2new/train_base/dtd/shots_16/MMLoP/vit_b16_c2_ep30_batch4_4+4ctx --exact

DIRECTORY holds one folder per run (``seed1``, ``seed2``, ...); with ``--multi-exp`` it holds one
folder per experiment, each holding run folders (above: one experiment per target dataset of the
cross-dataset evaluation). ``--test-log`` is for evaluation-only runs (the test scripts').

Numbers: by default the same as upstream's parser prints from the same logs: each run's value is
the rounded ``* <keyword>: <value>%`` line its log prints (one decimal) after the end signal
(``Finish training``, or ``=> result`` with ``--test-log``; the last such line counts), and the
summary is the mean (and population std) of those. A log that states its kind in its arguments
(``eval_only: True`` or ``False``, as ``train.py`` prints them) is read by that instead, with or
without ``--test-log``: an evaluation-only log in a training folder (zero-shot CLIP's
``train_base`` runs) has its result, and an unfinished training log has none (see
``mmlop/results.py``, which holds these rules for every table). ``log.txt`` is read first, as
upstream does; when it holds no result (a run killed and resumed writes its result to a timestamped
``log.txt-*``), the newest timestamped log with one is used, which upstream's parser would skip.
``--exact`` uses the unrounded value of each run's ``results.json`` instead (e.g. 59.72 where the
logs give 59.70), falling back to the logs. Entries without results are skipped with a note.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from tabulate import tabulate

from mmlop.results import (
    TEST_END_SIGNAL,
    TRAIN_END_SIGNAL,
    average,
    collect_results,
    is_run_folder,
    listdir_nohidden,
    summarize,
)


def _subdirs(path: str) -> list[str]:
    return [os.path.join(path, n) for n in sorted(listdir_nohidden(path))
            if os.path.isdir(os.path.join(path, n))]


def _first_run_parent(directory: str, max_depth: int = 6, max_dirs: int = 5000) -> Optional[str]:
    """The first folder below ``directory`` (breadth first, bounded) that holds run folders."""
    level, seen = _subdirs(directory), 0
    for _ in range(max_depth):
        following = []
        for path in level:
            seen += 1
            children = _subdirs(path)
            if any(is_run_folder(c) for c in children):
                return path
            following += children
            if seen > max_dirs:
                return None
        level = following
    return None


def layout_hint(directory: str, multi_exp: bool) -> str:
    """Why nothing was found in ``directory``: what it must hold and where the runs actually are."""
    expected = "<experiment>/<run>/log.txt" if multi_exp else "<run>/log.txt"
    if is_run_folder(directory):
        return f"{directory} is itself a run folder; give its parent (DIRECTORY holds {expected})"
    children = _subdirs(directory)
    if any(is_run_folder(c) for c in children):
        return f"its subfolders are run folders: drop --multi-exp (it expects DIRECTORY/{expected})"
    if any(is_run_folder(g) for c in children for g in _subdirs(c)):
        return f"its subfolders hold run folders: add --multi-exp, or give one of them ({children[0]})"
    found = _first_run_parent(directory)
    if found is None:
        return f"DIRECTORY must hold {expected}, and no log.txt or results.json lies below it"
    return (f"DIRECTORY must hold {expected}; the run folders lie deeper, e.g. in {found}: give "
            f"{found}" + (f", or {os.path.dirname(found)} with --multi-exp" if multi_exp else ""))


def parse_function(directory: str, keyword: str = "accuracy", test_log: bool = False,
                   ci95: bool = False, exact: bool = False, multi_exp: bool = False) -> dict[str, float]:
    """Print the per-run lines, the CoOp-style summary and a table; return ``{keyword: mean}``.
    ``exact=False`` (the command line's default) gives upstream's numbers (see the module
    docstring)."""
    print(f"Parsing files in {directory}")
    results = collect_results(directory, keyword, test_log, verbose=True, exact=exact)
    if not results:
        end = TEST_END_SIGNAL if test_log else TRAIN_END_SIGNAL
        raise ValueError(f"Nothing found in {directory} (no run folder with a '{keyword}' result "
                         f"after '{end}'): {layout_hint(directory, multi_exp)}"
                         + ("" if test_log else "; for evaluation-only runs add --test-log"))
    for record in results:
        note = ""
        if record.get("rounded"):
            note = "(from results.json, rounded as the log prints it)"
        elif os.path.basename(record["source"]).startswith("log.txt-"):
            note = "(upstream's parser reads only log.txt and would skip this run)"
        print(f"file: {record['source']}. {keyword}: {record[keyword]:.2f}%. {note}")
    values = [record[keyword] for record in results]
    mean, spread = summarize(values, ci95)
    print("===")
    print(f"Summary of directory: {directory}")
    print(f"* {keyword}: {mean:.2f}% +- {spread:.2f}%")
    print("===")
    rows = [[record["run"], f"{record[keyword]:.2f}"] for record in results]
    rows.append(["mean ± " + ("ci95" if ci95 else "std"), f"{mean:.2f} ± {spread:.2f}"])
    print(tabulate(rows, headers=["run", f"{keyword} (%)"]))
    return {keyword: mean}


def main(argv: Optional[Sequence[str]] = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description="Aggregate test results over seeds")
    parser.add_argument("directory", type=str, help="path to directory")
    parser.add_argument("--ci95", action="store_true", help="compute 95%% confidence interval")
    parser.add_argument("--test-log", action="store_true", help="parse test-only logs")
    parser.add_argument("--multi-exp", action="store_true", help="parse multiple experiments")
    parser.add_argument("--keyword", default="accuracy", type=str, help="which keyword to extract")
    parser.add_argument("--exact", action="store_true",
                        help="use the unrounded values of results.json (default: the rounded "
                             "log lines, as upstream's parser)")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.directory):
        parser.error(f"not a directory: {args.directory}")
    if not args.multi_exp:
        return parse_function(args.directory, args.keyword, args.test_log, args.ci95, args.exact)
    means = []
    for name in sorted(listdir_nohidden(args.directory)):
        exp_dir = os.path.join(args.directory, name)
        if not os.path.isdir(exp_dir):
            continue
        try:
            means.append(parse_function(exp_dir, args.keyword, args.test_log, args.ci95,
                                        args.exact)[args.keyword])
        except ValueError as exc:
            print(f"Skipping {exp_dir}: {exc}")
        print()
    if not means:
        raise ValueError(f"Nothing found in {args.directory}: "
                         f"{layout_hint(args.directory, multi_exp=True)}")
    overall = average(means)
    print("Average performance")
    print(f"* {args.keyword}: {overall:.2f}%")
    return {args.keyword: overall}


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """``python parse_test_res.py``: ``main`` with "Nothing found" as one message (exit 1)."""
    try:
        main(argv)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli())
