"""Tensors for the tiny CLIP: normalised rendered images and tokenized captions."""
from __future__ import annotations

import numpy as np
import torch

import clip
from clip.clip import MEAN, STD
from datasets.synthetic_render import STYLES, all_classes, draw_scene_params, render

DEFAULT_TEMPLATE = "a photo of a {}."


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """``uint8 [B, H, W, 3]`` -> float ``[B, 3, H, W]`` with CLIP's normalisation."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def trim_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """Drop the all-padding tail of ``[N, 77]`` token ids (the text tower is causal and pools at
    the end-of-text token, so the features do not change)."""
    length = int(tokens.argmax(dim=-1).max()) + 1
    return tokens[:, :length]


class CaptionedShapes:
    """An endless stream of ``(images [B, 3, 32, 32], tokens [B, L], class_ids [B])`` batches.

    Classes are drawn uniformly from the 100 compositions minus ``held_out``; each caption is
    ``"a photo of a {class}."``, or with probability ``template_mix`` a uniformly drawn template of
    ``templates``. Images are rendered in ``style``, or with probability ``style_mix`` in a
    uniformly drawn other style of the renderer. Everything comes from one NumPy generator seeded
    with ``seed``.
    """

    def __init__(self, seed: int, batch_size: int, held_out=(), template_mix: float = 0.0,
                 templates: tuple[str, ...] = (DEFAULT_TEMPLATE,), style: str = "clean",
                 style_mix: float = 0.0) -> None:
        unknown = set(held_out) - {name for name, _, _ in all_classes()}
        if unknown:
            raise ValueError(f"held_out names unknown classes: {sorted(unknown)}")
        self.classes = [c for c in all_classes() if c[0] not in set(held_out)]
        self.batch_size = batch_size
        self.template_mix = template_mix
        self.style = style
        self.style_mix = style_mix
        self.other_styles = [name for name in STYLES if name != style]
        self.templates = (DEFAULT_TEMPLATE,) + tuple(t for t in templates if t != DEFAULT_TEMPLATE)
        self.rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 1])))
        captions = [t.format(name) for name, _, _ in self.classes for t in self.templates]
        self.tokens = clip.tokenize(captions).view(len(self.classes), len(self.templates), -1)

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b = self.batch_size
        cls = self.rng.integers(0, len(self.classes), b)
        use_other = self.rng.random(b) < self.template_mix
        other = self.rng.integers(1, max(len(self.templates), 2), b)
        tpl = np.where(use_other & (len(self.templates) > 1), other, 0)
        colour_ids = np.array([self.classes[i][1] for i in cls])
        shape_ids = np.array([self.classes[i][2] for i in cls])
        params, noise = draw_scene_params(self.rng, b)
        images = render(shape_ids, colour_ids, params, noise, self.style)
        if self.style_mix > 0:
            mixed = self.rng.random(b) < self.style_mix
            which = self.rng.integers(0, len(self.other_styles), b)
            for k, other in enumerate(self.other_styles):
                idx = np.flatnonzero(mixed & (which == k))
                if len(idx):
                    images[idx] = render(shape_ids[idx], colour_ids[idx], params[idx], noise[idx], other)
        images = to_tensor(images)
        tokens = trim_tokens(self.tokens[torch.from_numpy(cls), torch.from_numpy(tpl)])
        return images, tokens, torch.from_numpy(cls)
