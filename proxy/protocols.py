"""The four benchmark protocols on the synthetic shapes, through the sweep engine.

The class space is 10 colours x 10 shapes (``datasets.synthetic_render``). Its quadrants (first or
last five colours x first or last five shapes, sorted) define the transfer datasets
(``datasets/synthetic.py``, ``configs/datasets/synthetic_*.yaml``):

* **base-to-novel** (``base2new``): ``synthetic_warm`` and ``synthetic_fog``, all 100 classes, base =
  the first five colours, novel = the other five (``proxy.runs``, the demo's grid);
* **source** (``synthetic_src``, ImageNet's role): fog style, first five colours x first five shapes
  (25 classes), 16 shots; one training per method and seed, shared by the two transfer protocols;
* **domain generalization** (``dg``): the source classes in other styles: ``synthetic_src_warm``,
  ``synthetic_src_texture``, ``synthetic_src_sketch``, ``synthetic_src_small``;
* **cross-dataset** (``xd``): classes the source never had, in the source's style:
  ``synthetic_xd_colours`` (other colours x source shapes), ``synthetic_xd_shapes`` (source colours x
  other shapes), ``synthetic_xd_both`` (other colours x other shapes);
* **few-shot** (``few_shot``): the source dataset, all 25 classes, 1/2/4/8/16 shots (the 16-shot run
  is the transfer protocols' source training, as in CoOp).

Output tree and jobs are the sweep's (``sweep.jobs``): xd/dg train
``<source>/<T>/<cfg>_<K>shots/seed<S>`` and evaluate ``evaluation/<T>/<cfg>_<K>shots/<D>/seed<S>``;
few-shot runs ``<D>/<T>/<cfg>_<K>shots/seed<S>``. Finished runs are reused.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Collection, Optional, Sequence

from sweep.spec import DOMAIN_SHIFTS

from .runs import Method, TrainPyError, harmonic_mean, read_results, run_engine, sweep_entry
from .stats import Interval, mean_ci, paired_difference

SOURCE = "synthetic_src"
DG_TARGETS: tuple[str, ...] = DOMAIN_SHIFTS[SOURCE]     # the sweep's tables know them as DG targets
XD_TARGETS: tuple[str, ...] = ("synthetic_xd_colours", "synthetic_xd_shapes", "synthetic_xd_both")
FEW_SHOTS: tuple[int, ...] = (1, 2, 4, 8, 16)
TRANSFER_SHOTS = 16
PROTOCOLS = ("base2new", "dg", "xd", "few_shot", "ablation")
REFERENCE = "MMLoP"              # the trainer every paired difference is taken against


@dataclass(frozen=True)
class Record:
    """One ``results.json``: accuracy (%) of ``method`` on ``dataset`` for ``seed`` and ``shots``."""

    method: str
    trainer: str
    dataset: str
    seed: int
    shots: int
    kind: str            # "train" (its final test) or "test"
    accuracy: float
    params: int
    directory: str
    reused: bool


def run_jobs(jobs, output_root: str, name: str, workers: int = 1, log: Callable[[str], None] = print,
             labels: Optional[dict] = None) -> list[Record]:
    """Run ``jobs`` (``sweep.jobs.Job``) through the sweep engine on ``workers`` local workers, with
    one progress line per job start and end; return a :class:`Record` per job (plan order). Raises
    :class:`proxy.runs.TrainPyError` after the other jobs ran when some failed."""
    jobs = list(jobs)
    total, start = len(jobs), time.time()
    index = {j.id: i for i, j in enumerate(jobs, 1)}
    fresh: set[str] = set()
    counts = {"ended": 0}

    def event(kind: str, job, info: dict) -> None:
        i = index[job.id]
        if kind == "start":
            fresh.add(job.id)
            log(f"[{i}/{total}] {job.describe().strip()} ...")
        elif kind in ("done", "skip"):
            counts["ended"] += 1
            record = read_results(job.dir) or {}
            how = "reused" if kind == "skip" else f"{float(info.get('seconds') or 0.0):.0f}s"
            acc = record.get("accuracy")
            acc_text = f"{acc:.2f}" if isinstance(acc, (int, float)) else "?"
            log(f"[{i}/{total}] {job.describe().strip()}: accuracy {acc_text} ({how}; "
                f"elapsed {time.time() - start:.0f}s, {total - counts['ended']} left)")
        elif kind == "failed":
            log(f"[{i}/{total}] {job.describe().strip()}: FAILED ({info.get('message', '')})")

    run_engine(jobs, output_root, name, workers, event)
    out = []
    for job in jobs:
        record = read_results(job.dir)
        if record is None:
            raise TrainPyError(f"train.py wrote no results.json in {job.dir}")
        label = (labels or {}).get((job.trainer, job.folder), job.label)
        out.append(Record(label, job.trainer, job.dataset, int(job.seed), job.shots, job.kind,
                          float(record["accuracy"]), int(record.get("num_trainable_params", 0)), job.dir,
                          job.id not in fresh))
    return out


def transfer_plan(methods: Sequence[Method], targets: Sequence[str], seeds: Sequence[int], backbone: str,
                  data_root: str, output_root: str, source: str = SOURCE, shots: int = TRANSFER_SHOTS,
                  extra_opts: Sequence[str] = ()):
    """The sweep plan of the xd/dg protocols: one source training per method and seed, evaluated on
    every target (``xd_train.sh`` / ``xd_test.sh``)."""
    from sweep.jobs import plan
    from sweep.spec import SweepSpec

    spec = SweepSpec(protocols=("xd",), trainers=tuple(sweep_entry(m) for m in methods), datasets=tuple(targets),
                     seeds=tuple(seeds), shots=(shots,), source=source, data=data_root, output=output_root,
                     opts=("MODEL.BACKBONE.NAME", backbone, *extra_opts), name="proxy_transfer")
    return plan(spec)


def few_shot_plan(methods: Sequence[Method], dataset: str, seeds: Sequence[int], backbone: str, data_root: str,
                  output_root: str, shots: Sequence[int] = FEW_SHOTS, extra_opts: Sequence[str] = ()):
    """The few-shot jobs (``few_shot.sh``): trained methods at every shot count; a method without
    training (zero-shot) once, at the largest count (its accuracy does not depend on the shots)."""
    from sweep.jobs import plan
    from sweep.spec import SweepSpec

    jobs = []
    for group, ks in (([m for m in methods if not m.trains], (max(shots),)),
                      ([m for m in methods if m.trains], tuple(shots))):
        if not group:
            continue
        spec = SweepSpec(protocols=("few_shot",), trainers=tuple(sweep_entry(m) for m in group),
                         datasets=(dataset,), seeds=tuple(seeds), shots=ks, data=data_root, output=output_root,
                         opts=("MODEL.BACKBONE.NAME", backbone, *extra_opts), name="proxy_few_shot")
        jobs.extend(plan(spec).jobs)
    return jobs


# ---- tables ----------------------------------------------------------------------------------
def per_seed(records: Sequence[Record], key: Callable[[Record], Optional[str]]) -> dict[str, dict[int, dict]]:
    """``{method: {seed: {column: accuracy}}}`` with the column ``key(record)`` (records whose key is
    ``None`` are left out)."""
    out: dict[str, dict[int, dict]] = {}
    for r in records:
        col = key(r)
        if col is not None:
            out.setdefault(r.method, {}).setdefault(r.seed, {})[col] = r.accuracy
    return out


def add_average(values: dict[str, dict[int, dict]], columns: Sequence[str], name: str = "average") -> None:
    """Add ``name`` = the mean of ``columns`` to every seed's values (in place)."""
    for seeds in values.values():
        for v in seeds.values():
            if all(c in v for c in columns):
                v[name] = sum(v[c] for c in columns) / len(columns)


