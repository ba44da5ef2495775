"""The baseline models (IVLP, MaPLe, PromptSRC, CoCoOp) on a tiny random CLIP: IVLP and
full-rank MMLoP are one model, MaPLe's coupled prompts sit where the reference places them,
CoCoOp's batched per-image text forward equals a per-image loop, PromptSRC's training outputs."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import clip
from clip.model import build_model_from_config
from tests.clip_helpers import record_block_inputs, tiny_model
from trainers.cocoop import CoCoOpCLIP
from trainers.core.gpa import GaussianPromptAggregator, gpa_state, restore_gpa
from trainers.core.precision import Precision
from trainers.ivlp import IVLPCLIP, IVLPSettings
from trainers.maple import MaPLeCLIP
from trainers.mmlop import MMLoPCLIP, MMLoPSettings
from trainers.promptsrc import PromptSRCCLIP
from trainers.vpt import VPTCLIP

TINY = dict(vision_layers=3, transformer_layers=3, vision_width=64, transformer_width=48,
            transformer_heads=2, image_resolution=32, vision_patch_size=8, embed_dim=32)
CLASSES = ["red circle", "blue square", "green_triangle", "a much longer class name"]


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("ViT-B/16", **TINY)


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))


def _randomize(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def test_ivlp_is_full_rank_mmlop_without_extras(tiny, images):
    ivlp = IVLPCLIP(tiny, CLASSES, IVLPSettings(n_ctx_text=4, n_ctx_vision=4, depth_text=2,
                                                depth_vision=2))
    settings = MMLoPSettings(n_ctx=4, prompt_depth=2, low_rank=False, share_u="none",
                             text_loss_weight=0.0, image_loss_weight=0.0, kl_loss_weight=0.0,
                             drift_correction=False)
    mmlop = MMLoPCLIP(tiny, CLASSES, settings)
    _randomize(ivlp.prompt_learner, seed=1)
    with torch.no_grad():
        ivlp.prompt_learner.eval()
        mmlop.prompt_learner.eval()
        before = mmlop(images)
        assert not torch.allclose(before, ivlp(images), atol=1e-3)
        for (name_a, a), (name_b, b) in zip(ivlp.prompt_learner.named_parameters(),
                                            mmlop.prompt_learner.named_parameters()):
            assert name_a == name_b and a.shape == b.shape
            b.copy_(a)
        torch.testing.assert_close(mmlop(images), ivlp(images), rtol=0, atol=1e-5)
    ivlp.prompt_learner.train()
    mmlop.prompt_learner.train()
    torch.testing.assert_close(mmlop(images).logits, ivlp(images), rtol=0, atol=1e-5)


def test_ivlp_towers_take_their_own_depths_and_lengths(tiny, images):
    model = IVLPCLIP(tiny, CLASSES, IVLPSettings(n_ctx_text=2, n_ctx_vision=3, depth_text=3,
                                                 depth_vision=1))
    text, vision = model.prompt_learner()
    assert [tuple(p.shape) for p in text] == [(2, 48)] * 3
    assert [tuple(p.shape) for p in vision] == [(3, 64)]
    seen, handles = record_block_inputs(tiny.visual.transformer.resblocks)
    with torch.no_grad():
        model.prompt_learner.eval()
        model(images)
    for h in handles:
        h.remove()
    assert seen[0].shape[0] == 1 + 16 + 3
    # vision depth 1: layer 1 keeps the outputs of layer 0 in the prompt rows
    assert not torch.allclose(seen[1][-3:, 0], vision[0].detach(), atol=1e-3)
    language_only = IVLPCLIP(tiny, CLASSES, IVLPSettings(n_ctx_text=4, depth_text=3,
                                                         depth_vision=0, n_ctx_vision=0))
    assert list(language_only.prompt_learner.ctx_vision) == []
    with torch.no_grad():
        language_only.prompt_learner.eval()
        logits = language_only(images)
        text_only = language_only.encode_class_texts(language_only.prompt_learner()[0])
        torch.testing.assert_close(logits, language_only.logit_scale
                                   * F.normalize(tiny.encode_image(images), dim=-1)
                                   @ text_only.t(), rtol=0, atol=1e-5)


def test_two_token_init_keeps_of_a_as_fixed_words(tiny):
    model = IVLPCLIP(tiny, CLASSES, IVLPSettings(n_ctx_text=2, depth_text=1, depth_vision=1))
    tokens = clip.tokenize("a photo of a")[0]
    with torch.no_grad():
        torch.testing.assert_close(model.prompt_learner.ctx_text[0],
                                   tiny.token_embedding.weight[tokens[1:3]])
    assert model.class_prompts.prefix == "a photo of a"
    assert clip.tokenize("a photo of a red circle.")[0].tolist() == \
        model.class_prompts.tokens[0].tolist()
    random_init = IVLPCLIP(tiny, CLASSES, IVLPSettings(n_ctx_text=6, depth_text=1,
                                                       depth_vision=1))
    assert random_init.class_prompts.prefix == "X X X X X X"
    assert random_init.prompt_learner.ctx_text[0].std().item() == pytest.approx(0.02, rel=0.3)


def test_maple_vision_rows_are_the_coupled_text_prompts(tiny, images):
    depth, n = 3, 2
    model = MaPLeCLIP(tiny, CLASSES, n_ctx=n, depth=depth)
    pl = model.prompt_learner
    assert pl.proj.in_features == 48 and pl.proj.out_features == 64      # widths of this CLIP
    deep = list(pl.compound_prompt_projections)
    assert len(deep) == depth - 1 and len(pl.compound_prompts_text) == depth - 1
    torch.testing.assert_close(deep[0].weight, deep[1].weight, rtol=0, atol=0)
    assert deep[0].weight.data_ptr() != deep[1].weight.data_ptr()
    assert not torch.equal(pl.proj.weight, deep[0].weight)
    tokens = clip.tokenize("a photo of a")[0]
    torch.testing.assert_close(pl.ctx.detach(), tiny.token_embedding.weight[tokens[1:3]].detach())
    _randomize(pl, seed=2)
    maps = [pl.proj, *deep]
    texts = [pl.ctx, *pl.compound_prompts_text]
    v_seen, v_handles = record_block_inputs(tiny.visual.transformer.resblocks)
    t_seen, t_handles = record_block_inputs(tiny.transformer.resblocks)
    with torch.no_grad():
        pl.eval()
        model(images)
        for h in v_handles + t_handles:
            h.remove()
        expected = [f(p) for f, p in zip(maps, texts)]
        # vision layer 0: F_0(P_0) appended after the 16 patches, then ln_pre
        assert v_seen[0].shape[0] == 1 + 16 + n
        torch.testing.assert_close(v_seen[0][-n:, 1], tiny.visual.ln_pre(expected[0]),
                                   rtol=0, atol=1e-5)
        for k in range(1, depth):                       # deeper: the last n rows are F_k(P_k)
            for b in range(images.shape[0]):
                torch.testing.assert_close(v_seen[k][-n:, b], expected[k], rtol=0, atol=1e-6)
        # text: rows 1..n are P_0 (+ positional embedding), then P_k exactly; "of a" stays fixed
        pos = tiny.positional_embedding
        emb = tiny.token_embedding(clip.tokenize("a photo of a red circle.")[0])
        torch.testing.assert_close(t_seen[0][1:1 + n, 0], texts[0] + pos[1:1 + n])
        torch.testing.assert_close(t_seen[0][1 + n:1 + n + 2, 0], emb[3:5] + pos[3:5])
        for k in range(1, depth):
            for c in range(len(CLASSES)):
                torch.testing.assert_close(t_seen[k][1:1 + n, c], texts[k], rtol=0, atol=0)
    # gradients from the image side reach the text prompts through the couplings
    pl.train()
    out = model(images)
    grads = torch.autograd.grad(out.sum(), [pl.compound_prompts_text[1]])
    assert grads[0].abs().sum() > 0


def test_vpt_is_ivlp_vision_prompts_against_fixed_zero_shot_text(tiny, images):
    """VPT's logits: the frozen features of "a photo of a <class>." against the image features
    with IVLP's vision prompts; only the vision prompts get gradients."""
    torch.manual_seed(3)
    vpt = VPTCLIP(tiny, CLASSES, n_ctx=3, depth=2)
    ivlp = IVLPCLIP(tiny, CLASSES, IVLPSettings(n_ctx_text=4, n_ctx_vision=3, depth_text=1,
                                                depth_vision=2))
    _randomize(vpt.prompt_learner, 7)
    with torch.no_grad():
        for mine, theirs in zip(vpt.prompt_learner.ctx_vision, ivlp.prompt_learner.ctx_vision):
            theirs.copy_(mine)
    zero_shot = clip.tokenize([f"a photo of a {c.replace('_', ' ')}." for c in CLASSES])
    with torch.no_grad():
        text = F.normalize(tiny.encode_text(zero_shot).float(), dim=-1)
    image = ivlp.image_features(images, list(ivlp.prompt_learner.ctx_vision))
    logits = vpt(images)
    torch.testing.assert_close(logits, vpt.logit_scale * image @ text.t(), rtol=1e-5, atol=1e-4)
    F.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in vpt.prompt_learner.parameters())
    assert [n for n, p in vpt.named_parameters() if p.requires_grad] == ["prompt_learner.ctx_vision.0",
                                                                           "prompt_learner.ctx_vision.1"]
    with pytest.raises(ValueError, match=r"VPT.PROMPT_DEPTH_VISION = 4 is not allowed: this backbone has 3 vision"):
        VPTCLIP(tiny, CLASSES, n_ctx=2, depth=4)


