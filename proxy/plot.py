"""The proxy figures: HM against trainable parameters (log x, the paper's Fig. 1) and few-shot
accuracy against shots (CoOp's figure)."""
from __future__ import annotations

import os
from typing import Sequence

from dassl.utils.tools import atomic_write, mkdir_if_missing


def plot_hm_vs_params(rows: Sequence[dict], path: str, title: str = "") -> str:
    """Write a PNG of ``rows`` (dicts with ``method``, ``params``, ``hm`` and optionally ``hm_ci``,
    the half-width of HM's 95% interval, drawn as an error bar) to ``path``; return it.

    Methods with 0 trainable parameters (zero-shot) are drawn as a horizontal dashed line, since
    they have no place on a log axis. Written atomically (temporary file, then rename).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6.0, 4.2), dpi=120)
    trained = [r for r in rows if r["params"] > 0]
    for r in rows:
        if r["params"] <= 0:
            ax.axhline(r["hm"], color="grey", linestyle="--", linewidth=1)
            ax.annotate(f"{r['method']} ({r['hm']:.1f})", xy=(0.01, r["hm"]), xycoords=("axes fraction", "data"),
                        xytext=(0, 3), textcoords="offset points", fontsize=8, color="grey")
    for r in trained:
        star = r["method"].startswith("MMLoP")
        dot = ax.scatter(r["params"], r["hm"], s=120 if star else 50, marker="*" if star else "o", zorder=3)
        if r.get("hm_ci"):
            ax.errorbar(r["params"], r["hm"], yerr=r["hm_ci"], fmt="none", capsize=3, alpha=0.6,
                        ecolor=dot.get_facecolor()[0], zorder=2)
        ax.annotate(r["method"], (r["params"], r["hm"]), xytext=(5, 4), textcoords="offset points", fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel("harmonic mean of base and novel accuracy (%)")
    if trained:
        lo = min(r["params"] for r in trained)
        hi = max(r["params"] for r in trained)
        ax.set_xlim(lo / 3, hi * 3)
    ax.set_title(title or "Base-to-novel HM vs. trainable parameters", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    return save_png(fig, path)


def plot_few_shot(rows: Sequence[dict], shots: Sequence[int], path: str, title: str = "") -> str:
    """Accuracy against shots per method (CoOp's few-shot figure), with 95% seed intervals as
    error bars. ``rows``: dicts with ``method``, ``params``, ``mean`` and ``ci`` keyed by the shot
    count as a string. A method with 0 trainable parameters (zero-shot) is a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.2), dpi=120)
    for r in rows:
        ys = [r["mean"].get(str(k)) for k in shots]
        if r["params"] <= 0:
            ax.axhline(ys[-1], color="grey", linestyle="--", linewidth=1)
            ax.annotate(f"{r['method']} ({ys[-1]:.1f})", xy=(0.01, ys[-1]), xycoords=("axes fraction", "data"),
                        xytext=(0, 3), textcoords="offset points", fontsize=8, color="grey")
            continue
        errs = [r["ci"].get(str(k)) or 0.0 for k in shots]
        star = r["method"].startswith("MMLoP")
        ax.errorbar(shots, ys, yerr=errs, marker="*" if star else "o", markersize=9 if star else 5, capsize=3,
                    linewidth=2 if star else 1.2, label=r["method"])
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(shots))
    ax.set_xticklabels([str(k) for k in shots])
    ax.set_xlabel("shots per class")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title or "Few-shot accuracy", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return save_png(fig, path)


def save_png(fig, path: str) -> str:
    """Write ``fig`` as a PNG to ``path`` atomically (temporary file, then rename), close it.

    The PNG's ``Axes`` text chunk lists each panel's title and axis labels, so that a reader (or a
    test) can tell what a plot shows without rendering it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    mkdir_if_missing(os.path.dirname(os.path.abspath(path)))
    axes = "; ".join(f"{ax.get_title()}: x={ax.get_xlabel()}, y={ax.get_ylabel()}" for ax in fig.axes if ax.axison)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", metadata={"Axes": axes}))
    finally:
        plt.close(fig)
    return path
