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

Exact speed-up (shared prefix, ``prefix_len=P``): when rows ``0 .. P-1`` are the same for every
sequence (the start token and the prompt prefix "<prefix>" of "<prefix> <classname>.", with the
same ``[n, D]`` prompt over rows ``start .. start+n-1`` at every prompted layer), causality makes
their hidden states the same for every sequence at every layer. They are then run once, as a batch
of one sequence of ``P`` rows, and each sequence runs only its own rows ``P ..`` (class name,
period, end-of-text), whose queries attend to the prefix's keys and values (shared, broadcast)
followed by their own causal keys and values. The blocks' own parameters and modules are used
(``ln_1``, ``attn.in_proj_*``, ``attn.out_proj``, ``ln_2``, ``mlp``), the attention through
``scaled_dot_product_attention``; results equal the plain path within floating-point rounding,
gradients included (a prompt's gradient is summed over the sequences through the broadcast). The
caller declares ``P`` (``prefix_len``, or the encoder's ``prefix_len`` attribute while its
``shared_prefix`` switch is on) and guarantees that rows ``0 .. P-1`` are equal across the batch
and that every end-of-text row is at ``P`` or later; the encoder takes the path only when the
call allows it: at least two sequences, more than ``P`` rows, every prompt ``[n, D]`` (shared)
with its rows inside the prefix, and no forward hook on the blocks (hooks expect the blocks to run
as modules on whole sequences). Per-sequence prompts ``[N, n, D]`` (CoCoOp) take the plain path.
``path_counts`` counts the calls of each path.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _module

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


def _stock_block(block: nn.Module) -> bool:
    """Whether ``block`` has CLIP's residual-block layout that the shared-prefix path runs."""
    attn = getattr(block, "attn", None)
    return (isinstance(attn, nn.MultiheadAttention) and attn._qkv_same_embed_dim
            and attn.in_proj_bias is not None and attn.bias_k is None and not attn.add_zero_attn
            and not attn.batch_first and attn.dropout == 0.0
            and all(hasattr(block, name) for name in ("ln_1", "ln_2", "mlp")))


def _hooked(blocks: nn.Module) -> bool:
    """Whether a forward hook watches a block or one of its modules. The shared-prefix path does
    not run the blocks as modules (nor on whole sequences), so hooked blocks run the plain path
    and their hooks see what they expect."""
    if _module._global_forward_hooks or _module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in blocks.modules())


