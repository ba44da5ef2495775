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
summary is the mean (and population std) of those. ``log.txt`` is read first, as upstream does;
when it holds no result (a run killed and resumed writes its result to a timestamped
``log.txt-*``), the newest timestamped log with one is used, which upstream's parser would skip.
``--exact`` uses the unrounded value of each run's ``results.json`` instead (e.g. 59.72 where the
logs give 59.70), falling back to the logs. Entries without results are skipped with a note.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from typing import Any, Optional, Sequence

from tabulate import tabulate

TRAIN_END_SIGNAL = "Finish training"
TEST_END_SIGNAL = "=> result"
JSON_KEYS = {"accuracy": "accuracy", "error": "error_rate", "error_rate": "error_rate", "macro_f1": "macro_f1"}


def listdir_nohidden(path: str) -> list[str]:
    """Entries of ``path`` not starting with a dot (kept free of torch so this script starts fast)."""
    return [name for name in os.listdir(path) if not name.startswith(".")]


def read_json(fpath: str) -> Any:
    with open(fpath) as f:
        return json.load(f)


def log_files(run_dir: str) -> list[str]:
    """``log.txt`` then the timestamped ``log.txt-*`` files of ``run_dir``, oldest first."""
    names = [n for n in os.listdir(run_dir) if n == "log.txt" or n.startswith("log.txt-")]
    names.sort(key=lambda n: (n != "log.txt", n))
    return [os.path.join(run_dir, n) for n in names]


def parse_log(fpath: str, keyword: str = "accuracy", end_signal: str = TRAIN_END_SIGNAL) -> Optional[float]:
    """The last ``* <keyword>: <x>%`` value after ``end_signal`` in ``fpath``, or None."""
    pattern = re.compile(r"\* " + re.escape(keyword) + r": ([\.\deE+-]+)%")
    value, started = None, False
    with open(fpath, errors="replace") as f:
        for line in f:
            line = line.strip()
            if line == end_signal:
                started = True
            if not started:
                continue
            match = pattern.search(line)
            if match:
                value = float(match.group(1))
    return value


def _results_json(run_dir: str, keyword: str) -> Optional[dict[str, Any]]:
    """``results.json`` of ``run_dir`` when it holds ``keyword`` (its JSON name), else None."""
    json_path = os.path.join(run_dir, "results.json")
    json_key = JSON_KEYS.get(keyword, keyword)
    if not os.path.isfile(json_path):
        return None
    try:
        record = read_json(json_path)
    except (OSError, ValueError):
        return None
    if isinstance(record, dict) and isinstance(record.get(json_key), (int, float)) \
            and not isinstance(record.get(json_key), bool):
        out = dict(record)
        out[keyword] = float(record[json_key])
        out["source"] = json_path
        return out
    return None


def parse_run(run_dir: str, keyword: str = "accuracy", test_log: bool = False,
              exact: bool = True) -> Optional[dict[str, Any]]:
    """The result of one run folder as a dict (``keyword``, ``source``, results.json fields).

    ``exact``: the unrounded value of ``results.json`` when present, else the logs. Otherwise the
    logs' rounded value (``log.txt`` first, as upstream's parser, then the newest ``log.txt-*``),
    else ``results.json``'s value rounded to one decimal, as the log prints it."""
    from_json = _results_json(run_dir, keyword)
    if exact and from_json is not None:
        return from_json
    end_signal = TEST_END_SIGNAL if test_log else TRAIN_END_SIGNAL
    logs = log_files(run_dir)
    for fpath in logs[:1] + logs[:0:-1]:          # log.txt, then the timestamped ones, newest first
        value = parse_log(fpath, keyword, end_signal)
        if value is not None:
            return {keyword: value, "source": fpath}
    if from_json is not None:
        from_json[keyword] = float(f"{from_json[keyword]:.1f}")
        from_json["rounded"] = True
        return from_json
    return None


def collect_results(
    directory: str, keyword: str = "accuracy", test_log: bool = False, verbose: bool = False,
    exact: bool = True,
) -> list[dict[str, Any]]:
    """One dict per run folder of ``directory`` (sorted by name) that has a result.

    Each dict has ``run`` (folder name), ``source`` (file read), ``keyword`` -> value in percent,
    plus the fields of ``results.json`` when it was the source. Other entries are skipped (with a
    note when ``verbose``). ``exact`` (this function's default; the command line's is upstream's
    rounded log values) prefers ``results.json``'s unrounded value, see ``parse_run``.
    """
    results = []
    for name in sorted(listdir_nohidden(directory)):
        run_dir = os.path.join(directory, name)
        if not os.path.isdir(run_dir):
            if verbose:
                print(f"Skipping {run_dir}: not a run folder")
            continue
        record = parse_run(run_dir, keyword, test_log, exact)
        if record is None:
            if verbose:
                has_logs = bool(log_files(run_dir)) or os.path.isfile(os.path.join(run_dir, "results.json"))
                why = "no result found in its logs" if has_logs else "no log.txt or results.json"
                print(f"Skipping {run_dir}: {why}")
            continue
        record["run"] = name
        results.append(record)
    return results


def summarize(values: Sequence[float], ci95: bool = False) -> tuple[float, float]:
    """``(mean, spread)``: spread = population std (ddof=0, as CoOp), or ``1.96 * std / sqrt(n)``."""
    n = len(values)
    if n == 0:
        raise ValueError("No values to summarize")
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / n)
    return mean, (1.96 * std / math.sqrt(n) if ci95 else std)


def _has_result_files(path: str) -> bool:
    return os.path.isdir(path) and (bool(log_files(path))
                                    or os.path.isfile(os.path.join(path, "results.json")))


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
            if any(_has_result_files(c) for c in children):
                return path
            following += children
            if seen > max_dirs:
                return None
        level = following
    return None


def layout_hint(directory: str, multi_exp: bool) -> str:
    """Why nothing was found in ``directory``: what it must hold and where the runs actually are."""
    expected = "<experiment>/<run>/log.txt" if multi_exp else "<run>/log.txt"
    if _has_result_files(directory):
        return f"{directory} is itself a run folder; give its parent (DIRECTORY holds {expected})"
    children = _subdirs(directory)
    if any(_has_result_files(c) for c in children):
        return f"its subfolders are run folders: drop --multi-exp (it expects DIRECTORY/{expected})"
    if any(_has_result_files(g) for c in children for g in _subdirs(c)):
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
    average = sum(means) / len(means)
    print("Average performance")
    print(f"* {args.keyword}: {average:.2f}%")
    return {args.keyword: average}


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
