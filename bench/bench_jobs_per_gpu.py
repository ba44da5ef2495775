"""Sweep throughput with one job per GPU vs K jobs per GPU, for one base-to-novel row.

    python bench/bench_jobs_per_gpu.py                      # on GPU 0: K = 1, 2, 4 (part of bash bench/gpu.sh)
    python bench/bench_jobs_per_gpu.py --device cpu         # the same code path on a CPU (small size)

The same jobs (MMLoP base-to-novel on the synthetic dataset: one training on the base classes and
one test on the new classes per seed) run through ``scripts/sweep.py --gpus <gpu> --jobs-per-gpu
K`` for each K, each K in a fresh output folder and decoded-image cache, the order of the K rotated
each round. Reported per K: wall time, jobs per hour (median and spread over rounds), the ratio to
K = 1 (paired per round) and, on a GPU, each job's peak memory as ``nvidia-smi`` reports it (the
figure for ``--gpu-mem-per-job``); then a verdict naming the K with the most jobs per hour.

On a GPU the backbone is ViT-B/16 with random weights at 224 px (what a real row computes; no
download); on a CPU a tiny CLIP at 32 px, and the K jobs then share the cores (each gets
``MMLOP_CPUS`` = cores // K from the sweep), so the CPU figures check the code path, not the verdict
for a GPU. The record goes to ``--json`` (default ``bench/results_jobs_per_gpu_<device>.json``).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Optional

from bench_pipeline import REPO, loadavg, machine, paired_ratio, summary, write_record

TINY = dict(vision_layers=2, transformer_layers=2, vision_width=64, transformer_width=64,
            transformer_heads=1, image_resolution=32, vision_patch_size=8, embed_dim=32)
# (seeds, shots, epochs, K values): a GPU row is 8 jobs of a few seconds of training each; the CPU
# one is 4 jobs of 1 shot, 1 epoch: about 100 s of CPU time, mostly starting train.py.
SIZES = {"cuda": (4, 16, 2, (1, 2, 4)), "cpu": (2, 1, 1, (1, 2))}
GAIN = 1.10          # a K must give at least this many times the jobs per hour of K = 1 to be advised


def backbone(device: str, folder: str) -> tuple[str, list[str]]:
    """A random-weight CLIP checkpoint for the jobs, and the options that go with it."""
    import torch

    from clip.model import build_model_from_config

    torch.manual_seed(0)
    path = os.path.join(folder, f"clip_{device}.pt")
    if device == "cpu":
        torch.save(build_model_from_config("ViT-B/16", **TINY).state_dict(), path)
        return path, ["INPUT.SIZE", "(32, 32)", "TRAINER.MMLOP.PROMPT_DEPTH", "2", "DATALOADER.TEST.BATCH_SIZE", "250"]
    torch.save(build_model_from_config("ViT-B/16").state_dict(), path)
    return path, []


class GpuMemory:
    """Peak memory of each process on the GPUs while it runs, sampled from ``nvidia-smi`` twice a
    second (MiB by PID); empty where there is no ``nvidia-smi``."""

    def __init__(self) -> None:
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.available = shutil.which("nvidia-smi") is not None

    def _sample(self) -> None:
        while not self._stop.is_set():
            r = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                               capture_output=True, text=True)
            for line in r.stdout.splitlines():
                pid, _, mib = line.partition(",")
                if mib.strip().isdigit():
                    self.peaks[pid.strip()] = max(self.peaks.get(pid.strip(), 0), int(mib))
            self._stop.wait(0.5)

    def __enter__(self) -> GpuMemory:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.available:
            self._thread.join()


def run_row(k: int, args: argparse.Namespace, data: str, opts: list[str], work: str, tag: str) -> dict:
    """One sweep of the row with ``--jobs-per-gpu k``; its wall time and jobs per hour."""
    out = os.path.join(work, f"out_{tag}")
    seeds = [str(s) for s in range(1, args.seeds + 1)]
    argv = [sys.executable, "scripts/sweep.py", "--protocol", "base2new", "--trainers", "MMLoP",
            "--datasets", "synthetic_clean", "--seeds", *seeds, "--shots", str(args.shots), "--data", data,
            "--output", out, "--name", "row", "--gpus", args.gpu, "--jobs-per-gpu", str(k), "--no-tables", "--quiet",
            "--", *opts, "OPTIM.MAX_EPOCH", str(args.epochs),
            "DATALOADER.CACHE_DIR", os.path.join(work, f"cache_{tag}")]
    t0 = time.time()
    with GpuMemory() as memory:
        r = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    wall = time.time() - t0
    if r.returncode != 0:
        raise SystemExit(f"the sweep with --jobs-per-gpu {k} failed (exit {r.returncode}):\n{r.stdout[-3000:]}"
                         f"{r.stderr[-3000:]}")
    jobs = 2 * len(seeds)
    return {"k": k, "wall_s": round(wall, 1), "jobs": jobs, "jobs_per_hour": round(jobs / wall * 3600, 1),
            "peak_gpu_mib_per_job": max(memory.peaks.values()) if memory.peaks else None, "load_1min": loadavg()}


def verdict(per_hour: dict[int, dict], ratios: dict[int, dict], device: str) -> str:
    best = max(per_hour, key=lambda k: per_hour[k]["median"])
    if best == 1 or ratios[best]["median"] < GAIN:
        text = (f"one job per GPU: no K gave {GAIN:.2f}x its jobs per hour ("
                + ", ".join(f"K={k} {ratios[k]['median']:.2f}x" for k in ratios if k != 1) + ")")
    else:
        text = (f"--jobs-per-gpu {best}: {ratios[best]['median']:.2f}x the jobs per hour of one job per GPU "
                f"({per_hour[best]['median']:.0f} vs {per_hour[1]['median']:.0f})")
    if device == "cpu":
        text += "; on a CPU the K jobs share the cores, not a GPU: this checks the code path, not the GPU verdict"
    return text


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--gpu", default="0", help="the GPU id the jobs share (default 0)")
    parser.add_argument("--k", nargs="+", type=int, help="jobs per GPU to compare (default 1 2 4; CPU 1 2)")
    parser.add_argument("--seeds", type=int, help="seeds of the row: 2 jobs each (default 4; CPU 2)")
    parser.add_argument("--shots", type=int, help="shots per class (default 16; CPU 1)")
    parser.add_argument("--epochs", type=int, help="training epochs (default 2; CPU 1)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of every K, order rotated (default 1)")
    parser.add_argument("--json", help="record path (default bench/results_jobs_per_gpu_<device>.json)")
    parser.add_argument("--from-gpu-sh", action="store_true",
                        help="called by bench/gpu.sh with its options: take --device from them, ignore the others")
    args, unknown = parser.parse_known_args(argv)
    if args.from_gpu_sh:
        shared = argparse.ArgumentParser(allow_abbrev=False)
        shared.add_argument("--device", default="cuda")
        args = parser.parse_args(["--device", shared.parse_known_args(argv)[0].device])
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    seeds, shots, epochs, ks = SIZES[args.device]
    args.seeds, args.shots, args.epochs = args.seeds or seeds, args.shots or shots, args.epochs or epochs
    ks = sorted(set(args.k or ks) | {1})
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_jobs_per_gpu: no CUDA GPU here; skipped (run with --device cpu to check the code path)")
        return 0
    from datasets.synthetic import SyntheticShapes, ensure_generated

    work = tempfile.mkdtemp(prefix="bench_jobs_per_gpu_")
    try:
        data = os.path.join(work, "data")
        ensure_generated(data, SyntheticShapes.dataset_dir, SyntheticShapes.style, SyntheticShapes.split_file)
        ckpt, opts = backbone(args.device, work)
        opts = ["MODEL.BACKBONE.NAME", ckpt, "DATALOADER.NUM_WORKERS", "0", *opts]
        if args.device == "cpu":
            opts += ["USE_CUDA", "False"]
        record = {"benchmark": "jobs_per_gpu", "device": args.device, "gpu": args.gpu, "seeds": args.seeds,
                  "shots": args.shots, "epochs": args.epochs, "rounds": args.rounds, "machine": machine(),
                  "load_before": loadavg(), "runs": []}
        print(f"base-to-novel row: MMLoP on synthetic_clean, {args.seeds} seeds x (train + test) = {2 * args.seeds} "
              f"jobs, {args.shots} shots, {args.epochs} epochs, {args.device}; K = {ks}", flush=True)
        for r in range(args.rounds):
            order = ks[r % len(ks):] + ks[:r % len(ks)]
            for k in order:
                run = run_row(k, args, data, opts, work, f"r{r}_k{k}")
                record["runs"].append({"round": r + 1, **run})
                print(f"round {r + 1} K={k}: {run['wall_s']:.1f} s, {run['jobs_per_hour']:.0f} jobs/h "
                      f"(load {run['load_1min']})", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record["load_after"] = loadavg()
    by_k = {k: [run for run in record["runs"] if run["k"] == k] for k in ks}
    per_hour = {k: summary([run["jobs_per_hour"] for run in runs]) for k, runs in by_k.items()}
    ratios = {k: paired_ratio([run["jobs_per_hour"] for run in by_k[k]], [run["jobs_per_hour"] for run in by_k[1]])
              for k in ks}
    record["jobs_per_hour"] = {str(k): v for k, v in per_hour.items()}
    record["ratio_to_k1"] = {str(k): v for k, v in ratios.items()}
    record["verdict"] = verdict(per_hour, ratios, args.device)
    lines = ["| jobs per GPU | wall (s) | jobs/hour | x one job per GPU | peak GPU MiB per job |",
             "|---|---|---|---|---|"]
    for k in ks:
        peaks = [run["peak_gpu_mib_per_job"] for run in by_k[k] if run["peak_gpu_mib_per_job"]]
        lines.append(f"| {k} | {summary([run['wall_s'] for run in by_k[k]])['median']:.1f} | "
                     f"{per_hour[k]['median']:.0f} ({per_hour[k]['min']:.0f}-{per_hour[k]['max']:.0f}) | "
                     f"{ratios[k]['median']:.2f} | {max(peaks) if peaks else 'n/a'} |")
    record["markdown"] = "\n".join(lines) + f"\n\nVerdict: {record['verdict']}"
    write_record(record, args.json or os.path.join(REPO, "bench", f"results_jobs_per_gpu_{args.device}.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
