"""The first check on a GPU: every trainer under every precision, compared with fp32.

    bash bench/gpu.sh --check           # this check, then the GPU benchmark
    python bench/gpu_check.py [--device auto|cuda|cpu] [--arch auto|tiny|vit_b16] [--steps 3]
                              [--trainers CoOp MMLoP ...] [--cpu-half] [--json PATH]

For every registered trainer (its ``tiny_config`` recipe: prompt depths, loss weights, batch 16)
and every precision case (``PREC`` fp32 / fp16 / bf16 / amp, and fp16 with ``PROMPT_PREC
upstream``), one process-local run: build the trainer on a CLIP with random weights (seed 0,
``logit_scale`` = log 100 as in OpenAI's models), take ``--steps`` training steps on the same
batches, then evaluate one fixed batch. Each case is checked against the fp32 case:

* ``loss``: the largest relative difference of the step losses;
* ``logits``: the largest absolute difference of the evaluated logits, divided by the logit scale
  (i.e. of the cosine similarities);
* ``layout``: every backbone tensor has the dtype of OpenAI's rule (``clip.model.convert_weights``:
  Conv/Linear/attention weights and projections in the half type, the rest fp32) and
  ``exp(logit_scale)`` is 100.00;
* ``device``: every parameter and buffer of the trainer's models and every output is on the run's
  device (nothing silently left on the CPU);
* ``memory``: the peak allocated GPU memory of the steps and the evaluation (after the build) is
  at most 1.25x fp32's (a half-precision run that needs more than fp32 holds an fp32 copy it
  should not);
* finite losses and logits.

The tolerances (``TOLERANCES``) are those of the numbers: fp16 keeps 11 significant bits (relative
spacing 1e-3), bf16 8 (8e-3); a few steps through 4 to 12 layers accumulate a few spacings. On a
CPU every ``PREC`` other than fp32 falls back to fp32 in real runs, so those rows are skipped with
the reason; ``--cpu-half`` instead forces the half types onto the CPU kernels (slow, but the same
code path), which is how the tests check the casting rule without a GPU. Exit status 1 when a row
fails. The table and a JSON record (``--json``, default ``bench/results_gpu_check_<device>.json``)
report each row's figures, wall time and the machine's load.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Iterator, Optional, Sequence

import torch

from clip.model import build_model_from_config, half_tensor_names
from trainers.core.precision import Precision

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (label, PREC, PROMPT_PREC)
CASES: tuple[tuple[str, str, str], ...] = (
    ("fp32", "fp32", "fp32"),
    ("fp16", "fp16", "fp32"),
    ("fp16 upstream", "fp16", "upstream"),
    ("bf16", "bf16", "fp32"),
    ("amp", "amp", "fp32"),
)
# PREC: (largest relative loss difference, largest |logit difference| / logit scale)
TOLERANCES = {"fp32": (1e-6, 1e-6), "fp16": (2e-2, 5e-3), "bf16": (8e-2, 2e-2), "amp": (2e-2, 5e-3)}
MEMORY_RATIO = 1.25
LOGIT_SCALE = 100.0
ARCHS = {
    # The proxy benchmark's tiny CLIP (4 layers, width 128, 32 px): minutes on a CPU.
    "tiny": dict(embed_dim=128, image_resolution=32, vision_layers=4, vision_width=128, vision_patch_size=8,
                 context_length=77, vocab_size=49408, transformer_width=128, transformer_heads=2,
                 transformer_layers=4),
    # ViT-B/16's shapes (the papers' backbone), random weights: what a GPU run really computes.
    "vit_b16": None,
}


@dataclass
class Row:
    """One (trainer, case) of the table."""

    trainer: str
    case: str
    prec: str
    prompt_prec: str
    verdict: str = "PASS"
    notes: list[str] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    loss_rel_diff: Optional[float] = None
    logit_diff: Optional[float] = None
    logit_scale: Optional[float] = None
    peak_memory_mb: Optional[float] = None
    seconds: float = 0.0

    def fail(self, why: str) -> None:
        self.verdict = "FAIL"
        self.notes.append(why)


def save_backbone(path: str, arch: str) -> str:
    """A random CLIP (seed 0) of ``arch`` with ``logit_scale`` = log 100, saved as a state dict."""
    torch.manual_seed(0)
    config = ARCHS[arch]
    model = (build_model_from_config("ViT-B/16") if config is None
             else build_model_from_config("ViT-B/16", **config))
    with torch.no_grad():
        model.logit_scale.fill_(math.log(LOGIT_SCALE))
    torch.save(model.state_dict(), path)
    return path


@contextlib.contextmanager
def forced_precision(device_type: str = "cpu") -> Iterator[None]:
    """Make ``PREC`` fp16/bf16/amp resolve to their CUDA meaning on ``device_type`` (normally
    they fall back to fp32 off CUDA), so the half-precision code path runs on the CPU."""
    from trainers.core import trainer as trainer_module

    real = trainer_module.resolve_precision

    def resolve(prec, device, key="PREC"):
        table = {"fp16": Precision("fp16", torch.float16, None, True, device_type),
                 "bf16": Precision("bf16", torch.bfloat16, None, False, device_type),
                 "amp": Precision("amp", torch.float32, torch.float16, True, device_type)}
        return table[prec] if prec in table else real(prec, device, key)

    trainer_module.resolve_precision = resolve
    try:
        yield
    finally:
        trainer_module.resolve_precision = real


def build_trainer_for(trainer: str, prec: str, prompt_prec: str, backbone: str, out: str, device: str,
                      data_opts: Sequence[str], image_size: int):
    """``trainer`` with its tiny-config recipe, ``PREC``/``PROMPT_PREC``, on ``backbone``."""
    import datasets  # noqa: F401  (registers the datasets)
    import trainers
    from dassl.config import get_cfg_default
    from dassl.engine import build_trainer
    from dassl.utils import set_random_seed
    from trainers.core.methods import method_info

    info = method_info(trainer)
    cfg = get_cfg_default()
    trainers.extend_cfg(cfg)
    cfg.merge_from_file(info.config_file(info.tiny_config))
    cfg.merge_from_list(list(data_opts))
    cfg.MODEL.BACKBONE.NAME = backbone
    cfg.INPUT.SIZE = (image_size, image_size)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATASET.NUM_SHOTS = 2
    cfg.DATASET.SUBSAMPLE_CLASSES = "base"
    cfg.USE_CUDA = device == "cuda"
    cfg.OUTPUT_DIR = out
    cfg.TRAINER.NAME = trainer
    node_name = _config_node(trainer)
    if node_name:
        node = cfg.TRAINER[node_name]
        node.PREC = prec
        if "PROMPT_PREC" in node:
            node.PROMPT_PREC = prompt_prec
    cfg.freeze()
    set_random_seed(1)
    return build_trainer(cfg)


def _config_node(trainer: str) -> str:
    from dassl.engine import TRAINER_REGISTRY

    return getattr(TRAINER_REGISTRY.get(trainer), "config_node", "") or ""


def _modules(trainer) -> list[torch.nn.Module]:
    return [v for v in vars(trainer).values() if isinstance(v, torch.nn.Module)]


def _misplaced(trainer, device: str) -> list[str]:
    """Names of parameters and buffers of the trainer's models that are not on ``device``."""
    bad = []
    for module in _modules(trainer):
        for name, t in [*module.named_parameters(), *module.named_buffers()]:
            if t.device.type != device:
                bad.append(f"{name} on {t.device.type}")
    return sorted(set(bad))


