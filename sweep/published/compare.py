"""Our tables beside the published ones (``--compare published`` / ``published:<paper>``).

Each of our tables (``sweep.tables.Table``) is matched with the first published table, in the
data's order, that prints a row for the same trainer under the same protocol (our ``CoOp`` with
the paper's CoOp, our ``IVLP`` with PromptSRC's IVLP component row, ``ZeroshotCLIP`` with CLIP,
...). Per cell: our mean, the half-width ``h`` of its 95% interval over seeds, the published value
``p`` and ``Δ = ours − p``.

Flag rule: a cell is marked ``⚠`` when ``|Δ| > h + r``, with ``h = t(0.975, n−1)·s/√n`` (``s``
the sample standard deviation of our ``n`` seeds) and ``r`` half a unit of the paper's last
printed digit (0.005; 0.05 for a value printed with one decimal): another draw of seeds would
then not be expected to close the gap. With one seed there is no interval and the cell is marked
``?``. The base-to-novel HM uses the per-seed HMs of the paired base and novel runs for ``h``.

Average rows are compared the way the papers compute them: base and novel averaged over the
datasets, HM of those two averages (per seed for ``h``). The printed average is used when our
average covers the paper's datasets; over a subset it is recomputed from the paper's per-dataset
values the same way (said in a note), and is ``–`` when the paper has no per-dataset values.

Recipe differences: the recipe behind each published row (the keys the source states: config,
epochs, batch size, shots, backbone, ``PREC``, ``PROMPT_PREC``, prompt initialisation, template
ensemble) against our runs' ``config.yaml`` (else the config printed in ``log.txt``, as upstream
runs have; else ``results.json`` for shots and backbone), listed under the table.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Optional, Sequence

from mmlop.results import read_results

from ..tables import MISSING, Cell, Table, harmonic_mean, parse_config_dump
from . import AVERAGED_OVER, ROUNDING, PublishedMethod, PublishedTable, find, load_tables, parse_selector

RECIPE_NAMES = {"config": "config", "OPTIM.MAX_EPOCH": "epochs", "DATALOADER.TRAIN_X.BATCH_SIZE": "batch size",
                "DATASET.NUM_SHOTS": "shots", "MODEL.BACKBONE.NAME": "backbone", "TRAINER.*.PREC": "precision",
                "TRAINER.*.PROMPT_PREC": "PROMPT_PREC", "TRAINER.*.CTX_INIT": "prompt init",
                "TRAINER.*.ENSEMBLE": "template ensemble"}
FROM_RESULTS = {"DATASET.NUM_SHOTS": "num_shots", "MODEL.BACKBONE.NAME": "backbone"}
LEGEND = ("Ours: mean ± half-width of its 95% interval over seeds (Student t). Δ = ours − published. "
          "⚠: |Δ| exceeds that half-width plus the paper's rounding (the seeds do not explain the gap); "
          "?: one seed, no interval to judge by; –: no value.")


def split_compare(items: Sequence[str]) -> tuple[list[str], Optional[tuple[str, ...]]]:
    """``--compare`` values: the trees, and the papers chosen by ``published[:<paper>]`` (None:
    no published comparison). ``ValueError`` for an unknown paper or an unreadable data file
    (checked here, before any table is read)."""
    load_tables()
    trees, chosen = [], None
    for item in items:
        papers = parse_selector(item)
        if papers is None:
            trees.append(item)
        else:
            chosen = tuple(dict.fromkeys((chosen or ()) + papers))
    return trees, chosen


def published_column(table: Table, column: str) -> str:
    """The data's column key for one of our columns (``Base`` -> ``base``, ``4 shots`` -> ``4``)."""
    if table.protocol == "few_shot":
        return column.split()[0]
    return {"Base": "base", "Novel": "novel", "HM": "hm"}.get(column, "acc")


def _row_key(row: dict) -> str:
    if row["kind"] == "average":
        return "average"
    return row["name"].split(" (")[0]


@dataclass
class Compared:
    """One value of ours against the published one."""

    ours: Optional[float]
    half: Optional[float]
    n: int
    published: Optional[float]
    rounding: float = ROUNDING
    note: str = ""

    @property
    def delta(self) -> Optional[float]:
        return None if self.ours is None or self.published is None else self.ours - self.published

    @property
    def flag(self) -> str:
        if self.delta is None:
            return ""
        if self.half is None:
            return "?"
        return "⚠" if abs(self.delta) > self.half + self.rounding else ""


@dataclass
class Comparison:
    """One of our tables against one published table."""

    table: Table
    published: Optional[PublishedTable]
    method: Optional[PublishedMethod]
    rows: list[dict]                       # {"name", "kind", "cells": {column: Compared}}
    notes: list[str] = field(default_factory=list)
    recipe: list[str] = field(default_factory=list)
    also: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        if self.published is None:
            return f"{self.table.title} vs published: no published row"
        return f"{self.table.title} vs {self.published.citation}, {self.method.name}"


