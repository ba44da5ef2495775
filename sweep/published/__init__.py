"""The papers' published ViT-B/16 tables, carried as data, so that ``--compare published`` works in
a clone with nothing else beside it.

``data/<id>.json``, one file per printed table: a ``source`` block (paper, arXiv id, table
number, backbone, setting, notes), the ``protocol`` it answers (``base2new``, ``xd``, ``dg``,
``few_shot``), its ``misprints`` and, per printed method, the trainer of this project it is
compared with (``null``: none, e.g. ProDA), the recipe behind the row where the source states it
(config keys; ``TRAINER.*.`` is the trainer's own node) and the values as printed: rows are
dataset folder names or ``average``, columns ``base``/``novel``/``hm``, ``acc`` or shot counts.
Values are never completed or corrected here: a documented misprint stays as printed, and the
comparison names it beside the cell it touches.
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from typing import Optional, Sequence

from ..spec import BENCHMARK_11, DOMAIN_SHIFTS
from ..tables import harmonic_mean

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
PROTOCOLS = ("base2new", "xd", "dg", "few_shot", "zeroshot")
# Two printed decimals: a printed value stands for an interval of half a unit of the last digit.
ROUNDING = 0.005
# The papers' average rows: over which datasets (cross-dataset and DG: the targets only).
AVERAGED_OVER = {"base2new": BENCHMARK_11, "few_shot": BENCHMARK_11,
                 "xd": tuple(d for d in BENCHMARK_11 if d != "imagenet"), "dg": DOMAIN_SHIFTS["imagenet"]}
# Arithmetic checks of the data: HM from two rounded values, and a mean of rounded values, can be
# off by the rounding of their inputs plus their own (0.005 each).
HM_TOLERANCE = 0.02
AVERAGE_TOLERANCE = 0.011


class PublishedDataError(ValueError):
    """A published-table file that cannot be used (names the file and the key)."""


@dataclass(frozen=True)
class PublishedMethod:
    """One printed row group: a method of a paper's table and the trainer it is compared with."""

    name: str
    trainer: Optional[str]
    protocols: tuple[str, ...]
    recipe: dict
    recipe_note: str
    values: dict          # row -> column -> printed value


@dataclass(frozen=True)
class PublishedTable:
    id: str
    order: int
    source: dict
    protocol: str
    methods: dict         # name -> PublishedMethod
    misprints: tuple = ()
    one_decimal: frozenset = field(default_factory=frozenset)    # (method, row, column)

    @property
    def paper(self) -> str:
        """The short key of the paper (``promptsrc``, ``maple``, ``mmlop``), as in ``published:<paper>``."""
        return self.source["paper_key"]

    @property
    def citation(self) -> str:
        """E.g. ``PromptSRC Table 1 (arXiv 2307.06948)``."""
        short = {"promptsrc": "PromptSRC", "maple": "MaPLe", "mmlop": "MMLoP"}.get(self.paper, self.paper)
        table = self.source.get("table")
        what = table.split(" (")[0] if table else "abstract"
        return f"{short} {what} (arXiv {self.source['arxiv']})"

    def rounding(self, method: str, row: str, column: str) -> float:
        """Half a unit of the printed value's last digit."""
        return 0.05 if (method, row, column) in self.one_decimal else ROUNDING

    def misprint(self, method: str, row: str, column: str) -> Optional[dict]:
        """The documented misprint that the cell holds or whose check it fails, if any."""
        for m in self.misprints:
            if m["method"] == method and m["row"] == row and column in (m["column"], m["fails"]):
                return m
        return None


def _need(data: dict, key: str, path: str, kind: type):
    if key not in data or not isinstance(data[key], kind):
        raise PublishedDataError(f"{path}: key {key!r} missing or not a {kind.__name__}; "
                                 f"restore the file from the repository (git checkout -- {os.path.relpath(path)})")
    return data[key]