def _backbone(trainer) -> torch.nn.Module:
    model = getattr(trainer, "model", None)
    return model.clip_model if model is not None and hasattr(model, "clip_model") else trainer.clip_model


def layout_errors(clip_model: torch.nn.Module, weight_dtype: torch.dtype) -> list[str]:
    """Backbone tensors whose dtype is not OpenAI's rule for ``weight_dtype``."""
    half = half_tensor_names(clip_model)
    errors = []
    for name, t in clip_model.state_dict(keep_vars=True).items():
        if not t.is_floating_point():
            continue
        want = weight_dtype if name in half else torch.float32
        if t.dtype != want:
            errors.append(f"{name} is {t.dtype}, OpenAI's rule: {want}")
    return errors


def run_case(trainer_name: str, label: str, prec: str, prompt_prec: str, backbone: str, out: str, device: str,
             steps: int, data_opts: Sequence[str], image_size: int) -> tuple[Row, Optional[torch.Tensor]]:
    """Build, train ``steps`` steps, evaluate one batch; the row (without the fp32 comparison)
    and the evaluated logits (fp32, on the CPU)."""
    row = Row(trainer_name, label, prec, prompt_prec)
    t0 = time.time()
    with _quiet():
        trainer = build_trainer_for(trainer_name, prec, prompt_prec, backbone, out, device, data_opts, image_size)
    if device == "cuda":
        # After the build, whose fp32 work (anchors, prompt init) every case shares: the peak of
        # the steps and the evaluation, where the precisions differ.
        torch.cuda.reset_peak_memory_stats()
    clip_model = _backbone(trainer)
    weight_dtype = trainer.precision.weight_dtype if hasattr(trainer, "precision") else torch.float32
    for err in layout_errors(clip_model, weight_dtype)[:3]:
        row.fail(err)
    row.logit_scale = float(clip_model.logit_scale.detach().float().exp())
    if round(row.logit_scale, 2) != LOGIT_SCALE:
        row.fail(f"exp(logit_scale) {row.logit_scale:.2f}, not {LOGIT_SCALE:.2f}")
    trains = hasattr(trainer, "forward_backward") and getattr(type(trainer), "trains", True)
    from dassl.utils import set_random_seed

    set_random_seed(1)                  # the same batches and augmentations in every case
    with _quiet():
        batches = _cycle(trainer.train_loader_x)
        if trains:
            trainer.set_model_mode("train")
            trainer.num_batches = steps
            for i in range(steps):
                trainer.epoch, trainer.batch_idx = 0, i
                row.losses.append(float(trainer.forward_backward(next(batches))["loss"]))
        trainer.set_model_mode("eval")
        batch = next(iter(trainer.test_loader))
        with torch.no_grad():
            logits = trainer.model_inference(batch["img"].to(trainer.device))
    if logits.device.type != device:
        row.fail(f"logits on {logits.device.type}")
    for name in _misplaced(trainer, device)[:3]:
        row.fail(name)
    if not (all(math.isfinite(v) for v in row.losses) and torch.isfinite(logits).all()):
        row.fail("non-finite loss or logits")
    if device == "cuda":
        row.peak_memory_mb = torch.cuda.max_memory_allocated() / 2 ** 20
    row.seconds = round(time.time() - t0, 2)
    return row, logits.detach().float().cpu()


