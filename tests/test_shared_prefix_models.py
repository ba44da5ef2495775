"""Shared-prefix text encoding (issue 17) in the trainers' models: CoOp (end, generic context),
IVLP, MaPLe, PromptSRC and MMLoP give the same text features, logits and prompt gradients with
``shared_prefix`` on and off (depth 1 and full depth, truncation on and off) and do take the
path; CoOp's middle/front/class-specific layouts and CoCoOp never take it; it composes with the
evaluation cache and the precisions; ``TRAINER.<NODE>.SHARED_PREFIX`` reaches the model."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from tests.clip_helpers import tiny_model
from trainers.cocoop import CoCoOpCLIP
from trainers.coop import CoOp, CoOpCLIP
from trainers.core.model import PromptedCLIP, shared_prefix_rows
from trainers.core.precision import Precision
from trainers.core.text_inputs import ClassPrompts
from trainers.ivlp import IVLP, IVLPCLIP, IVLPSettings
from trainers.maple import MaPLe, MaPLeCLIP
from trainers.mmlop import MMLoP, MMLoPCLIP, MMLoPSettings
from trainers.promptsrc import PromptSRC, PromptSRCCLIP

TINY = dict(vision_layers=3, transformer_layers=3, vision_width=64, transformer_width=64,
            transformer_heads=2, image_resolution=32, vision_patch_size=8, embed_dim=32)
CLASSES = ["red circle", "blue square", "green_triangle", "a much longer class name"]
LAYERS = TINY["transformer_layers"]


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))


def _tiny():
    return tiny_model("ViT-B/16", **TINY)


def _build(name, depth, clip_model=None, precision=None):
    clip_model = clip_model or _tiny()
    torch.manual_seed(1)
    if name == "CoOp":
        return CoOpCLIP(clip_model, CLASSES, n_ctx=4, ctx_init="a photo of a",
                        precision=precision)
    if name == "CoOp-random":
        return CoOpCLIP(clip_model, CLASSES, n_ctx=3, precision=precision)
    if name == "IVLP":
        return IVLPCLIP(clip_model, CLASSES, IVLPSettings(depth_text=depth, depth_vision=depth),
                        precision)
    if name == "MaPLe":
        return MaPLeCLIP(clip_model, CLASSES, n_ctx=2, depth=depth, precision=precision)
    if name == "PromptSRC":
        return PromptSRCCLIP(clip_model, CLASSES, IVLPSettings(
            n_ctx_text=4, n_ctx_vision=4, depth_text=depth, depth_vision=depth,
            key="TRAINER.PROMPTSRC"), precision)
    return MMLoPCLIP(clip_model, CLASSES, MMLoPSettings(n_ctx=4, prompt_depth=depth), precision)


def _randomize(module, seed=2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)


def _text_features(model):
    if isinstance(model, CoOpCLIP):
        return model.encode_class_texts()
    return model.encode_class_texts(model.prompt_learner()[0])


def _step(model, images):
    """Text features, logits, and the prompt gradients of a loss using both."""
    model.prompt_learner.train()
    model.prompt_learner.zero_grad()
    text = _text_features(model)
    out = model(images)
    logits = out if torch.is_tensor(out) else out.logits
    weights = torch.randn(text.shape, generator=torch.Generator().manual_seed(3))
    loss = F.cross_entropy(logits, torch.tensor([0, 1, 2])) + (text * weights).sum()
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.prompt_learner.named_parameters()
             if p.grad is not None}
    return text.detach(), logits.detach(), grads


CASES = [("CoOp", 1), ("CoOp-random", 1)] + [(name, depth) for name in
                                             ("IVLP", "MaPLe", "PromptSRC", "MMLoP")
                                             for depth in (1, LAYERS)]


@pytest.mark.parametrize("truncate", [True, False])
@pytest.mark.parametrize("name, depth", CASES)
def test_shared_prefix_models_equal_plain(name, depth, truncate, images):
    model = _build(name, depth)
    _randomize(model.prompt_learner)
    model.truncate_text = truncate
    counts = model.text_encoder.path_counts
    model.shared_prefix = False
    text_p, logits_p, grads_p = _step(model, images)
    assert counts["shared_prefix"] == 0 and counts["plain"] >= 2
    model.shared_prefix = True
    text_s, logits_s, grads_s = _step(model, images)
    assert counts["shared_prefix"] == 2                    # the features and the forward
    torch.testing.assert_close(text_s, text_p, rtol=0, atol=1e-5)
    torch.testing.assert_close(logits_s, logits_p, rtol=0, atol=1e-4)
    assert grads_p.keys() == grads_s.keys() and grads_p
    # A gradient that is a small sum of large cancelling terms (MMLoP's shared factor at depth 3)
    # differs by a few 1e-4 of its size between two float32 summation orders, depending on the
    # thread count; a wrong prefix row changes it by its whole size.
    for key, g in grads_p.items():
        scale = g.abs().max().item()
        assert (grads_s[key] - g).abs().max().item() <= 2e-3 * scale + 1e-7, key


def test_shared_prefix_rows_come_from_the_prompt_prefix():
    clip_model = _tiny()
    assert _build("IVLP", 1, clip_model).prefix_len == 5     # SOS + "a photo of a"
    coop = _build("CoOp-random", 1, clip_model)
    assert coop.prefix_len == coop.text_encoder.prefix_len == 4           # SOS + "X X X"
    assert shared_prefix_rows(ClassPrompts(clip_model, CLASSES, "")) == 0   # only the SOS row
    cp = ClassPrompts(clip_model, ["red", "blue"], "a photo of a")
    assert shared_prefix_rows(cp) == 5
    cp.tokens[1, 3] += 1                     # class prompts that do not all begin with the prefix
    assert shared_prefix_rows(cp) == 0


@pytest.mark.parametrize("position, csc", [("middle", False), ("front", False), ("end", True),
                                           ("middle", True)])
def test_coop_layouts_without_a_shared_prefix_keep_the_plain_path(position, csc, images):
    model = CoOpCLIP(_tiny(), CLASSES, n_ctx=4, csc=csc, position=position)
    assert model.shared_prefix and model.prefix_len == 5     # switched on, rows not declared
    assert model.text_encoder.prefix_len == 0
    model.prompt_learner.train()
    model(images).sum().backward()
    assert model.prompt_learner.ctx.grad.abs().sum() > 0
    assert model.text_encoder.path_counts["shared_prefix"] == 0
    assert model.text_encoder.path_counts["plain"] == 1


def test_cocoop_per_image_context_keeps_the_plain_path(images):
    model = CoCoOpCLIP(_tiny(), CLASSES, ctx_init="a photo of a")
    model.prompt_learner.train()
    model(images).sum().backward()
    model.prompt_learner.eval()
    with torch.no_grad():
        model(images)
    assert model.text_encoder.path_counts == {"shared_prefix": 0, "plain": 2}


def test_shared_prefix_composes_with_the_evaluation_cache(images):
    model = _build("MMLoP", LAYERS)
    _randomize(model.prompt_learner)
    model.prompt_learner.eval()
    cache = model.text_cache
    with torch.no_grad():
        model.shared_prefix = False
        plain = model(images)
        model.shared_prefix = True
        shared, again = model(images), model(images)
    # switching the path recomputes the features once; the next batch reuses them
    assert (cache.misses, cache.hits) == (2, 1)
    assert model.text_encoder.path_counts["shared_prefix"] == 1
    torch.testing.assert_close(shared, plain, rtol=0, atol=1e-4)
    assert torch.equal(again, shared)


HALF = {"fp16": (Precision("fp16", torch.float16, None, False, "cpu"), 5e-3),
        "bf16": (Precision("bf16", torch.bfloat16, None, False, "cpu"), 3e-2),
        "amp": (Precision("amp", torch.float32, torch.bfloat16, False, "cpu"), 3e-2)}


@pytest.mark.parametrize("prec", list(HALF))
@pytest.mark.parametrize("name", ["IVLP", "MMLoP"])
def test_shared_prefix_half_precision(name, prec, images):
    """fp32 prompts cast where inserted: fp32 gradients; features within half rounding of the
    plain path in the same precision."""
    precision, atol = HALF[prec]
    model = _build(name, 2, precision=precision)
    assert model.clip_model.transformer.resblocks[0].attn.in_proj_weight.dtype \
        == precision.weight_dtype
    texts, grads = [], []
    for on in (False, True):
        model.shared_prefix = on
        model.prompt_learner.zero_grad()
        text = _text_features(model)
        text.sum().backward()
        texts.append(text.detach())
        grads.append([p.grad.clone() for p in model.prompt_learner.parameters()
                      if p.grad is not None])
    assert model.text_encoder.path_counts["shared_prefix"] == 1
    assert texts[1].dtype == torch.float32
    torch.testing.assert_close(texts[1], texts[0], rtol=0, atol=atol)
    for a, b in zip(*grads):
        assert a.dtype == b.dtype == torch.float32
        assert (a - b).abs().max() <= 0.1 * a.abs().max() + 1e-6


TRAINERS = {CoOp: {}, IVLP: dict(PROMPT_DEPTH_TEXT=2, PROMPT_DEPTH_VISION=2),
            PromptSRC: dict(PROMPT_DEPTH_TEXT=2, PROMPT_DEPTH_VISION=2),
            MaPLe: dict(PROMPT_DEPTH=2), MMLoP: dict(PROMPT_DEPTH=2)}


@pytest.mark.parametrize("on", [True, False])
@pytest.mark.parametrize("trainer", list(TRAINERS), ids=lambda t: t.__name__)
def test_shared_prefix_config_key_reaches_the_model(trainer, on):
    cfg = CN()
    cfg.TRAINER = CN()
    trainer.add_config(cfg)
    node = cfg.TRAINER[trainer.config_node]
    assert node.SHARED_PREFIX is True                       # the default
    node.SHARED_PREFIX = on
    for key, value in TRAINERS[trainer].items():
        node[key] = value
    fake = SimpleNamespace(node=node, load_backbone=_tiny, precision=None,
                           dm=SimpleNamespace(dataset=SimpleNamespace(classnames=CLASSES)),
                           register_prompt_learner=lambda module: None,
                           build_gpa=lambda *args: None)
    trainer.build_model(fake)
    assert isinstance(fake.model, PromptedCLIP)
    assert fake.model.shared_prefix is on
    assert fake.model.prefix_len > 0