def _per_seed(cell) -> dict[str, float]:
    return dict(zip(cell.runs, cell.values)) if isinstance(cell, Cell) else {}


def _seed_values(table: Table, row: dict, column: str, datasets: Sequence[dict]) -> dict[str, float]:
    """Per-seed values of one of our cells: read (a seed folder per value), a per-seed HM of the
    paired base and novel runs, or a per-seed average over ``datasets`` (HM of the averages)."""
    cells = row["cells"].get(table.trees[0], {})
    if row["kind"] != "average":
        if column == "HM" and table.protocol == "base2new":
            base, novel = _per_seed(cells.get("Base")), _per_seed(cells.get("Novel"))
            return {s: harmonic_mean(base[s], novel[s]) for s in base if s in novel}
        return _per_seed(cells.get(column))
    if column == "HM":
        base = _seed_values(table, row, "Base", datasets)
        novel = _seed_values(table, row, "Novel", datasets)
        return {s: harmonic_mean(base[s], novel[s]) for s in base if s in novel}
    per = [_seed_values(table, d, column, ()) for d in datasets]
    seeds = set.intersection(*(set(p) for p in per)) if per else set()
    return {s: sum(p[s] for p in per) / len(per) for s in sorted(seeds)}


def _published_average(table: Table, method: PublishedMethod, pub: PublishedTable, key: str,
                       over: Sequence[str]) -> tuple[Optional[float], str]:
    """The paper's average for our datasets ``over``: printed when they are the paper's, else
    recomputed from its per-dataset values as the paper computes it."""
    printed = method.values.get("average", {}).get(key)
    if table.protocol == pub.protocol and set(over) == set(AVERAGED_OVER.get(pub.protocol, ())):
        return printed, ""
    need = ("base", "novel") if key == "hm" else (key,)
    if not over or not all(k in method.values.get(d, {}) for d in over for k in need):
        return None, ""
    note = (f"published average recomputed the papers' way over our {len(over)} datasets ({', '.join(over)}); "
            f"the printed one is over {len(AVERAGED_OVER.get(pub.protocol, ())) or 'other datasets'}")
    if key == "hm":
        b = sum(method.values[d]["base"] for d in over) / len(over)
        n = sum(method.values[d]["novel"] for d in over) / len(over)
        return harmonic_mean(b, n), note
    return sum(method.values[d][key] for d in over) / len(over), note


def _compare_cell(table: Table, row: dict, col: str, data_rows: Sequence[dict],
                  pub: Optional[PublishedTable], method: Optional[PublishedMethod]) -> Compared:
    from proxy.stats import mean_ci

    ours = table.trees[0]
    value = row["cells"].get(ours, {}).get(col)
    mine = value.mean if isinstance(value, Cell) else value
    key = published_column(table, col)
    over = []
    if row["kind"] == "average":          # the datasets our average is over (base-to-novel: both splits)
        need = "HM" if table.protocol == "base2new" else col
        over = [r for r in data_rows if r["cells"].get(ours, {}).get(need) is not None]
    seeds = _seed_values(table, row, col, over) if mine is not None else {}
    half = mean_ci(list(seeds.values()), centre=mine).half if seeds else None
    if method is None:
        return Compared(mine, half, len(seeds), None)
    name, note, published = _row_key(row), "", None
    if row["kind"] != "average":
        published = method.values.get(name, {}).get(key)
    elif mine is not None:
        published, note = _published_average(table, method, pub, key, [_row_key(r) for r in over])
    misprint = pub.misprint(method.name, name, key)
    if misprint and published is not None and not note:
        note = f"documented misprint: {misprint['note']}"
    return Compared(mine, half, len(seeds), published, pub.rounding(method.name, name, key), note)


def compare_table(table: Table, chosen: Optional[Sequence[str]] = None) -> Comparison:
    """``table`` (ours: its first tree) against the preferred published table for its trainer."""
    matches = find(table.protocol, table.method.get("trainer"), chosen)
    pub, method = matches[0] if matches else (None, None)
    comp = Comparison(table, pub, method, [], also=[f"{t.citation}, {m.name}" for t, m in matches[1:]])
    data_rows = [r for r in table.rows if r["kind"] == "dataset"]
    for row in table.rows:
        cells = {col: _compare_cell(table, row, col, data_rows, pub, method) for col in table.columns}
        comp.rows.append({"name": row["name"], "kind": row["kind"], "cells": cells})
        notes: dict[str, list[str]] = {}
        for col, c in cells.items():
            if c.note:
                notes.setdefault(c.note, []).append(col)
        for note, cols in notes.items():
            where = row["name"] if len(cols) == len(cells) else f"{row['name']} {', '.join(cols)}"
            comp.notes.append(f"{where}: {note}")
    if method is not None:
        comp.recipe = recipe_differences(table, pub, method)
    return comp


