"""Data pipeline throughput: decoding + transform each time versus the decoded-image cache.

    python bench/bench_pipeline.py [--images DIR] [--n 240] [--rounds 7] [--out PATH]
    python bench/bench_pipeline.py --model-eval [--device cuda] [--n 2000] [--batch 100] [--workers 8]

Pipeline (default): images per second of one process with one thread, through the loaders' own
``DatasetWrapper.__getitem__``, with CLIP's pipelines at 224x224 (bicubic):

=========  ==================================================================================
eval       resize 224 + center crop (cached) -> to tensor -> normalize
train      CoOp's random resized crop (scale 0.08-1) -> random flip -> to tensor -> normalize,
           on the decoded image (cached at its own size: the training cache's exact stage)
=========  ==================================================================================

each ``uncached`` (``read_image`` + the whole transform, as before) and ``cached`` (the cache
file built once beforehand; its build time and size are reported too). The four settings run in
``--rounds`` interleaved rounds, in an order rotated from round to round, so that they share the
machine's load alike; reported: the median and the spread (min-max) of images/s over the rounds,
and the speed-up as the median of the per-round ratios. Images: ``--images DIR`` (every
JPEG/PNG below it), else the real DTD and Flowers-102 images of ``../shared/data/real`` when
present, else ``--n`` generated 500x375 JPEGs (ImageNet's typical size).

Model evaluation (``--model-eval``, called by ``bench/gpu.sh``): images per second of a whole
evaluation pass (the test loader with its workers, ``dassl.threads`` choosing how many, then
CLIP ViT-B/16's image encoder, fp16 on CUDA) uncached and cached, in interleaved rounds after one
pass that builds the cache, and the encoder alone on a resident batch (the ceiling). ``--quick``
uses a 2-layer ViT for a check of the code path on a CPU.

JSON output (default ``bench/results_pipeline_cpu.json`` or
``bench/results_pipeline_eval_<device>.json``) records the settings, the machine and its load
average before and after.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from typing import Callable, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SHARED_REAL = os.path.join(os.path.dirname(REPO), "shared", "data", "real")
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def loadavg() -> Optional[list[float]]:
    """The 1, 5 and 15-minute load averages (None where the system has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def summary(values: list[float]) -> dict:
    """Median and spread (min-max) of ``values``, rounded for the JSON file."""
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2), "values": [round(v, 2) for v in values]}


