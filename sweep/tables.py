"""The papers' tables from an output tree (ours, the scripts', or upstream CoOp / CoCoOp / MaPLe /
PromptSRC), optionally beside the same tables of other trees.

Every number is read by ``parse_test_res.collect_results(<folder>, test_log=True)`` and averaged by
``parse_test_res.summarize`` (population std over the seed folders), so a cell equals what
``python parse_test_res.py <folder> --test-log`` prints for the same folder: ``results.json`` when a
run has one, else its ``log.txt`` (upstream trees). Missing cells are ``–``, never 0.

Layouts (the folders of ``scripts/*.sh`` and upstream):

* base-to-novel: ``base2new/{train_base,test_new}/<dataset>/shots_<K>/<T>/<cfg>/seed*``; per
  dataset base, novel (mean ± std over seeds) and HM of the two means; the average row averages
  the datasets' base and novel and takes the HM of those averages (as the MaPLe / PromptSRC
  papers);
* cross-dataset and domain generalization: the training ``<source>/<T>/<cfg>_<K>shots/seed*``
  (its final test is the source accuracy) and ``evaluation/<T>/<cfg>_<K>shots/<dataset>/seed*``;
  the source's shifted copies (``spec.DOMAIN_SHIFTS``: the ImageNet variants for ImageNet) form
  the DG table, the other targets the cross-dataset table, each with the average over its targets;
* few-shot: ``<dataset>/<T>/<cfg>_<K>shots/seed*`` (also under ``few_shot/``), datasets x shots;
* zero-shot: ``ZeroshotCLIP/<cfg>/<dataset>``.

CoOp's extra level (``<cfg>_<K>shots/nctx16_cscFalse_ctpend/seed*``) is read as a config named
``<cfg>/nctx16_cscFalse_ctpend``.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

from parse_test_res import collect_results, parse_run, summarize

from .spec import BENCHMARK_11, DOMAIN_SHIFTS, SHIFTED_DATASETS

MISSING = "–"
SETTING_NAMES = {"shots": "shots", "backbone": "backbone", "epochs": "epochs", "classes": "classes"}
KNOWN_ORDER = BENCHMARK_11 + tuple(d for targets in DOMAIN_SHIFTS.values() for d in targets)
SKIP_TOP = {"base2new", "evaluation", "ZeroshotCLIP", "few_shot"}
SHOTS_RE = re.compile(r"^(.*)_(\d+)shots$")


def harmonic_mean(a: float, b: float) -> float:
    """``2 a b / (a + b)`` (0 when both are 0), as ``scripts/base2new_table.py``."""
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def dataset_order(names: Iterable[str]) -> list[str]:
    names = set(names)
    return [d for d in KNOWN_ORDER if d in names] + sorted(names - set(KNOWN_ORDER))


# ---- settings of a run (for the mismatch flags) ------------------------------------------------
def parse_config_dump(text: str) -> dict[str, str]:
    """``{"DATASET.NUM_SHOTS": "16", ...}`` from the yacs config printed in a log (after
    ``** Config **``) or a ``config.yaml``: indented ``KEY: value`` lines."""
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    started = "** Config **" not in text
    for line in text.splitlines():
        if not started:
            started = line.strip() == "** Config **"
            continue
        if line.startswith("Collecting env info") or line.startswith("** System info"):
            break
        m = re.match(r"^(\s*)([A-Za-z0-9_]+):(?:\s(.*))?$", line)
        if not m:
            continue
        indent, key, value = len(m.group(1)), m.group(2), (m.group(3) or "").strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if value == "":
            stack.append((indent, key))
            continue
        out[".".join([k for _, k in stack] + [key])] = value.strip("'\"")
    return out


def _log_settings(path: str) -> dict[str, Any]:
    try:
        with open(path, errors="replace") as f:
            text = f.read(2_000_000)
    except OSError:
        return {}
    dump = parse_config_dump(text)
    out: dict[str, Any] = {}
    if "DATASET.NUM_SHOTS" in dump:
        out["shots"] = _num(dump["DATASET.NUM_SHOTS"])
    if "MODEL.BACKBONE.NAME" in dump:
        out["backbone"] = dump["MODEL.BACKBONE.NAME"]
    load = re.search(r"^load_epoch: (\d+)\s*$", text, re.M)
    if load:
        out["epochs"] = int(load.group(1))
    elif "OPTIM.MAX_EPOCH" in dump and "Finish" in text:
        out["epochs"] = _num(dump["OPTIM.MAX_EPOCH"])
    classes = re.findall(r"^#\s*classes\s+([\d,]+)\s*$", text, re.M)
    if classes:
        out["classes"] = int(classes[-1].replace(",", ""))
    return out


def _num(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return text


def run_settings(record: dict) -> dict[str, Any]:
    """Shots, backbone, epochs behind the weights and classes of one run, where known: from its
    ``results.json`` fields, else from its log's config dump and dataset summary."""
    source = record.get("source", "")
    if source.endswith("results.json"):
        out = {"shots": record.get("num_shots"), "backbone": record.get("backbone"),
               "epochs": record.get("epoch"), "classes": record.get("num_classes")}
        return {k: v for k, v in out.items() if v is not None}
    return _log_settings(source)