def _cycle(loader) -> Iterator[dict]:
    """The loader's batches, starting over when a (small) training set runs out."""
    while True:
        yield from loader


def compare(row: Row, logits: torch.Tensor, ref: Row, ref_logits: torch.Tensor) -> None:
    """Fill ``row``'s differences with the fp32 row and its verdict against ``TOLERANCES``."""
    loss_tol, logit_tol = TOLERANCES[row.prec]
    if row.losses:
        row.loss_rel_diff = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(row.losses, ref.losses))
        if row.loss_rel_diff > loss_tol:
            row.fail(f"loss differs by {row.loss_rel_diff:.2e} (tolerance {loss_tol:g})")
    row.logit_diff = float((logits - ref_logits).abs().max()) / LOGIT_SCALE
    if row.logit_diff > logit_tol:
        row.fail(f"logits/scale differ by {row.logit_diff:.2e} (tolerance {logit_tol:g})")
    if row.peak_memory_mb and ref.peak_memory_mb and row.peak_memory_mb > MEMORY_RATIO * ref.peak_memory_mb:
        row.fail(f"peak memory {row.peak_memory_mb:.0f} MB > {MEMORY_RATIO}x fp32's {ref.peak_memory_mb:.0f} MB")


@contextlib.contextmanager
def _quiet():
    """Silence the trainers' build and step logs (the table is the output)."""
    import warnings

    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*CUDA is not available")
        yield


