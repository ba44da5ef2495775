"""Benchmark of MMLoP's exact speed-ups against the reference computation (as upstream runs it).

    python bench/bench_mmlop.py [--quick] [--classes 100 1000] [--names imagenet] [--device auto]
                                [--batch 4] [--eval-batch 100] [--reps 3] [--budget-s 600] [--json PATH]
    bash bench/gpu.sh                       # the GPU run in one command (see that file)

Three configurations of one model (MMLoP defaults: 4+4 tokens, rank 1, depth 9, consistency
losses, drift correction; ViT-B/16 with random weights, since the cost does not depend on them):

=============  ==============================================================================
``reference``  what upstream PromptSRC computes: every class prompt runs all 77 text rows, and
               the class text features are recomputed for every test batch (all speed-ups off)
``trunc``      ``TRUNCATE_TEXT`` + ``CACHE_TEXT`` (the speed-ups before the shared prefix)
``all``        ``trunc`` + ``SHARED_PREFIX`` (the rows before the class name run once): the default
=============  ==============================================================================

Setting. Class names are real by default: ImageNet's 1,000 (``datasets/data/imagenet/classnames.txt``),
``--classes n`` of them evenly spaced (``n`` = 1000: all); ``--names PATH`` takes a dataset's own
names (its CoOp split JSON or a ``classnames.txt``), ``--names synthetic`` generated ones (labelled
so: they are shorter than real names, and the cost of the text tower depends on that length). The
training and test batch sizes default to the shipped base-to-novel config's
(``DATALOADER.TRAIN_X.BATCH_SIZE`` 4, ``DATALOADER.TEST.BATCH_SIZE`` 100). Every row written
records its setting: batch sizes, class count, name source, text rows, threads, load average.

Method. One worker process per row builds the model once, warms every item up (``--warmup``), then
times rounds; each round times every item once, in an order rotated from round to round, so that
the items share the machine's load alike. Ratios are paired: per round, one configuration's time
over the other's from the same round; reported is their geometric mean with a 95% Student-t
interval (over the rounds' log ratios). Rounds continue past ``--reps`` until every ratio's interval
excludes 1, or ``--budget-s`` seconds or ``--max-reps`` rounds are spent; a ratio whose interval
still includes 1 is printed as "not resolved" with its interval, not as a number.

An evaluation is timed per test batch: the reference recomputes the text features for each batch;
``trunc`` and ``all`` compute them in the first batch of an evaluation (timed with an empty cache)
and reuse them in every later batch (``image``: the image tower and the logits only). An
evaluation of ``N`` batches therefore costs ``N x reference`` against ``first + (N - 1) x image``;
the table gives the ratio at one batch, at ``--eval-batches`` batches (from the same rounds) and
the long-test-set limit ``image / reference``.

Memory: one worker process per (row, configuration) runs one step and reports its peak
(``torch.cuda.max_memory_allocated`` on GPU; the process's peak resident set size on CPU, which
includes the ~0.6 GB of weights). On CPU workers run under an address-space limit
(``--mem-limit-gb``, default 80% of the memory available at start), so a configuration that does
not fit is reported as ``failed`` and left out of the timing.

Also measured in training rows (``--zs``; defaults unchanged, nothing implemented): the frozen
zero-shot image forward of an MMLoP step (``zs-forward``) and the step with that forward replaced by
a lookup of precomputed features (``all+zs-cache``). ``--batch-scaling`` adds training rows at other
batch sizes; ``--imagenet`` adds the ImageNet base-to-novel estimate (500 base classes, 16 shots =
8,000 images per epoch, batch 4: 2,000 steps per epoch). Zero-shot anchors are random unit vectors
(their values do not change the cost of a step). Results are printed as markdown and written as
JSON (default ``bench/results_<device>[_quick].json``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The shipped base-to-novel config: its batch sizes are the bench's defaults.
CONFIG = os.path.join(REPO, "configs", "trainers", "MMLoP", "vit_b16_c2_ep30_batch4_4+4ctx.yaml")
IMAGENET_NAMES = os.path.join(REPO, "datasets", "data", "imagenet", "classnames.txt")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "black", "white", "grey", "pink")
SHAPES = ("circle", "square", "triangle", "star", "hexagon", "cross", "heart", "ring", "arrow",
          "moon")
MODES = {                                  # (truncate_text, cache_text, shared_prefix)
    "reference": (False, False, False),
    "trunc": (True, True, False),
    "all": (True, True, True),
}
LABELS = {
    "train": {"reference": "reference (upstream: 77 rows)", "trunc": "trunc (truncation + text cache)",
              "all": "all on (+ shared prefix; default)"},
    "eval": {"reference": "reference: class text (77 rows), recomputed for every test batch",
             "trunc": "trunc: class text, once per evaluation",
             "all": "all on: class text, once per evaluation",
             "image": "image tower + logits of one test batch (every configuration)"},
}
ZS_CACHE = "all+zs-cache"                  # "all" with the zero-shot image forward looked up
EXTRA = {"zs-cache": f"train:{ZS_CACHE}", "zs-forward": "zs-forward"}
IMAGENET = dict(classes=500, images_per_epoch=8000, batch=4)
# A small CLIP for smoke tests of this script (--tiny): the same code paths in seconds.
TINY = dict(embed_dim=32, image_resolution=32, vision_layers=3, vision_width=64,
            vision_patch_size=8, context_length=77, vocab_size=49408, transformer_width=64,
            transformer_heads=2, transformer_layers=3)


class BenchInputError(ValueError):
    """Bad bench arguments or input files, reported before any model is built."""


# --- class names and setting ---------------------------------------------------------------------


def _all_names(source: str, n: int) -> tuple[list[str], str]:
    """Every class name of ``source`` and a label saying where they come from."""
    if source == "synthetic":
        return ([f"{COLOURS[i % 10]} {SHAPES[(i // 10) % 10]} {i // 100}" for i in range(n)],
                "synthetic (colour shape number; not real class names)")
    path = IMAGENET_NAMES if source == "imagenet" else source
    if not os.path.isfile(path):
        raise BenchInputError(f"--names {source}: no such file {path}; give 'imagenet', "
                              "'synthetic', a CoOp split JSON or a classnames.txt")
    if path.endswith(".json"):
        from datasets.split_checks import check_consistency, check_structure
        with open(path) as f:
            try:
                split = json.load(f)
            except json.JSONDecodeError as e:
                raise BenchInputError(f"--names {path}: not valid JSON ({e}); give a CoOp split "
                                      "file or a classnames.txt") from None
        check_structure(path, split)
        by_label = check_consistency(path, split)
        names = [by_label[k] for k in sorted(by_label)]
    elif os.path.basename(path) == "classnames.txt":
        from datasets.imagenet import read_classnames
        folder = os.path.dirname(os.path.abspath(path))
        names = list(read_classnames(folder, folder, "imagenet").values())
    else:
        raise BenchInputError(f"--names {path}: expected a CoOp split JSON (*.json) or a "
                              "classnames.txt ('<id> <class name>' lines)")
    label = "ImageNet (real names)" if source == "imagenet" else f"{path} (real names)"
    return names, label


def class_names(n: int, source: str = "imagenet") -> tuple[list[str], str]:
    """``n`` class names of ``source`` (evenly spaced when it has more) and their label."""
    names, label = _all_names(source, n)
    if n > len(names):
        raise BenchInputError(f"--classes {n}: {label} has only {len(names)} class names; ask for "
                              f"at most {len(names)} classes or --names synthetic")
    if n < len(names):
        label += f", {n} of {len(names)} evenly spaced"
    return [names[i * len(names) // n] for i in range(n)], label


def config_batch_sizes(path: str = CONFIG) -> tuple[int, int]:
    """``(train, test)`` batch sizes of the shipped config: the bench's defaults."""
    import yaml
    with open(path) as f:
        loader = yaml.safe_load(f)["DATALOADER"]
    return int(loader["TRAIN_X"]["BATCH_SIZE"]), int(loader["TEST"]["BATCH_SIZE"])