# ---- cells ---------------------------------------------------------------------------------------
@dataclass
class Cell:
    """One folder of seed runs: the values parse_test_res reads, their mean and population std."""

    values: list[float]
    runs: list[str]
    settings: dict[str, set] = field(default_factory=dict)
    folder: str = ""          # the runs are ``<folder>/<run>`` (their config.yaml: the recipe notes)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return summarize(self.values)[0]

    @property
    def std(self) -> float:
        return summarize(self.values)[1]

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "n": self.n, "values": self.values, "runs": self.runs}


def _settings_of(records: Sequence[dict]) -> dict[str, set]:
    out: dict[str, set] = {}
    for r in records:
        for k, v in run_settings(r).items():
            out.setdefault(k, set()).add(v)
    return out


def read_cell(directory: str) -> Optional[Cell]:
    """The runs in ``directory`` (its sub-folders), as ``parse_test_res.py DIR --test-log``."""
    if not os.path.isdir(directory):
        return None
    records = collect_results(directory, test_log=True)
    if not records:
        return None
    return Cell([r["accuracy"] for r in records], [r["run"] for r in records], _settings_of(records), directory)


def read_single(run_dir: str) -> Optional[Cell]:
    """One run folder (zero-shot: no seed level)."""
    if not os.path.isdir(run_dir):
        return None
    record = parse_run(run_dir, test_log=True)
    if record is None:
        return None
    return Cell([record["accuracy"]], [os.path.basename(run_dir)], _settings_of([record]), os.path.dirname(run_dir))


# ---- trees ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Method:
    trainer: str
    folder: str               # config stem (or the renamed folder), plus "/<variant>" for CoOp's extra level
    shots: int
    per_dataset: tuple[tuple[str, str], ...] = ()    # (dataset, folder) where a dataset has its own default

    @property
    def name(self) -> str:
        own = ", ".join(f"{d}: {f}" for d, f in self.per_dataset)
        return f"{self.trainer}/{self.folder}" + (f" ({own})" if own else "")

    def folder_for(self, dataset: str) -> str:
        return dict(self.per_dataset).get(dataset, self.folder)


def _subdirs(path: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(path) if not n.startswith(".") and os.path.isdir(os.path.join(path, n)))
    except OSError:
        return []


def _has_runs(path: str) -> bool:
    return any(os.path.isfile(os.path.join(path, d, "results.json")) or os.path.isfile(os.path.join(path, d, "log.txt"))
               for d in _subdirs(path))