def check(trainers: Sequence[str], device: str, arch: str, steps: int, data_root: str, dataset: str,
          cpu_half: bool = False, log=print) -> list[Row]:
    """Every (trainer, case) row, compared with the trainer's fp32 row."""
    data_opts = ["DATASET.NAME", dataset, "DATASET.ROOT", data_root]
    size = 32 if arch == "tiny" else 224
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        backbone = save_backbone(os.path.join(tmp, f"clip_{arch}.pt"), arch)
        forcing = forced_precision(device) if device == "cpu" and cpu_half else contextlib.nullcontext()
        with forcing:
            for name in trainers:
                ref, ref_logits = None, None
                for label, prec, prompt_prec in CASES:
                    if device != "cuda" and prec != "fp32" and not cpu_half:
                        row = Row(name, label, prec, prompt_prec, verdict="SKIP",
                                  notes=["needs CUDA: on a CPU this PREC falls back to fp32 (--cpu-half forces it)"])
                    else:
                        out = os.path.join(tmp, "out", name, label.replace(" ", "_"))
                        row, logits = run_case(name, label, prec, prompt_prec, backbone, out, device, steps,
                                               data_opts, size)
                        if ref is None:
                            ref, ref_logits = row, logits
                        else:
                            compare(row, logits, ref, ref_logits)
                    rows.append(row)
                    log(format_row(row))
    return rows


HEADER = ("| trainer | case | verdict | loss rel. diff | logits/scale diff | exp(logit_scale) | peak MB | s | notes |\n"
          "|---|---|---|---|---|---|---|---|---|")


def _num(value: Optional[float], fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_row(row: Row) -> str:
    return (f"| {row.trainer} | {row.case} | {row.verdict} | {_num(row.loss_rel_diff, '.1e')} | "
            f"{_num(row.logit_diff, '.1e')} | {_num(row.logit_scale, '.2f')} | {_num(row.peak_memory_mb, '.0f')} | "
            f"{row.seconds:.1f} | {'; '.join(row.notes)} |")


def _load() -> Optional[list[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    from trainers.core.methods import registered_methods

    ours = [m.name for m in registered_methods() if m.tiny_config]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--arch", choices=("auto", *ARCHS), default="auto",
                        help="backbone shapes (auto: vit_b16 on CUDA, tiny on CPU)")
    parser.add_argument("--steps", type=int, default=3, help="training steps per case (default 3)")
    parser.add_argument("--trainers", nargs="+", choices=ours, default=ours)
    parser.add_argument("--cpu-half", action="store_true",
                        help="on a CPU, force fp16/bf16/amp onto the CPU kernels instead of skipping them")
    parser.add_argument("--data", default=os.path.join(REPO, "data"),
                        help="dataset root (the synthetic dataset is generated there if missing)")
    parser.add_argument("--dataset", default="SyntheticShapes", help="DATASET.NAME (default SyntheticShapes)")
    parser.add_argument("--json", help="record path (default bench/results_gpu_check_<device>.json)")
    args = parser.parse_args(argv)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here")
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    arch = args.arch if args.arch != "auto" else ("vit_b16" if device == "cuda" else "tiny")
    name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine()
    print(f"GPU check on {device} ({name}), {arch} backbone with random weights, {args.steps} steps per case")
    print(HEADER)
    load_before, t0 = _load(), time.time()
    rows = check(args.trainers, device, arch, args.steps, os.path.abspath(args.data), args.dataset,
                 args.cpu_half, log=lambda line: print(line, flush=True))
    failed = [r for r in rows if r.verdict == "FAIL"]
    counts = {v: sum(r.verdict == v for r in rows) for v in ("PASS", "FAIL", "SKIP")}
    print(f"Verdict: {'FAIL' if failed else 'PASS'} ({counts['PASS']} passed, {counts['FAIL']} failed, "
          f"{counts['SKIP']} skipped) in {time.time() - t0:.0f}s")
    record = {"device": device, "device_name": name, "arch": arch, "steps": args.steps, "cpu_half": args.cpu_half,
              "torch": torch.__version__, "tolerances": TOLERANCES, "memory_ratio": MEMORY_RATIO,
              "rows": [asdict(r) for r in rows], "verdict": "FAIL" if failed else "PASS",
              "wall_seconds": round(time.time() - t0, 1), "load_average_before": load_before,
              "load_average_after": _load()}
    path = args.json or os.path.join(REPO, "bench", f"results_gpu_check_{device}.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=1)
    print(f"Record: {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
