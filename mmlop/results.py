"""Where each protocol's runs lie in an output tree, how one run's result is read, and how results
combine over seeds and datasets: the one definition that ``parse_test_res.py``,
``scripts/base2new_table.py``, the sweep (its jobs and its tables) and the proxy benchmark use.
Imports neither torch nor the trainers, so the table commands start at once.

Layout, relative to the output root (``OUTPUT`` of ``scripts/*.sh``), as CoOp, MaPLe and PromptSRC
write it (``scripts/*.sh`` spell the same paths; ``tests/test_results.py`` checks that they agree):

==================  ==========================================================================
protocol            run folder
==================  ==========================================================================
base-to-novel       ``base2new/train_base/<dataset>/shots_<K>/<trainer>/<cfg>/seed<S>`` (train on
                    the base classes, test on them) and ``base2new/test_new/...`` (the same
                    path: evaluate the trained prompts on the novel classes)
few-shot            ``<dataset>/<trainer>/<cfg>_<K>shots/seed<S>``; the training of the
                    cross-dataset and domain-generalization protocols is the same run on the source
cross-dataset, DG   ``evaluation/<trainer>/<cfg>_<K>shots/<dataset>/seed<S>`` (one per target)
zero-shot           ``ZeroshotCLIP/<cfg>/<dataset>`` (no seed level)
==================  ==========================================================================

``<cfg>`` is the config's stem, or the folder a sweep's trainer entry renames it to; CoOp's extra
level (``<cfg>_<K>shots/nctx16_cscFalse_ctpend/seed<S>``) is read as a config named
``<cfg>/nctx16_cscFalse_ctpend``.

Reading a run folder: its ``results.json`` (unrounded), else the ``* <keyword>: <x>%`` lines of its
logs, ``log.txt`` first (as upstream's parser), then the timestamped ``log.txt-*`` of a resumed run,
newest first. A log's result is the last such line after its end signal, and the end signal follows
from what the log is (the one rule for evaluation-only logs):

* a log whose arguments say ``eval_only: True`` (``train.py --eval-only``, ours and upstream's, print
  them) is an evaluation: its end signal is ``=> result``, wherever it lies (a test folder, or the
  training folder of a method that does not train, such as zero-shot CLIP's ``train_base`` run);
* a log whose arguments say ``eval_only: False`` is a training: its end signal is ``Finish
  training``, so a run killed before its final test has no result (never the accuracy of a
  validation pass during training);
* a log that does not say (written by hand, or cut before its arguments) is what the reader takes
  it for: ``test_log`` (``parse_test_res.py --test-log``) reads it as an evaluation.

So ``parse_test_res.py`` and the tables read the same number from every log, with or without
``--test-log``.

Combining: over seeds, the mean and the population standard deviation (``ddof=0``, as CoOp), or
the 95% half-width ``1.96 std / sqrt(n)``; base-to-novel's HM is the harmonic mean of the base and
novel means; the papers' average row (MaPLe, PromptSRC) averages the datasets' base and novel means
and takes the HM of those two averages, never the mean of the per-dataset HMs.
"""
from __future__ import annotations

import json
import math
import os
import re
from typing import Any, Optional, Sequence

# ---- layout ------------------------------------------------------------------------------------
BASE2NEW = "base2new"
BASE2NEW_SPLITS = ("train_base", "test_new")       # base accuracy, novel accuracy
EVALUATION = "evaluation"
ZEROSHOT = "ZeroshotCLIP"        # the folder of scripts/zeroshot.sh, named after the trainer it runs
FEW_SHOT = "few_shot"            # some trees keep their few-shot runs under this folder
TOP_FOLDERS = frozenset({BASE2NEW, EVALUATION, ZEROSHOT, FEW_SHOT})   # top-level folders that are no dataset
SHOTS_FOLDER = re.compile(r"^(.*)_(\d+)shots$")
RESULTS_FILE = "results.json"
LOG_FILE = "log.txt"


def seed_folder(seed: int) -> str:
    """``seed<S>``: the run folder of one seed, below its table cell's folder."""
    return f"seed{seed}"


def _seed(path: str, seed: Optional[int]) -> str:
    return path if seed is None else f"{path}/{seed_folder(seed)}"


