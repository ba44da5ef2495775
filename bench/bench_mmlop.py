"""Benchmark of MMLoP's exact speed-ups: training step and full evaluation, off versus on.

    python bench/bench_mmlop.py [--quick] [--classes 100 1000] [--device auto] [--prec fp32]
                                [--reps 5] [--warmup 1] [--batch 4] [--json PATH]
    bash bench/gpu.sh                       # the GPU run in one command (see that file)

Three configurations of the same model (MMLoP defaults: 4+4 tokens, rank 1, depth 9, consistency
losses, drift correction; ViT-B/16 with random weights, since the cost does not depend on them):

=========  ==================================================================================
``off``    every speed-up off: 77 text rows, class text features recomputed for every test
           batch, every class runs its whole prompt (the reference computation, as upstream)
``trunc``  ``TRUNCATE_TEXT`` + ``CACHE_TEXT`` (the speed-ups before the shared prefix)
``all``    ``trunc`` + ``SHARED_PREFIX`` (the rows before the class name run once): the default
=========  ==================================================================================

Method. Times: one worker process per (classes, phase, batch) builds the model once, warms every
configuration up (``--warmup`` steps each), then runs ``--reps`` rounds; each round times one
step (or one full evaluation) of every configuration, in an order rotated from round to round, so
that the configurations share the machine's load and warm caches alike. Reported: the median and
the spread (min-max) over the rounds, and the ratios of the medians. A full evaluation is
``--eval-batches`` batches of ``--eval-batch`` images, starting with an empty text-feature cache.
Memory: one worker process per (classes, phase, batch, configuration), running one step, reports
its peak (``torch.cuda.max_memory_allocated`` on GPU; the process's peak resident set size on CPU,
which includes the ~0.6 GB of weights). On CPU workers run under an address-space limit
(``--mem-limit-gb``, default 80% of the memory available at start), so a configuration that does
not fit fails with an allocation error, reported as ``failed``, instead of waking the system's
out-of-memory killer; a configuration whose memory worker failed is left out of the timing.

Also measured in the training workers (defaults unchanged, nothing implemented): the frozen
zero-shot image forward of an MMLoP step (``image_zs``, timed alone) and the step with that
forward replaced by a lookup of precomputed features (``all+zs-cache``), i.e. what an opt-in
cache of zero-shot image features would save. ``--batch-scaling`` adds training rows at other
batch sizes; ``--imagenet`` adds the ImageNet base-to-novel estimate (500 base classes, 16 shots =
8,000 images per epoch, batch 4: 2,000 steps per epoch) and images per second.

Zero-shot anchors are random unit vectors here (their values do not change the cost of a step;
computing them is a one-off per class set). Results are printed as markdown tables and written as
JSON (default ``bench/results_<device>[_quick].json``), with the machine's load average before and
after the run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "black", "white", "grey", "pink")
SHAPES = ("circle", "square", "triangle", "star", "hexagon", "cross", "heart", "ring", "arrow",
          "moon")
MODES = {                                  # (truncate_text, cache_text, shared_prefix)
    "off": (False, False, False),
    "trunc": (True, True, False),
    "all": (True, True, True),
}
ZS_CACHE = "all+zs-cache"                  # "all" with the zero-shot image forward looked up
IMAGENET = dict(classes=500, images_per_epoch=8000, batch=4)
# A small CLIP for smoke tests of this script (--tiny): the same code paths in seconds.
TINY = dict(embed_dim=32, image_resolution=32, vision_layers=3, vision_width=64,
            vision_patch_size=8, context_length=77, vocab_size=49408, transformer_width=64,
            transformer_heads=2, transformer_layers=3)


def class_names(n: int) -> list[str]:
    """``n`` distinct names of 3-4 BPE tokens (ImageNet-like lengths)."""
    return [f"{COLOURS[i % 10]} {SHAPES[(i // 10) % 10]} {i // 100}" for i in range(n)]


# --- worker side ------------------------------------------------------------------------------


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
    """One MMLoP model on ViT-B/16 (random weights) for ``classes`` classes, with a training step
    and a full evaluation runnable in any configuration of ``MODES``."""

    def __init__(self, classes: int, device_name: str, prec: str, batch: int, eval_batches: int,
                 eval_batch: int, tiny: bool = False):
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
            self.model = MMLoPCLIP(clip_model, class_names(classes), settings,
                                   resolve_precision(prec, device))
        finally:
            prompted_model.cached_text_features = real_anchors
        self.settings = settings
        size = config["image_resolution"]
        self.images = torch.randn(batch, 3, size, size, device=device)
        self.labels = torch.arange(batch, device=device) % classes
        self.eval_images = torch.randn(eval_batch, 3, size, size, device=device)
        self.eval_batches = eval_batches
        self.opt = torch.optim.SGD(self.model.prompt_learner.parameters(), lr=1e-3, momentum=0.9)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.model.precision.use_grad_scaler)
        self._zs = None

    def text_rows(self) -> dict:
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

    def evaluation(self) -> None:
        import torch

        model = self.model
        model.eval()
        model.text_cache.clear()
        with torch.no_grad():
            for _ in range(self.eval_batches):
                model(self.eval_images)

    def zero_shot_forward(self) -> None:
        import torch

        with torch.no_grad():
            type(self.model).image_features(self.model, self.images)

    def run(self, what: str) -> float:
        """Seconds of one ``what``: ``train:<mode>``, ``eval:<mode>``, ``train:all+zs-cache`` or
        ``zs-forward``."""
        if what == "zs-forward":
            fn = self.zero_shot_forward
        else:
            phase, mode = what.split(":")
            self.zero_shot_cache(mode == ZS_CACHE)
            _set_mode(self.model, "all" if mode == ZS_CACHE else mode)
            fn = self.train_step if phase == "train" else self.evaluation
        _sync(self.device)
        t0 = time.perf_counter()
        fn()
        _sync(self.device)
        return time.perf_counter() - t0


def time_worker(args, classes: int, batch: int, items: list[str]) -> dict:
    """Warm-up, then ``args.reps`` rounds of every item in a rotated order; seconds per item."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    bench = Bench(classes, args.device, args.prec, batch, args.eval_batches, args.eval_batch,
                  args.tiny)
    for item in items:
        for _ in range(args.warmup):
            bench.run(item)
    seconds = {item: [] for item in items}
    for r in range(args.reps):
        k = r % len(items)
        for item in items[k:] + items[:k]:
            seconds[item].append(bench.run(item))
    return {"seconds": seconds, "threads": torch.get_num_threads(), **bench.text_rows()}