# --- paired ratios -------------------------------------------------------------------------------


def paired_ratios(phase: str, seconds: dict, eval_batches: int) -> dict[str, list[float]]:
    """Per-round ratios of a row's items (``seconds``: item -> per-round times). Training: each
    configuration over the reference, and all over trunc. Evaluation, from the class-text times
    and the image time ``i`` of the same round (a reference test batch costs ``ref + i``, an
    evaluation of ``n`` batches with the cache ``all + n i``): all over the reference at one test
    batch and at ``eval_batches``, the long-test-set limit ``i / (ref + i)``, all over trunc at one
    test batch, and the class text features alone (all over trunc, each over the reference)."""
    def s(mode):
        return seconds.get(f"{phase}:{mode}")

    def per_round(num, den):
        if not num or not den:
            return None
        return [a / b for a, b in zip(num, den)]

    out = {}
    if phase == "train":
        out["trunc / reference"] = per_round(s("trunc"), s("reference"))
        out["all / reference"] = per_round(s("all"), s("reference"))
        out["all / trunc"] = per_round(s("all"), s("trunc"))
        return {k: v for k, v in out.items() if v}
    image = s("image")

    def batch(mode, n=1):                        # n test batches, per round
        text = s(mode)
        if not text or not image:
            return None
        per = n if mode == "reference" else 1
        return [per * t + n * i for t, i in zip(text, image)]

    out["all / reference, 1 test batch"] = per_round(batch("all"), batch("reference"))
    if eval_batches > 1:
        out[f"all / reference, {eval_batches} test batches"] = per_round(
            batch("all", eval_batches), batch("reference", eval_batches))
    out["limit: image / reference"] = per_round(image, batch("reference"))
    out["all / trunc, 1 test batch"] = per_round(batch("all"), batch("trunc"))
    out["all / trunc, class text"] = per_round(s("all"), s("trunc"))
    out["trunc / reference, class text"] = per_round(s("trunc"), s("reference"))
    out["all / reference, class text"] = per_round(s("all"), s("reference"))
    return {k: v for k, v in out.items() if v}


