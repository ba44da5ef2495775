"""clip.model: OpenAI layout, equivalence with open_clip, architecture inference, precision."""
import json
import os

import pytest
import torch

import clip
from clip.model import (
    CLIP,
    MODEL_CONFIGS,
    LayerNorm,
    ModifiedResNet,
    Transformer,
    VisionTransformer,
    build_model,
    build_model_from_config,
    config_from_state_dict,
    convert_weights,
)
from tests.clip_helpers import TINY_RESNET, TINY_VIT, randomize_batchnorm, tiny_model

open_clip = pytest.importorskip("open_clip")

TEXTS = ["a photo of a dog.", "a centered satellite photo of Annual Crop Land.",
         "itap of a 2000 AM General Hummer SUV"]


def _open_clip_model(name):
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained=None, force_quick_gelu=True)
    return model.eval()


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("oc_name,our_name,res", [("ViT-B-16", "ViT-B/16", 224),
                                                  ("RN50", "RN50", 224)])
def test_equivalence_with_open_clip(oc_name, our_name, res):
    ref = _open_clip_model(oc_name)
    if our_name.startswith("RN"):
        randomize_batchnorm(ref)   # open_clip zero-inits bn3; make every block contribute
    state_dict = ref.state_dict()
    ours = build_model(state_dict, precision="fp32")
    # Same names, same shapes: OpenAI-style open_clip models use OpenAI's parameter names.
    assert ours.state_dict().keys() == state_dict.keys()
    assert config_from_state_dict(state_dict) == MODEL_CONFIGS[our_name]

    torch.manual_seed(1)
    images = torch.randn(2, 3, res, res)
    tokens = clip.tokenize(TEXTS[:2])
    assert torch.equal(tokens, open_clip.tokenize(TEXTS[:2]))
    with torch.no_grad():
        img_ours, img_ref = ours.encode_image(images), ref.encode_image(images)
        txt_ours, txt_ref = ours.encode_text(tokens), ref.encode_text(tokens)
        logits_img, logits_txt = ours(images, tokens)
    assert img_ours.shape == (2, MODEL_CONFIGS[our_name]["embed_dim"])
    assert img_ours.abs().max() > 1e-2
    torch.testing.assert_close(img_ours, img_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(txt_ours, txt_ref, atol=1e-5, rtol=1e-5)
    # forward = scaled cosine similarities, both directions
    f_i = img_ours / img_ours.norm(dim=-1, keepdim=True)
    f_t = txt_ours / txt_ours.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(logits_img, ours.logit_scale.exp() * f_i @ f_t.T)
    torch.testing.assert_close(logits_txt, logits_img.T)


@pytest.mark.parametrize("name", list(MODEL_CONFIGS))
def test_configs_match_open_clip_and_are_recovered_from_state_dict(name):
    oc_name = name.replace("/", "-").replace("@336px", "-336")
    path = os.path.join(os.path.dirname(open_clip.__file__), "model_configs", f"{oc_name}.json")
    with open(path) as f:
        oc = json.load(f)
    cfg = MODEL_CONFIGS[name]
    vision, text = oc["vision_cfg"], oc["text_cfg"]
    layers = vision["layers"]
    assert cfg["embed_dim"] == oc["embed_dim"]
    assert cfg["image_resolution"] == vision["image_size"]
    assert cfg["vision_layers"] == (tuple(layers) if isinstance(layers, list) else layers)
    assert cfg["vision_width"] == vision["width"]
    assert cfg["vision_patch_size"] == vision.get("patch_size")
    assert (cfg["context_length"], cfg["vocab_size"]) == (text["context_length"], text["vocab_size"])
    assert (cfg["transformer_width"], cfg["transformer_heads"], cfg["transformer_layers"]) == (
        text["width"], text["heads"], text["layers"])
    # build_model's inference recovers the config from the parameter shapes alone
    with torch.device("meta"):
        model = CLIP(**cfg)
    assert config_from_state_dict(model.state_dict()) == cfg
    assert model.visual.input_resolution == cfg["image_resolution"]
    assert model.visual.output_dim == cfg["embed_dim"]


def _block_params(d):
    # attention in_proj (3d^2 + 3d) + out_proj (d^2 + d) + 2 LayerNorms (4d) + MLP d->4d->d (8d^2 + 5d)
    return 12 * d * d + 13 * d


def test_vit_b16_parameter_count():
    cfg = MODEL_CONFIGS["ViT-B/16"]
    vw, tw, e = cfg["vision_width"], cfg["transformer_width"], cfg["embed_dim"]
    grid = cfg["image_resolution"] // cfg["vision_patch_size"]
    vision = (3 * vw * cfg["vision_patch_size"] ** 2      # conv1, no bias
              + vw + (grid * grid + 1) * vw                # class + positional embedding
              + 2 * vw + 2 * vw                            # ln_pre, ln_post
              + cfg["vision_layers"] * _block_params(vw)
              + vw * e)                                    # proj
    text = (cfg["vocab_size"] * tw + cfg["context_length"] * tw
            + cfg["transformer_layers"] * _block_params(tw)
            + 2 * tw + tw * e + 1)                         # ln_final, text_projection, logit_scale
    assert vision + text == 149_620_737                    # OpenAI's ViT-B/16: 149.6M
    with torch.device("meta"):
        model = CLIP(**cfg)
    assert sum(p.numel() for p in model.parameters()) == 149_620_737


def test_module_attributes_used_by_prompt_learners():
    model = tiny_model()
    v = model.visual
    assert isinstance(v, VisionTransformer) and isinstance(v.transformer, Transformer)
    for name in ("conv1", "class_embedding", "positional_embedding", "ln_pre", "ln_post", "proj"):
        assert hasattr(v, name)
    assert v.input_resolution == 32 and v.output_dim == 32
    assert isinstance(model.transformer.resblocks, torch.nn.ModuleList)
    assert model.transformer.width == 64 and model.transformer.layers == 2
    assert isinstance(model.ln_final, LayerNorm)
    assert model.context_length == 77 and model.vocab_size == 49408
    assert model.dtype == torch.float32
    assert isinstance(tiny_model(TINY_RESNET).visual, ModifiedResNet)
    # the causal masks are buffers (follow .to()) but not state: official files load strictly
    assert not any("attn_mask" in k for k in model.state_dict())


def test_build_model_accepts_and_drops_openai_extra_keys():
    model = tiny_model()
    sd = dict(model.state_dict())
    sd["input_resolution"] = torch.tensor(32)
    sd["context_length"] = torch.tensor(77)
    sd["vocab_size"] = torch.tensor(49408)
    half = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    rebuilt = build_model(half, precision="fp32")
    assert not rebuilt.training and rebuilt.dtype == torch.float32
    for k, v in rebuilt.state_dict().items():
        assert v.dtype == sd[k].dtype
        torch.testing.assert_close(v, sd[k].half().float() if v.is_floating_point() else sd[k])
    with pytest.raises(ValueError, match="not a CLIP state dict"):
        build_model({"foo": torch.zeros(1)})
    with pytest.raises(ValueError, match="precision"):
        build_model(sd, precision="bf16")


@pytest.mark.parametrize("config", ["vit", "resnet"])
def test_build_model_returns_openai_fp16_layout(config):
    """OpenAI's build_model converts (convert_weights) and then loads: the converted tensors hold
    the fp16 rounding of the given values, the others the values themselves, in fp32."""
    model = tiny_model(TINY_RESNET if config == "resnet" else TINY_VIT)
    if config == "resnet":
        randomize_batchnorm(model)
    sd = model.state_dict()
    built = build_model(sd)
    assert not built.training and built.dtype == torch.float16
    expected = convert_weights(tiny_model(TINY_RESNET if config == "resnet" else TINY_VIT))
    for (k, v), (k2, ref) in zip(built.state_dict().items(), expected.state_dict().items()):
        assert k == k2 and v.dtype == ref.dtype, k          # the same layout as convert_weights
        assert torch.equal(v, sd[k].to(v.dtype)), k         # rounded once, from the given values
    half = {k for k, v in built.state_dict().items() if v.dtype == torch.float16}
    assert {"visual.conv1.weight", "text_projection", "transformer.resblocks.0.attn.in_proj_weight",
            "transformer.resblocks.0.attn.out_proj.bias", "transformer.resblocks.1.mlp.c_fc.weight"} <= half
    assert not half & {"token_embedding.weight", "positional_embedding", "ln_final.weight",
                       "logit_scale", "transformer.resblocks.0.ln_1.weight"}
    # no memory shared with the caller's state dict
    built.token_embedding.weight.data.add_(1)
    assert not torch.equal(built.token_embedding.weight.float(), sd["token_embedding.weight"])
    with torch.no_grad():   # fp32 inputs are cast by encode_image, as OpenAI's
        ref = build_model(sd, precision="fp32").encode_text(clip.tokenize(TEXTS[:2]))
        out = built.encode_text(clip.tokenize(TEXTS[:2])) if config == "vit" else None
    if out is not None:
        assert out.dtype == torch.float16
        assert (torch.nn.functional.cosine_similarity(out.float(), ref, dim=-1) > 0.99).all()


def test_build_model_rejects_design_details_with_advice():
    with pytest.raises(TypeError, match="MaPLe/PromptSRC repositories.*import_upstream_checkpoint"):
        build_model(tiny_model().state_dict(), {"trainer": "IVLP", "vision_depth": 0})


def test_text_transformer_is_causal_on_truncated_sequences():
    model = tiny_model()
    torch.manual_seed(0)
    x = torch.randn(77, 3, 64)                       # [L, N, D], sequence first
    with torch.no_grad():
        full = model.transformer(x)
        for n in (1, 10, 40):
            part = model.transformer(x[:n])
            assert part.shape == (n, 3, 64)
            torch.testing.assert_close(part, full[:n], atol=1e-5, rtol=1e-5)
        # one block on its own, too
        block = model.transformer.resblocks[0]
        torch.testing.assert_close(block(x[:10]), block(x)[:10], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="context_length"):
        model.transformer(torch.randn(78, 1, 64))


def test_encode_text_matches_coop_text_encoder_and_short_inputs():
    """CoOp's TextEncoder (embeddings in, permute NLD->LND, EOT pooling) gives encode_text."""
    model = tiny_model()
    tokens = clip.tokenize(TEXTS)
    with torch.no_grad():
        ref = model.encode_text(tokens)
        x = model.token_embedding(tokens).type(model.dtype) + model.positional_embedding
        x = model.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = model.ln_final(x).type(model.dtype)
        coop = x[torch.arange(x.shape[0]), tokens.argmax(-1)] @ model.text_projection
        torch.testing.assert_close(coop, ref)
        # token ids shorter than the context (trailing padding dropped) give the same features
        n = int(tokens.argmax(-1).max()) + 1
        torch.testing.assert_close(model.encode_text(tokens[:, :n]), ref, atol=1e-5, rtol=1e-5)


def test_init_is_sane_and_tiny_model_trains():
    model = tiny_model()
    torch.manual_seed(0)
    images = torch.randn(4, 3, 32, 32)
    tokens = clip.tokenize(["a dog", "a cat", "a car", "a tree"])
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    labels = torch.arange(4)
    losses = []
    for _ in range(30):
        logits_img, logits_txt = model(images, tokens)
        loss = (torch.nn.functional.cross_entropy(logits_img, labels)
                + torch.nn.functional.cross_entropy(logits_txt, labels)) / 2
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_resnet_tower_runs_and_counts_blocks():
    model = tiny_model(TINY_RESNET)
    with torch.no_grad():
        out = model.encode_image(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 32)
    sd = model.state_dict()
    for name in ("visual.layer1.0.downsample.0.weight", "visual.layer4.0.downsample.1.running_var",
                 "visual.attnpool.q_proj.weight", "visual.attnpool.positional_embedding",
                 "visual.bn3.weight"):
        assert name in sd
    assert config_from_state_dict(sd) == TINY_RESNET


def test_convert_weights_matches_openai_layout():
    model = convert_weights(tiny_model())
    sd = dict(model.named_parameters())
    half = {k for k, v in sd.items() if v.dtype == torch.float16}
    fp32 = set(sd) - half
    assert model.dtype == torch.float16
    for k in ("visual.conv1.weight", "visual.proj", "text_projection",
              "transformer.resblocks.0.attn.in_proj_weight",
              "transformer.resblocks.0.attn.in_proj_bias",
              "transformer.resblocks.0.attn.out_proj.weight", "transformer.resblocks.1.mlp.c_fc.bias"):
        assert k in half
    for k in ("token_embedding.weight", "positional_embedding", "visual.class_embedding",
              "visual.positional_embedding", "ln_final.weight", "visual.ln_pre.bias",
              "transformer.resblocks.0.ln_1.weight", "logit_scale"):
        assert k in fp32


def test_layernorm_computes_in_fp32_and_returns_input_dtype():
    ln = LayerNorm(8)
    x = torch.randn(2, 8).half()
    out = ln(x)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), torch.nn.functional.layer_norm(x.float(), (8,)),
                               atol=1e-3, rtol=1e-3)


