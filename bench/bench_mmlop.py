"""Benchmark of MMLoP's exact speed-ups: training step and full evaluation, on versus off.

    python bench/bench_mmlop.py [--quick] [--classes 100 1000] [--device auto] [--json PATH]

"on" = the text tower runs only up to the last end-of-text row (``TRUNCATE_TEXT``) and the
prompted text features are computed once per evaluation (``CACHE_TEXT``); "off" = the plain
computation (77 rows, text features recomputed for every test batch, as upstream). The model is
MMLoP (defaults: 4+4 tokens, rank 1, depth 9, consistency losses, drift correction) on ViT-B/16
with random weights. Zero-shot anchors are random unit vectors here (their values do not change
the cost of a step; computing them is a one-off per class set).

Each (classes, mode, phase) runs in a fresh worker process, so peak memory is per measurement:
``torch.cuda.max_memory_allocated`` on GPU, the process's peak resident set size
(``resource.getrusage``) on CPU (which includes the ~0.6 GB of ViT-B/16 weights). Results are
printed as a table and written as JSON (default ``bench/results_<device>.json``). A worker killed
by a signal (on Linux, usually the out-of-memory killer: the untruncated text tower's activations
for 1,000 classes do not fit in 24 GB on a CPU) is reported as ``failed`` with the reason instead
of ending the run.

``--quick`` (a few minutes on a CPU): 10 and 25 classes, 1 training step of batch 2, an evaluation
of 2 batches of 2 images. Default: 100 and 1000 classes, 5 training steps of batch 4 (after 1
warm-up step), an evaluation of 10 batches of 100 images (a GPU is recommended).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "black", "white", "grey", "pink")
SHAPES = ("circle", "square", "triangle", "star", "hexagon", "cross", "heart", "ring", "arrow",
          "moon")


def class_names(n: int) -> list[str]:
    """``n`` distinct names of 3-4 BPE tokens (ImageNet-like lengths)."""
    return [f"{COLOURS[i % 10]} {SHAPES[(i // 10) % 10]} {i // 100}" for i in range(n)]


def _sync(device):
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize()


def worker(classes: int, mode: str, phase: str, device_name: str, prec: str, steps: int,
           warmup: int, batch: int, eval_batches: int, eval_batch: int) -> dict:
    """One measurement in this process; returns seconds and peak memory (bytes)."""
    import torch
    import torch.nn.functional as F

    from clip.model import CLIP, MODEL_CONFIGS
    from trainers.core import model as prompted_model
    from trainers.core.losses import consistency_loss
    from trainers.core.precision import resolve_precision
    from trainers.mmlop import MMLoPCLIP, MMLoPSettings

    device = torch.device(device_name)
    torch.manual_seed(0)
    names = class_names(classes)

    def random_anchors(clip_model, classnames, templates):
        g = torch.Generator().manual_seed(1)
        emb = int(clip_model.text_projection.shape[1])
        return F.normalize(torch.randn(len(classnames), emb, generator=g), dim=-1).to(
            clip_model.text_projection.device)

    prompted_model.cached_text_features = random_anchors
    on = mode == "on"
    settings = MMLoPSettings(truncate_text=on, cache_text=on)
    clip_model = CLIP(**MODEL_CONFIGS["ViT-B/16"]).to(device)
    model = MMLoPCLIP(clip_model, names, settings, resolve_precision(prec, device))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if phase == "train":
        opt = torch.optim.SGD(model.prompt_learner.parameters(), lr=1e-3, momentum=0.9)
        model.train()
        images = torch.randn(batch, 3, 224, 224, device=device)
        labels = torch.arange(batch, device=device) % classes
        s = settings

        def step():
            out = model(images)
            loss, _ = consistency_loss(out.logits, labels, out.text, out.text_anchors, out.image,
                                       out.image_zs, out.zs_logits, s.text_loss_weight,
                                       s.image_loss_weight, s.kl_loss_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()

        for _ in range(warmup):
            step()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        seconds = (time.perf_counter() - t0) / steps
    else:
        model.eval()
        images = torch.randn(eval_batch, 3, 224, 224, device=device)
        with torch.no_grad():
            if warmup:
                model(images[:2])
            model.text_cache.clear()
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(eval_batches):
                model(images)
            _sync(device)
            seconds = time.perf_counter() - t0
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"classes": classes, "mode": mode, "phase": phase, "seconds": seconds,
            "peak_bytes": int(peak), "seq_len": model.class_prompts.seq_len}


def _mb(n_bytes):
    return None if n_bytes is None else n_bytes / 2**20


def _run_worker(args, classes: int, mode: str, phase: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(classes), mode, phase,
           "--device", args.device, "--prec", args.prec, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--batch", str(args.batch),
           "--eval-batches", str(args.eval_batches), "--eval-batch", str(args.eval_batch)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode < 0:
        # Killed by a signal: on Linux, SIGKILL with no traceback is the out-of-memory killer.
        reason = f"killed by signal {-out.returncode} (out of memory?)"
        print(f"worker {classes} {mode} {phase}: {reason}", file=sys.stderr)
        return {"classes": classes, "mode": mode, "phase": phase, "seconds": None,
                "peak_bytes": None, "seq_len": None, "failed": reason}
    if out.returncode != 0:
        raise RuntimeError(f"worker {classes} {mode} {phase} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _fmt(value, spec: str) -> str:
    return "failed" if value is None else format(value, spec)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--classes", type=int, nargs="+")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--prec", default="fp32", help="TRAINER.MMLOP.PREC (fp32 on CPU)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--eval-batches", type=int)
    parser.add_argument("--eval-batch", type=int)
    parser.add_argument("--json")
    parser.add_argument("--worker", nargs=3, metavar=("CLASSES", "MODE", "PHASE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device == "auto":
        import torch
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    quick = dict(classes=[10, 25], steps=1, warmup=0, batch=2, eval_batches=2, eval_batch=2)
    full = dict(classes=[100, 1000], steps=5, warmup=1, batch=4, eval_batches=10, eval_batch=100)
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.worker:
        c, mode, phase = args.worker
        print(json.dumps(worker(int(c), mode, phase, args.device, args.prec, args.steps,
                                args.warmup, args.batch, args.eval_batches, args.eval_batch)))
        return {}

    rows = []
    for classes in args.classes:
        res = {(m, p): _run_worker(args, classes, m, p) for p in ("train", "eval")
               for m in ("off", "on")}
        for phase in ("train", "eval"):
            off, on = res[("off", phase)], res[("on", phase)]
            both = off["seconds"] is not None and on["seconds"] is not None
            rows.append({"classes": classes, "phase": phase, "off_s": off["seconds"],
                         "on_s": on["seconds"],
                         "speedup": off["seconds"] / on["seconds"] if both else None,
                         "off_peak_mb": _mb(off["peak_bytes"]), "on_peak_mb": _mb(on["peak_bytes"]),
                         "seq_len": on["seq_len"],
                         "failed": {m: r["failed"] for m, r in (("off", off), ("on", on))
                                    if r.get("failed")}})
    from tabulate import tabulate
    what = {"train": f"train step (batch {args.batch})",
            "eval": f"evaluation ({args.eval_batches} x {args.eval_batch} images)"}
    print(f"MMLoP ViT-B/16 (random weights), device {args.device}, PREC {args.prec}; "
          "on = truncated text tower + text features once per evaluation")
    mem = "peak GPU memory (MB)" if args.device == "cuda" else "peak RSS (MB)"
    print(tabulate([[r["classes"], what[r["phase"]], _fmt(r["off_s"], ".3f"), _fmt(r["on_s"], ".3f"),
                     _fmt(r["speedup"], ".2f") + ("x" if r["speedup"] else ""),
                     _fmt(r["off_peak_mb"], ".0f"), _fmt(r["on_peak_mb"], ".0f"),
                     r["seq_len"]] for r in rows],
                   headers=["classes", "measure", "off (s)", "on (s)", "ratio", f"off {mem}",
                            f"on {mem}", "text rows (on)"], disable_numparse=True))
    record = {"device": args.device, "prec": args.prec, "quick": args.quick,
              "settings": {k: getattr(args, k) for k in ("steps", "warmup", "batch",
                                                          "eval_batches", "eval_batch")},
              "rows": rows}
    path = args.json or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                     f"results_{args.device}{'_quick' if args.quick else ''}.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2)
    os.replace(tmp, path)
    print(f"Wrote {path}")
    return record


if __name__ == "__main__":
    main()