class Tree:
    """An output root (``output/``, or its ``base2new/`` folder) and where its runs are."""

    def __init__(self, root: str, label: str = "ours") -> None:
        root = os.path.abspath(root)
        if os.path.basename(root) == "base2new" and os.path.isdir(os.path.join(root, "train_base")):
            self.root, self.b2n = os.path.dirname(root), root
        else:
            self.root, self.b2n = root, os.path.join(root, "base2new")
        self.label = label

    # base-to-novel
    def b2n_dir(self, split: str, dataset: str, m: Method) -> str:
        return os.path.join(self.b2n, split, dataset, f"shots_{m.shots}", m.trainer, m.folder_for(dataset))

    def b2n_methods(self) -> dict[Method, set[str]]:
        out: dict[Method, set[str]] = {}
        for split in ("train_base", "test_new"):
            base = os.path.join(self.b2n, split)
            for d in _subdirs(base):
                for s in _subdirs(os.path.join(base, d)):
                    if not s.startswith("shots_") or not s[6:].isdigit():
                        continue
                    for t in _subdirs(os.path.join(base, d, s)):
                        for c in _subdirs(os.path.join(base, d, s, t)):
                            if _has_runs(os.path.join(base, d, s, t, c)):
                                out.setdefault(Method(t, c, int(s[6:])), set()).add(d)
        return merge_dataset_defaults(out, "base2new")

    # cross-dataset / domain generalization
    def eval_dir(self, m: Method, dataset: str) -> str:
        folder, _, variant = m.folder.partition("/")
        return os.path.join(self.root, "evaluation", m.trainer, f"{folder}_{m.shots}shots", variant, dataset)

    def source_dir(self, m: Method, source: str) -> str:
        folder, _, variant = m.folder.partition("/")
        return os.path.join(self.root, source, m.trainer, f"{folder}_{m.shots}shots", variant)

    def xd_methods(self) -> dict[Method, set[str]]:
        out: dict[Method, set[str]] = {}
        base = os.path.join(self.root, "evaluation")
        for t in _subdirs(base):
            for c in _subdirs(os.path.join(base, t)):
                match = SHOTS_RE.match(c)
                if not match:
                    continue
                for sub in _subdirs(os.path.join(base, t, c)):
                    path = os.path.join(base, t, c, sub)
                    if _has_runs(path):
                        out.setdefault(Method(t, match.group(1), int(match.group(2))), set()).add(sub)
                    else:                                   # CoOp's extra level
                        for d in _subdirs(path):
                            if _has_runs(os.path.join(path, d)):
                                out.setdefault(Method(t, f"{match.group(1)}/{sub}", int(match.group(2))),
                                               set()).add(d)
        return out

    def source_of(self, m: Method) -> Optional[str]:
        found = [d for d in self._top_datasets() if _has_runs(self.source_dir(m, d))]
        return "imagenet" if "imagenet" in found else (found[0] if found else None)

    # few-shot
    def fs_dir(self, m: Method, dataset: str) -> str:
        folder, _, variant = m.folder.partition("/")
        for root in (self.root, os.path.join(self.root, "few_shot")):
            path = os.path.join(root, dataset, m.trainer, f"{folder}_{m.shots}shots", variant)
            if os.path.isdir(path):
                return path
        return os.path.join(self.root, dataset, m.trainer, f"{folder}_{m.shots}shots", variant)

    def _top_datasets(self) -> list[str]:
        return [d for d in _subdirs(self.root) if d not in SKIP_TOP]

    def fs_methods(self) -> dict[Method, set[str]]:
        xd = {(m.trainer, m.folder, m.shots) for m in self.xd_methods()}
        out: dict[Method, set[str]] = {}
        for root in (self.root, os.path.join(self.root, "few_shot")):
            for d in _subdirs(root):
                if d in SKIP_TOP:
                    continue
                for t in _subdirs(os.path.join(root, d)):
                    for c in _subdirs(os.path.join(root, d, t)):
                        match = SHOTS_RE.match(c)
                        if not match:
                            continue
                        path = os.path.join(root, d, t, c)
                        folders = [match.group(1)] if _has_runs(path) else \
                            [f"{match.group(1)}/{v}" for v in _subdirs(path) if _has_runs(os.path.join(path, v))]
                        for folder in folders:
                            key = (t, folder, int(match.group(2)))
                            if key in xd:          # the training of a cross-dataset run
                                continue
                            out.setdefault(Method(*key), set()).add(d)
        return out

    # zero-shot
    def zs_dir(self, cfg: str, dataset: str) -> str:
        return os.path.join(self.root, "ZeroshotCLIP", cfg, dataset)

    def zs_methods(self) -> dict[str, set[str]]:
        base = os.path.join(self.root, "ZeroshotCLIP")
        out: dict[str, set[str]] = {}
        for c in _subdirs(base):
            for d in _subdirs(os.path.join(base, c)):
                p = os.path.join(base, c, d)
                if os.path.isfile(os.path.join(p, "results.json")) or os.path.isfile(os.path.join(p, "log.txt")):
                    out.setdefault(c, set()).add(d)
        return out