def read_table(path: str) -> PublishedTable:
    """One data file, checked for the keys the comparison reads."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise PublishedDataError(f"{path}: cannot read it as JSON ({exc})") from None
    source = _need(data, "source", path, dict)
    for key in ("paper_key", "paper", "arxiv"):
        _need(source, key, path, str)
    protocol = _need(data, "protocol", path, str)
    if protocol not in PROTOCOLS:
        raise PublishedDataError(f"{path}: protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    methods = {}
    for name, info in _need(data, "methods", path, dict).items():
        values = _need(info, "values", f"{path} methods.{name}", dict)
        methods[name] = PublishedMethod(name, info.get("trainer"), tuple(info.get("protocols") or (protocol,)),
                                        dict(info.get("recipe") or {}), info.get("recipe_note") or "", values)
    one = frozenset((d["method"], d["row"], d["column"]) for d in data.get("one_decimal", ()))
    return PublishedTable(data.get("id") or os.path.basename(path)[:-5], int(data.get("order", 100)), source,
                          protocol, methods, tuple(data.get("misprints", ())), one)


@functools.lru_cache(maxsize=4)
def load_tables(directory: str = DATA_DIR) -> tuple[PublishedTable, ...]:
    """Every table of ``directory``, in the order the comparison prefers them (a paper's own
    per-dataset table before a copy or an average-only table)."""
    names = sorted(n for n in os.listdir(directory) if n.endswith(".json"))
    return tuple(sorted((read_table(os.path.join(directory, n)) for n in names), key=lambda t: (t.order, t.id)))


def papers(tables: Sequence[PublishedTable] = ()) -> list[str]:
    out: list[str] = []
    for t in tables or load_tables():
        if t.paper not in out:
            out.append(t.paper)
    return out


def parse_selector(text: str) -> Optional[tuple[str, ...]]:
    """``published`` (every paper) or ``published:<paper>[,<paper>]``; None when ``text`` names a
    tree instead. ``ValueError`` naming the known papers for an unknown one."""
    head, sep, rest = text.partition(":")
    if head != "published" or (os.path.exists(text) and not sep):
        return None
    known = papers()
    if not sep:
        return tuple(known)
    chosen = tuple(p.strip().lower() for p in rest.split(",") if p.strip())
    bad = [p for p in chosen if p not in known]
    if bad or not chosen:
        raise ValueError(f"--compare {text}: unknown paper {', '.join(bad) or '(none given)'}; "
                         f"use published or published:<paper> with one of {', '.join(known)}")
    return chosen


def find(protocol: str, trainer: str,
         chosen: Optional[Sequence[str]] = None) -> list[tuple[PublishedTable, PublishedMethod]]:
    """The published rows for our ``trainer`` under ``protocol``, preferred first."""
    out = []
    for t in load_tables():
        if chosen is not None and t.paper not in chosen:
            continue
        for m in t.methods.values():
            if m.trainer == trainer and protocol in m.protocols:
                out.append((t, m))
    return out


def consistency_problems(table: PublishedTable) -> list[tuple[str, str, str, float, float]]:
    """``(method, row, column, printed, computed)`` for every printed HM that is not
    ``2bn/(b+n)`` of its row and every printed average that is not the mean of its column
    (base-to-novel averages: base and novel as means, HM of those two), beyond the rounding."""
    found = []
    over = AVERAGED_OVER.get(table.protocol, ())
    for m in table.methods.values():
        for row, cols in m.values.items():
            b, n, h = cols.get("base"), cols.get("novel"), cols.get("hm")
            if None not in (b, n, h) and abs(harmonic_mean(b, n) - h) > HM_TOLERANCE:
                found.append((m.name, row, "hm", h, round(harmonic_mean(b, n), 4)))
        avg = m.values.get("average")
        if not avg or not all(d in m.values for d in over):
            continue
        for col, printed in avg.items():
            if col == "hm":
                continue
            mean = sum(m.values[d][col] for d in over) / len(over)
            if abs(mean - printed) > AVERAGE_TOLERANCE:
                found.append((m.name, "average", col, printed, round(mean, 4)))
    return found
