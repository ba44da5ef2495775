"""The reproduction report (``scripts/sweep.py --report ROOT``): one markdown file with every table
of an output tree, each followed by its comparison with the published table and a plot, written
with the plots into one folder.

Plots: per dataset, our mean with its 95% seed interval against the published value (a panel per
column: base / novel / HM, or accuracy); for few-shot, a panel per dataset with our accuracy
against shots and the published curve dashed.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Optional, Sequence

from ..tables import Table
from . import load_tables
from .compare import LEGEND, Comparison, compare_tables, shots_of
from .compare import to_markdown as comparison_markdown

REPORT_FILE = "REPORT.md"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()[:60]


def _axis_points(comp: Comparison, column: str):
    xs, ours, halves, pub = [], [], [], []
    for row in comp.rows:
        c = row["cells"][column]
        xs.append(row["name"].replace(" (source)", "\n(source)").replace(" (targets)", "\n(targets)"))
        ours.append(c.ours)
        halves.append(c.half or 0.0)
        pub.append(c.published)
    return xs, ours, halves, pub


def plot_against_published(comp: Comparison, path: str) -> str:
    """A panel per column: our mean ± interval per dataset (dots, error bars) and the published
    value (red bars); missing values are left out, never drawn at 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from proxy.plot import save_png

    columns = comp.table.columns
    n = len(comp.rows)
    fig, axes = plt.subplots(1, len(columns), figsize=(max(5.0, 0.55 * n + 2) * len(columns) ** 0.6 + 1,
                                                         4.2), dpi=110, squeeze=False)
    source = comp.published.citation if comp.published else "no published table"
    for ax, col in zip(axes[0], columns):
        names, ours, halves, pub = _axis_points(comp, col)
        idx = range(len(names))
        got = [i for i in idx if ours[i] is not None]
        ax.errorbar(got, [ours[i] for i in got], yerr=[halves[i] for i in got], fmt="o", capsize=3, color="tab:blue")
        has = [i for i in idx if pub[i] is not None]
        ax.scatter(has, [pub[i] for i in has], marker="_", s=260, linewidths=2.5, color="tab:red", zorder=3)
        flagged = [i for i, row in enumerate(comp.rows) if row["cells"][col].flag == "⚠"]
        ax.scatter(flagged, [ours[i] for i in flagged], s=160, facecolors="none", edgecolors="tab:orange",
                   linewidths=2, zorder=4)
        ax.set_xticks(list(idx))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
        ax.set_xlabel("dataset")
        ax.set_ylabel(f"{col} accuracy (%)" if col != "HM" else "harmonic mean of base and novel (%)")
        ax.set_title(col, fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"{comp.table.title}\nblue: ours, mean ± 95% seed interval; red bar: {source}; "
                 "orange ring: gap beyond the seeds' noise", fontsize=8)
    return save_png(fig, path)


def plot_few_shot_against_published(comp: Comparison, path: str) -> str:
    """A panel per dataset (and the average): accuracy against shots, ours solid with intervals,
    the published curve dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from proxy.plot import save_png

    shots = [shots_of(c) for c in comp.table.columns]
    cols = min(4, len(comp.rows))
    nrows = -(-len(comp.rows) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.0 * cols, 2.6 * nrows), dpi=110, squeeze=False)
    source = comp.published.citation if comp.published else "no published table"
    for ax, row in zip(axes.flat, comp.rows):
        cells = [row["cells"][c] for c in comp.table.columns]
        mine = [(k, c.ours, c.half or 0.0) for k, c in zip(shots, cells) if c.ours is not None]
        if mine:
            ax.errorbar([m[0] for m in mine], [m[1] for m in mine], yerr=[m[2] for m in mine], marker="o",
                        capsize=3, color="tab:blue")
        theirs = [(k, c.published) for k, c in zip(shots, cells) if c.published is not None]
        if theirs:
            ax.plot([t[0] for t in theirs], [t[1] for t in theirs], linestyle="--", marker="x", color="tab:red")
        ax.set_xscale("log", base=2)
        ax.set_xticks(shots)
        ax.set_xticklabels([str(k) for k in shots])
        ax.set_xlabel("shots per class")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(row["name"], fontsize=9)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(comp.rows):]:
        ax.axis("off")
    fig.suptitle(f"{comp.table.title}\nblue: ours, mean ± 95% seed interval; red dashed: {source}", fontsize=8)
    return save_png(fig, path)


def write_report(root: str, tables: Sequence[Table], directory: str,
                 chosen: Optional[Sequence[str]] = None, command: str = "") -> str:
    """Write ``REPORT.md`` and its PNGs into ``directory``; return the markdown file's path."""
    from ..tables import _write_text

    comps = compare_tables(tables, chosen)
    os.makedirs(directory, exist_ok=True)
    cited = []
    parts = [f"# Reproduction report: {os.path.basename(os.path.normpath(root)) or root}", "",
             f"Output tree: `{root}`" + (f"; written by `{command}`." if command else "."), "", LEGEND, "",
             "Average rows: base and novel averaged over the datasets, HM of those averages (as the papers); "
             "over fewer datasets than the paper's, the published average is recomputed from its per-dataset "
             "values the same way.", ""]
    for i, (table, comp) in enumerate(zip(tables, comps), 1):
        name = f"{i:02d}_{_slug(table.protocol + '_' + table.title.split(': ', 1)[-1])}.png"
        plot = plot_few_shot_against_published if table.protocol == "few_shot" else plot_against_published
        plot(comp, os.path.join(directory, name))
        if comp.published is not None and comp.published not in cited:
            cited.append(comp.published)
        comp.notes[:0] = table.notes           # our table's own notes (settings differ, partial averages)
        body = comparison_markdown(comp).split("\n", 2)[2]
        parts += [f"## {i}. {comp.title}", "", body, "", f"![{table.title}]({name})", ""]
    parts += ["## Published tables used", ""]
    for t in cited or ():
        parts.append(f"- {t.citation}: {t.source['paper']}, {t.source['url']} — {t.source['setting']}")
    if not cited:
        parts.append("- none matched these tables")
    parts += ["", "All published tables carried: " + "; ".join(t.citation for t in load_tables()) + "."]
    return _write_text(os.path.join(directory, REPORT_FILE), "\n".join(parts) + "\n")


def publish(root: str, tables: Sequence[Table], chosen: Optional[Sequence[str]], report_dir: Optional[str],
            stream=None, command: str = "") -> None:
    """What ``scripts/sweep.py`` prints and writes for ``--compare published`` and ``--report``."""
    stream = stream or sys.stdout
    if chosen is not None:
        for comp in compare_tables(tables, chosen):
            print(comparison_markdown(comp) + "\n", file=stream)
        print(LEGEND + "\n", file=stream)
    if report_dir is not None:
        path = write_report(root, tables, report_dir, chosen, command)
        print(f"Report written: {path}", file=stream)
