"""The tiny CLIP of the proxy benchmark: architecture and pretraining settings, as data."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Optional

from clip.model import CLIP

# ViT-8/32 image tower and a 4-layer text tower, in OpenAI's layout (clip.load reads the file).
TINY_CLIP_ARCH: dict = dict(
    embed_dim=128,
    image_resolution=32,
    vision_layers=4,
    vision_width=128,
    vision_patch_size=8,
    context_length=77,
    vocab_size=49408,
    transformer_width=128,
    transformer_heads=2,  # width // 64, as clip.model.build_model infers it
    transformer_layers=4,
)

# Bump when the pretraining code changes what a given config and seed produce.
PRETRAIN_CODE_VERSION = 2  # 2: style_mix, stand-in prompts


@dataclass(frozen=True)
class PretrainConfig:
    """Settings of one pretraining run (everything but the seed).

    ``steps`` optimizer steps of ``batch_size`` rendered images; AdamW (``lr``, ``weight_decay``
    on matrices only), linear warm-up for ``warmup_steps`` then cosine decay to 0.
    ``template_mix``: probability that a caption uses a random template of the 60-template anchor
    ensemble instead of "a photo of a {}." (so the ensemble used by consistency losses is not out
    of distribution). ``held_out``: compositions never shown (zero-shot transfer is measured on
    them). ``style``: renderer style of the pretraining images; ``style_mix``: fraction rendered in
    one of the other styles instead (1% each), so that the downstream styles are rare in pretraining
    rather than unseen, as real domains are for CLIP (measured, seed 1, upright shapes: with 5% the
    warm style's zero-shot accuracy rose from 23% to 69% and the clean style's fell from 88% to 82%).
    ``stand_in_prob``: fraction of the steps run with random stand-in prompt tokens at layers
    ``< stand_in_depth`` (``proxy.pretrain.StandInPrompts``). ``bf16``: bf16 autocast; ``None``
    (the default) means where the CPU computes bf16 natively (``fast_cpu_bf16``), fp32 elsewhere:
    on an AVX2-only CPU, emulated bf16 made a step about 8x slower than fp32 (hours instead of
    minutes); ``resolved()`` fixes the choice, and the cache key is that of the resolved config.
    """

    steps: int = 1200
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    template_mix: float = 0.25
    bf16: Optional[bool] = None
    style: str = "clean"
    style_mix: float = 0.05
    stand_in_prob: float = 0.5
    stand_in_depth: int = 3
    held_out: tuple[str, ...] = field(default_factory=lambda: HELD_OUT)
    arch: dict = field(default_factory=lambda: dict(TINY_CLIP_ARCH))

    def resolved(self) -> PretrainConfig:
        """This config with ``bf16`` decided for this machine."""
        return self if self.bf16 is not None else replace(self, bf16=fast_cpu_bf16())

    def key(self, seed: int, torch_version: str, threads: int) -> str:
        """Cache key: a digest of everything the weights depend on: the config, the seed, the code and
        renderer versions, and the torch version and thread count (float32 sums change with both)."""
        from datasets.synthetic import GENERATOR_VERSION

        payload = dict(asdict(self.resolved()), seed=seed, code=PRETRAIN_CODE_VERSION, renderer=GENERATOR_VERSION,
                       torch=torch_version, threads=threads)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def fast_cpu_bf16() -> bool:
    """Whether this CPU runs bf16 matrix products natively (oneDNN's own check: AVX-512 or
    AMX/bf16 instructions); without them torch emulates bf16 at several times fp32's cost."""
    import torch

    check = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    if check is not None:
        try:
            return bool(check())
        except RuntimeError:
            pass
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _held_out() -> tuple[str, ...]:
    from datasets.synthetic_render import COLOUR_NAMES, SHAPES, class_name

    # One composition per colour and per shape: colour i with shape (3i + 1) mod 10.
    return tuple(class_name(c, SHAPES[(3 * i + 1) % len(SHAPES)]) for i, c in enumerate(COLOUR_NAMES))


HELD_OUT: tuple[str, ...] = _held_out()


def build_tiny_clip(arch: dict | None = None) -> CLIP:
    """A randomly initialised fp32 tiny CLIP (``TINY_CLIP_ARCH`` unless ``arch`` is given)."""
    return CLIP(**(arch or TINY_CLIP_ARCH))