def merge_dataset_defaults(found: dict[Method, set[str]], protocol: str) -> dict[Method, set[str]]:
    """Put the runs of a registered trainer's dataset-specific default config (e.g. CoOp's
    ``"base2new:imagenet"``) into the table of its protocol default, as the scripts and sweeps
    run them, unless the tree also has that dataset under the protocol default."""
    from trainers.core.methods import method_info

    out = dict(found)
    for m, datasets in found.items():
        try:
            defaults = method_info(m.trainer).default_configs
        except KeyError:                              # a trainer of another project
            continue
        main = defaults.get(protocol)
        own = {d for d in datasets if defaults.get(f"{protocol}:{d}") == m.folder != main}
        if not main or own != datasets:
            continue
        target = next((o for o in out if (o.trainer, o.folder, o.shots) == (m.trainer, main, m.shots)),
                      Method(m.trainer, main, m.shots))
        if own & out.get(target, set()):
            continue
        merged = Method(target.trainer, target.folder, target.shots,
                        tuple(sorted(target.per_dataset + tuple((d, m.folder) for d in own))))
        out[merged] = out.pop(target, set()) | own
        del out[m]
    return out


# ---- tables --------------------------------------------------------------------------------------
@dataclass
class Table:
    """One table: ``rows`` of ``{"name", "kind", "cells": {tree label: {column: Cell | float | None}}}``."""

    protocol: str
    title: str
    method: dict
    columns: list[str]
    trees: list[str]
    rows: list[dict]
    derived: set = field(default_factory=set)      # columns that are computed (HM): no std, no seeds
    notes: list[str] = field(default_factory=list)
    seeds: list[str] = field(default_factory=list)  # the seed folders asked for (Seeds column: found/asked)


def _value(v) -> Optional[float]:
    if v is None:
        return None
    return v.mean if isinstance(v, Cell) else float(v)


def _fmt(v, with_std: bool = True) -> str:
    if v is None:
        return MISSING
    if isinstance(v, Cell):
        return f"{v.mean:.2f} ± {v.std:.2f}" if with_std and v.n > 1 else f"{v.mean:.2f}"
    return f"{v:.2f}"


def _delta(a, b) -> Optional[float]:
    va, vb = _value(a), _value(b)
    return None if va is None or vb is None else vb - va


def _average(cells: Sequence) -> Optional[float]:
    vals = [_value(c) for c in cells]
    vals = [v for v in vals if v is not None]
    return sum(vals) / len(vals) if vals else None


def _b2n_rows(tree: Tree, m: Method, datasets: Sequence[str]) -> tuple[list[dict], dict]:
    rows, complete = [], []
    for d in datasets:
        base, novel = read_cell(tree.b2n_dir("train_base", d, m)), read_cell(tree.b2n_dir("test_new", d, m))
        hm = harmonic_mean(base.mean, novel.mean) if base and novel else None
        rows.append({"Base": base, "Novel": novel, "HM": hm})
        if base and novel:
            complete.append(d)
    avg = {"Base": None, "Novel": None, "HM": None}
    if complete:
        b = sum(r["Base"].mean for r in rows if r["HM"] is not None) / len(complete)
        n = sum(r["Novel"].mean for r in rows if r["HM"] is not None) / len(complete)
        avg = {"Base": b, "Novel": n, "HM": harmonic_mean(b, n)}
    return rows, {"cells": avg, "over": complete}


def _match(other: Tree, m: Method, found: dict[Method, Any]) -> tuple[Method, Optional[str]]:
    """The other tree's method for ``m``: the same trainer, config and shots, else the same trainer
    and shots with a single config (named in a note)."""
    if m in found:
        return m, None
    same = [o for o in found if o.trainer == m.trainer and o.shots == m.shots]
    if len(same) == 1:
        return same[0], f"{other.label}: {same[0].name} compared with {m.name}"
    return m, None