def ratio_interval(ratios: list[float]) -> dict:
    """Geometric mean of paired ratios with its 95% Student-t interval; ``resolved`` when the
    interval excludes 1 (the spread is smaller than the effect)."""
    from proxy.stats import mean_ci
    ci = mean_ci([math.log(r) for r in ratios])
    out = {"ratio": math.exp(ci.mean), "n": ci.n, "low": None, "high": None, "resolved": False}
    if ci.half is not None:
        out.update(low=math.exp(ci.low), high=math.exp(ci.high),
                   resolved=not (ci.low <= 0.0 <= ci.high))
    return out


def _all_resolved(phase: str, seconds: dict, eval_batches: int) -> bool:
    ratios = paired_ratios(phase, seconds, eval_batches)
    return all(ratio_interval(v)["resolved"] for v in ratios.values())


# --- worker side ---------------------------------------------------------------------------------


def _sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_bytes(device) -> int:
    import torch
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _set_mode(model, mode: str) -> None:
    model.truncate_text, model.text_cache.enabled, model.shared_prefix = MODES[mode]
    model.text_cache.clear()


class Bench:
    """One MMLoP model on ViT-B/16 (random weights) for ``names``, with a training step and a
    test batch runnable in any configuration of ``MODES``."""

    def __init__(self, names: list[str], device_name: str, prec: str, batch: int, eval_batch: int,
                 tiny: bool = False):
        import torch
        import torch.nn.functional as F

        from clip.model import CLIP, MODEL_CONFIGS
        from trainers.core import model as prompted_model
        from trainers.core.precision import resolve_precision
        from trainers.mmlop import MMLoPCLIP, MMLoPSettings

        self.device = device = torch.device(device_name)
        torch.manual_seed(0)

        def random_anchors(clip_model, classnames, templates):
            g = torch.Generator().manual_seed(1)
            emb = int(clip_model.text_projection.shape[1])
            return F.normalize(torch.randn(len(classnames), emb, generator=g), dim=-1).to(
                clip_model.text_projection.device)

        config = TINY if tiny else MODEL_CONFIGS["ViT-B/16"]
        settings = MMLoPSettings(prompt_depth=3) if tiny else MMLoPSettings()
        clip_model = CLIP(**config).to(device)
        real_anchors = prompted_model.cached_text_features
        prompted_model.cached_text_features = random_anchors      # for this model only
        try:
            self.model = MMLoPCLIP(clip_model, names, settings, resolve_precision(prec, device))
        finally:
            prompted_model.cached_text_features = real_anchors
        self.settings = settings
        size = config["image_resolution"]
        self.images = torch.randn(batch, 3, size, size, device=device)
        self.labels = torch.arange(batch, device=device) % len(names)
        self.eval_images = torch.randn(eval_batch, 3, size, size, device=device)
        self.opt = torch.optim.SGD(self.model.prompt_learner.parameters(), lr=1e-3, momentum=0.9)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.model.precision.use_grad_scaler)
        self._zs = None

    def text_rows(self) -> dict:
        """Text rows per class prompt: all 77 (reference), after truncation (``seq_len``), and the
        rows before the class name that the shared prefix runs once."""
        cp = self.model.class_prompts
        return {"seq_len": cp.seq_len, "shared_prefix_rows": self.model.prefix_len}

    def zero_shot_cache(self, on: bool) -> None:
        """Replace the frozen zero-shot image forward by a lookup of precomputed features (the
        opt-in cache being measured), or restore it."""
        import torch

        model = self.model
        if not on:
            model.__dict__.pop("image_features", None)
            return
        if self._zs is None:
            with torch.no_grad():
                self._zs = type(model).image_features(model, self.images)
        plain, zs = type(model).image_features, self._zs

        def image_features(images, prompts=()):
            return zs if not prompts else plain(model, images, prompts)

        model.__dict__["image_features"] = image_features

    def train_step(self) -> None:
        from trainers.core.losses import consistency_loss

        model, s = self.model, self.settings
        model.train()
        out = model(self.images)
        loss, _ = consistency_loss(out.logits, self.labels, out.text, out.text_anchors, out.image,
                                   out.image_zs, out.zs_logits, s.text_loss_weight,
                                   s.image_loss_weight, s.kl_loss_weight)
        self.opt.zero_grad()
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()

    def test_batch(self) -> None:
        import torch

        self.model.eval()
        with torch.no_grad():
            self.model(self.eval_images)

    def class_text(self) -> None:
        """The class text features of a test batch, as the eval forward computes them (through
        the text cache, which the reference has off and ``_set_mode`` leaves empty)."""
        import torch

        model = self.model
        model.eval()
        with torch.no_grad():
            text_prompts, _ = model.prompt_learner()
            model.cached(lambda: model.correct(model.encode_class_texts(text_prompts)))

    def zero_shot_forward(self) -> None:
        import torch

        with torch.no_grad():
            type(self.model).image_features(self.model, self.images)

    def run(self, what: str) -> float:
        """Seconds of one ``what``: ``train:<mode>``, ``train:all+zs-cache``, ``zs-forward``,
        ``eval:<mode>`` (the class text features of a test batch: the reference's for every batch,
        trunc's and all's for the first of an evaluation), ``eval:image`` (a test batch with the
        text features cached: the image tower and the logits) or ``eval-batch:<mode>`` (a whole
        test batch, empty cache: what the memory workers run)."""
        if what == "zs-forward":
            fn = self.zero_shot_forward
        else:
            phase, mode = what.split(":")
            self.zero_shot_cache(mode == ZS_CACHE)
            _set_mode(self.model, "all" if mode in (ZS_CACHE, "image") else mode)
            if mode == "image":
                self.class_text()                   # fills the cache, untimed
            fn = self.train_step if phase == "train" else \
                self.test_batch if mode == "image" or phase == "eval-batch" else self.class_text
        _sync(self.device)
        t0 = time.perf_counter()
        fn()
        _sync(self.device)
        return time.perf_counter() - t0