def _shots_folder(folder: str, shots: int) -> str:
    """``<cfg>_<K>shots``, with CoOp's extra level after it for a folder ``<cfg>/<variant>``."""
    cfg, _, variant = folder.partition("/")
    return f"{cfg}_{shots}shots" + (f"/{variant}" if variant else "")


def base2new_dir(split: str, dataset: str, shots: int, trainer: str, folder: str,
                 seed: Optional[int] = None) -> str:
    """``base2new/<split>/<dataset>/shots_<K>/<trainer>/<folder>[/seed<S>]``; ``split`` is
    ``train_base`` or ``test_new``; without ``seed``, the folder holding the seed runs."""
    if split not in BASE2NEW_SPLITS:
        raise ValueError(f"base-to-novel split {split!r}: one of {', '.join(BASE2NEW_SPLITS)}")
    return _seed(f"{BASE2NEW}/{split}/{dataset}/shots_{shots}/{trainer}/{folder}", seed)


def few_shot_dir(dataset: str, trainer: str, folder: str, shots: int, seed: Optional[int] = None) -> str:
    """``<dataset>/<trainer>/<folder>_<K>shots[/seed<S>]``: a few-shot run on all classes, also the
    cross-dataset training on its source (``scripts/few_shot.sh``, ``scripts/xd_train.sh``)."""
    return _seed(f"{dataset}/{trainer}/{_shots_folder(folder, shots)}", seed)


def evaluation_dir(dataset: str, trainer: str, folder: str, shots: int, seed: Optional[int] = None) -> str:
    """``evaluation/<trainer>/<folder>_<K>shots/<dataset>[/seed<S>]``: the cross-dataset or
    domain-generalization test of the source-trained prompts on ``dataset`` (``scripts/xd_test.sh``)."""
    return _seed(f"{EVALUATION}/{trainer}/{_shots_folder(folder, shots)}/{dataset}", seed)


def zeroshot_dir(folder: str, dataset: str) -> str:
    """``ZeroshotCLIP/<folder>/<dataset>``: one run, no seed (``scripts/zeroshot.sh``)."""
    return f"{ZEROSHOT}/{folder}/{dataset}"


# ---- reading one run -----------------------------------------------------------------------------
TRAIN_END_SIGNAL = "Finish training"
TEST_END_SIGNAL = "=> result"
JSON_KEYS = {"accuracy": "accuracy", "error": "error_rate", "error_rate": "error_rate", "macro_f1": "macro_f1"}
_EVAL_ONLY_ARG = re.compile(r"^eval_only: (True|False)$")


def listdir_nohidden(path: str) -> list[str]:
    """Entries of ``path`` not starting with a dot."""
    return [name for name in os.listdir(path) if not name.startswith(".")]


def log_files(run_dir: str) -> list[str]:
    """``log.txt`` then the timestamped ``log.txt-*`` files of ``run_dir``, oldest first."""
    names = [n for n in os.listdir(run_dir) if n == LOG_FILE or n.startswith(LOG_FILE + "-")]
    names.sort(key=lambda n: (n != LOG_FILE, n))
    return [os.path.join(run_dir, n) for n in names]


def is_run_folder(path: str) -> bool:
    """Whether ``path`` holds a run's files (a log or ``results.json``), finished or not."""
    return os.path.isdir(path) and (bool(log_files(path)) or os.path.isfile(os.path.join(path, RESULTS_FILE)))


def parse_log(fpath: str, keyword: str = "accuracy", test_log: bool = False) -> Optional[float]:
    """The result ``* <keyword>: <x>%`` of the log ``fpath`` by the module's rule: after
    ``=> result`` in an evaluation log, after ``Finish training`` in a training log; ``test_log``
    decides for a log whose arguments do not say which it is. None: no result."""
    pattern = re.compile(r"\* " + re.escape(keyword) + r": ([\.\deE+-]+)%")
    declared: Optional[bool] = None
    in_arguments = True                                  # eval_only is read from the arguments only
    last = {TRAIN_END_SIGNAL: None, TEST_END_SIGNAL: None}
    started = {TRAIN_END_SIGNAL: False, TEST_END_SIGNAL: False}
    with open(fpath, errors="replace") as f:
        for line in f:
            line = line.strip()
            if in_arguments:
                if line == "** Config **":
                    in_arguments = False
                elif declared is None and _EVAL_ONLY_ARG.match(line):
                    declared = line.endswith("True")
            if line in started:
                started[line] = True
            match = pattern.search(line)
            if match:
                for signal, on in started.items():
                    if on:
                        last[signal] = float(match.group(1))
    evaluation = test_log if declared is None else declared
    return last[TEST_END_SIGNAL if evaluation else TRAIN_END_SIGNAL]