def stat_rows(values: dict[str, dict[int, dict]], columns: Sequence[str], params: dict[str, int],
              trainers: dict[str, str], centres: Optional[Callable[[dict], dict]] = None) -> list[dict]:
    """One row per method: ``mean`` and ``ci`` (half-width) per column over its seeds, and the
    per-seed values. ``centres(means) -> {column: centre}`` replaces some columns' centres (HM)."""
    rows = []
    for method, seeds in values.items():
        intervals = {c: mean_ci([seeds[s][c] for s in sorted(seeds)]) for c in columns
                     if all(c in seeds[s] for s in seeds)}
        means = {c: iv.mean for c, iv in intervals.items()}
        if centres:
            means.update({c: v for c, v in centres(means).items() if c in means})
        cis = {c: iv.half for c, iv in intervals.items()}
        rows.append({"method": method, "trainer": trainers.get(method, ""), "params": params.get(method, 0),
                     "seeds": sorted(seeds), "mean": means, "ci": cis,
                     "per_seed": {str(s): dict(v) for s, v in sorted(seeds.items())}})
    return rows


def paired_rows(values: dict[str, dict[int, dict]], columns: Sequence[str], reference: str) -> list[dict]:
    """For every method other than ``reference``: ``reference - method`` per column, paired over
    their common seeds (mean and 95% half-width)."""
    ref = values.get(reference)
    if ref is None:
        return []
    rows = []
    for method, seeds in values.items():
        if method == reference:
            continue
        common, diffs = _paired(ref, seeds, columns)
        rows.append({"method": method, "seeds": common, "diff": diffs})
    return rows