def _run_records(table: Table) -> list[dict]:
    """The recorded settings of every run behind ``table``: its ``config.yaml`` keys (else the
    config its ``log.txt`` prints, as upstream runs have only that), over the fields of its
    ``results.json`` under the config keys."""
    out, seen = [], set()
    for row in table.rows:
        for value in row["cells"].get(table.trees[0], {}).values():
            if not isinstance(value, Cell) or not value.folder:
                continue
            for run in value.runs:
                path = os.path.join(value.folder, run)
                if path in seen:
                    continue
                seen.add(path)
                results = read_results(path) or {}
                record = {k: results[f] for k, f in FROM_RESULTS.items() if results.get(f) is not None}
                for name in ("config.yaml", "log.txt"):
                    try:
                        with open(os.path.join(path, name), errors="replace") as f:
                            dump = parse_config_dump(f.read(2_000_000))
                    except OSError:
                        continue
                    if dump:
                        record.update(dump)
                        break
                if record:
                    out.append(record)
    return out


def _norm(value) -> str:
    return str(value).strip().strip("'\"").lower()


def recipe_differences(table: Table, pub: PublishedTable, method: PublishedMethod) -> list[str]:
    """One line per recipe key where our runs differ from the published row's recipe."""
    lines = []
    trainer = table.method.get("trainer") or ""
    records = _run_records(table)
    for key, theirs in method.recipe.items():
        label = RECIPE_NAMES.get(key, key)
        if key == "config":
            folders = {table.method.get("folder", "").split("/")[0],
                       *(f.split("/")[0] for f in (table.method.get("per_dataset") or {}).values())}
            if theirs not in folders:
                lines.append(f"config: ours {', '.join(sorted(folders))}, the paper's row {theirs}")
            continue
        full = key.replace("TRAINER.*.", f"TRAINER.{trainer.upper()}.")
        mine = [r[full] for r in records if full in r]
        if not mine:
            continue
        differ = [v for v in mine if _norm(v) != _norm(theirs)]
        if differ:
            values = ", ".join(sorted({str(v) for v in differ}))
            lines.append(f"{label} ({full}): ours {values} in {len(differ)} of {len(mine)} runs, "
                         f"the paper's row {theirs}")
    if method.recipe_note:
        lines.append(f"{pub.citation}, {method.name}: {method.recipe_note}")
    return lines


def _fmt_ours(c: Compared) -> str:
    if c.ours is None:
        return MISSING
    return f"{c.ours:.2f}" + (f" ± {c.half:.2f}" if c.half is not None else "")


def _fmt_published(c: Compared) -> str:
    return MISSING if c.published is None else f"{c.published:.2f}"


def _fmt_delta(c: Compared) -> str:
    d = c.delta
    return MISSING if d is None else f"{round(d, 2) + 0.0:+.2f}" + (f" {c.flag}" if c.flag else "")


def to_markdown(comp: Comparison) -> str:
    from tabulate import tabulate

    cols = comp.table.columns
    heads = ["Dataset"] + [h for c in cols for h in (c, f"{c} [paper]", f"Δ {c}")] + ["Seeds"]
    body = []
    for row in comp.rows:
        cells = row["cells"]
        seeds = "/".join(str(cells[c].n) for c in cols if comp.table.protocol != "base2new" or c != "HM")
        body.append([row["name"]] + [f(cells[c]) for c in cols for f in (_fmt_ours, _fmt_published, _fmt_delta)]
                    + ["" if set(seeds.split("/")) == {"0"} else seeds])
    text = f"#### {comp.title}\n\n" + tabulate(body, headers=heads, tablefmt="github", disable_numparse=True)
    if comp.published is None:
        text += (f"\n\nNo published table has a {comp.table.method.get('trainer')} row for this protocol "
                 f"({comp.table.protocol}); every published cell is {MISSING}.")
    if comp.notes:
        text += "\n\n" + "\n".join(f"- {note}" for note in comp.notes)
    if comp.recipe:
        text += "\n\nRecipe differences from the published row:\n" + "\n".join(f"- {r}" for r in comp.recipe)
    if comp.also:
        text += "\n\nAlso published for this trainer: " + "; ".join(comp.also) + " (pick one with published:<paper>)."
    return text


def compare_tables(tables: Sequence[Table], chosen: Optional[Sequence[str]] = None) -> list[Comparison]:
    return [compare_table(t, chosen) for t in tables]


def shots_of(column: str) -> int:
    return int(re.match(r"\d+", column).group(0))