def _mismatch_notes(table: Table, ours: str) -> None:
    """Flag settings (shots, backbone, epochs, classes) that differ between the trees' runs."""
    found: dict[tuple, list[str]] = {}
    for row in table.rows:
        mine = row["cells"].get(ours, {})
        for label in table.trees[1:]:
            theirs = row["cells"].get(label, {})
            for col in table.columns:
                a, b = mine.get(col), theirs.get(col)
                if not isinstance(a, Cell) or not isinstance(b, Cell):
                    continue
                for key in SETTING_NAMES:
                    va, vb = a.settings.get(key), b.settings.get(key)
                    if va and vb and va != vb:
                        what = (label, key, _show_set(va), _show_set(vb))
                        found.setdefault(what, []).append(f"{row['name']} {col}".strip())
    for (label, key, va, vb), where in found.items():
        places = ", ".join(where[:6]) + (f" and {len(where) - 6} more" if len(where) > 6 else "")
        table.notes.append(f"⚠ settings differ: {key} {va} (ours) vs {vb} ({label}) in {places}")


def _show_set(values: set) -> str:
    return "/".join(str(v) for v in sorted(values, key=str))


def base2new_table(trees: Sequence[Tree], m: Method, datasets: Sequence[str]) -> Table:
    labels = [t.label for t in trees]
    table = Table("base2new", f"Base-to-novel: {m.name}, {_shots(m.shots)}", _method_dict(m), ["Base", "Novel", "HM"],
                  labels, [], derived={"HM"})
    per_tree = []
    for i, tree in enumerate(trees):
        mm, note = (m, None) if i == 0 else _match(tree, m, tree.b2n_methods())
        if note:
            table.notes.append(note)
        per_tree.append(_b2n_rows(tree, mm, datasets))
    for j, d in enumerate(datasets):
        cells = {t.label: per_tree[i][0][j] for i, t in enumerate(trees)}
        table.rows.append({"name": d, "kind": "dataset", "cells": cells})
    _average_row(table, trees, [p[1] for p in per_tree], len(datasets), "Average")
    _mismatch_notes(table, labels[0])
    return table


def _average_row(table: Table, trees: Sequence[Tree], averages: Sequence[dict], total: int, name: str) -> None:
    over = [tuple(a["over"]) for a in averages]
    row = {"name": name, "kind": "average", "cells": {t.label: a["cells"] for t, a in zip(trees, averages)},
           "over": {t.label: list(a["over"]) for t, a in zip(trees, averages)}}
    if over[0] and len(over[0]) < total:
        row["name"] = f"{name} ({len(over[0])}/{total})"
    for t, o in zip(trees[1:], over[1:]):
        if o != over[0]:
            table.notes.append(f"the averages of ours and {t.label} are over different datasets "
                               f"({len(over[0])} vs {len(o)}): no difference shown for them")
            row.setdefault("no_delta", []).append(t.label)
    table.rows.append(row)


def _shots(k: int) -> str:
    return f"{k} shot" + ("" if k == 1 else "s")


def _method_dict(m: Method) -> dict:
    out = {"trainer": m.trainer, "folder": m.folder, "shots": m.shots}
    if m.per_dataset:
        out["per_dataset"] = dict(m.per_dataset)
    return out


def xd_table(trees: Sequence[Tree], m: Method, targets: Sequence[str], protocol: str, source: Optional[str]) -> Table:
    """Cross-dataset (``xd``) or domain generalization (``dg``): the source row, the targets, and
    the average over the targets."""
    labels = [t.label for t in trees]
    title = "Cross-dataset" if protocol == "xd" else "Domain generalization"
    table = Table(protocol, f"{title}: {m.name}, {_shots(m.shots)}", _method_dict(m), ["Accuracy"], labels, [])
    averages = []
    source_cells, target_cells = {}, {}
    for i, tree in enumerate(trees):
        mm, note = (m, None) if i == 0 else _match(tree, m, tree.xd_methods())
        if note:
            table.notes.append(note)
        src = source or tree.source_of(mm) or "imagenet"
        source_cells[tree.label] = (src, read_cell(tree.source_dir(mm, src)))
        cells = [read_cell(tree.eval_dir(mm, d)) for d in targets]
        target_cells[tree.label] = cells
        over = [d for d, c in zip(targets, cells) if c is not None]
        averages.append({"cells": {"Accuracy": _average(cells)}, "over": over})
    src_name = source_cells[labels[0]][0]
    table.rows.append({"name": f"{src_name} (source)", "kind": "source",
                       "cells": {lab: {"Accuracy": source_cells[lab][1]} for lab in labels}})
    for j, d in enumerate(targets):
        table.rows.append({"name": d, "kind": "dataset",
                           "cells": {lab: {"Accuracy": target_cells[lab][j]} for lab in labels}})
    _average_row(table, trees, averages, len(targets), "Average (targets)")
    _mismatch_notes(table, labels[0])
    return table


