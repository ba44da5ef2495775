"""The demo's tiny-CLIP pretraining on an idle machine and beside busy processes, before and after
``dassl.threads``.

    python bench/bench_threads.py [--steps 10] [--rounds 2] [--busy 2] [--modes before after] [--out PATH]

Each measurement is a fresh process (``--worker``) that pretrains the tiny CLIP for ``--steps``
steps of the demo's setting (batch 128) and reports steps/s:

=========  ==================================================================================
before     as before this change: torch's default threads (one per CPU of the affinity mask),
           OpenMP's default wait policy (its threads spin a while at every barrier)
after      as ``demo.py`` now runs it: ``OMP_WAIT_POLICY=PASSIVE`` set before torch is loaded,
           torch threads from ``dassl.threads.fit_threads`` (affinity, cgroup quota, MMLOP_CPUS)
share1     ``after`` with ``MMLOP_CPUS=1`` (what a user or a sweep sets for a share of one core)
=========  ==================================================================================

Conditions: ``idle`` (nothing started by the benchmark) and ``loaded`` (``--busy`` processes
spinning a core each, started before and stopped after the measurement). Rounds alternate the
conditions and rotate the modes. Every figure comes with the 1-minute load average read when it
finished, since "idle" means only that the benchmark added no load: on a shared machine other
work runs too. Reported: median and spread (min-max) per condition and mode, and the ratios of
medians; JSON in ``bench/results_threads_cpu.json`` by default.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Optional

from bench_pipeline import REPO, loadavg, machine, summary, write_record

MODES = ("before", "after", "share1")
BUSY_LOOP = "while True:\n    pass\n"


def worker(mode: str, steps: int) -> None:
    """One measurement, in this (fresh) process; prints one JSON line."""
    if mode != "before":
        from dassl.threads import prefer_passive_openmp

        prefer_passive_openmp()
    from dataclasses import replace

    import torch

    from proxy.pretrain import pretrain
    from proxy.tiny_clip import PretrainConfig

    if mode != "before":
        from dassl.threads import fit_threads

        fit_threads(0, log=lambda _: None)
    config = replace(PretrainConfig(), steps=steps, warmup_steps=1)
    lines: list[str] = []
    start = time.perf_counter()
    pretrain(1, config, log_every=steps, log=lines.append)
    seconds = time.perf_counter() - start
    # "pretrain step N/N loss ... <rate> steps/s eta 0s": the rate of the optimisation loop alone.
    rate = float(lines[-1].split(" steps/s")[0].split()[-1])
    print(json.dumps({"steps_per_s": rate, "threads": torch.get_num_threads(),
                      "wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
                      "cpu_s": round(time.process_time(), 1), "wall_s": round(seconds, 1)}))


def measure(mode: str, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "MMLOP_CPUS", "OMP_NUM_THREADS")}
    if mode == "share1":
        env["MMLOP_CPUS"] = "1"
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", mode, "--steps", str(steps)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"worker {mode} failed:\n{r.stderr[-3000:]}")
    result = json.loads(r.stdout.strip().splitlines()[-1])
    result["load_1min"] = (loadavg() or [None])[0]
    return result


def start_busy(n: int) -> list[subprocess.Popen]:
    procs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(n)]
    time.sleep(1.0)
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="pretraining steps per measurement (default 10)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every condition and mode (default 2)")
    parser.add_argument("--busy", type=int, default=2, help="busy processes in the loaded condition (default 2)")
    parser.add_argument("--modes", nargs="+", default=["before", "after"], choices=MODES)
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results_threads_cpu.json"))
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.steps)
        return 0
    record = {"benchmark": "threads", "steps": args.steps, "batch": 128, "busy": args.busy, "rounds": args.rounds,
              "machine": machine(), "load_before": loadavg(), "runs": []}
    for r in range(args.rounds):
        for condition in (("idle", "loaded") if r % 2 == 0 else ("loaded", "idle")):
            busy = start_busy(args.busy) if condition == "loaded" else []
            try:
                shift = r % len(args.modes)
                for mode in args.modes[shift:] + args.modes[:shift]:
                    result = measure(mode, args.steps)
                    record["runs"].append({"round": r + 1, "condition": condition, "mode": mode, **result})
                    print(f"round {r + 1} {condition:6s} {mode:6s}: {result['steps_per_s']:.2f} steps/s "
                          f"({result['threads']} threads, OMP_WAIT_POLICY {result['wait_policy']}, "
                          f"load {result['load_1min']})", flush=True)
            finally:
                stop(busy)
    record["load_after"] = loadavg()
    table = {}
    for condition in ("idle", "loaded"):
        for mode in args.modes:
            runs = [run for run in record["runs"] if run["condition"] == condition and run["mode"] == mode]
            table[f"{condition} {mode}"] = dict(summary([run["steps_per_s"] for run in runs]),
                                                load_1min=[run["load_1min"] for run in runs])
    record["steps_per_s"] = table
    lines = ["| condition | " + " | ".join(args.modes) + " |", "|---" * (len(args.modes) + 1) + "|"]
    for condition in ("idle", "loaded"):
        cells = [f"{table[f'{condition} {m}']['median']:.2f} ({table[f'{condition} {m}']['min']:.2f}-"
                 f"{table[f'{condition} {m}']['max']:.2f}; load {table[f'{condition} {m}']['load_1min']})"
                 for m in args.modes]
        lines.append(f"| {condition}{f' (+{args.busy} busy)' if condition == 'loaded' else ''} | " + " | ".join(cells)
                     + " |")
    record["markdown"] = "\n".join(lines)
    write_record(record, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
