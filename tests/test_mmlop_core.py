"""The prompted-CLIP core on a tiny random CLIP: equivalence with stock CLIP, prompt placement
row by row, truncation, class prompts that never enter a state dict, the evaluation text cache."""
from __future__ import annotations

import pytest
import torch

import clip
from clip.model import build_model_from_config
from tests.clip_helpers import record_block_inputs, tiny_model
from trainers.core.encoders import PromptedImageEncoder, PromptedTextEncoder
from trainers.core.model import TextFeatureCache
from trainers.core.text_inputs import ClassPrompts, count_tokens

TINY = dict(vision_layers=3, transformer_layers=3, vision_width=64, transformer_width=64,
            transformer_heads=2, image_resolution=32, vision_patch_size=8, embed_dim=32)


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("ViT-B/16", **TINY)


def test_unprompted_encoders_equal_stock_clip(tiny):
    tokens = clip.tokenize(["a photo of a red circle.", "hi", "a very much longer sentence here"])
    text = PromptedTextEncoder(tiny)
    image = PromptedImageEncoder(tiny)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref_t = tiny.encode_text(tokens)
        full = text(tiny.token_embedding(tokens), tokens.argmax(-1), truncate=False)
        short = text(tiny.token_embedding(tokens), tokens.argmax(-1), truncate=True)
        torch.testing.assert_close(full, ref_t, rtol=0, atol=1e-6)
        torch.testing.assert_close(short, ref_t, rtol=0, atol=1e-5)
        torch.testing.assert_close(image(images), tiny.encode_image(images), rtol=0, atol=1e-6)


def test_text_prompt_placement_row_by_row(tiny):
    n, d = 2, 64
    tokens = clip.tokenize(["X X red circle.", "X X blue square."])
    eot = tokens.argmax(-1)
    prompts = [torch.randn(n, d), torch.randn(n, d), None]   # depth 2, layer 2 unprompted
    enc = PromptedTextEncoder(tiny)
    seen, handles = record_block_inputs(tiny.transformer.resblocks)
    with torch.no_grad():
        emb = tiny.token_embedding(tokens)
        enc(emb, eot, prompts, truncate=False)
    for h in handles:
        h.remove()
    pos = tiny.positional_embedding
    x0 = seen[0]                                              # [L, N, D]
    for seq in range(2):
        # layer 0: rows 1..n are the prompts (+ positional embedding), row 0 and rows > n are
        # the token embeddings (+ positional embedding)
        torch.testing.assert_close(x0[1:1 + n, seq], prompts[0] + pos[1:1 + n])
        torch.testing.assert_close(x0[0, seq], emb[seq, 0] + pos[0])
        torch.testing.assert_close(x0[1 + n:, seq], emb[seq, 1 + n:] + pos[1 + n:])
        # layer 1: rows 1..n replaced by that layer's prompts exactly; other rows untouched
        torch.testing.assert_close(seen[1][1:1 + n, seq], prompts[1])
        assert not torch.allclose(seen[1][0, seq], x0[0, seq])
        # layer 2 (past the depth): the prompt rows carry the previous layer's outputs
        assert not torch.allclose(seen[2][1:1 + n, seq], prompts[1])


def test_vision_prompt_placement_row_by_row(tiny):
    n, d = 3, 64
    images = torch.randn(2, 3, 32, 32)
    prompts = [torch.randn(n, d), torch.randn(2, n, d)]      # shared, then per-image
    v = tiny.visual
    seen, handles = record_block_inputs(v.transformer.resblocks)
    with torch.no_grad():
        PromptedImageEncoder(tiny)(images, prompts)
    for h in handles:
        h.remove()
    n_patch = (32 // 8) ** 2
    x0 = seen[0]
    assert x0.shape[0] == 1 + n_patch + n
    with torch.no_grad():
        # layer 0: prompts appended after the patches without positional embedding, then ln_pre
        torch.testing.assert_close(x0[1 + n_patch:, 0], v.ln_pre(prompts[0]))
        patches = v.conv1(images).flatten(2).permute(0, 2, 1) + v.positional_embedding[1:]
        torch.testing.assert_close(x0[1:1 + n_patch, 1], v.ln_pre(patches[1]), atol=1e-5,
                                   rtol=0)
    # layer 1: the last n rows are exactly that layer's prompts, per image
    torch.testing.assert_close(seen[1][-n:], prompts[1].permute(1, 0, 2))
    assert seen[1].shape[0] == 1 + n_patch + n
    # layer 2 (past the depth): carried on, not replaced
    assert not torch.allclose(seen[2][-n:], prompts[1].permute(1, 0, 2))


def test_prompt_shape_errors(tiny):
    enc = PromptedImageEncoder(tiny)
    images = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="layer 0 appended 2"):
        enc(images, [torch.zeros(2, 64), torch.zeros(3, 64)])
    with pytest.raises(ValueError, match="4 prompt layers"):
        enc(images, [torch.zeros(2, 64)] * 4)
    with pytest.raises(ValueError, match=r"\[n, D\] or \[1, n, D\]"):
        enc(images, [torch.zeros(5, 2, 64)])


def test_resnet_takes_no_vision_prompts():
    torch.manual_seed(0)
    rn = build_model_from_config("RN50", vision_layers=(1, 1, 1, 1), vision_width=8,
                                 image_resolution=64, transformer_layers=1, transformer_width=64,
                                 transformer_heads=1, embed_dim=32).eval()
    enc = PromptedImageEncoder(rn)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(enc(images), rn.encode_image(images))
    with pytest.raises(ValueError, match="ViT backbone"):
        enc(images, [torch.zeros(2, 8)])


def test_class_prompts_are_not_saved_and_truncate_exactly(tiny):
    cp = ClassPrompts(tiny, ["red_circle", "a much longer class name"], "X X X X")
    assert cp.state_dict() == {}
    assert cp.seq_len == int(cp.tokens.argmax(-1).max()) + 1
    assert cp.inputs(truncate=True).shape[1] == cp.seq_len
    full = cp.inputs(truncate=False)
    assert full.shape[1] == 77
    with torch.no_grad():
        torch.testing.assert_close(full, tiny.token_embedding(cp.tokens))
    assert cp.name_lens == [count_tokens("red circle"), count_tokens("a much longer class name")]
    assert count_tokens("a photo of a") == 4 and count_tokens("itap of a") == 4


def test_text_cache_reuses_only_while_parameters_are_unchanged():
    p = torch.nn.Parameter(torch.ones(3))
    cache = TextFeatureCache()
    calls = []

    def compute():
        calls.append(1)
        return p.detach() * 2

    with torch.no_grad():
        a = cache.get([p], compute)
        b = cache.get([p], compute)
    assert a is b and len(calls) == 1
    opt = torch.optim.SGD([p], lr=0.1)
    p.sum().backward()
    opt.step()                                               # in-place update -> new version
    with torch.no_grad():
        c = cache.get([p], compute)
    assert len(calls) == 2 and torch.equal(c, p.detach() * 2)
    cache.get([p], compute)                                  # grad enabled: never cached
    assert len(calls) == 3
    with torch.no_grad():
        p.copy_(torch.zeros(3))                              # e.g. load_state_dict
        assert torch.equal(cache.get([p], compute), torch.zeros(3))
    assert len(calls) == 4
