"""Aggregate test results over seeds (CoOp's ``parse_test_res.py``, plus results.json and a table).

    python parse_test_res.py output/.../CoOp/vit_b16_16shots/            # seed folders inside
    python parse_test_res.py output/evaluation/... --test-log            # eval-only logs
    python parse_test_res.py output/base2new/train_base/ --multi-exp      # experiment/seed folders

Each run folder's ``results.json`` is used when it holds the metric; otherwise its logs
(``log.txt`` and the timestamped ``log.txt-*`` written by later runs, newest wins) are parsed:
after the end signal (``Finish training``, or ``=> result`` with ``--test-log``) the last line
``* <keyword>: <value>%`` counts. Entries without results are skipped with a note.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
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


def parse_run(run_dir: str, keyword: str = "accuracy", test_log: bool = False) -> Optional[dict[str, Any]]:
    """The result of one run folder as a dict (``keyword``, ``source`` and results.json fields)."""
    json_path = os.path.join(run_dir, "results.json")
    json_key = JSON_KEYS.get(keyword, keyword)
    if os.path.isfile(json_path):
        try:
            record = read_json(json_path)
        except (OSError, ValueError):
            record = None
        if isinstance(record, dict) and isinstance(record.get(json_key), (int, float)):
            out = dict(record)
            out[keyword] = float(record[json_key])
            out["source"] = json_path
            return out
    end_signal = TEST_END_SIGNAL if test_log else TRAIN_END_SIGNAL
    for fpath in reversed(log_files(run_dir)):
        value = parse_log(fpath, keyword, end_signal)
        if value is not None:
            return {keyword: value, "source": fpath}
    return None


def collect_results(
    directory: str, keyword: str = "accuracy", test_log: bool = False, verbose: bool = False
) -> list[dict[str, Any]]:
    """One dict per run folder of ``directory`` (sorted by name) that has a result.

    Each dict has ``run`` (folder name), ``source`` (file read), ``keyword`` -> value in percent,
    plus the fields of ``results.json`` when it was the source. Other entries are skipped (with a
    note when ``verbose``).
    """
    results = []
    for name in sorted(listdir_nohidden(directory)):
        run_dir = os.path.join(directory, name)
        if not os.path.isdir(run_dir):
            if verbose:
                print(f"Skipping {run_dir}: not a run folder")
            continue
        record = parse_run(run_dir, keyword, test_log)
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


def parse_function(directory: str, keyword: str = "accuracy", test_log: bool = False,
                   ci95: bool = False) -> dict[str, float]:
    """Print the per-run lines, the CoOp-style summary and a table; return ``{keyword: mean}``."""
    print(f"Parsing files in {directory}")
    results = collect_results(directory, keyword, test_log, verbose=True)
    if not results:
        raise ValueError(f"Nothing found in {directory} (no run folder with a {keyword} result)")
    for record in results:
        print(f"file: {record['source']}. {keyword}: {record[keyword]:.2f}%. ")
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
    args = parser.parse_args(argv)
    if not os.path.isdir(args.directory):
        parser.error(f"not a directory: {args.directory}")
    if not args.multi_exp:
        return parse_function(args.directory, args.keyword, args.test_log, args.ci95)
    means = []
    for name in sorted(listdir_nohidden(args.directory)):
        exp_dir = os.path.join(args.directory, name)
        if not os.path.isdir(exp_dir):
            continue
        try:
            means.append(parse_function(exp_dir, args.keyword, args.test_log, args.ci95)[args.keyword])
        except ValueError as exc:
            print(f"Skipping {exp_dir}: {exc}")
        print()
    if not means:
        raise SystemExit(f"Nothing found in {args.directory}")
    average = sum(means) / len(means)
    print("Average performance")
    print(f"* {args.keyword}: {average:.2f}%")
    return {args.keyword: average}


if __name__ == "__main__":
    main()
