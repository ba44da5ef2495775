#!/usr/bin/env bash
# The GPU benchmark in one command (from any directory):   bash bench/gpu.sh
#
# Prints the markdown tables of docs/BENCHMARKS.md and writes bench/results_cuda.json:
#   * training step and evaluation (class text + test batches of 100; ratios at 1 and 10 batches and
#     the long-test-set limit) at 100 and 1000 ImageNet class names, training batch 4, as the reference
#     computation (upstream PromptSRC's) / truncation + cache / all on, paired per-round ratios with
#     95% intervals, and peak GPU memory per configuration (one process each);
#   * batch-size scaling of the training step (100 classes, batch 8, 16, 32);
#   * the frozen zero-shot image forward of an MMLoP step and the step with it looked up from a cache;
#   * training images/s and the ImageNet base-to-novel epoch estimate (500 classes, 8,000 images, batch 4);
# before those, evaluation images/s with and without the decoded-image cache (bench/bench_pipeline.py) and
# a base-to-novel row run with one job vs 2 and 4 jobs per GPU: jobs/hour, ratio, peak memory per job and
# a verdict (bench/bench_jobs_per_gpu.py, record bench/results_jobs_per_gpu_cuda.json).
# PREC is fp16 as in the configs (PREC=amp or PREC=fp32 to change it); extra flags go to
# bench/bench_mmlop.py (e.g. --reps 50). The same code path on a CPU, at a size that takes minutes:
#   bash bench/gpu.sh --device cpu --quick --imagenet-classes 25 --json /tmp/bench_cpu_check.json
#
# `bash bench/gpu.sh --check [bench flags]` first runs bench/gpu_check.py (every trainer a few steps under
# fp32 / fp16 / bf16 / amp and PROMPT_PREC upstream, compared with fp32, with dtype, device and memory
# checks; a verdict table in minutes, record bench/results_gpu_check_cuda.json) and stops there if it
# fails; then the bench. `--check-only` runs the check alone. On a CPU: python bench/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--check" || "${1:-}" == "--check-only" ]]; then
  mode="$1"; shift
  "${PYTHON:-python}" bench/gpu_check.py --device cuda
  [[ "$mode" == "--check-only" ]] && exit 0
fi
"${PYTHON:-python}" bench/bench_pipeline.py --from-gpu-sh "$@"  # evaluation images/s, cache off/on
"${PYTHON:-python}" bench/bench_jobs_per_gpu.py --from-gpu-sh "$@"  # one job vs K jobs per GPU
exec "${PYTHON:-python}" bench/bench_mmlop.py --device cuda --prec "${PREC:-fp16}" --imagenet "$@"