def _paired(a: dict, b: dict, columns: Sequence[str], key=None) -> tuple[list, dict]:
    """``a - b`` per column over the seeds both have (``{seed: {column: value}}``): the common
    seeds (sorted by ``key``) and ``{column: {mean, ci, inside_noise}}`` for columns all have."""
    common = sorted(set(a) & set(b), key=key)
    diffs = {}
    for c in columns:
        if common and all(c in a[s] and c in b[s] for s in common):
            iv = paired_difference([a[s][c] for s in common], [b[s][c] for s in common])
            diffs[c] = {"mean": iv.mean, "ci": iv.half, "inside_noise": iv.contains_zero()}
    return common, diffs


def _cell(mean: Optional[float], half: Optional[float], signed: bool = False, mark: bool = False) -> str:
    if mean is None:
        return "-"
    return Interval(mean, half, 0).format(signed=signed, mark=mark)


def format_rows(rows: Sequence[dict], columns: Sequence[str], headers: Optional[Sequence[str]] = None,
                params: bool = True) -> str:
    """Markdown table: method, trainable params, then ``mean ± ci`` per column."""
    from tabulate import tabulate

    heads = ["method"] + (["trainable params"] if params else []) + list(headers or columns)
    body = []
    for r in rows:
        body.append([r["method"]] + ([f"{r['params']:,}"] if params else [])
                    + [_cell(r["mean"].get(c), r["ci"].get(c)) for c in columns])
    return tabulate(body, headers=heads, tablefmt="github", disable_numparse=True)


def format_paired(rows: Sequence[dict], columns: Sequence[str], reference_label: str,
                  headers: Optional[Sequence[str]] = None) -> str:
    """Markdown table of paired differences ``reference - method`` (``*``: the 95% interval
    excludes 0, i.e. the gap is outside the seed noise)."""
    from tabulate import tabulate

    first = "row minus the row above" if reference_label == "row" else f"{reference_label} minus"
    heads = [first] + [f"Δ {h}" for h in (headers or columns)]
    body = []
    for r in rows:
        body.append([r["method"]] + [_cell(r["diff"][c]["mean"], r["diff"][c]["ci"], signed=True, mark=True)
                                     if c in r["diff"] else "-" for c in columns])
    return tabulate(body, headers=heads, tablefmt="github", disable_numparse=True)


def reference_label(rows: Sequence[dict], reference: str = REFERENCE,
                    variants: Collection[str] = ()) -> Optional[str]:
    """The label of the last row run by the ``reference`` trainer that is not one of ``variants``
    (the labels of rows run with ablation opts), i.e. the method as configured."""
    labels = [r["method"] for r in rows if r["trainer"] == reference and r["method"] not in variants]
    return labels[-1] if labels else None


def transfer_tables(records: Sequence[Record], targets: Sequence[str], source: str = SOURCE) -> dict:
    """The xd or dg table: source accuracy (the training run's final test), each target, and the
    average over targets; per method mean ± 95% CI over seeds, and paired differences to MMLoP."""
    values = per_seed(records, lambda r: "source" if r.kind == "train" and r.dataset == source
                      else (r.dataset if r.dataset in targets else None))
    add_average(values, targets)
    columns = ["source", *targets, "average"]
    params = {r.method: r.params for r in records if r.kind == "train"}
    trainers = {r.method: r.trainer for r in records}
    rows = stat_rows(values, columns, params, trainers)
    ref = reference_label(rows)
    paired = paired_rows(values, columns, ref) if ref else []
    headers = [source, *[short_name(t) for t in targets], "average"]
    return {"columns": columns, "rows": rows, "paired": paired, "reference": ref,
            "table": format_rows(rows, columns, headers),
            "paired_table": format_paired(paired, columns, ref, headers) if ref else ""}