def _heads(x: torch.Tensor, n_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Packed ``[N, L, 3D]`` projections -> queries, keys, values ``[N, H, L, D/H]`` each."""
    n, length, _ = x.shape
    q, k, v = x.view(n, length, 3, n_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    return q, k, v


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``[N, H, L, d]`` -> ``[N, L, H * d]``."""
    n, h, length, d = x.shape
    return x.transpose(1, 2).reshape(n, length, h * d)


def shared_prefix_block(block: nn.Module, head: torch.Tensor, tail: torch.Tensor,
                        tail_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One CLIP residual block on a shared prefix ``head [1, P, D]`` and the per-sequence rows
    that follow it, ``tail [N, S, D]`` (batch-first). The prefix attends causally to itself; row
    ``i`` of the tail attends to the prefix and to tail rows ``0 .. i`` (``tail_mask [S, P+S]``,
    True where allowed). Returns the new ``(head, tail)``."""
    attn = block.attn
    n_heads = attn.num_heads
    qh, kh, vh = _heads(F.linear(block.ln_1(head), attn.in_proj_weight, attn.in_proj_bias), n_heads)
    qt, kt, vt = _heads(F.linear(block.ln_1(tail), attn.in_proj_weight, attn.in_proj_bias), n_heads)
    n = tail.shape[0]
    keys = torch.cat([kh.expand(n, -1, -1, -1), kt], dim=2)
    values = torch.cat([vh.expand(n, -1, -1, -1), vt], dim=2)
    out_head = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True)
    out_tail = F.scaled_dot_product_attention(qt, keys, values, attn_mask=tail_mask)
    head = head + attn.out_proj(_merge_heads(out_head))
    tail = tail + attn.out_proj(_merge_heads(out_tail))
    head = head + block.mlp(block.ln_2(head))
    tail = tail + block.mlp(block.ln_2(tail))
    return head, tail


class PromptedTextEncoder(nn.Module):
    """CLIP's text tower with per-layer prompt rows (see the module docstring).

    ``prefix_len`` (attribute, default 0: none) is the number of leading rows its callers declare
    shared by every sequence; ``shared_prefix`` (default True) switches the shared-prefix path on
    for calls that do not pass ``prefix_len`` themselves. ``path_counts`` counts the calls run by
    each path (``"shared_prefix"``, ``"plain"``).
    """

    def __init__(self, clip_model: nn.Module, prompt_start: int = 1):
        super().__init__()
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.prompt_start = prompt_start
        self.prefix_len = 0
        self.shared_prefix = True
        self.path_counts = {"shared_prefix": 0, "plain": 0}
        self._stock_blocks = all(_stock_block(b) for b in self.transformer.resblocks)

    @property
    def dtype(self) -> torch.dtype:
        return self.text_projection.dtype

    def shared_rows(self, n_seq: int, n_rows: int, prompts: PromptList,
                    prefix_len: int | None = None) -> int:
        """The shared-prefix length a call with ``n_seq`` sequences of ``n_rows`` rows and these
        ``prompts`` runs with: the declared length (``prefix_len``, else the attribute while
        ``shared_prefix`` is on) when the path applies to the call, else 0 (plain path)."""
        if prefix_len is None:
            prefix_len = self.prefix_len if self.shared_prefix else 0
        if prefix_len < 1 or n_seq < 2 or n_rows <= prefix_len or not self._stock_blocks:
            return 0
        for p in prompts:
            if p is not None and (p.dim() != 2 or self.prompt_start + p.shape[0] > prefix_len):
                return 0
        if _hooked(self.transformer.resblocks):
            return 0
        return prefix_len

    def forward(self, embeddings: torch.Tensor, eot_index: torch.Tensor, prompts: PromptList = (),
                seq_len: int | None = None, truncate: bool = True,
                prefix_len: int | None = None) -> torch.Tensor:
        """``embeddings [N, L, D]``, ``eot_index [N]`` -> features ``[N, embed_dim]``.

        ``seq_len`` (optional) is ``max(eot_index) + 1`` when the caller knows it (saves a device
        sync); with ``truncate=False`` the full ``L`` rows are run. ``prefix_len`` (optional)
        declares rows ``0 .. prefix_len-1`` shared by all sequences (0: run the plain path);
        ``None`` uses the ``prefix_len`` attribute while ``shared_prefix`` is on.
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
        shared = self.shared_rows(x.shape[0], x.shape[1], prompts, prefix_len)
        if shared:
            self.path_counts["shared_prefix"] += 1
            return self._forward_shared(x, eot_index, prompts, shared)
        self.path_counts["plain"] += 1
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

    def _forward_shared(self, x: torch.Tensor, eot_index: torch.Tensor, prompts: PromptList,
                        prefix_len: int) -> torch.Tensor:
        """The shared-prefix path on ``x [N, L, D]`` (already truncated and cast)."""
        pos = self.positional_embedding[: x.shape[1]].to(x.dtype)
        head = x[:1, :prefix_len]                                   # [1, P, D]
        if len(prompts) and prompts[0] is not None:
            head = replace_rows(head, prompts[0], self.prompt_start, seq_dim=1)
        head = head + pos[:prefix_len]
        tail = x[:, prefix_len:] + pos[prefix_len:]                 # [N, S, D]
        rows = tail.shape[1]
        tail_mask = torch.ones(rows, prefix_len + rows, dtype=torch.bool,
                               device=x.device).tril(diagonal=prefix_len)
        for i, block in enumerate(self.transformer.resblocks):
            if 1 <= i < len(prompts) and prompts[i] is not None:
                head = replace_rows(head, prompts[i], self.prompt_start, seq_dim=1)
            head, tail = shared_prefix_block(block, head, tail, tail_mask)
        pooled = tail[torch.arange(tail.shape[0], device=x.device), eot_index - prefix_len]
        return self.ln_final(pooled).to(x.dtype) @ self.text_projection


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
