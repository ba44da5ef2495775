"""CLIP's frozen towers driven layer by layer, with per-layer prompts inserted or replaced.

Every prompt learner of this package is a *prompt parameterization* on top of two encoders:

``PromptedTextEncoder(clip_model)(embeddings, eot_index, prompts, seq_len=...)``
    ``embeddings``: token embeddings ``[N, L, D_t]`` of N tokenized prompt strings (before the
    positional embedding). ``prompts[l]`` (``Tensor[n, D_t]`` shared by all sequences, or
    ``Tensor[N, n, D_t]`` per sequence, or ``None``) is placed at layer ``l`` the IVLP/PromptSRC
    way: at layer 0 it replaces embedding rows ``start .. start+n-1`` (``start`` = 1, the row after
    the start token; the positional embedding is then added to every row); at a deeper layer
    ``l >= 1`` it replaces those rows of the hidden state entering block ``l``. Layers past the
    list (or with ``None``) leave the rows alone: earlier prompts flow on as ordinary tokens.
    The output is the projected feature at the end-of-text row, ``[N, embed_dim]`` (not normalized).

``PromptedImageEncoder(clip_model)(images, prompts)``
    ``prompts[0]`` (``Tensor[n, D_v]`` or ``[B, n, D_v]``) is appended after the patch tokens at
    layer 0 (after the positional embedding, so prompts get none, and before ``ln_pre``); at a
    deeper layer ``l`` it replaces the last ``n`` rows of the hidden state entering block ``l``.
    Output: ``ln_post`` of the CLS row times ``proj``, ``[B, embed_dim]``. ResNet towers take no
    prompts.

Prompts may be fp32 parameters while CLIP runs in fp16/bf16: they are cast to the activation dtype
where they are inserted, so gradients reach the fp32 parameters.

Exact speed-up (``truncate=True``): the text transformer is causal and pools at the end-of-text
row, so no row after the last end-of-text position of the batch can change any output; the tower
runs on the first ``max(eot_index) + 1`` rows only.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

PromptList = Sequence["torch.Tensor | None"]


def _expand(prompt: torch.Tensor, batch: int, dtype: torch.dtype) -> torch.Tensor:
    """``[n, D]`` or ``[batch, n, D]`` -> ``[batch, n, D]`` in ``dtype``."""
    if prompt.dim() == 2:
        prompt = prompt.unsqueeze(0).expand(batch, -1, -1)
    elif prompt.dim() != 3 or prompt.shape[0] != batch:
        raise ValueError(f"a prompt must be [n, D] or [{batch}, n, D], got {tuple(prompt.shape)}")
    return prompt.to(dtype)


def replace_rows(x: torch.Tensor, prompt: torch.Tensor, start: int, seq_dim: int) -> torch.Tensor:
    """``x`` with rows ``start .. start+n-1`` along ``seq_dim`` (0: ``[L, N, D]``, 1: ``[N, L, D]``)
    replaced by ``prompt`` (``[n, D]`` or ``[N, n, D]``); out of place, so autograd flows."""
    batch = x.shape[1 - seq_dim]
    p = _expand(prompt, batch, x.dtype)
    if seq_dim == 0:
        p = p.permute(1, 0, 2)
    n = p.shape[seq_dim]
    if start < 0 or start + n > x.shape[seq_dim]:
        raise ValueError(f"prompt rows {start}..{start + n - 1} do not fit a sequence of "
                         f"length {x.shape[seq_dim]}")
    head = x.narrow(seq_dim, 0, start)
    tail = x.narrow(seq_dim, start + n, x.shape[seq_dim] - start - n)
    return torch.cat([head, p, tail], dim=seq_dim)


class PromptedTextEncoder(nn.Module):
    """CLIP's text tower with per-layer prompt rows (see the module docstring)."""

    def __init__(self, clip_model: nn.Module, prompt_start: int = 1):
        super().__init__()
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.prompt_start = prompt_start

    @property
    def dtype(self) -> torch.dtype:
        return self.text_projection.dtype

    def forward(self, embeddings: torch.Tensor, eot_index: torch.Tensor, prompts: PromptList = (),
                seq_len: int | None = None, truncate: bool = True) -> torch.Tensor:
        """``embeddings [N, L, D]``, ``eot_index [N]`` -> features ``[N, embed_dim]``.

        ``seq_len`` (optional) is ``max(eot_index) + 1`` when the caller knows it (saves a device
        sync); with ``truncate=False`` the full ``L`` rows are run.
        """
        blocks = self.transformer.resblocks
        if len(prompts) > len(blocks):
            raise ValueError(f"{len(prompts)} prompt layers given for a {len(blocks)}-layer "
                             "text transformer")
        x = embeddings
        if truncate:
            if seq_len is None:
                seq_len = int(eot_index.max()) + 1
            x = x[:, :seq_len]
        dtype = self.dtype
        x = x.to(dtype)
        if len(prompts) and prompts[0] is not None:
            x = replace_rows(x, prompts[0], self.prompt_start, seq_dim=1)
        x = x + self.positional_embedding[: x.shape[1]].to(dtype)
        x = x.permute(1, 0, 2)                                      # [L, N, D]
        for i, block in enumerate(blocks):
            if 1 <= i < len(prompts) and prompts[i] is not None:
                x = replace_rows(x, prompts[i], self.prompt_start, seq_dim=0)
            x = block(x)
        x = x.permute(1, 0, 2)
        x = self.ln_final(x).to(dtype)
        x = x[torch.arange(x.shape[0], device=x.device), eot_index]
        return x @ self.text_projection


class PromptedImageEncoder(nn.Module):
    """CLIP's image tower with per-layer prompt tokens (see the module docstring)."""

    def __init__(self, clip_model: nn.Module):
        super().__init__()
        self.visual = clip_model.visual
        self.is_vit = hasattr(self.visual, "class_embedding")

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    def forward(self, images: torch.Tensor, prompts: PromptList = ()) -> torch.Tensor:
        """``images [B, 3, H, W]`` -> features ``[B, embed_dim]`` (not normalized)."""
        v = self.visual
        dtype = self.dtype
        if not self.is_vit:
            if any(p is not None for p in prompts):
                raise ValueError("vision prompts need a ViT backbone; this CLIP has a ResNet "
                                 "image tower (use a ViT-* MODEL.BACKBONE.NAME)")
            return v(images.to(dtype))
        blocks = v.transformer.resblocks
        if len(prompts) > len(blocks):
            raise ValueError(f"{len(prompts)} prompt layers given for a {len(blocks)}-layer "
                             "vision transformer")
        x = v.conv1(images.to(dtype))                               # [B, W, g, g]
        x = x.flatten(2).permute(0, 2, 1)                           # [B, g*g, W]
        cls = v.class_embedding.to(dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(dtype)
        n_prompt = 0
        if len(prompts) and prompts[0] is not None:
            p0 = _expand(prompts[0], x.shape[0], dtype)
            n_prompt = p0.shape[1]
            x = torch.cat([x, p0], dim=1)
        x = v.ln_pre(x).permute(1, 0, 2)                            # [L, B, W]
        for i, block in enumerate(blocks):
            if 1 <= i < len(prompts) and prompts[i] is not None:
                n = prompts[i].shape[-2]
                if n != n_prompt:
                    raise ValueError(f"vision prompt of layer {i} has {n} tokens but layer 0 "
                                     f"appended {n_prompt}; deep prompts replace the appended rows")
                x = replace_rows(x, prompts[i], x.shape[0] - n, seq_dim=0)
            x = block(x)
        x = v.ln_post(x[0])
        return x @ v.proj
