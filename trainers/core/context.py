"""Learned context: turning ``CTX_INIT`` into the prompt text and the initial token embeddings.

Every method starts its first-layer text prompt the same way (CoOp's rule, kept by CoCoOp, IVLP,
MaPLe, PromptSRC and MMLoP): when ``CTX_INIT`` (say "a photo of a") has at least ``n_ctx`` BPE
tokens, the class prompts read "<CTX_INIT> <classname>." and the learned rows start as the token
embeddings of its first ``n_ctx`` tokens; otherwise the prompts read "X X ... X <classname>." and
the rows start random. Methods differ only in how they pick ``n_ctx`` (CoOp and CoCoOp: the
token count of ``CTX_INIT``; MMLoP requires exactly ``N_CTX`` tokens, checked with the config)
and in what they do with the embeddings (MMLoP factorizes them). Lengths are counted in BPE
tokens, not words ("itap of a" is 4 tokens): see docs/METHOD.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

import clip

from .text_inputs import count_tokens

PROMPT_STD = 0.02


def clean_ctx_init(ctx_init: str) -> str:
    """``CTX_INIT`` as the prompt text: underscores become spaces, outer blanks stripped."""
    return ctx_init.replace("_", " ").strip()


@dataclass(frozen=True)
class TextContext:
    """The prompt text before the class name and the ``[n_ctx, D_t]`` fp32 CPU embeddings the
    learned rows start from (``None``: random initialization)."""

    prefix: str
    init: torch.Tensor | None


def text_context(clip_model: nn.Module, ctx_init: str, n_ctx: int) -> TextContext:
    """The context for ``n_ctx`` learned rows from ``CTX_INIT`` (see the module docstring)."""
    text = clean_ctx_init(ctx_init)
    if text:
        n_tokens = count_tokens(text)
        if n_tokens >= n_ctx:
            length = int(clip_model.positional_embedding.shape[0])
            tokens = clip.tokenize(text, context_length=length)
            weight = clip_model.token_embedding.weight
            with torch.no_grad():
                init = weight[tokens[0, 1:1 + n_ctx].to(weight.device)].detach().float().cpu()
            return TextContext(text, init)
        print(f'Note: CTX_INIT "{text}" has {n_tokens} tokens, fewer than the {n_ctx} context '
              "tokens: random initialization")
    return TextContext(" ".join(["X"] * n_ctx), None)


def normal_prompt(n: int, dim: int, std: float = PROMPT_STD) -> nn.Parameter:
    """A ``[n, dim]`` prompt with entries ``N(0, std^2)`` (IVLP's initialization)."""
    return nn.Parameter(torch.randn(n, dim) * std)


def context_parameter(init: torch.Tensor) -> nn.Parameter:
    """A fresh fp32 parameter holding a copy of the initial context ``init``."""
    return nn.Parameter(init.detach().float().clone())