def test_maple_rejects_depths_beyond_the_backbone(tiny):
    with pytest.raises(ValueError, match=r"TRAINER.MAPLE.PROMPT_DEPTH = 4 is not allowed: this backbone has 3 "):
        MaPLeCLIP(tiny, CLASSES, depth=4)


def test_cocoop_batched_text_equals_a_per_image_loop(tiny, images):
    model = CoCoOpCLIP(tiny, CLASSES, ctx_init="a photo of a", text_batch=5)  # 1 image a chunk
    pl = model.prompt_learner
    assert [n for n, _ in pl.named_parameters()] == [
        "ctx", "meta_net.linear1.weight", "meta_net.linear1.bias", "meta_net.linear2.weight",
        "meta_net.linear2.bias"]
    assert tuple(pl.meta_net.linear1.weight.shape) == (32 // 16, 32)
    _randomize(pl, seed=3)
    with torch.no_grad():
        pl.eval()
        logits = model(images)
        f = F.normalize(tiny.encode_image(images), dim=-1)
        bias = pl.meta_net(f)
        tokens = clip.tokenize([f"a photo of a {c.replace('_', ' ')}." for c in CLASSES])
        emb = tiny.token_embedding(tokens)
        for i in range(images.shape[0]):
            ctx = pl.ctx + bias[i]                       # the bias shifts every context token
            x = torch.cat([emb[:, :1], ctx.expand(len(CLASSES), -1, -1), emb[:, 5:]], dim=1)
            x = x + tiny.positional_embedding
            x = tiny.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
            x = tiny.ln_final(x)[torch.arange(len(CLASSES)), tokens.argmax(-1)]
            t = F.normalize(x @ tiny.text_projection, dim=-1)
            torch.testing.assert_close(logits[i], model.logit_scale * t @ f[i], rtol=0, atol=1e-4)
        model.text_batch = 4096                          # all images in one chunk: same logits
        torch.testing.assert_close(model(images), logits, rtol=0, atol=1e-5)
        model.truncate_text = False                      # full 77-token sequences: same logits
        torch.testing.assert_close(model(images), logits, rtol=0, atol=1e-5)
        model.truncate_text = True
    pl.train()
    loss = F.cross_entropy(model(images), torch.tensor([0, 1, 2]))
    loss.backward()
    assert pl.meta_net.linear1.weight.grad.abs().sum() > 0 and pl.ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.clip_model.parameters())


