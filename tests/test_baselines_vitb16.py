"""The baselines on the real ViT-B/16 architecture (random weights, no download): trainable
parameter counts of the upstream configs (reference/maple_promptsrc.md §2) and the upstream
initialization of MaPLe's couplings."""
from __future__ import annotations

import pytest
import torch

from trainers.cocoop import CoCoOpCLIP
from trainers.ivlp import IVLPCLIP, IVLPSettings
from trainers.maple import MaPLeCLIP
from trainers.promptsrc import PromptSRCCLIP
from trainers.vpt import VPTCLIP

CLASSES = ["red circle", "blue square"]


def _n_trainable(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize("n_ctx, depth, vision_depth, expected", [
    (4, 9, 9, 46_080), (2, 12, 12, 30_720), (4, 12, 0, 24_576)])   # the last: language only
def test_ivlp_counts(vit_b16, n_ctx, depth, vision_depth, expected):
    settings = IVLPSettings(n_ctx_text=n_ctx, n_ctx_vision=n_ctx, depth_text=depth,
                            depth_vision=vision_depth)
    model = IVLPCLIP(vit_b16, CLASSES, settings)
    assert _n_trainable(model) == expected
    assert len(list(model.prompt_learner.parameters())) == depth + vision_depth


@pytest.mark.parametrize("depth, expected", [(9, 46_080), (3, 15_360)])   # B2N, cross-dataset
def test_promptsrc_count(vit_b16, depth, expected):
    settings = IVLPSettings(n_ctx_text=4, n_ctx_vision=4, depth_text=depth, depth_vision=depth,
                            key="TRAINER.PROMPTSRC")
    model = PromptSRCCLIP(vit_b16, ["red circle"], settings)     # one class: 60 anchor texts
    assert _n_trainable(model) == expected
    assert model.text_anchors.shape == (1, 512)


def test_vpt_count_and_fixed_text(vit_b16):
    model = VPTCLIP(vit_b16, CLASSES, n_ctx=8, depth=12)              # the MaPLe repo's config
    assert _n_trainable(model) == 73_728
    assert [tuple(p.shape) for p in model.prompt_learner.parameters()] == [(8, 768)] * 12
    assert model.text_anchors.shape == (2, 512) and not model.text_anchors.requires_grad


def test_maple_count_and_couplings(vit_b16):
    model = MaPLeCLIP(vit_b16, CLASSES, n_ctx=2, depth=9)
    pl = model.prompt_learner
    assert _n_trainable(model) == 3_555_072
    assert len(list(pl.parameters())) == 27                       # 1 + 2 + 8 + 16 tensors
    assert (pl.proj.in_features, pl.proj.out_features) == (512, 768)
    deep = list(pl.compound_prompt_projections)
    assert len(deep) == 8
    for f in deep[1:]:
        assert torch.equal(f.weight, deep[0].weight) and torch.equal(f.bias, deep[0].bias)
    assert not torch.equal(pl.proj.weight, deep[0].weight)
    for p in pl.compound_prompts_text:
        assert p.shape == (2, 512) and p.std().item() == pytest.approx(0.02, rel=0.3)
    assert _n_trainable(MaPLeCLIP(vit_b16, CLASSES, n_ctx=2, depth=3)) == 1_185_024   # XD


def test_cocoop_count(vit_b16):
    model = CoCoOpCLIP(vit_b16, CLASSES, n_ctx=4, ctx_init="a photo of a")
    assert _n_trainable(model) == 35_360
    shapes = {n: tuple(p.shape) for n, p in model.prompt_learner.named_parameters()}
    assert shapes == {"ctx": (4, 512), "meta_net.linear1.weight": (32, 512),
                      "meta_net.linear1.bias": (32,), "meta_net.linear2.weight": (512, 32),
                      "meta_net.linear2.bias": (512,)}