def read_results(run_dir: str) -> Optional[dict[str, Any]]:
    """A run's ``results.json`` as written by ``train.py`` (None: absent or unreadable)."""
    try:
        with open(os.path.join(run_dir, RESULTS_FILE)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _results_json(run_dir: str, keyword: str) -> Optional[dict[str, Any]]:
    """``results.json`` of ``run_dir`` when it holds ``keyword`` (its JSON name), else None."""
    record = read_results(run_dir)
    value = None if record is None else record.get(JSON_KEYS.get(keyword, keyword))
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    out = dict(record)
    out[keyword] = float(value)
    out["source"] = os.path.join(run_dir, RESULTS_FILE)
    return out


def parse_run(run_dir: str, keyword: str = "accuracy", test_log: bool = False,
              exact: bool = True) -> Optional[dict[str, Any]]:
    """The result of one run folder as a dict (``keyword``, ``source``, results.json fields).

    ``exact``: the unrounded value of ``results.json`` when present, else the logs. Otherwise the
    logs' rounded value (``log.txt`` first, as upstream's parser, then the newest ``log.txt-*``),
    else ``results.json``'s value rounded to one decimal, as the log prints it (``rounded``)."""
    from_json = _results_json(run_dir, keyword)
    if exact and from_json is not None:
        return from_json
    logs = log_files(run_dir)
    for fpath in logs[:1] + logs[:0:-1]:          # log.txt, then the timestamped ones, newest first
        value = parse_log(fpath, keyword, test_log)
        if value is not None:
            return {keyword: value, "source": fpath}
    if from_json is not None:
        from_json[keyword] = float(f"{from_json[keyword]:.1f}")
        from_json["rounded"] = True
        return from_json
    return None


def collect_results(directory: str, keyword: str = "accuracy", test_log: bool = False, verbose: bool = False,
                    exact: bool = True) -> list[dict[str, Any]]:
    """One dict per run folder of ``directory`` (sorted by name) that has a result.

    Each dict has ``run`` (folder name), ``source`` (file read), ``keyword`` -> value in percent,
    plus the fields of ``results.json`` when it was the source. Other entries are skipped (with a
    note when ``verbose``). ``exact`` (this function's default; ``parse_test_res.py``'s is upstream's
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
                why = "no result found in its logs" if is_run_folder(run_dir) else "no log.txt or results.json"
                print(f"Skipping {run_dir}: {why}")
            continue
        record["run"] = name
        results.append(record)
    return results


# ---- combining ---------------------------------------------------------------------------------
def summarize(values: Sequence[float], ci95: bool = False) -> tuple[float, float]:
    """``(mean, spread)``: spread = population std (ddof=0, as CoOp), or ``1.96 * std / sqrt(n)``."""
    n = len(values)
    if n == 0:
        raise ValueError("No values to summarize")
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / n)
    return mean, (1.96 * std / math.sqrt(n) if ci95 else std)


def harmonic_mean(base: float, novel: float) -> float:
    """``2 b n / (b + n)`` (0 when both are 0)."""
    return 0.0 if base + novel == 0 else 2 * base * novel / (base + novel)


def average(values: Sequence[Optional[float]]) -> Optional[float]:
    """The mean of the values that exist (an average row over datasets); None when none does."""
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def base2new_average(pairs: Sequence[tuple[Optional[float], Optional[float]]]) -> Optional[tuple[float, float, float]]:
    """The papers' average row of base-to-novel ``(base, novel)`` means, one pair per dataset:
    ``(mean base, mean novel, HM of those two)`` over the datasets that have both; None when none
    does."""
    complete = [(b, n) for b, n in pairs if b is not None and n is not None]
    if not complete:
        return None
    base = sum(b for b, _ in complete) / len(complete)
    novel = sum(n for _, n in complete) / len(complete)
    return base, novel, harmonic_mean(base, novel)


# ---- finding the runs of a tree -------------------------------------------------------------------
def _subdirs(path: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(path) if not n.startswith(".") and os.path.isdir(os.path.join(path, n)))
    except OSError:
        return []


def holds_runs(path: str) -> bool:
    """Whether some sub-folder of ``path`` is a run folder (``path`` is a table cell's folder)."""
    return any(is_run_folder(os.path.join(path, d)) for d in _subdirs(path))


def _shots_folders(path: str) -> list[tuple[str, int, str]]:
    """``(cfg, K, folder)`` for each ``<cfg>_<K>shots`` folder of ``path``, and for each CoOp extra
    level below one (``<cfg>/<variant>``), that holds runs."""
    out = []
    for name in _subdirs(path):
        match = SHOTS_FOLDER.match(name)
        if not match:
            continue
        cfg, shots = match.group(1), int(match.group(2))
        if holds_runs(os.path.join(path, name)):
            out.append((cfg, shots, name))
        else:
            out += [(f"{cfg}/{v}", shots, f"{name}/{v}") for v in _subdirs(os.path.join(path, name))
                    if holds_runs(os.path.join(path, name, v))]
    return out


def find_base2new(root: str) -> dict[tuple[str, str, int], set[str]]:
    """``{(trainer, folder, shots): datasets}`` of the base-to-novel runs under the output root."""
    out: dict[tuple[str, str, int], set[str]] = {}
    for split in BASE2NEW_SPLITS:
        base = os.path.join(root, BASE2NEW, split)
        for d in _subdirs(base):
            for s in _subdirs(os.path.join(base, d)):
                if not s.startswith("shots_") or not s[6:].isdigit():
                    continue
                for t in _subdirs(os.path.join(base, d, s)):
                    for c in _subdirs(os.path.join(base, d, s, t)):
                        if holds_runs(os.path.join(base, d, s, t, c)):
                            out.setdefault((t, c, int(s[6:])), set()).add(d)
    return out


def find_evaluations(root: str) -> dict[tuple[str, str, int], set[str]]:
    """``{(trainer, folder, shots): target datasets}`` of the cross-dataset / DG tests."""
    out: dict[tuple[str, str, int], set[str]] = {}
    base = os.path.join(root, EVALUATION)
    for t in _subdirs(base):
        for c in _subdirs(os.path.join(base, t)):
            match = SHOTS_FOLDER.match(c)
            if not match:
                continue
            for sub in _subdirs(os.path.join(base, t, c)):
                path = os.path.join(base, t, c, sub)
                if holds_runs(path):
                    out.setdefault((t, match.group(1), int(match.group(2))), set()).add(sub)
                else:                                   # CoOp's extra level
                    for d in _subdirs(path):
                        if holds_runs(os.path.join(path, d)):
                            out.setdefault((t, f"{match.group(1)}/{sub}", int(match.group(2))), set()).add(d)
    return out


def find_few_shot(root: str) -> dict[tuple[str, str, int], set[str]]:
    """``{(trainer, folder, shots): datasets}`` of the runs in the few-shot layout (under the root
    or its ``few_shot/`` folder), the cross-dataset trainings on a source included."""
    out: dict[tuple[str, str, int], set[str]] = {}
    for top in (root, os.path.join(root, FEW_SHOT)):
        for d in _subdirs(top):
            if d in TOP_FOLDERS:
                continue
            for t in _subdirs(os.path.join(top, d)):
                for folder, shots, _ in _shots_folders(os.path.join(top, d, t)):
                    out.setdefault((t, folder, shots), set()).add(d)
    return out


def find_zeroshot(root: str) -> dict[str, set[str]]:
    """``{cfg: datasets}`` of the zero-shot runs."""
    base = os.path.join(root, ZEROSHOT)
    out: dict[str, set[str]] = {}
    for c in _subdirs(base):
        for d in _subdirs(os.path.join(base, c)):
            if is_run_folder(os.path.join(base, c, d)):
                out.setdefault(c, set()).add(d)
    return out


def top_datasets(root: str) -> list[str]:
    """The top-level folders of an output root that are datasets (few-shot runs, trainings)."""
    return [d for d in _subdirs(root) if d not in TOP_FOLDERS]