def test_promptsrc_training_outputs(tiny, images):
    settings = IVLPSettings(n_ctx_text=4, n_ctx_vision=4, depth_text=2, depth_vision=2,
                            key="TRAINER.PROMPTSRC")
    model = PromptSRCCLIP(tiny, CLASSES, settings)
    assert model.text_anchors.shape == (len(CLASSES), 32)
    model.prompt_learner.train()
    out = model(images)
    with torch.no_grad():
        f_zs = F.normalize(tiny.encode_image(images), dim=-1)
        torch.testing.assert_close(out.image_zs, f_zs, rtol=0, atol=1e-5)
        torch.testing.assert_close(out.zs_logits, model.logit_scale * f_zs @ model.text_anchors.t())
        torch.testing.assert_close(out.logits, model.logit_scale * out.image @ out.text.t())
    assert out.text.requires_grad and out.image.requires_grad and not out.image_zs.requires_grad
    model.prompt_learner.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(images), out.logits, rtol=0, atol=1e-5)


def test_ivlp_errors_name_the_key(tiny):
    with pytest.raises(ValueError, match=r"PROMPTSRC.PROMPT_DEPTH_TEXT = 4 is not allowed: this backbone has 3 text"):
        IVLPCLIP(tiny, CLASSES, IVLPSettings(depth_text=4, key="TRAINER.PROMPTSRC"))
    with pytest.raises(ValueError, match=r"IVLP.PROMPT_DEPTH_VISION = 5 is not allowed: this backbone has 3 vision"):
        IVLPCLIP(tiny, CLASSES, IVLPSettings(depth_text=1, depth_vision=5))
    with pytest.raises(ValueError, match=r"TRAINER.IVLP.N_CTX_VISION = 0 is not allowed: it must be >= 1"):
        IVLPCLIP(tiny, CLASSES, IVLPSettings(depth_text=1, depth_vision=1, n_ctx_vision=0))


