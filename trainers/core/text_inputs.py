"""The class-dependent text inputs of a prompt method: "<prefix> <classname>." for every class.

``ClassPrompts`` holds them (token ids, embeddings, end-of-text positions) as non-persistent
buffers, so they never enter a checkpoint and are rebuilt for whatever class set is evaluated:
prompts trained on the base classes are scored on the novel ones by building a new
``ClassPrompts``. ``count_tokens`` is the BPE length rule every ``CTX_INIT`` check uses.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

import clip


def _count_tokens(texts: Sequence[str]) -> list[int]:
    """Number of BPE tokens of each text (without start/end tokens), whatever the context length
    of the model that will read them."""
    return clip.token_count(list(texts))


def count_tokens(text: str) -> int:
    """Number of BPE tokens of ``text`` (``"a photo of a"`` -> 4, ``"itap of a"`` -> 4)."""
    return _count_tokens([text])[0]


class ClassPrompts(nn.Module):
    """Class-dependent text inputs for the prompt "<prefix> <classname>." of every class.

    Non-persistent buffers (never saved): ``tokens [C, L_ctx]`` (token ids), ``embeddings
    [C, seq_len, D]`` (token embeddings of the rows the truncated tower needs, fp32),
    ``pad_embedding [D]`` (embedding of the padding id, to rebuild full-length inputs) and
    ``eot_index [C]``. ``seq_len = max(eot_index) + 1``. ``name_lens[c]`` is the BPE length of
    class name ``c`` (used by layouts that put the class name before or inside the context).
    """

    def __init__(self, clip_model: nn.Module, classnames: Sequence[str], prefix: str):
        super().__init__()
        if not classnames:
            raise ValueError("ClassPrompts needs at least one class name")
        names = [c.replace("_", " ") for c in classnames]
        self.classnames = list(classnames)
        self.prefix = prefix
        self.context_length = int(clip_model.positional_embedding.shape[0])
        tokens = clip.tokenize([f"{prefix} {name}." if prefix else f"{name}." for name in names],
                               context_length=self.context_length)
        eot_index = tokens.argmax(dim=-1)
        self.seq_len = int(eot_index.max()) + 1
        self.name_lens = _count_tokens(names)
        weight = clip_model.token_embedding.weight
        with torch.no_grad():
            emb = clip_model.token_embedding(tokens[:, : self.seq_len].to(weight.device)).float()
            pad = weight[0].detach().float().clone()
        self.register_buffer("tokens", tokens.to(weight.device), persistent=False)
        self.register_buffer("eot_index", eot_index.to(weight.device), persistent=False)
        self.register_buffer("embeddings", emb, persistent=False)
        self.register_buffer("pad_embedding", pad, persistent=False)

    def __len__(self) -> int:
        return len(self.classnames)

    def inputs(self, truncate: bool = True) -> torch.Tensor:
        """Token embeddings ``[C, seq_len, D]`` (truncated) or ``[C, context_length, D]``."""
        if truncate:
            return self.embeddings
        c, _, d = self.embeddings.shape
        pad = self.pad_embedding.expand(c, self.context_length - self.seq_len, d)
        return torch.cat([self.embeddings, pad], dim=1)
