"""MMLoP on the real ViT-B/16 architecture (random weights, no download): parameter counts,
initialization, exactness of the speed-ups with deep prompts. (Anchors are switched off where a
test does not need them: 60 templates through a 12-layer text tower cost seconds on a CPU.)"""
from __future__ import annotations

import dataclasses

import pytest
import torch

import clip
from trainers.coop import CoOpCLIP
from trainers.mmlop import MMLoPCLIP, MMLoPSettings

CLASSES = ["red circle", "blue square", "green_triangle"]
NO_ANCHORS = dict(drift_correction=False, text_loss_weight=0.0, kl_loss_weight=0.0)


@pytest.fixture(scope="module")
def mmlop(vit_b16):
    torch.manual_seed(1)
    return MMLoPCLIP(vit_b16, CLASSES, MMLoPSettings(**NO_ANCHORS))


def _n_trainable(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize("changes, expected", [
    ({}, 11_556),
    ({"share_u": "none"}, 11_592),
    ({"share_u": "modality_and_layers"}, 11_524),
    ({"low_rank": False}, 46_080),
    ({"prompt_depth": 3}, 3 * (4 + 512 + 768)),
])
def test_trainable_parameter_counts(vit_b16, mmlop, changes, expected):
    if changes:
        settings = dataclasses.replace(MMLoPSettings(**NO_ANCHORS), **changes)
        model = MMLoPCLIP(vit_b16, CLASSES, settings)
    else:
        model = mmlop
    assert _n_trainable(model.prompt_learner) == expected
    assert _n_trainable(model) == expected                  # nothing of CLIP is trainable


def test_coop_four_tokens_has_2048_parameters(vit_b16):
    model = CoOpCLIP(vit_b16, CLASSES, n_ctx=4)
    assert _n_trainable(model) == 2_048
    assert list(model.prompt_learner.state_dict()) == ["ctx"]


def test_initialization(vit_b16, mmlop):
    tokens = clip.tokenize("a photo of a")[0, 1:5]
    emb = vit_b16.token_embedding.weight[tokens].detach()
    u, s, vh = torch.linalg.svd(emb, full_matrices=False)
    best_rank1 = s[0] * torch.outer(u[:, 0], vh[0])
    text, vision = mmlop.prompt_learner()
    assert len(text) == len(vision) == 9
    assert text[0].shape == (4, 512) and vision[0].shape == (4, 768)
    torch.testing.assert_close(text[0], best_rank1, atol=1e-6, rtol=1e-5)
    deep_text = torch.stack(text[1:]).detach()
    all_vision = torch.stack(vision).detach()
    assert 0.012 < deep_text.pow(2).mean().sqrt().item() < 0.03
    assert 0.012 < all_vision.pow(2).mean().sqrt().item() < 0.03
    assert mmlop.class_prompts.prefix == "a photo of a"


def test_full_rank_starts_from_the_init_embeddings(vit_b16):
    model = MMLoPCLIP(vit_b16, CLASSES, MMLoPSettings(low_rank=False, **NO_ANCHORS))
    tokens = clip.tokenize("a photo of a")[0, 1:5]
    torch.testing.assert_close(model.prompt_learner()[0][0],
                               vit_b16.token_embedding.weight[tokens])
    assert model.text_anchors is None                        # IVLP row: no anchors computed


def test_bad_settings_name_the_key(vit_b16):
    with pytest.raises(ValueError, match="TRAINER.MMLOP.CTX_INIT"):
        MMLoPCLIP(vit_b16, CLASSES, MMLoPSettings(n_ctx=2))
    with pytest.raises(ValueError, match="TRAINER.MMLOP.PROMPT_DEPTH"):
        MMLoPCLIP(vit_b16, CLASSES, MMLoPSettings(prompt_depth=13))
    with pytest.raises(ValueError, match="TRAINER.MMLOP.RANK"):
        MMLoPCLIP(vit_b16, CLASSES, MMLoPSettings(rank=5))
    with pytest.raises(ValueError, match="TRAINER.MMLOP.SHARE_U"):
        MMLoPCLIP(vit_b16, CLASSES, MMLoPSettings(share_u="layers"))


@pytest.mark.slow
def test_truncation_and_eval_cache_are_exact_with_deep_prompts(vit_b16, mmlop):
    model = mmlop
    with torch.no_grad():                                    # move away from the initialization
        for p in model.prompt_learner.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    images = torch.randn(1, 3, 224, 224)
    model.eval()
    try:
        with torch.no_grad():
            model.truncate_text, model.text_cache.enabled = False, False
            plain = model(images)
            model.truncate_text, model.text_cache.enabled = True, True
            model.text_cache.clear()
            fast = model(images)
            again = model(images)
        assert model.class_prompts.seq_len < 77
        assert model.text_cache.misses == 1 and model.text_cache.hits == 1
        torch.testing.assert_close(fast, plain, rtol=0, atol=1e-5)
        torch.testing.assert_close(again, fast, rtol=0, atol=0)
    finally:
        model.train()