def few_shot_table(trees: Sequence[Tree], trainer: str, folder: str, shots: Sequence[int],
                   datasets: Sequence[str]) -> Table:
    labels = [t.label for t in trees]
    columns = [_shots(k) for k in shots]
    table = Table("few_shot", f"Few-shot: {trainer}/{folder}", {"trainer": trainer, "folder": folder,
                                                                 "shots": list(shots)}, columns, labels, [])
    per_tree = {}
    for i, tree in enumerate(trees):
        found = tree.fs_methods() if i else {}
        cols = {}
        for k, col in zip(shots, columns):
            mm, note = (Method(trainer, folder, k), None) if i == 0 else _match(tree, Method(trainer, folder, k), found)
            if note and note not in table.notes:
                table.notes.append(note)
            cols[col] = [read_cell(tree.fs_dir(mm, d)) for d in datasets]
        per_tree[tree.label] = cols
    for j, d in enumerate(datasets):
        table.rows.append({"name": d, "kind": "dataset",
                           "cells": {lab: {c: per_tree[lab][c][j] for c in columns} for lab in labels}})
    row = {"name": "Average", "kind": "average", "cells": {}, "over": {}}
    for lab in labels:
        row["cells"][lab] = {c: _average(per_tree[lab][c]) if all(per_tree[lab][c]) else None for c in columns}
    if any(not all(per_tree[labels[0]][c]) for c in columns):
        table.notes.append("Average: only for shot counts with every dataset")
    table.rows.append(row)
    _mismatch_notes(table, labels[0])
    return table


def zeroshot_table(trees: Sequence[Tree], cfg: str, datasets: Sequence[str]) -> Table:
    labels = [t.label for t in trees]
    table = Table("zeroshot", f"Zero-shot CLIP: {cfg}", {"trainer": "ZeroshotCLIP", "folder": cfg, "shots": None},
                  ["Accuracy"], labels, [])
    averages = []
    cells_by = {}
    for tree in trees:
        cells = [read_single(tree.zs_dir(cfg, d)) for d in datasets]
        cells_by[tree.label] = cells
        averages.append({"cells": {"Accuracy": _average(cells)}, "over": [d for d, c in zip(datasets, cells) if c]})
    for j, d in enumerate(datasets):
        cells = {lab: {"Accuracy": cells_by[lab][j]} for lab in labels}
        table.rows.append({"name": d, "kind": "dataset", "cells": cells})
    _average_row(table, trees, averages, len(datasets), "Average")
    _mismatch_notes(table, labels[0])
    return table


# ---- what to tabulate --------------------------------------------------------------------------
@dataclass
class Selection:
    """Restrict the tables to a sweep's methods, datasets and shots (None: whatever the tree has)."""

    protocols: Optional[Sequence[str]] = None
    methods: Optional[Sequence[tuple[str, str]]] = None          # (trainer, folder)
    datasets: Optional[dict] = None                              # protocol -> datasets
    shots: Optional[dict] = None                                 # protocol -> shot counts
    source: Optional[str] = None
    labels: Optional[dict] = None                                # (trainer, folder) -> row label
    seeds: Optional[Sequence[int]] = None                        # the seeds asked for (else: those found)


