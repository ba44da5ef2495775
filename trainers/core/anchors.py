"""Frozen zero-shot text features from template ensembles, cached per class set.

``template_text_features(clip_model, classnames, templates)`` returns ``[C, embed_dim]``, fp32,
L2-normalized: for each class the mean of the L2-normalized frozen features of every template,
re-normalized (one template gives just its normalized feature). The text tower runs truncated
(exact: see ``encoders``) in chunks of ``chunk_size`` sequences.

``cached_text_features(...)`` memoizes that result in a small process-wide LRU keyed by a content
fingerprint of the text tower (so two different models that share a name never collide), the
class names, the templates, the dtype and the device: a class set's anchors are computed once per
process, however many models or evaluations ask for them. ``clear_cache()`` empties it.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

import clip

from .encoders import PromptedTextEncoder
from .templates import fill

_CACHE: OrderedDict[tuple, torch.Tensor] = OrderedDict()
_CACHE_SIZE = 8
cache_stats = {"hits": 0, "misses": 0}


def text_tower_fingerprint(clip_model: nn.Module) -> str:
    """SHA-1 over tensors of the text tower that any two distinct CLIPs differ in."""
    h = hashlib.sha1()
    last = clip_model.transformer.resblocks[-1]
    for t in (clip_model.text_projection, clip_model.positional_embedding,
              clip_model.ln_final.weight, last.mlp.c_proj.weight,
              clip_model.token_embedding.weight[:64]):
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def template_text_features(clip_model: nn.Module, classnames: Sequence[str],
                           templates: Sequence[str], chunk_size: int = 1000) -> torch.Tensor:
    """Normalized ensemble text features ``[C, embed_dim]`` (fp32) on the model's device."""
    if not templates:
        raise ValueError("at least one template is needed")
    encoder = PromptedTextEncoder(clip_model)
    device = clip_model.token_embedding.weight.device
    context_length = int(clip_model.positional_embedding.shape[0])
    texts = [fill(t, name) for t in templates for name in classnames]   # template-major
    feats = []
    for start in range(0, len(texts), chunk_size):
        tokens = clip.tokenize(texts[start:start + chunk_size], context_length=context_length)
        tokens = tokens.to(device)
        eot = tokens.argmax(dim=-1)
        seq_len = int(eot.max()) + 1
        emb = clip_model.token_embedding(tokens[:, :seq_len])
        feats.append(F.normalize(encoder(emb, eot, seq_len=seq_len).float(), dim=-1))
    feats = torch.cat(feats).view(len(templates), len(classnames), -1)
    return F.normalize(feats.mean(dim=0), dim=-1)


def cached_text_features(clip_model: nn.Module, classnames: Sequence[str],
                         templates: Sequence[str]) -> torch.Tensor:
    """``template_text_features`` through the process-wide cache (see the module docstring)."""
    device = clip_model.token_embedding.weight.device
    key = (text_tower_fingerprint(clip_model), tuple(classnames), tuple(templates),
           str(clip_model.text_projection.dtype), str(device))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        cache_stats["hits"] += 1
        return _CACHE[key]
    cache_stats["misses"] += 1
    value = template_text_features(clip_model, classnames, templates)
    _CACHE[key] = value
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return value


def clear_cache() -> None:
    """Forget every cached class set."""
    _CACHE.clear()