def _build(args, classes: int, batch: int) -> Bench:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    names, _ = class_names(classes, args.names)
    return Bench(names, args.device, args.prec, batch, args.eval_batch, args.tiny)


def time_worker(args, classes: int, batch: int, items: list[str]) -> dict:
    """Warm-up, then rounds of every item in a rotated order until ``args.reps`` rounds are done
    and every paired ratio is resolved, or the budget (``--budget-s``, ``--max-reps``) is spent."""
    import torch

    bench = _build(args, classes, batch)
    for item in items:
        for _ in range(args.warmup):
            bench.run(item)
    phase = items[0].split(":")[0]
    seconds = {item: [] for item in items}
    t0, r = time.time(), 0
    while r < max(args.reps, args.max_reps or 0):
        k = r % len(items)
        for item in items[k:] + items[:k]:
            seconds[item].append(bench.run(item))
        r += 1
        if r >= args.reps and (time.time() - t0 >= args.budget_s or r >= (args.max_reps or r)
                               or _all_resolved(phase, seconds, args.eval_batches)):
            break
    return {"seconds": seconds, "threads": torch.get_num_threads(), **bench.text_rows()}


def memory_worker(args, classes: int, batch: int, item: str) -> dict:
    """One step (or test batch) of one configuration in this process: its peak memory."""
    import torch

    if args.device != "cuda" and args.mem_limit_gb:
        limit = int(args.mem_limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        bench = _build(args, classes, batch)
        if bench.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        seconds = bench.run(item)
    except (MemoryError, RuntimeError, torch.OutOfMemoryError) as e:
        if "alloc" not in str(e).lower() and "out of memory" not in str(e).lower() \
                and not isinstance(e, MemoryError):
            raise
        return {"peak_bytes": None, "failed": f"out of memory ({type(e).__name__})"}
    return {"peak_bytes": _peak_bytes(bench.device), "cold_seconds": seconds}


# --- driver side ---------------------------------------------------------------------------------


def _worker_cmd(args, kind: str, classes: int, batch: int, items: list[str]) -> list[str]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, str(classes), str(batch),
           ",".join(items), "--device", args.device, "--prec", args.prec, "--reps", str(args.reps),
           "--max-reps", str(args.max_reps or 0), "--budget-s", str(args.budget_s),
           "--warmup", str(args.warmup), "--eval-batches", str(args.eval_batches),
           "--eval-batch", str(args.eval_batch), "--threads", str(args.threads or 0),
           "--mem-limit-gb", str(args.mem_limit_gb or 0), "--names", args.names]
    return cmd + (["--tiny"] if args.tiny else [])