def machine() -> dict:
    import PIL
    import torch
    import torchvision

    from dassl.threads import usable_cores

    return {"cpus": os.cpu_count(), "usable_cores": usable_cores().cores, "processor": platform.processor() or None,
            "python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "pillow": PIL.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def interleaved(settings: dict[str, Callable[[], float]], rounds: int, log: Callable[[str], None]) -> dict:
    """``{name: [value per round]}``: every setting once per round, the order rotated each round."""
    names = list(settings)
    values: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            values[name].append(settings[name]())
        log(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {values[n][-1]:.1f}" for n in names)
            + f" (load {loadavg()})")
    return values


def paired_ratio(num: list[float], den: list[float]) -> dict:
    """Median and spread of the per-round ratios ``num / den``."""
    return summary([a / b for a, b in zip(num, den)])


def write_record(record: dict, path: str) -> None:
    """Print the record's markdown table and write the record as JSON to ``path``."""
    print(record["markdown"])
    with open(path, "w") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    print(f"Wrote {path}")


def find_images(folder: str) -> list[str]:
    found = [p for ext in ("jpg", "jpeg", "JPEG", "png") for p in glob.glob(os.path.join(folder, "**", f"*.{ext}"),
                                                                             recursive=True)]
    return sorted(found)


def generate_images(folder: str, n: int, size: tuple[int, int] = (500, 375), seed: int = 0) -> list[str]:
    """``n`` JPEGs (quality 90) of ``size`` (width, height): smooth gradients with noise, which
    decode and resample like photographs (a flat image would compress to nothing)."""
    import numpy as np
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    paths = []
    for i in range(n):
        phase = rng.uniform(0, 6.28, 3)
        base = np.stack([127 + 100 * np.sin(xx / (20 + 7 * c) + yy / (31 + 5 * c) + phase[c]) for c in range(3)], -1)
        pixels = np.clip(base + rng.normal(0, 18, (h, w, 3)), 0, 255).astype(np.uint8)
        path = os.path.join(folder, f"{i:05d}.jpg")
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def clip_cfg(cache_dir: str, workers: int = 0):
    from dassl.config import get_cfg_default

    cfg = get_cfg_default()
    cfg.DATASET.NAME = "BenchPipeline"
    cfg.INPUT.SIZE = (224, 224)
    cfg.INPUT.INTERPOLATION = "bicubic"
    cfg.INPUT.TRANSFORMS = ("random_resized_crop", "random_flip", "normalize")
    cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD = CLIP_MEAN, CLIP_STD
    cfg.DATALOADER.CACHE_DIR = cache_dir
    cfg.DATALOADER.NUM_WORKERS = workers
    return cfg


def pick_images(args, tmp: str, log) -> tuple[list[str], str]:
    if args.images:
        return find_images(args.images)[:args.n], f"folder {args.images}"
    if os.path.isdir(SHARED_REAL) and not args.generated:
        return find_images(SHARED_REAL)[:args.n], "real DTD + Flowers-102 JPEGs (../shared/data/real)"
    log(f"Generating {args.n} JPEGs of 500x375 in {tmp} ...")
    return generate_images(os.path.join(tmp, "images"), args.n), "generated 500x375 JPEGs"


def run_pipeline(args, log) -> dict:
    """The CPU part (see the module docstring)."""
    import contextlib
    import io

    import numpy as np
    import torch
    from PIL import Image

    from dassl.data import DatasetWrapper
    from dassl.data.data_manager import cache_for_loader
    from dassl.data.datasets import Datum
    from dassl.data.transforms import build_transform
    from dassl.threads import usable_cores

    torch.set_num_threads(1)
    tmp = tempfile.mkdtemp(prefix="bench_pipeline_")
    try:
        paths, source = pick_images(args, tmp, log)
        if not paths:
            raise SystemExit(f"no images found ({source})")
        sizes = [Image.open(p).size for p in paths]
        cfg = clip_cfg(os.path.join(tmp, "cache"))
        data = [Datum(impath=p) for p in paths]
        loaders, build = {}, {}
        with contextlib.redirect_stdout(io.StringIO()):
            tfm = {"eval": build_transform(cfg, is_train=False), "train": build_transform(cfg, is_train=True)}
        for phase in ("eval", "train"):
            for cached in (False, True):
                ds = DatasetWrapper(cfg, data, transform=tfm[phase], is_train=phase == "train")
                if cached:
                    ds.use_cache(cache_for_loader(cfg, ds, phase, is_train=phase == "train"))
                    start = time.perf_counter()
                    ds.open_cache(log=lambda _: None)
                    seconds = time.perf_counter() - start
                    build[phase] = {"seconds": round(seconds, 2), "images_per_s": round(len(paths) / seconds, 1),
                                    "bytes": ds.images.nbytes, "bytes_per_image": round(ds.images.nbytes / len(paths)),
                                    "threads": usable_cores().cores}
                loaders[f"{phase} {'cached' if cached else 'uncached'}"] = ds

        def rate(ds) -> Callable[[], float]:
            def measure() -> float:
                start = time.perf_counter()
                for i in range(len(ds)):
                    ds[i]
                return len(ds) / (time.perf_counter() - start)
            return measure

        mean_wh = [round(float(np.mean([s[k] for s in sizes]))) for k in (0, 1)]
        log(f"{len(paths)} images ({source}), mean size {mean_wh[0]}x{mean_wh[1]}; {args.rounds} rounds, one thread")
        load_before = loadavg()
        values = interleaved({name: rate(ds) for name, ds in loaders.items()}, args.rounds, log)
        record = {
            "benchmark": "pipeline", "source": source, "images": len(paths),
            "mean_size_wh": mean_wh,
            "settings": {"size": [224, 224], "interpolation": "bicubic", "torch_threads": 1, "rounds": args.rounds,
                         "eval": "resize 224 + center crop 224 -> to tensor -> normalize",
                         "train": "random resized crop 224 (0.08-1) -> flip -> to tensor -> normalize"},
            "machine": machine(), "load_before": load_before,
            "images_per_s": {name: summary(v) for name, v in values.items()},
            "speedup": {phase: paired_ratio(values[f"{phase} cached"], values[f"{phase} uncached"])
                        for phase in ("eval", "train")},
            "cache_build": build, "load_after": loadavg(),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lines = ["| pipeline | uncached images/s | cached images/s | speed-up |", "|---|---|---|---|"]
    for phase in ("eval", "train"):
        u, c = record["images_per_s"][f"{phase} uncached"], record["images_per_s"][f"{phase} cached"]
        s = record["speedup"][phase]
        lines.append(f"| {phase} | {u['median']:.0f} ({u['min']:.0f}-{u['max']:.0f}) | {c['median']:.0f} "
                     f"({c['min']:.0f}-{c['max']:.0f}) | {s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f}) |")
    record["markdown"] = "\n".join(lines)
    return record


def run_model_eval(args, log) -> dict:
    """The evaluation pass with a CLIP image encoder (see the module docstring)."""
    import contextlib
    import io

    import torch

    from clip.model import build_model_from_config
    from dassl.data.data_manager import build_data_loader
    from dassl.data.datasets import Datum
    from dassl.data.transforms import build_transform
    from dassl.threads import fit_threads

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--model-eval --device cuda: no CUDA device is available (use --device cpu --quick "
                         "to check the code path)")
    plan = fit_threads(args.workers, log=log)
    tmp = tempfile.mkdtemp(prefix="bench_pipeline_eval_")
    try:
        paths, source = pick_images(args, tmp, log)
        overrides = dict(vision_layers=2, vision_width=64, transformer_layers=2, transformer_width=64) \
            if args.quick else {}
        torch.manual_seed(0)
        model = build_model_from_config("ViT-B/16", **overrides).eval().to(device)
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        model = model.to(dtype)
        data = [Datum(impath=p) for p in paths]
        loaders = {}
        with contextlib.redirect_stdout(io.StringIO()):
            for cached in (False, True):
                cfg = clip_cfg(os.path.join(tmp, "cache"), workers=args.workers)
                cfg.DATALOADER.CACHE_TEST = cached
                loaders["cached" if cached else "uncached"] = build_data_loader(
                    cfg, "SequentialSampler", data, batch_size=args.batch, tfm=build_transform(cfg, is_train=False),
                    is_train=False, split_name="test")

        def sync() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()

        @torch.no_grad()
        def evaluation(loader) -> Callable[[], float]:
            def measure() -> float:
                sync()
                start = time.perf_counter()
                for batch in loader:
                    model.encode_image(batch["img"].to(device, dtype=dtype, non_blocking=True))
                sync()
                return len(paths) / (time.perf_counter() - start)
            return measure

        @torch.no_grad()
        def encoder_only() -> float:
            batch = torch.randn(args.batch, 3, 224, 224, device=device, dtype=dtype)
            model.encode_image(batch)
            sync()
            start = time.perf_counter()
            reps = max(1, len(paths) // args.batch)
            for _ in range(reps):
                model.encode_image(batch)
            sync()
            return reps * args.batch / (time.perf_counter() - start)

        log(f"{len(paths)} images ({source}); batch {args.batch}; {plan.loader_workers} loader workers; "
            f"{'2-layer ViT (--quick)' if args.quick else 'ViT-B/16'} on {device} ({dtype})")
        evaluation(loaders["uncached"])()  # warm-up: page cache, cuDNN, workers
        load_before = loadavg()
        first = evaluation(loaders["cached"])()  # builds the cache
        log(f"first cached pass (builds the cache): {first:.0f} images/s")
        values = interleaved({"uncached": evaluation(loaders["uncached"]), "cached": evaluation(loaders["cached"]),
                              "encoder only": encoder_only}, args.rounds, log)
        record = {
            "benchmark": "model-eval", "device": str(device), "gpu": machine()["gpu"], "source": source,
            "images": len(paths), "batch": args.batch, "loader_workers": plan.loader_workers,
            "model": "ViT-B/16 (2 layers, width 64)" if args.quick else "ViT-B/16", "dtype": str(dtype),
            "rounds": args.rounds, "machine": machine(), "load_before": load_before,
            "first_cached_pass_images_per_s": round(first, 1),
            "images_per_s": {name: summary(v) for name, v in values.items()},
            "speedup": paired_ratio(values["cached"], values["uncached"]), "load_after": loadavg(),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ips = record["images_per_s"]
    bound = "decode-bound" if ips["uncached"]["median"] < 0.8 * ips["encoder only"]["median"] else "model-bound"
    record["verdict"] = (
        f"evaluation uncached {ips['uncached']['median']:.0f} images/s ({bound}; the encoder alone "
        f"{ips['encoder only']['median']:.0f}), cached {ips['cached']['median']:.0f}: "
        f"{record['speedup']['median']:.2f}x ({record['speedup']['min']:.2f}-{record['speedup']['max']:.2f})")
    record["markdown"] = "\n".join([
        "| evaluation pass | images/s (median, min-max) |", "|---|---|",
        *(f"| {name} | {v['median']:.0f} ({v['min']:.0f}-{v['max']:.0f}) |" for name, v in ips.items()),
        "", record["verdict"]])
    return record


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--images", default="", help="a folder of images to read (default: real, else generated)")
    parser.add_argument("--generated", action="store_true", help="use generated JPEGs even where real ones exist")
    parser.add_argument("--n", type=int, default=None, help="images (default 240; 2000 with --model-eval)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 7; 3 with --model-eval)")
    parser.add_argument("--model-eval", action="store_true", help="evaluation passes with a CLIP image encoder")
    parser.add_argument("--device", default="cuda", help="--model-eval: cuda (default) or cpu")
    parser.add_argument("--quick", action="store_true", help="--model-eval: a 2-layer ViT, 128 images")
    parser.add_argument("--batch", type=int, default=100, help="--model-eval: batch size (default 100)")
    parser.add_argument("--workers", type=int, default=8, help="--model-eval: DATALOADER.NUM_WORKERS (default 8)")
    parser.add_argument("--out", default="", help="JSON output path")
    parser.add_argument("--from-gpu-sh", action="store_true",
                        help="called by bench/gpu.sh with its options: take --device and --quick from them, "
                             "ignore the others (they are bench_mmlop.py's)")
    args, unknown = parser.parse_known_args(argv)
    if args.from_gpu_sh:
        shared = argparse.ArgumentParser(allow_abbrev=False)
        shared.add_argument("--device", default="cuda")
        shared.add_argument("--quick", action="store_true")
        known, _ = shared.parse_known_args(argv)
        args = parser.parse_args(["--model-eval", "--device", known.device] + (["--quick"] if known.quick else []))
        unknown = []
    from dassl.threads import prefer_passive_openmp

    prefer_passive_openmp()  # before torch is loaded
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.n is None:
        args.n = (128 if args.quick else 2000) if args.model_eval else 240
    if args.rounds is None:
        args.rounds = 3 if args.model_eval else 7

    def log(line: str) -> None:
        print(line, flush=True)

    if args.model_eval:
        record = run_model_eval(args, log)
        out = args.out or os.path.join(REPO, "bench", f"results_pipeline_eval_{args.device}"
                                       f"{'_quick' if args.quick else ''}.json")
    else:
        record = run_pipeline(args, log)
        out = args.out or os.path.join(REPO, "bench", "results_pipeline_cpu.json")
    write_record(record, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
