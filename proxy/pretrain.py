"""Pretrain the tiny CLIP on rendered shapes: ``python -m proxy.pretrain --seed 1 [--out PATH]``.

The checkpoint is a plain state dict with OpenAI's parameter names (``clip.load(path)`` reads
it), cached under ``$MMLOP_CACHE_DIR`` (default ``~/.cache/mmlop``) as
``tiny_clip-<key>.pt``, where the key digests what the weights depend on (the config, the seed, the
code version, the torch version and thread count), so a machine pretrains once per setting and the
demo and the test suite share the checkpoint. A JSON file beside it records the settings, the wall time and
the zero-shot accuracies. Both are written atomically.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, replace
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from dassl.threads import fit_threads, fitted_plan
from dassl.utils.tools import CACHE_DIR_ENV, atomic_write, mkdir_if_missing, mmlop_cache_dir, write_json
from datasets.synthetic_render import STYLES

from .data import CaptionedShapes
from .tiny_clip import PretrainConfig, build_tiny_clip
from .zeroshot import zeroshot_accuracy

CACHE_ENV = CACHE_DIR_ENV


def _print(line: str) -> None:
    print(line, flush=True)


def default_cache_dir() -> str:
    """``$MMLOP_CACHE_DIR``, else ``~/.cache/mmlop``."""
    return mmlop_cache_dir()


def lr_at(step: int, config: PretrainConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up, then cosine to 0."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.5 * config.lr * (1.0 + math.cos(math.pi * progress))


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                     class_ids: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE on ``[B, D]`` features where every pair of the same class is a positive.

    Targets spread uniformly over the same-class entries of a row, so repeated classes in a batch
    are not pushed apart.
    """
    image_features = F.normalize(image_features.float(), dim=-1)
    text_features = F.normalize(text_features.float(), dim=-1)
    logits = logit_scale.exp().clamp(max=100.0) * image_features @ text_features.t()
    same = (class_ids[:, None] == class_ids[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    loss_i = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    loss_t = -(targets * F.log_softmax(logits.t(), dim=1)).sum(dim=1).mean()
    return 0.5 * (loss_i + loss_t)


class StandInPrompts:
    """Random stand-in prompt tokens in a CLIP's forward pass, as deep prompt methods insert them.

    While ``active``: the vision tower gets ``n_tokens`` tokens of standard deviation ``std``
    appended before ``ln_pre`` (no positional embedding) and those rows replaced by fresh ones at
    layers ``1 .. depth-1``; the text tower gets rows ``1 .. n_tokens`` (the context words after
    the start token) replaced by such tokens at the same layers. This is where IVLP, MaPLe,
    PromptSRC and MMLoP put their prompts, at their initial scale. A 17-token ViT is far more
    sensitive to 4 extra tokens than ViT-B/16's 197: random prompts at depth 3 took the tiny
    CLIP's base accuracy on ``synthetic_warm`` from 65% to 42% before any training. Pretrained with
    stand-ins half of the time it keeps 62% (of 64%), so prompt learning starts from zero-shot
    level, as on the real CLIP.
    """

    def __init__(self, model: torch.nn.Module, n_tokens: int = 4, depth: int = 3, std: float = 0.02):
        self.n, self.std, self.active = n_tokens, std, False
        visual_blocks = model.visual.transformer.resblocks
        text_blocks = model.transformer.resblocks
        self.handles = [model.visual.ln_pre.register_forward_pre_hook(self._append)]
        for layer in range(1, min(depth, len(visual_blocks))):
            self.handles.append(visual_blocks[layer].register_forward_pre_hook(self._replace_last))
        for layer in range(1, min(depth, len(text_blocks))):
            self.handles.append(text_blocks[layer].register_forward_pre_hook(self._replace_context))

    def _tokens(self, like: torch.Tensor, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, dtype=like.dtype, device=like.device) * self.std

    def _append(self, module, args):
        if not self.active:
            return None
        x = args[0]  # [N, L, D]
        return (torch.cat([x, self._tokens(x, x.shape[0], self.n, x.shape[2])], dim=1),)

    def _replace_last(self, module, args):
        if not self.active:
            return None
        x = args[0]  # [L, N, D]
        return (torch.cat([x[: -self.n], self._tokens(x, self.n, *x.shape[1:])], dim=0),)

    def _replace_context(self, module, args):
        if not self.active or args[0].shape[0] < self.n + 2:
            return None
        x = args[0]  # [L, N, D]
        return (torch.cat([x[:1], self._tokens(x, self.n, *x.shape[1:]), x[1 + self.n:]], dim=0),)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _optimizer(model: torch.nn.Module, config: PretrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "embedding" not in name else no_decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, betas=(0.9, 0.98), eps=1e-6,
    )


def pretrain(seed: int, config: PretrainConfig = PretrainConfig(), log_every: int = 50,
             log: Callable[[str], None] = _print) -> dict[str, torch.Tensor]:
    """Train a tiny CLIP from scratch; returns its fp32 state dict (OpenAI names).

    Deterministic for a given seed, config and thread count (seeds torch's global RNG for the
    initialisation; the data come from their own generator).
    """
    config = config.resolved()
    torch.manual_seed(seed)
    model = build_tiny_clip(config.arch).train()
    from trainers.core.templates import IMAGENET_TEMPLATES_60

    batches = CaptionedShapes(seed, config.batch_size, config.held_out, config.template_mix,
                              IMAGENET_TEMPLATES_60, config.style, config.style_mix)
    optimizer = _optimizer(model, config)
    stand_ins = StandInPrompts(model, depth=config.stand_in_depth) if config.stand_in_prob > 0 else None
    coin = torch.Generator().manual_seed(seed)
    start = time.time()
    running = None
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        images, tokens, class_ids = next(batches)
        if stand_ins is not None:
            stand_ins.active = bool(torch.rand((), generator=coin) < config.stand_in_prob)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
            image_features = model.encode_image(images)
            text_features = model.encode_text(tokens)
        loss = contrastive_loss(image_features, text_features, model.logit_scale, class_ids)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
        done = step + 1
        if done % log_every == 0 or done == config.steps:
            elapsed = time.time() - start
            eta = elapsed / done * (config.steps - done)
            log(f"pretrain step {done}/{config.steps} loss {running:.3f} lr {lr_at(step, config):.2e} "
                f"{done / elapsed:.2f} steps/s eta {eta:.0f}s")
    if stand_ins is not None:
        stand_ins.remove()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def checkpoint_path(seed: int, config: PretrainConfig = PretrainConfig(), cache_dir: Optional[str] = None) -> str:
    """Where the checkpoint of ``(config, seed)`` pretrained by this process is cached."""
    key = config.key(seed, torch.__version__, fitted_plan(0).torch_threads)  # what fit_threads will use
    return os.path.join(cache_dir or default_cache_dir(), f"tiny_clip-{key}.pt")


def get_checkpoint(seed: int = 1, config: PretrainConfig = PretrainConfig(), cache_dir: Optional[str] = None,
                   force: bool = False, evaluate: bool = True, log: Callable[[str], None] = _print) -> str:
    """Path of the cached checkpoint of ``(config, seed)``, pretraining it first if needed (with
    the torch threads of ``dassl.threads.fit_threads``).

    ``evaluate``: after pretraining, measure zero-shot accuracy per style (stored in the JSON
    record beside the checkpoint).
    """
    path = checkpoint_path(seed, config, cache_dir)
    if os.path.isfile(path) and not force:
        log(f"Using cached tiny CLIP {path}")
        return path
    log(f"Pretraining tiny CLIP (seed {seed}, {config.steps} steps of {config.batch_size}) -> {path}")
    fit_threads(0, log=log)
    start = time.time()
    state_dict = pretrain(seed, config, log=log)
    wall = time.time() - start
    record = {"seed": seed, "config": asdict(config.resolved()), "pretrain_seconds": round(wall, 1),
              "torch": torch.__version__, "threads": torch.get_num_threads()}
    if evaluate:
        model = build_tiny_clip(config.arch)
        model.load_state_dict(state_dict)
        record["zeroshot"] = {s: zeroshot_accuracy(model, s, config.held_out) for s in STYLES}
        log("zero-shot accuracy (100-way, test split): " + ", ".join(
            f"{s} {v['all']:.1f} (held-out {v['held_out']:.1f})" for s, v in record["zeroshot"].items()))
    mkdir_if_missing(os.path.dirname(os.path.abspath(path)))
    atomic_write(path, lambda tmp: torch.save(state_dict, tmp))
    write_json(record, path[:-3] + ".json")
    log(f"Saved tiny CLIP to {path} ({wall:.0f}s)")
    return path


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1, help="pretraining seed (default 1)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default 1200)")
    parser.add_argument("--out", default="", help="also copy the checkpoint to this path")
    parser.add_argument("--cache-dir", default=None, help=f"cache folder (default ${CACHE_ENV} or ~/.cache/mmlop)")
    parser.add_argument("--force", action="store_true", help="pretrain even if a cached checkpoint exists")
    parser.add_argument("--no-eval", action="store_true", help="skip the zero-shot evaluation")
    args = parser.parse_args(argv)
    config = PretrainConfig() if args.steps is None else replace(PretrainConfig(), steps=args.steps)
    if config.steps < 1:
        parser.error("--steps must be >= 1")
    path = get_checkpoint(args.seed, config, args.cache_dir, args.force, evaluate=not args.no_eval)
    if args.out:
        mkdir_if_missing(os.path.dirname(os.path.abspath(args.out)))
        atomic_write(args.out, lambda tmp: shutil.copyfile(path, tmp))
        print(f"Copied to {args.out}")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