def test_encoders_under_autocast():
    model = tiny_model()
    images, tokens = torch.randn(2, 3, 32, 32), clip.tokenize(TEXTS[:2])
    with torch.no_grad():
        ref_i, ref_t = model.encode_image(images), model.encode_text(tokens)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out_i, out_t = model.encode_image(images), model.encode_text(tokens)
    for out, ref in ((out_i, ref_i), (out_t, ref_t)):
        assert torch.isfinite(out).all()
        cos = torch.nn.functional.cosine_similarity(out.float(), ref, dim=-1)
        assert (cos > 0.99).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_on_cuda():
    model = convert_weights(tiny_model()).cuda()
    images, tokens = torch.randn(2, 3, 32, 32).cuda(), clip.tokenize(TEXTS[:2]).cuda()
    with torch.no_grad():
        ref = tiny_model().cuda()
        for out, exp in ((model.encode_image(images), ref.encode_image(images)),
                         (model.encode_text(tokens), ref.encode_text(tokens))):
            assert out.dtype == torch.float16
            cos = torch.nn.functional.cosine_similarity(out.float(), exp, dim=-1)
            assert (cos > 0.999).all()
        with torch.autocast("cuda", dtype=torch.float16):
            assert torch.isfinite(ref.encode_text(tokens)).all()


def test_build_model_from_config_overrides_and_unknown_name():
    model = build_model_from_config("ViT-B/32", vision_layers=1, transformer_layers=1)
    assert model.visual.transformer.layers == 1 and model.transformer.layers == 1
    assert model.visual.input_resolution == 224
    with pytest.raises(KeyError, match="ViT-B/16"):
        build_model_from_config("ViT-H/14")


def test_package_exports():
    from clip import clip as clip_module
    assert clip.build_model is build_model and clip_module.build_model is build_model
    assert {"available_models", "load", "tokenize", "build_model"} <= set(clip.__all__)
    assert clip.model.CLIP is CLIP
    assert clip.simple_tokenizer.SimpleTokenizer