def build_tables(tree: Tree, others: Sequence[Tree] = (), sel: Optional[Selection] = None) -> list[Table]:
    sel = sel or Selection()
    trees = [tree, *others]
    want = set(sel.protocols) if sel.protocols else {"base2new", "xd", "dg", "few_shot", "zeroshot"}
    methods = set(sel.methods) if sel.methods else None
    tables: list[Table] = []

    def keep(trainer: str, folder: str) -> bool:
        return methods is None or (trainer, folder) in methods

    def shots_ok(protocol: str, k: int) -> bool:
        return not sel.shots or protocol not in sel.shots or k in sel.shots[protocol]

    if "base2new" in want:
        found = tree.b2n_methods()
        for m in sorted(found, key=lambda m: (m.shots, m.trainer, m.folder)):
            if any(keep(m.trainer, f) for f in (m.folder, *dict(m.per_dataset).values())) \
                    and shots_ok("base2new", m.shots):
                ds = (sel.datasets or {}).get("base2new") or dataset_order(found[m])
                tables.append(base2new_table(trees, m, ds))
    if want & {"xd", "dg"}:
        found = tree.xd_methods()
        for m in sorted(found, key=lambda m: (m.shots, m.trainer, m.folder)):
            if not keep(m.trainer, m.folder):
                continue
            for protocol in ("xd", "dg"):
                if protocol not in want or not shots_ok(protocol, m.shots):
                    continue
                given = (sel.datasets or {}).get(protocol)
                if given:
                    targets = list(given)
                else:
                    names = dataset_order(found[m])
                    src = sel.source or tree.source_of(m)
                    shifted = set(DOMAIN_SHIFTS.get(src or "", ())) or SHIFTED_DATASETS
                    if protocol == "dg":
                        targets = [d for d in names if d in shifted]
                    else:
                        targets = [d for d in names if d not in shifted and d != src]
                if targets:
                    tables.append(xd_table(trees, m, targets, protocol, sel.source))
    if "few_shot" in want:
        found = tree.fs_methods()
        groups: dict[tuple[str, str], set[int]] = {}
        datasets: dict[tuple[str, str], set[str]] = {}
        for m, ds in found.items():
            if keep(m.trainer, m.folder) and shots_ok("few_shot", m.shots):
                groups.setdefault((m.trainer, m.folder), set()).add(m.shots)
                datasets.setdefault((m.trainer, m.folder), set()).update(ds)
        for (t, f), ks in sorted(groups.items()):
            shots = sorted(ks) if not (sel.shots and "few_shot" in sel.shots) else list(sel.shots["few_shot"])
            ds = (sel.datasets or {}).get("few_shot") or dataset_order(datasets[(t, f)])
            tables.append(few_shot_table(trees, t, f, shots, ds))
    if "zeroshot" in want:
        found = tree.zs_methods()
        for cfg in sorted(found):
            if keep("ZeroshotCLIP", cfg):
                ds = (sel.datasets or {}).get("zeroshot") or dataset_order(found[cfg])
                tables.append(zeroshot_table(trees, cfg, ds))
    for t in tables:
        _count_seeds(t, sel.seeds)
        label = (sel.labels or {}).get((t.method.get("trainer"), t.method.get("folder")))
        if label and label != f"{t.method.get('trainer')}/{t.method.get('folder')}":
            head, _, rest = t.title.partition(": ")
            t.title = f"{head}: {label} ({rest})"
    return tables


# ---- output --------------------------------------------------------------------------------------
def _headers(table: Table) -> list[str]:
    heads = ["Dataset", *table.columns, "Seeds"]
    for label in table.trees[1:]:
        heads += [f"{c} [{label}]" for c in table.columns] + [f"Δ {c} [{label}]" for c in table.columns]
    return heads


def _count_seeds(table: Table, asked: Optional[Sequence[int]]) -> None:
    """The seeds each cell should have: those asked for (a sweep), else every seed found in the
    table; the missing ones are listed under it. Zero-shot cells have no seeds."""
    if table.protocol == "zeroshot":
        return
    ours = table.trees[0]
    cells = [(row["name"], c, row["cells"].get(ours, {}).get(c)) for row in table.rows if row["kind"] == "dataset"
             for c in table.columns if c not in table.derived]
    found = {r for _, _, v in cells if isinstance(v, Cell) for r in v.runs}
    names = [f"seed{s}" for s in asked] if asked else sorted(found, key=lambda r: (len(r), r))
    table.seeds = names
    missing = []
    for dataset, col, v in cells:
        have = set(v.runs) if isinstance(v, Cell) else set()
        lost = [n for n in names if n not in have]
        if lost:
            missing.append(f"{dataset} {col}: {', '.join(lost)}")
    if missing:
        shown = "; ".join(missing[:12]) + (f"; and {len(missing) - 12} more" if len(missing) > 12 else "")
        table.notes.append(f"missing seeds (of {', '.join(names)}): {shown}")