def few_shot_tables(records: Sequence[Record], shots: Sequence[int] = FEW_SHOTS) -> dict:
    """Accuracy per shot count (mean ± 95% CI over seeds), the average over shot counts, and paired
    differences to MMLoP. The zero-shot row (one run per seed) fills every shot column."""
    values: dict[str, dict[int, dict]] = {}
    for r in records:
        cols = [str(k) for k in shots] if r.params == 0 and r.trainer == "ZeroshotCLIP" else [str(r.shots)]
        for c in cols:
            values.setdefault(r.method, {}).setdefault(r.seed, {})[c] = r.accuracy
    columns = [str(k) for k in shots]
    add_average(values, columns)
    columns.append("average")
    params = {r.method: r.params for r in records if r.shots == max(shots)}
    trainers = {r.method: r.trainer for r in records}
    rows = stat_rows(values, columns, params, trainers)
    ref = reference_label(rows)
    paired = paired_rows(values, columns, ref) if ref else []
    headers = [f"{k} shot{'s' if k > 1 else ''}" for k in shots] + ["average"]
    return {"columns": columns, "rows": rows, "paired": paired, "reference": ref,
            "table": format_rows(rows, columns, headers),
            "paired_table": format_paired(paired, columns, ref, headers) if ref else ""}


def base2new_tables(results, datasets: Sequence[str], methods: Sequence[Method]) -> dict:
    """Base-to-novel from ``proxy.runs.RunResult``s: per seed, base and novel averaged over the
    datasets and their HM; the table's HM is the HM of the mean base and novel (the papers'
    convention) with the 95% half-width of the per-seed HMs; per-dataset HM likewise. Paired
    differences (MMLoP minus method, same seeds and datasets): mean ± 95% CI of the per-seed
    differences of base, novel and HM."""
    values: dict[str, dict[int, dict]] = {}
    for r in results:
        v = values.setdefault(r.method, {}).setdefault(r.seed, {})
        v[f"base {r.dataset}"], v[f"novel {r.dataset}"] = r.base, r.novel
    for seeds in values.values():
        for v in seeds.values():
            ds = [d for d in datasets if f"base {d}" in v]
            v["base"] = sum(v[f"base {d}"] for d in ds) / len(ds)
            v["novel"] = sum(v[f"novel {d}"] for d in ds) / len(ds)
            v["hm"] = harmonic_mean(v["base"], v["novel"])
            for d in ds:
                v[f"hm {d}"] = harmonic_mean(v[f"base {d}"], v[f"novel {d}"])

    def centres(means: dict) -> dict:
        out = {"hm": harmonic_mean(means["base"], means["novel"])}
        for d in datasets:
            if f"base {d}" in means:
                out[f"hm {d}"] = harmonic_mean(means[f"base {d}"], means[f"novel {d}"])
        return out

    columns = ["base", "novel", "hm", *[f"hm {d}" for d in datasets]]
    all_columns = columns + [f"{k} {d}" for d in datasets for k in ("base", "novel")]
    params = {r.method: r.params for r in results}
    trainers = {m.label: m.trainer for m in methods}
    order = [m.label for m in methods if m.label in values]
    rows = stat_rows({k: values[k] for k in order}, all_columns, params, trainers, centres)
    ref = reference_label(rows, variants={m.label for m in methods if m.opts})
    paired = paired_rows({k: values[k] for k in order}, columns, ref) if ref else []
    headers = ["base", "novel", "HM", *[f"HM {short_name(d)}" for d in datasets]]
    return {"columns": columns, "rows": rows, "paired": paired, "reference": ref,
            "table": format_rows(rows, columns, headers),
            "paired_table": format_paired(paired, columns, ref, headers) if ref else ""}


def short_name(dataset: str) -> str:
    """``synthetic_src_warm`` -> ``warm``; ``synthetic_xd_both`` -> ``both``."""
    for prefix in ("synthetic_src_", "synthetic_xd_", "synthetic_"):
        if dataset.startswith(prefix):
            return dataset[len(prefix):]
    return dataset


def step_differences(rows: Sequence[dict], columns: Sequence[str]) -> list[dict]:
    """For an ablation table: each row minus the row above it, paired over their common seeds
    (mean and 95% half-width per column), i.e. what adding that row's component changed."""
    out = []
    for prev, row in zip(rows, rows[1:]):
        common, diffs = _paired(row["per_seed"], prev["per_seed"], columns, key=int)
        out.append({"method": f"{row['method']} vs {prev['method']}", "seeds": [int(s) for s in common],
                    "diff": diffs})
    return out