def memory_worker(args, classes: int, batch: int, item: str) -> dict:
    """One step (or evaluation) of one configuration in this process: its peak memory."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device != "cuda" and args.mem_limit_gb:
        limit = int(args.mem_limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    bench = Bench(classes, args.device, args.prec, batch, args.eval_batches, args.eval_batch,
                  args.tiny)
    if bench.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    try:
        seconds = bench.run(item)
    except (MemoryError, RuntimeError, torch.OutOfMemoryError) as e:
        if "alloc" not in str(e).lower() and "out of memory" not in str(e).lower() \
                and not isinstance(e, MemoryError):
            raise
        return {"peak_bytes": None, "failed": f"out of memory ({type(e).__name__})"}
    return {"peak_bytes": _peak_bytes(bench.device), "cold_seconds": seconds}


# --- driver side ------------------------------------------------------------------------------


def _worker_cmd(args, kind: str, classes: int, batch: int, items: list[str]) -> list[str]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, str(classes), str(batch),
           ",".join(items), "--device", args.device, "--prec", args.prec, "--reps", str(args.reps),
           "--warmup", str(args.warmup), "--eval-batches", str(args.eval_batches),
           "--eval-batch", str(args.eval_batch), "--threads", str(args.threads or 0),
           "--mem-limit-gb", str(args.mem_limit_gb or 0)]
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


EXTRA = {"zs-cache": f"train:{ZS_CACHE}", "zs-forward": "zs-forward"}


def _measure(args, classes: int, phase: str, batch: int, modes: list[str],
             extra: tuple[str, ...] = ()) -> dict:
    """Memory workers for ``modes``, then one timing worker for those that fit, plus the
    ``extra`` measurements (keys of ``EXTRA``) when "all" fits."""
    t0 = time.time()
    load_before = _loadavg()
    memory = {m: _spawn(args, "memory", classes, batch, [f"{phase}:{m}"]) for m in modes}
    fits = [m for m in modes if not memory[m].get("failed")]
    items = [f"{phase}:{m}" for m in fits] + [EXTRA[e] for e in extra if "all" in fits]
    timing = _spawn(args, "time", classes, batch, items) if items else {"seconds": {}}
    seconds = timing.get("seconds", {})
    row = {"classes": classes, "phase": phase, "batch": batch,
           "seq_len": timing.get("seq_len"), "shared_prefix_rows": timing.get("shared_prefix_rows"),
           "threads": timing.get("threads"), "load_before": load_before,
           "load_after": _loadavg(), "wall_s": round(time.time() - t0, 1), "modes": {}}
    for m in modes:
        row["modes"][m] = {"time": _summary(seconds.get(f"{phase}:{m}")),
                           "peak_mb": (None if memory[m].get("peak_bytes") is None
                                       else memory[m]["peak_bytes"] / 2**20),
                           "failed": memory[m].get("failed")}
    for e in extra:
        row["modes"][e] = {"time": _summary(seconds.get(EXTRA[e]))}
    med = {m: (row["modes"][m]["time"] or {}).get("median") for m in row["modes"]}
    row["ratio_all_vs_trunc"] = med["all"] / med["trunc"] if med.get("all") and med.get("trunc") \
        else None
    row["speedup_off_vs_all"] = med["off"] / med["all"] if med.get("off") and med.get("all") \
        else None
    print(f"  {classes} classes, {phase}, batch {batch}: "
          + ", ".join(f"{m} {v:.3f}s" for m, v in med.items() if v) + f" ({row['wall_s']} s)",
          flush=True)
    return row


def _fmt_time(t: dict | None) -> str:
    if not t:
        return "—"
    return f"{t['median']:.2f} ({t['min']:.2f}–{t['max']:.2f})"


def _fmt_mb(mode: dict) -> str:
    if mode.get("failed"):
        return "failed"
    return "—" if mode.get("peak_mb") is None else f"{mode['peak_mb']:,.0f}"


def _what(row: dict, args) -> str:
    if row.get("imagenet_row"):
        return f"training step (batch {row['batch']}), ImageNet estimate"
    if row["phase"] == "train":
        return f"training step (batch {row['batch']})"
    return f"evaluation ({args.eval_batches} × {args.eval_batch} images)"


def markdown(record: dict, args) -> str:
    """The tables of a run (markdown), as printed and as in the README."""
    mem = "GPU MB" if record["device"] == "cuda" else "RSS MB"
    lines = [f"| classes | measurement | off (s) | trunc (s) | all on (s) | all / trunc | "
             f"off / all | peak {mem} off / trunc / all |",
             "|---|---|---|---|---|---|---|---|"]
    for row in record["rows"]:
        m = {k: row["modes"].get(k, {}) for k in MODES}
        off = "failed (memory)" if m["off"].get("failed") else _fmt_time(m["off"].get("time"))
        ratio = "—" if row["ratio_all_vs_trunc"] is None else f"{row['ratio_all_vs_trunc']:.2f}×"
        speed = "—" if row["speedup_off_vs_all"] is None else f"{row['speedup_off_vs_all']:.1f}×"
        lines.append(f"| {row['classes']} | {_what(row, args)} | {off} | {_fmt_time(m['trunc'].get('time'))} | "
                     f"{_fmt_time(m['all'].get('time'))} | {ratio} | {speed} | "
                     f"{_fmt_mb(m['off'])} / {_fmt_mb(m['trunc'])} / {_fmt_mb(m['all'])} |")
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
            lines.append(f"| {r['classes']} | {r['batch']} | {_fmt_time(step)} | {_fmt_time(zs)} | "
                         f"{share} | {_fmt_time(cached)} | {saved} |")
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
        steps = IMAGENET["images_per_epoch"] / row["batch"]
        est[m] = {"step_s": t["median"], "images_per_s": row["batch"] / t["median"],
                  "epoch_min": steps * t["median"] / 60}
    return est


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few minutes on a CPU")
    parser.add_argument("--classes", type=int, nargs="+")
    parser.add_argument("--phases", nargs="+", choices=("train", "eval"), default=["train", "eval"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--prec", default="fp32", help="TRAINER.MMLOP.PREC (fp32 on CPU)")
    parser.add_argument("--reps", type=int, help="timed rounds per configuration")
    parser.add_argument("--warmup", type=int, help="untimed steps per configuration first")
    parser.add_argument("--batch", type=int, help="training batch size")
    parser.add_argument("--eval-batches", type=int)
    parser.add_argument("--eval-batch", type=int)
    parser.add_argument("--batch-scaling", type=int, nargs="*",
                        help="extra training rows at these batch sizes (at --scaling-classes)")
    parser.add_argument("--scaling-classes", type=int)
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
    args = parser.parse_args(argv)
    if args.device == "auto":
        import torch
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cpu = args.device != "cuda"
    quick = dict(classes=[10, 25], reps=3, warmup=1, batch=2, eval_batches=2, eval_batch=2,
                 batch_scaling=[4], scaling_classes=25)
    cpu_full = dict(classes=[100, 1000], reps=5, warmup=1, batch=2, eval_batches=2, eval_batch=2,
                    batch_scaling=[4, 8], scaling_classes=100)
    gpu_full = dict(classes=[100, 1000], reps=20, warmup=3, batch=4, eval_batches=10,
                    eval_batch=100, batch_scaling=[8, 16, 32], scaling_classes=100)
    for key, value in (quick if args.quick else cpu_full if cpu else gpu_full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.mem_limit_gb is None:
        args.mem_limit_gb = _default_mem_limit_gb() if cpu else 0
    if args.worker:
        kind, c, b, items = args.worker
        fn = time_worker if kind == "time" else memory_worker
        items = items.split(",")
        print(json.dumps(fn(args, int(c), int(b), items if kind == "time" else items[0])))
        return {}

    import torch

    from trainers.core.precision import resolve_precision
    t_start = time.time()
    prec_used = resolve_precision(args.prec, args.device).name
    record = {"device": args.device, "prec": args.prec, "prec_used": prec_used,
              "quick": args.quick, "tiny": args.tiny,
              "settings": {k: getattr(args, k) for k in ("reps", "warmup", "batch", "eval_batches",
                                                          "eval_batch", "threads", "mem_limit_gb")},
              "machine": {"cpus": os.cpu_count(), "processor": _cpu_name(),
                          "python": platform.python_version(), "torch": torch.__version__,
                          "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None},
              "load_before": _loadavg(), "rows": []}
    print(f"MMLoP ViT-B/16 (random weights), device {args.device}, PREC {prec_used}, "
          f"{args.reps} timed rounds after {args.warmup} warm-up; load {record['load_before']}",
          flush=True)
    path = args.json or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                     f"results_{args.device}{'_quick' if args.quick else ''}.json")
    partial = path + ".partial"                 # rows so far, in case the run is interrupted

    def add(row: dict) -> None:
        record["rows"].append(row)
        _write_json(partial, record)

    for classes in args.classes:
        for phase in args.phases:
            extra = tuple(EXTRA) if phase == "train" else ()
            add(_measure(args, classes, phase, args.batch, list(MODES), extra))
    if "train" in args.phases:
        for batch in args.batch_scaling or ():
            add(_measure(args, args.scaling_classes, "train", batch, ["trunc", "all"],
                         tuple(EXTRA)))
    if args.imagenet:
        row = _measure(args, args.imagenet_classes, "train", IMAGENET["batch"], ["trunc", "all"])
        row["imagenet_row"] = True
        add(row)
        record["imagenet"] = _imagenet_estimate(row)
    record["load_after"] = _loadavg()
    record["wall_s"] = round(time.time() - t_start, 1)
    table = markdown(record, args)
    print(table)
    print(f"load average before {record['load_before']}, after {record['load_after']}; "
          f"{record['wall_s']} s")
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