def _spawn(args, kind: str, classes: int, batch: int, items: list[str]) -> dict:
    out = subprocess.run(_worker_cmd(args, kind, classes, batch, items), capture_output=True,
                         text=True, cwd=REPO)
    if out.returncode < 0:
        # Killed by a signal: on Linux, SIGKILL with no traceback is the out-of-memory killer.
        reason = f"killed by signal {-out.returncode} (out of memory?)"
        print(f"  worker {kind} {classes} {batch} {items}: {reason}", file=sys.stderr)
        return {"peak_bytes": None, "failed": reason}
    if out.returncode != 0:
        raise RuntimeError(f"worker {kind} {classes} {batch} {items} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _summary(values: list[float] | None) -> dict | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values), "all": values}


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _measure(args, classes: int, phase: str, batch: int, modes: list[str],
             extra: tuple[str, ...] = ()) -> dict:
    """Memory workers for ``modes`` (unless ``--no-memory``), then one timing worker for those
    that fit, plus ``image`` (evaluation) and the ``extra`` measurements (keys of ``EXTRA``)."""
    t0 = time.time()
    load_before = _loadavg()
    whole = "eval-batch" if phase == "eval" else phase          # memory: a whole test batch
    memory = {m: ({} if args.no_memory else _spawn(args, "memory", classes, batch, [f"{whole}:{m}"]))
              for m in modes}
    fits = [m for m in modes if not memory[m].get("failed")]
    items = [f"{phase}:{m}" for m in fits]
    if phase == "eval" and "all" in fits:
        items.append("eval:image")
    if "all" in fits:
        items += [EXTRA[e] for e in extra]
    timing = _spawn(args, "time", classes, batch, items) if items else {"seconds": {}}
    seconds = timing.get("seconds", {})
    _, names_label = class_names(classes, args.names)
    row = {"classes": classes, "phase": phase, "names": names_label,
           "train_batch": batch, "test_batch": args.eval_batch, "eval_batches": args.eval_batches,
           "seq_len": timing.get("seq_len"), "shared_prefix_rows": timing.get("shared_prefix_rows"),
           "threads": timing.get("threads"), "load_before": load_before,
           "load_after": _loadavg(), "wall_s": round(time.time() - t0, 1), "modes": {}}
    for m in modes:
        mem = memory[m]
        row["modes"][m] = {"time": _summary(seconds.get(f"{phase}:{m}")),
                           "peak_mb": None if mem.get("peak_bytes") is None else mem["peak_bytes"] / 2**20,
                           "failed": mem.get("failed")}
    if phase == "eval":
        row["modes"]["image"] = {"time": _summary(seconds.get("eval:image"))}
    for e in extra:
        row["modes"][e] = {"time": _summary(seconds.get(EXTRA[e]))}
    row["ratios"] = {k: {**ratio_interval(v), "per_round": v}
                     for k, v in paired_ratios(phase, seconds, args.eval_batches).items()}
    print(f"  {classes} classes, {phase}, train batch {batch}, test batch {args.eval_batch}: "
          + ", ".join(f"{k} {_fmt_ratio(v)}" for k, v in row["ratios"].items())
          + f" ({row['wall_s']} s, load {load_before} -> {row['load_after']})", flush=True)
    return row


def _fmt_time(t: dict | None) -> str:
    if not t:
        return "—"
    return f"{t['median']:.2f} ({t['min']:.2f}–{t['max']:.2f})"


def _fmt_mb(mode: dict) -> str:
    if mode.get("failed"):
        return "failed"
    return "—" if mode.get("peak_mb") is None else f"{mode['peak_mb']:,.0f}"


def _fmt_ratio(r: dict | None) -> str:
    """``0.45× [0.41–0.49]``, or no number when the interval includes 1 (or there is none)."""
    if not r:
        return "—"
    if r["low"] is None:
        return f"not resolved (1 round: {r['ratio']:.2f}, no interval)"
    if not r["resolved"]:
        return f"not resolved: interval {r['low']:.2f}–{r['high']:.2f} includes 1 ({r['n']} rounds)"
    return f"{r['ratio']:.2f}× [{r['low']:.2f}–{r['high']:.2f}]"


def setting_line(record: dict) -> str:
    """The setting every figure of a run was measured in, in one line."""
    s, m = record["settings"], record["machine"]
    load = f"load average {record['load_before']} at the start, {record.get('load_after')} at the end"
    return (f"Setting: ViT-B/16 (random weights), {record['prec_used']}, device {record['device']}"
            f"{' (' + m['gpu'] + ')' if m.get('gpu') else ''}, {m['cpus']} CPUs, "
            f"{s['threads_used']} torch threads; class names: {s['names']}; training batch "
            f"{s['batch']}, test batch {s['eval_batch']} ({s['batch_source']}); at least "
            f"{s['reps']} rounds after {s['warmup']} warm-up, up to {s['budget_s']} s per row; {load}.")


def markdown(record: dict) -> str:
    """The tables of a run (markdown), as printed and as in docs/BENCHMARKS.md."""
    mem = "GPU MB" if record["device"] == "cuda" else "RSS MB"
    lines = [setting_line(record), "",
             f"| classes | measurement | configuration | seconds, median (min–max) | "
             f"ratio [95% interval] | peak {mem} |", "|---|---|---|---|---|---|"]
    for row in record["rows"]:
        rows = (f"text rows per class: 77 reference, {row['seq_len']} truncated, "
                f"{row['seq_len'] - row['shared_prefix_rows']} after the shared prefix"
                if row.get("seq_len") else "")
        if row["phase"] == "train":
            what = f"training step, batch {row['train_batch']}"
            if row.get("imagenet_row"):
                what += ", ImageNet estimate"
            ratio_of = {"trunc": "trunc / reference", "all": "all / reference"}
        else:
            what = f"evaluation, test batch {row['test_batch']}"
            ratio_of = {"trunc": "trunc / reference, class text",
                        "all": "all / reference, class text", "image": "limit: image / reference"}
        head = f"| {row['classes']} | {what} ({rows}) |"
        for m in [m for m in (*MODES, "image") if m in row["modes"]]:
            mode = row["modes"][m]
            t = "failed (memory)" if mode.get("failed") else _fmt_time(mode.get("time"))
            ratio = "1" if m == "reference" and mode.get("time") else \
                _fmt_ratio(row["ratios"].get(ratio_of.get(m, "")))
            lines.append(f"{head} {LABELS[row['phase']][m]} | {t} | {ratio} | {_fmt_mb(mode)} |")
            head = "| | |"
        for k, r in row["ratios"].items():
            if k not in ratio_of.values():
                lines.append(f"| | | {k} | | {_fmt_ratio(r)} | |")
    zs_rows = [r for r in record["rows"] if r["phase"] == "train" and "zs-cache" in r["modes"]]
    if zs_rows:
        lines += ["", "| classes | batch | all on: step (s) | frozen zero-shot image forward (s) | "
                  "its share of the step | step with cached zero-shot image features (s) | saved |",
                  "|---|---|---|---|---|---|---|"]
        for r in zs_rows:
            step, zs, cached = (r["modes"][k]["time"] for k in ("all", "zs-forward", "zs-cache"))
            share = "—" if not (step and zs) else f"{100 * zs['median'] / step['median']:.0f}%"
            saved = "—" if not (step and cached) else \
                f"{100 * (1 - cached['median'] / step['median']):.0f}%"
            lines.append(f"| {r['classes']} | {r['train_batch']} | {_fmt_time(step)} | "
                         f"{_fmt_time(zs)} | {share} | {_fmt_time(cached)} | {saved} |")
    if record.get("imagenet"):
        est = record["imagenet"]
        lines += ["", f"| ImageNet base-to-novel, base: {est['classes']} classes, "
                  f"{IMAGENET['images_per_epoch']:,} images per epoch, batch {IMAGENET['batch']} "
                  "| trunc | all on |", "|---|---|---|"]
        lines.append("| training images/s | " + " | ".join(
            "—" if est[m] is None else f"{est[m]['images_per_s']:.1f}" for m in ("trunc", "all"))
            + " |")
        steps = IMAGENET["images_per_epoch"] // IMAGENET["batch"]
        lines.append(f"| training epoch ({steps:,} steps), minutes | " + " | ".join(
            "—" if est[m] is None else f"{est[m]['epoch_min']:.1f}" for m in ("trunc", "all"))
            + " |")
    return "\n".join(lines)


def _imagenet_estimate(row: dict) -> dict:
    est = {"classes": row["classes"]}
    for m in ("trunc", "all"):
        t = row["modes"][m]["time"]
        if not t:
            est[m] = None
            continue
        steps = IMAGENET["images_per_epoch"] / row["train_batch"]
        est[m] = {"step_s": t["median"], "images_per_s": row["train_batch"] / t["median"],
                  "epoch_min": steps * t["median"] / 60}
    return est


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="the training step at 100 real classes, reference against all on, "
                             "no memory workers (add --phases train eval for the evaluation)")
    parser.add_argument("--classes", type=int, nargs="+")
    parser.add_argument("--names", default="imagenet",
                        help="class names: imagenet (default, real), a CoOp split JSON or "
                             "classnames.txt (a dataset's own), or synthetic")
    parser.add_argument("--phases", nargs="+", choices=("train", "eval"),
                        help="default: train and eval (--quick: train)")
    parser.add_argument("--modes", nargs="+", choices=tuple(MODES),
                        help="configurations to measure (default: all three; --quick: reference, all)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--prec", default="fp32", help="TRAINER.MMLOP.PREC (fp32 on CPU)")
    parser.add_argument("--reps", type=int, help="timed rounds at least")
    parser.add_argument("--max-reps", type=int, help="timed rounds at most (0: no limit)")
    parser.add_argument("--budget-s", type=float,
                        help="seconds of rounds per row after which unresolved ratios stay so")
    parser.add_argument("--warmup", type=int, help="untimed runs of each item first")
    parser.add_argument("--batch", type=int, help="training batch size (default: the config's)")
    parser.add_argument("--eval-batch", type=int, help="test batch size (default: the config's)")
    parser.add_argument("--eval-batches", type=int, help="test batches of the evaluation ratio")
    parser.add_argument("--batch-scaling", type=int, nargs="*",
                        help="extra training rows at these batch sizes (at --scaling-classes)")
    parser.add_argument("--scaling-classes", type=int)
    parser.add_argument("--zs", action=argparse.BooleanOptionalAction,
                        help="measure the zero-shot image forward and its cache in training rows")
    parser.add_argument("--no-memory", action="store_true", default=None,
                        help="skip the peak-memory workers (--quick skips them)")
    parser.add_argument("--imagenet", action="store_true",
                        help="ImageNet base-to-novel estimate: training at 500 classes, batch 4")
    parser.add_argument("--imagenet-classes", type=int, default=IMAGENET["classes"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--mem-limit-gb", type=float,
                        help="CPU address-space limit of a memory worker (default 80%% of free)")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json")
    parser.add_argument("--worker", nargs=4, metavar=("KIND", "CLASSES", "BATCH", "ITEMS"),
                        help=argparse.SUPPRESS)
    return parser


def _defaults(args) -> str:
    """Fill unset arguments for the run's kind; returns where the batch sizes came from."""
    cpu = args.device != "cuda"
    train_batch, test_batch = config_batch_sizes()
    quick = dict(classes=[100], phases=["train"], modes=["reference", "all"], reps=3,
                 max_reps=8, budget_s=60, warmup=0, eval_batches=10, batch_scaling=[],
                 scaling_classes=100, zs=False, no_memory=True)
    cpu_full = dict(classes=[100, 1000], phases=["train", "eval"], modes=list(MODES), reps=3,
                    max_reps=10, budget_s=900, warmup=1, eval_batches=10, batch_scaling=[8],
                    scaling_classes=100, zs=True, no_memory=False)
    gpu_full = dict(classes=[100, 1000], phases=["train", "eval"], modes=list(MODES), reps=20,
                    max_reps=100, budget_s=300, warmup=3, eval_batches=10,
                    batch_scaling=[8, 16, 32], scaling_classes=100, zs=True, no_memory=False)
    for key, value in (quick if args.quick else cpu_full if cpu else gpu_full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    source = []
    if args.batch is None:
        args.batch = train_batch
        source.append("training")
    if args.eval_batch is None:
        args.eval_batch = test_batch
        source.append("test")
    if args.mem_limit_gb is None:
        args.mem_limit_gb = _default_mem_limit_gb() if cpu else 0
    what = " and ".join(source)
    return (f"{what} batch size{'s' if len(source) > 1 else ''} from "
            f"{os.path.relpath(CONFIG, REPO)}" if source else "batch sizes given")


def _check_inputs(args) -> None:
    """Every class set the run will ask for exists, before any worker starts."""
    classes = set(args.classes)
    if "train" in args.phases and args.batch_scaling:
        classes.add(args.scaling_classes)
    if args.imagenet:
        classes.add(args.imagenet_classes)
    for n in sorted(classes):
        class_names(n, args.names)
    for flag in ("batch", "eval_batch", "eval_batches", "reps"):
        if getattr(args, flag) < 1:
            raise BenchInputError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")


def main(argv=None) -> dict:
    args = _parser().parse_args(argv)
    if args.device == "auto":
        import torch
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    batch_source = _defaults(args)
    if args.worker:
        kind, c, b, items = args.worker
        fn = time_worker if kind == "time" else memory_worker
        items = items.split(",")
        print(json.dumps(fn(args, int(c), int(b), items if kind == "time" else items[0])))
        return {}
    try:
        _check_inputs(args)
    except (BenchInputError, ValueError) as e:
        sys.exit(f"bench_mmlop.py: {e}")

    import torch

    from trainers.core.precision import resolve_precision
    t_start = time.time()
    prec_used = resolve_precision(args.prec, args.device).name
    settings = {k: getattr(args, k) for k in ("reps", "max_reps", "budget_s", "warmup", "batch",
                                               "eval_batch", "eval_batches", "threads",
                                               "mem_limit_gb", "no_memory")}
    settings.update(names=class_names(max(args.classes), args.names)[1].split(",")[0],
                    names_arg=args.names, batch_source=batch_source,
                    threads_used=args.threads or torch.get_num_threads())
    record = {"device": args.device, "prec": args.prec, "prec_used": prec_used,
              "quick": args.quick, "tiny": args.tiny, "settings": settings,
              "command": "python bench/bench_mmlop.py " + " ".join(argv if argv is not None
                                                                     else sys.argv[1:]),
              "machine": {"cpus": os.cpu_count(), "processor": _cpu_name(),
                          "python": platform.python_version(), "torch": torch.__version__,
                          "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None},
              "load_before": _loadavg(), "rows": []}
    print(f"MMLoP ViT-B/16 (random weights), device {args.device}, PREC {prec_used}, names "
          f"{settings['names']}, training batch {args.batch}, test batch {args.eval_batch} "
          f"({batch_source}); load {record['load_before']}", flush=True)
    path = args.json or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                     f"results_{args.device}{'_quick' if args.quick else ''}.json")
    partial = path + ".partial"                 # rows so far, in case the run is interrupted

    def add(row: dict) -> None:
        record["rows"].append(row)
        _write_json(partial, record)

    for classes in args.classes:
        for phase in args.phases:
            extra = tuple(EXTRA) if phase == "train" and args.zs else ()
            add(_measure(args, classes, phase, args.batch, args.modes, extra))
    if "train" in args.phases:
        for batch in args.batch_scaling or ():
            add(_measure(args, args.scaling_classes, "train", batch, ["trunc", "all"],
                         tuple(EXTRA) if args.zs else ()))
    if args.imagenet:
        row = _measure(args, args.imagenet_classes, "train", IMAGENET["batch"], ["trunc", "all"])
        row["imagenet_row"] = True
        add(row)
        record["imagenet"] = _imagenet_estimate(row)
    record["load_after"] = _loadavg()
    record["wall_s"] = round(time.time() - t_start, 1)
    table = markdown(record)
    print(table)
    print(f"{record['wall_s']} s")
    record["markdown"] = table
    _write_json(path, record)
    if os.path.exists(partial):
        os.remove(partial)
    print(f"Wrote {path}")
    return record


def _write_json(path: str, record: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2)
    os.replace(tmp, path)


def _default_mem_limit_gb() -> float:
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return round(0.8 * int(info["MemAvailable"].split()[0]) / 2**20, 1)
    except (OSError, KeyError, ValueError):
        return 0.0


def _cpu_name() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


if __name__ == "__main__":
    main()
