"""Shared-prefix text encoding (issue 17) at the encoder: the rows before the class name run once
for all classes, and the features and prompt gradients equal the plain path within fp32 rounding,
on a tiny CLIP and on the ViT-B/16 layout (random weights), at depth 1 and full depth, with and
without truncation; and the path is not taken where a call does not allow it."""
from __future__ import annotations

import pytest
import torch

import clip
from tests.clip_helpers import record_block_inputs, tiny_model
from trainers.core.encoders import PromptedTextEncoder

TINY = dict(vision_layers=2, transformer_layers=3, vision_width=64, transformer_width=64,
            transformer_heads=2, image_resolution=32, vision_patch_size=8, embed_dim=32)
CLASSES = ["red circle", "blue square", "green_triangle", "a much longer class name", "x"]
PREFIX = "a photo of a"                       # 4 BPE tokens: rows 0..4 are shared
PREFIX_ROWS = 5


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("ViT-B/16", **TINY)


def _inputs(clip_model, classes=CLASSES, prefix=PREFIX):
    tokens = clip.tokenize([f"{prefix} {c.replace('_', ' ')}." for c in classes])
    with torch.no_grad():
        emb = clip_model.token_embedding(tokens)
    return emb, tokens.argmax(-1)


def _prompts(depth, n, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(n, width, generator=g) * 0.5) for _ in range(depth)]


def _features_and_grads(encoder, emb, eot, prompts, truncate, prefix_len):
    """Features and the gradients of a random linear function of them w.r.t. the prompts."""
    feats = encoder(emb, eot, prompts, truncate=truncate, prefix_len=prefix_len)
    weights = torch.randn(feats.shape, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad((feats * weights).sum(), [p for p in prompts if p is not None])
    return feats.detach(), grads


def _rel(a, b):
    return ((a - b).abs().max() / a.abs().max()).item()


def assert_shared_equals_plain(clip_model, depth, truncate, n_ctx=4, classes=CLASSES,
                               feat_rel=1e-5, grad_rel=1e-4):
    encoder = PromptedTextEncoder(clip_model)
    emb, eot = _inputs(clip_model, classes)
    prompts = _prompts(depth, n_ctx, emb.shape[-1])
    plain, plain_grads = _features_and_grads(encoder, emb, eot, prompts, truncate, 0)
    assert encoder.path_counts == {"shared_prefix": 0, "plain": 1}
    shared, shared_grads = _features_and_grads(encoder, emb, eot, prompts, truncate, PREFIX_ROWS)
    assert encoder.path_counts == {"shared_prefix": 1, "plain": 1}
    assert _rel(plain, shared) < feat_rel
    for a, b in zip(plain_grads, shared_grads):
        assert a.abs().max() > 0 and _rel(a, b) < grad_rel
    return _rel(plain, shared), max(_rel(a, b) for a, b in zip(plain_grads, shared_grads))


@pytest.mark.parametrize("truncate", [True, False])
@pytest.mark.parametrize("depth", [1, 3])                # 3 = every layer of the tiny tower
def test_shared_prefix_equals_plain_tiny(tiny, depth, truncate):
    assert_shared_equals_plain(tiny, depth, truncate)


@pytest.mark.parametrize("truncate", [True, False])
def test_shared_prefix_prompts_shorter_than_the_prefix(tiny, truncate):
    """Two learned rows and "of a" as fixed words (IVLP's 2-token init): rows 3..4 are shared
    tokens, not prompts."""
    assert_shared_equals_plain(tiny, 3, truncate, n_ctx=2)


def test_shared_prefix_with_a_deep_prompt_only_and_unprompted_layers(tiny):
    encoder = PromptedTextEncoder(tiny)
    emb, eot = _inputs(tiny)
    p = _prompts(1, 4, 64)[0]
    prompts = [None, p]                                   # layer 0: tokens; layer 1: prompt
    a, ga = _features_and_grads(encoder, emb, eot, prompts[1:2], True, 0)   # sanity: p used
    plain, (g_plain,) = _features_and_grads(encoder, emb, eot, [None, p], True, 0)
    shared, (g_shared,) = _features_and_grads(encoder, emb, eot, [None, p], True, PREFIX_ROWS)
    assert not torch.allclose(a, plain)
    assert _rel(plain, shared) < 1e-5 and _rel(g_plain, g_shared) < 1e-4


@pytest.mark.parametrize("truncate", [True, False])
@pytest.mark.parametrize("depth", [1, 12])
def test_shared_prefix_equals_plain_vit_b16(vit_b16, depth, truncate):
    """The real text tower's layout (12 layers, width 512, 8 heads), few classes."""
    assert_shared_equals_plain(vit_b16, depth, truncate, classes=CLASSES[:3])


def test_shared_prefix_is_not_taken_where_the_call_does_not_allow_it(tiny):
    encoder = PromptedTextEncoder(tiny)
    emb, eot = _inputs(tiny)
    shared = _prompts(2, 4, 64)
    per_sequence = [torch.randn(len(CLASSES), 4, 64)]      # CoCoOp-style [N, n, D]
    with torch.no_grad():
        encoder(emb, eot, per_sequence, prefix_len=PREFIX_ROWS)
        encoder(emb, eot, shared, prefix_len=4)            # prompt rows 1..4 not inside rows 0..3
        encoder(emb[:1], eot[:1], shared, prefix_len=PREFIX_ROWS)  # one sequence: nothing shared
        encoder(emb, eot, shared)                          # no declared prefix (attribute is 0)
        assert encoder.path_counts == {"shared_prefix": 0, "plain": 4}
        encoder.prefix_len = PREFIX_ROWS                   # declared for every call ...
        encoder(emb, eot, shared)
        assert encoder.path_counts["shared_prefix"] == 1
        encoder.shared_prefix = False                      # ... unless switched off
        encoder(emb, eot, shared)
        assert encoder.path_counts == {"shared_prefix": 1, "plain": 5}


def test_hooked_blocks_run_the_plain_path(tiny):
    """Forward hooks on the blocks see whole sequences, so they force the plain path."""
    encoder = PromptedTextEncoder(tiny)
    emb, eot = _inputs(tiny)
    prompts = _prompts(2, 4, 64)
    seen, handles = record_block_inputs(tiny.transformer.resblocks)
    with torch.no_grad():
        hooked = encoder(emb, eot, prompts, prefix_len=PREFIX_ROWS)
        for h in handles:
            h.remove()
        assert encoder.path_counts == {"shared_prefix": 0, "plain": 1}
        assert seen[1].shape[1] == len(CLASSES)
        free = encoder(emb, eot, prompts, prefix_len=PREFIX_ROWS)
    assert encoder.path_counts == {"shared_prefix": 1, "plain": 1}
    torch.testing.assert_close(free, hooked, rtol=0, atol=1e-5)