def _seeds(cells: dict, table: Table) -> str:
    """``found/asked`` (one number per column where the columns differ)."""
    columns = [c for c in table.columns if c not in table.derived]
    asked = set(table.seeds)
    ns = {c: (len(asked & set(cells[c].runs)) if asked else cells[c].n) if isinstance(cells.get(c), Cell) else 0
          for c in columns}
    if not any(ns.values()):
        return ""
    total = f"/{len(asked)}" if asked else ""
    if len(set(ns.values())) == 1:
        return f"{next(iter(ns.values()))}{total}"
    return ", ".join(f"{c} {n}{total}" for c, n in ns.items())


def to_markdown(table: Table) -> str:
    from tabulate import tabulate

    body = []
    ours = table.trees[0]
    for row in table.rows:
        mine = row["cells"].get(ours, {})
        line = [row["name"]] + [_fmt(mine.get(c)) for c in table.columns]
        line.append("" if row["kind"] == "average" else _seeds(mine, table))
        for label in table.trees[1:]:
            theirs = row["cells"].get(label, {})
            line += [_fmt(theirs.get(c)) for c in table.columns]
            for c in table.columns:
                d = None if label in row.get("no_delta", ()) else _delta(mine.get(c), theirs.get(c))
                line.append(MISSING if d is None else f"{d:+.2f}")
        body.append(line)
    text = f"### {table.title}\n\n" + tabulate(body, headers=_headers(table), tablefmt="github",
                                                disable_numparse=True)
    if len(table.trees) > 1:
        text += f"\n\nΔ = the other tree − ours ({', '.join(table.trees[1:])})."
    for note in table.notes:
        text += f"\n{note}"
    return text


def to_records(table: Table) -> list[dict]:
    """One flat record per row (CSV): numbers unrounded, missing cells empty."""
    out = []
    for row in table.rows:
        rec: dict[str, Any] = {"protocol": table.protocol, "trainer": table.method.get("trainer"),
                               "config": table.method.get("folder"),
                               "shots": table.method.get("shots") if not isinstance(table.method.get("shots"), list)
                               else "", "dataset": row["name"]}
        mine = row["cells"].get(table.trees[0], {})
        for label in table.trees:
            cells = row["cells"].get(label, {})
            prefix = "" if label == table.trees[0] else f"{label}:"
            for c in table.columns:
                v = cells.get(c)
                rec[f"{prefix}{c}"] = _value(v)
                if isinstance(v, Cell):
                    rec[f"{prefix}{c} std"] = v.std
                    rec[f"{prefix}{c} seeds"] = v.n
                if prefix:
                    rec[f"{prefix}Δ {c}"] = None if label in row.get("no_delta", ()) else _delta(mine.get(c), v)
        out.append(rec)
    return out


def to_json(table: Table) -> dict:
    def enc(v):
        if isinstance(v, Cell):
            return v.to_dict()
        return v

    rows = []
    for row in table.rows:
        rows.append({"name": row["name"], "kind": row["kind"],
                     "cells": {lab: {c: enc(v) for c, v in cells.items()} for lab, cells in row["cells"].items()},
                     **({"over": row["over"]} if "over" in row else {})})
    return {"protocol": table.protocol, "title": table.title, "method": table.method, "columns": table.columns,
            "trees": table.trees, "rows": rows, "notes": table.notes}


def write_tables(tables: Sequence[Table], directory: str) -> list[str]:
    """``<protocol>.csv`` (one per protocol) and ``tables.json`` (all) in ``directory``; their paths."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    by_protocol: dict[str, list[dict]] = {}
    for t in tables:
        by_protocol.setdefault(t.protocol, []).extend(to_records(t))
    for protocol, records in by_protocol.items():
        fields: list[str] = []
        for r in records:
            fields += [k for k in r if k not in fields]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        for r in records:
            writer.writerow({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v)
                             for k, v in r.items()})
        paths.append(_write_text(os.path.join(directory, f"{protocol}.csv"), buf.getvalue()))
    paths.append(_write_text(os.path.join(directory, "tables.json"),
                             json.dumps([to_json(t) for t in tables], indent=1, ensure_ascii=False)))
    return paths


def _write_text(path: str, text: str) -> str:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def parse_compare(text: str) -> tuple[str, str]:
    """``PATH[:LABEL]`` (a label defaults to the folder's name)."""
    path, label = text, ""
    if ":" in text and not os.path.exists(text):
        path, label = text.rsplit(":", 1)
    path = os.path.expanduser(path)
    return path, label or os.path.basename(os.path.normpath(path)) or path