HALF = {"fp16": Precision("fp16", torch.float16, None, False, "cpu"),
        "bf16": Precision("bf16", torch.bfloat16, None, False, "cpu"),
        "amp": Precision("amp", torch.float32, torch.bfloat16, False, "cpu")}


def _build(name, clip_model, precision):
    torch.manual_seed(1)
    if name == "IVLP":
        return IVLPCLIP(clip_model, CLASSES, IVLPSettings(depth_text=2, depth_vision=2), precision)
    if name == "MaPLe":
        return MaPLeCLIP(clip_model, CLASSES, depth=2, precision=precision)
    if name == "CoCoOp":
        return CoCoOpCLIP(clip_model, CLASSES, ctx_init="a photo of a", precision=precision)
    if name == "VPT":
        return VPTCLIP(clip_model, CLASSES, n_ctx=2, depth=2, precision=precision)
    return PromptSRCCLIP(clip_model, CLASSES, IVLPSettings(n_ctx_text=4, n_ctx_vision=4,
                                                           depth_text=2, depth_vision=2),
                         precision)


@pytest.mark.parametrize("prec", list(HALF))
@pytest.mark.parametrize("name", ["IVLP", "MaPLe", "CoCoOp", "PromptSRC", "VPT"])
def test_half_precision_backbones_keep_fp32_prompts(name, prec, images):
    """The core's precision handling (run on CPU here with CPU half kernels; on CUDA the
    trainers pick the same ``Precision`` from ``PREC``): fp32 prompts and gradients, fp32 logits
    close to the fp32 model's."""
    torch.manual_seed(0)
    reference = _build(name, build_model_from_config("ViT-B/16", **TINY).eval(), None)
    torch.manual_seed(0)
    model = _build(name, build_model_from_config("ViT-B/16", **TINY).eval(), HALF[prec])
    assert model.clip_model.visual.conv1.weight.dtype == HALF[prec].weight_dtype
    model.prompt_learner.train()
    out = model(images)
    logits = out if torch.is_tensor(out) else out.logits
    assert logits.dtype == torch.float32
    F.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    for p in model.prompt_learner.parameters():
        assert p.dtype == torch.float32 and p.grad.dtype == torch.float32
    assert all(p.grad is None for p in model.clip_model.parameters())
    with torch.no_grad():
        model.prompt_learner.eval()
        reference.prompt_learner.eval()
        torch.testing.assert_close(model(images), reference(images), rtol=0, atol=0.25)


def test_gpa_state_round_trip_and_schedule_check():
    module = torch.nn.Linear(3, 2)
    gpa = GaussianPromptAggregator(4, 2.5, 1.0)
    gpa.add(1, module)
    with torch.no_grad():
        module.weight.add_(1.0)
    gpa.add(2, module)
    state = gpa_state(gpa)
    restored = GaussianPromptAggregator(4, 2.5, 1.0)
    restore_gpa(restored, state, "x.pth", torch.device("cpu"))
    assert restored.epochs_added == [1, 2]
    for name in ("weight", "bias"):
        torch.testing.assert_close(restored.sum[name], gpa.sum[name], rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"x.pth was written with another GPA schedule"):
        restore_gpa(GaussianPromptAggregator(5, 2.5, 1.0), state, "x.pth", torch.device("cpu"))
    with pytest.raises(ValueError, match="another GPA schedule"):
        restore_gpa(GaussianPromptAggregator(4, 3.0, 1.0), state, "x.pth", torch.device("cpu"))
    with pytest.raises(ValueError, match=r"TRAINER\.MMLOP\.GPA_MEAN or GPA_STD differ"):
        restore_gpa(GaussianPromptAggregator(4, 2.5, 2.0), state, "x.pth", torch.device("cpu"),
                    "TRAINER.MMLOP")
