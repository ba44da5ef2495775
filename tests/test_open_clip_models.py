"""open_clip backbones (``open_clip:<model>:<tag or file>``): the loaded model equals open_clip's
(GELU and QuickGELU, ViT-B/L/H/bigG layouts with their head widths and MLP ratios, ResNet), tokens
equal open_clip's tokenizer, tags are downloaded through open_clip's own function, the supported
list, clear errors (unsupported model, missing or unknown tag, wrong activation, open_clip not
installed), the input-settings check, and parameter counts on the ViT-L/14 layout."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import clip
from clip import open_clip_models as ocm
from dassl.config import get_cfg_default
from dassl.utils.errors import UserError
from tests.clip_helpers import randomize_batchnorm, tiny_model
from trainers.core.backbone import (
    BackboneDependencyError,
    BackboneError,
    BackboneNotFoundError,
    backbone_dims,
    check_input_config,
    input_config,
    known_layers,
    load_clip_to_cpu,
)

open_clip = pytest.importorskip("open_clip")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS = ["a photo of a dog.", "a centered satellite photo of Annual Crop Land.",
         "itap of a 2000 AM General Hummer SUV", "Ünïcödé: a café's crème brûlée!"]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
TINY_VISION = dict(layers=2, width=128, patch_size=8, image_size=32)
TINY_TEXT = dict(context_length=77, vocab_size=49408, width=64, heads=1, layers=2)


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    yield
    torch.set_num_threads(old)


def open_clip_model(name: str, depth: tuple[int, int] | None = None, seed: int = 0, **overrides):
    """open_clip's ``name`` with random weights; ``depth = (vision, text)`` layers replaces the
    config's (a reduced model of the same widths); ``overrides`` replace whole config entries."""
    config = open_clip.get_model_config(name)
    kwargs = dict(overrides)
    if depth is not None:
        kwargs["vision_cfg"] = {**config["vision_cfg"], "layers": depth[0]}
        kwargs["text_cfg"] = {**config["text_cfg"], "layers": depth[1]}
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None, **kwargs).eval()
    if "RN" in name:
        randomize_batchnorm(model)   # open_clip zero-inits bn3: make every block contribute
    return model


def save(state_dict: dict, path) -> str:
    path = str(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state_dict.items()}, path)
    else:
        torch.save(state_dict, path)
    return path


def tiny_open_clip(**overrides):
    return open_clip_model("ViT-B-16", vision_cfg=TINY_VISION, text_cfg=TINY_TEXT, embed_dim=32,
                           **overrides)


def max_diffs(ours, ref, res: int, texts=TEXTS) -> tuple[float, float]:
    images = torch.randn(2, 3, res, res, generator=torch.Generator().manual_seed(1))
    tokens = clip.tokenize(texts, context_length=ours.context_length)
    with torch.no_grad():
        a, b = ours.encode_image(images), ref.encode_image(images)
        c, d = ours.encode_text(tokens), ref.encode_text(tokens)
    assert a.abs().max() > 1e-3 and c.abs().max() > 1e-3          # not trivially zero
    return float((a - b).abs().max()), float((c - d).abs().max())


# name: (depth (vision, text) or None for the full model, file suffix, what it exercises)
EQUIVALENCE = {
    "ViT-B-16": (None, ".bin", "GELU, full ViT-B/16"),
    "ViT-B-32-quickgelu": (None, ".pt", "QuickGELU, full ViT-B/32"),
    "ViT-L-14": ((2, 2), ".safetensors", "ViT-L/14 widths, reduced depth, safetensors"),
    "ViT-H-14": ((1, 1), ".bin", "head width 80"),
    "ViT-bigG-14": ((1, 1), ".bin", "head width 104, MLP ratio 4.9231"),
    "RN50-quickgelu": (None, ".bin", "ResNet image tower"),
}


@pytest.mark.parametrize("name", list(EQUIVALENCE))
def test_loaded_model_equals_open_clip(tmp_path, capsys, name):
    depth, suffix, _ = EQUIVALENCE[name]
    ref = open_clip_model(name, depth)
    path = save(ref.state_dict(), tmp_path / f"weights{suffix}")
    ours, preprocess = clip.load(f"open_clip:{name}:{path}", device="cpu")
    config = open_clip.get_model_config(name)
    assert isinstance(ours, clip.model.CLIP) and not ours.training
    assert ours.dtype == torch.float32
    assert ours.state_dict().keys() == ref.state_dict().keys()    # OpenAI's names
    assert ours.activation == ("quick_gelu" if config.get("quick_gelu") else "gelu")
    assert ours.context_length == config["text_cfg"]["context_length"]
    assert ours.transformer.resblocks[0].attn.num_heads == ref.transformer.resblocks[0].attn.num_heads
    if hasattr(ours.visual, "class_embedding"):
        ref_block = ref.visual.transformer.resblocks[0]
        assert ours.visual.transformer.resblocks[0].attn.num_heads == ref_block.attn.num_heads
        assert ours.visual.transformer.resblocks[0].mlp.c_fc.out_features == ref_block.mlp.c_fc.out_features
    res = ours.visual.input_resolution
    assert res == config["vision_cfg"]["image_size"]
    img_diff, txt_diff = max_diffs(ours, ref, res)
    print(f"{name}: max |encode_image diff| {img_diff:.2e}, max |encode_text diff| {txt_diff:.2e}")
    assert img_diff <= 1e-5 and txt_diff <= 1e-5
    # the model's own tokenizer gives the same ids
    tokens = open_clip.get_tokenizer(name)(TEXTS)
    assert torch.equal(clip.tokenize(TEXTS, context_length=ours.context_length), tokens)
    # preprocessing: open_clip's defaults for a file, at the model's resolution
    assert ours.preprocess_cfg == dict(size=res, mean=tuple(CLIP_MEAN), std=tuple(CLIP_STD),
                                       interpolation="bicubic", resize_mode="shortest")
    from PIL import Image

    assert preprocess(Image.new("RGB", (300, 200))).shape == (3, res, res)
    out = capsys.readouterr().out
    assert f"open_clip {name} (file) from {path}" in out
    assert ("Note: the file's architecture differs" in out) == (depth is not None)


def test_custom_text_layout_wrapped_checkpoint_and_module_prefix(tmp_path):
    """A CustomTextCLIP (``text.`` sub-module) saved as a training checkpoint of a DDP model
    (``{"state_dict": {"module.*": ...}}``) loads to the same model."""
    ref = tiny_open_clip(force_custom_text=True)
    assert any(k.startswith("text.transformer.") for k in ref.state_dict())
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}
    path = save(wrapped, tmp_path / "epoch_3.pt")
    ours, _ = clip.load(f"open_clip:ViT-B-16:{path}", device="cpu")
    img_diff, txt_diff = max_diffs(ours, ref, 32)
    assert img_diff <= 1e-5 and txt_diff <= 1e-5


def test_fp16_layout_and_no_random_draws(tmp_path):
    ref = tiny_open_clip()
    path = save(ref.state_dict(), tmp_path / "tiny.bin")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    model, _ = clip.load(f"open_clip:ViT-B-16:{path}", device="cpu", precision="fp16")
    assert torch.equal(torch.rand(3), expected)       # built on the meta device: nothing drawn
    assert model.dtype == torch.float16 and model.token_embedding.weight.dtype == torch.float32
    assert torch.equal(model.visual.conv1.weight, ref.visual.conv1.weight.half())


def test_parse_name():
    p = ocm.parse_name("open_clip:ViT-B/16:laion2b_s34b_b88k")
    assert (p.model, p.tag, p.path) == ("ViT-B-16", "laion2b_s34b_b88k", None)
    p = ocm.parse_name("open_clip:ViT-L-14:/data/w:eights/open_clip_model.safetensors")
    assert (p.model, p.tag, p.path) == ("ViT-L-14", None, "/data/w:eights/open_clip_model.safetensors")
    p = ocm.parse_name("open_clip:ViT-L-14:weights.bin")
    assert p.path == "weights.bin" and p.tag is None
    assert ocm.parse_name("open_clip:ViT-L-14").tag is None
    assert ocm.is_open_clip_name("open_clip:x") and not ocm.is_open_clip_name("ViT-B/16")
    with pytest.raises(ocm.OpenClipError, match="names no model"):
        ocm.parse_name("open_clip::laion2b")


def test_supported_and_unsupported_models():
    supported = dict(ocm.supported_models())
    for model, tag in [("ViT-B-32", "laion2b_s34b_b79k"), ("ViT-B-16", "laion2b_s34b_b88k"),
                       ("ViT-B-16", "datacomp_xl_s13b_b90k"), ("ViT-B-16-quickgelu", "metaclip_400m"),
                       ("ViT-L-14", "laion2b_s32b_b82k"), ("ViT-L-14-quickgelu", "metaclip_fullcc"),
                       ("ViT-H-14", "laion2b_s32b_b79k"), ("ViT-g-14", "laion2b_s34b_b88k"),
                       ("ViT-bigG-14", "laion2b_s39b_b160k"), ("RN50-quickgelu", "openai")]:
        assert tag in supported[model], (model, tag)
    assert "openai" not in supported["ViT-B-16"]          # a QuickGELU tag: listed with -quickgelu
    unsupported = dict(ocm.unsupported_models())
    assert not set(supported) & set(unsupported)
    assert set(supported) | set(unsupported) == set(open_clip.list_models())
    for model, words in [("ViT-B-16-SigLIP", ["timm image tower", "logit bias", "Hugging Face tokenizer"]),
                         ("convnext_base", ["timm image tower"]),
                         ("coca_ViT-B-32", ["CoCa", "attentional pooling"]),
                         ("EVA02-B-16", ["timm image tower"]),
                         ("ViT-L-14-CLIPA", ["pooling", "Hugging Face tokenizer"]),
                         ("ViT-M-16-alt", ["layer scale"]),
                         ("roberta-ViT-B-32", ["Hugging Face text tower"]),
                         ("ViT-H-14-worldwide", ["Hugging Face tokenizer"])]:
        reasons = "; ".join(unsupported[model])
        for w in words:
            assert w in reasons, (model, reasons)


def test_python_m_clip_models_lists_them():
    r = subprocess.run([sys.executable, "-m", "clip.models"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for line in ("ViT-B/16", "ViT-bigG-14: laion2b_s39b_b160k", "ViT-B-16-quickgelu: openai, dfn2b",
                 "open_clip:<model>:<tag>", "Not supported"):
        assert line in out, line
    assert "SigLIP" not in out


@pytest.mark.parametrize("name,words", [
    ("open_clip:ViT-B-16", ["names no weights", "random weights are never used",
                            "laion2b_s34b_b88k", "open_clip:ViT-B-16:/path/to/weights"]),
    ("open_clip:ViT-B-16:laion5b", ["unknown pretrained tag 'laion5b'", "datacomp_xl_s13b_b90k"]),
    ("open_clip:ViT-B-16-SigLIP:webli", ["not supported", "timm image tower",
                                         "SigLIP's sigmoid logit bias", "python -m clip.models"]),
    ("open_clip:convnext_base:laion400m_s13b_b51k", ["not supported", "a timm image tower"]),
    ("open_clip:ViT-X-99:foo", ["unknown open_clip model 'ViT-X-99'"]),
    ("open_clip:ViT-B-16:openai", ["trained with QuickGELU", "uses GELU",
                                   "use open_clip:ViT-B-16-quickgelu:openai"]),
])
def test_clear_errors(monkeypatch, name, words):
    def no_download(*args, **kwargs):
        raise AssertionError("nothing may be downloaded for a refused name")

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", no_download)
    with pytest.raises(ocm.OpenClipError) as info:
        clip.load(name, device="cpu")
    for w in words:
        assert w in str(info.value), str(info.value)
    with pytest.raises(BackboneError) as info:          # the trainers' loader: a UserError
        load_clip_to_cpu(name)
    assert isinstance(info.value, UserError) and str(info.value).startswith(f"MODEL.BACKBONE.NAME {name!r}")


def test_missing_weights_file():
    with pytest.raises(BackboneNotFoundError, match="open_clip weights file not found: /no/such/w.bin"):
        load_clip_to_cpu("open_clip:ViT-B-16:/no/such/w.bin")


def test_open_clip_not_installed_gives_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)
    hint = 'pip install -e ".[open_clip]"'
    with pytest.raises(ImportError, match=r"open_clip, which is not installed.*\.\[open_clip\]"):
        clip.load("open_clip:ViT-B-16:laion2b_s34b_b88k", device="cpu")
    with pytest.raises(BackboneDependencyError) as info:
        load_clip_to_cpu("open_clip:ViT-B-16:laion2b_s34b_b88k")
    assert hint in str(info.value) and isinstance(info.value, UserError)
    assert known_layers("open_clip:ViT-B-16:laion2b_s34b_b88k") is None
    from clip.models import describe

    assert hint in describe()
    assert known_layers("ViT-B/16") == (12, 12)          # OpenAI names need no open_clip


@pytest.fixture(scope="module")
def b32(tmp_path_factory):
    """A full-size ViT-B-32-quickgelu in open_clip (random weights) and its saved file."""
    ref = open_clip_model("ViT-B-32-quickgelu")
    path = save(ref.state_dict(), tmp_path_factory.mktemp("b32") / "open_clip_pytorch_model.bin")
    return ref, path


def test_pretrained_tag_is_downloaded_through_open_clip(b32, monkeypatch, tmp_path):
    ref, path = b32
    calls = []

    def fake_download(cfg, prefer_hf_hub=True, cache_dir=None):
        calls.append((dict(cfg), cache_dir))
        return path

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", fake_download)
    name = "open_clip:ViT-B-32-quickgelu:laion400m_e32"
    model, preprocess = clip.load(name, device="cpu", download_root=str(tmp_path))
    assert calls == [(open_clip.get_pretrained_cfg("ViT-B-32-quickgelu", "laion400m_e32"), str(tmp_path))]
    img_diff, txt_diff = max_diffs(model, ref, 224)
    assert img_diff <= 1e-5 and txt_diff <= 1e-5
    assert model.backbone_name == name and model.activation == "quick_gelu"
    assert model.preprocess_cfg == dict(size=224, mean=tuple(CLIP_MEAN), std=tuple(CLIP_STD),
                                        interpolation="bicubic", resize_mode="shortest")
    frozen = load_clip_to_cpu(name)                     # the trainers' loader: frozen fp32
    assert not any(p.requires_grad for p in frozen.parameters()) and frozen.dtype == torch.float32
    assert known_layers(name) == (12, 12)
    # the tag's weights must be the named model: a reduced file is refused for a tag
    small = save(tiny_open_clip().state_dict(), tmp_path / "small.bin")
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", lambda cfg, **kw: small)
    with pytest.raises(BackboneError, match="do not match open_clip's ViT-B-32-quickgelu config"):
        load_clip_to_cpu(name)

    def offline(cfg, **kw):
        raise OSError("network unreachable")

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", offline)
    with pytest.raises(RuntimeError, match="could not download.*network unreachable.*give the file"):
        clip.load(name, device="cpu")


def test_known_layers_and_input_config_without_loading():
    assert known_layers("open_clip:ViT-L-14:laion2b_s32b_b82k") == (12, 24)
    assert known_layers("open_clip:ViT-bigG-14:laion2b_s39b_b160k") == (32, 48)
    assert known_layers("open_clip:RN50-quickgelu:openai") == (12, 0)
    assert known_layers("open_clip:ViT-L-14:/some/file.bin") is None
    assert known_layers("open_clip:ViT-B-16-SigLIP:webli") is None
    cfg = input_config("open_clip:ViT-L-14:laion2b_s32b_b82k")     # LAION-2B L/14: Inception stats
    assert cfg == dict(size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic",
                       resize_mode="shortest")
    assert input_config("open_clip:ViT-H-14-378-quickgelu:dfn5b")["size"] == 378
    assert input_config("ViT-B/16") is None
    from open_clip.transform import PreprocessCfg  # a file gets open_clip's defaults

    defaults = PreprocessCfg()
    assert ocm.preprocess_config({}, 224) == dict(size=224, mean=defaults.mean, std=defaults.std,
                                                  interpolation=defaults.interpolation,
                                                  resize_mode=defaults.resize_mode)


def _cfg(size=(224, 224), mean=CLIP_MEAN, std=CLIP_STD, interpolation="bicubic"):
    cfg = get_cfg_default()
    cfg.MODEL.BACKBONE.NAME = "open_clip:ViT-L-14:laion2b_s32b_b82k"
    cfg.INPUT.SIZE = size
    cfg.INPUT.PIXEL_MEAN = list(mean)
    cfg.INPUT.PIXEL_STD = list(std)
    cfg.INPUT.INTERPOLATION = interpolation
    return cfg


def test_input_settings_are_checked_against_the_model(capsys):
    model = tiny_model()                      # 32 px
    model.preprocess_cfg = dict(size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                                interpolation="bicubic", resize_mode="squash")
    with pytest.raises(BackboneError) as info:
        check_input_config(_cfg(), model)
    message = str(info.value)
    for words in ["open_clip:ViT-L-14:laion2b_s32b_b82k", "INPUT.SIZE is (224, 224)",
                  "INPUT.PIXEL_MEAN is [0.48145466", "trained with [0.5, 0.5, 0.5]",
                  'INPUT.SIZE "(32, 32)" INPUT.PIXEL_MEAN "[0.5, 0.5, 0.5]" INPUT.PIXEL_STD "[0.5, 0.5, 0.5]"']:
        assert words in message, message
    assert isinstance(info.value, UserError)
    check_input_config(_cfg((32, 32), (0.5,) * 3, (0.5,) * 3, "bilinear"), model)
    out = capsys.readouterr().out
    assert "INPUT.INTERPOLATION is 'bilinear'" in out and "resize_mode 'squash'" in out
    # OpenAI models (no preprocess_cfg): only the size is checked, as before
    plain = tiny_model()
    check_input_config(_cfg((32, 32), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), plain)
    with pytest.raises(BackboneError, match=r"cfg_imsize \(224\) must equal to clip_imsize \(32\)"):
        check_input_config(_cfg(), plain)


def test_prompt_parameters_follow_the_widths_on_vit_l14(tmp_path):
    """MMLoP at depth 9 on the ViT-L/14 layout (text 768, vision 1024): 9 x (4 + 768 + 1024);
    the towers are cut to 9 layers (enough for depth 9) to keep the test small."""
    from trainers.ivlp import IVLPCLIP, IVLPSettings
    from trainers.mmlop import MMLoPCLIP, MMLoPSettings

    ref = open_clip_model("ViT-L-14", depth=(9, 9))
    path = save(ref.state_dict(), tmp_path / "vit_l14_9layers.bin")
    del ref
    model = load_clip_to_cpu(f"open_clip:ViT-L-14:{path}")
    assert backbone_dims(model) == (768, 1024, 9, 9)
    classes = ["cat", "dog"]
    mmlop = MMLoPCLIP(model, classes, MMLoPSettings(prompt_depth=9))
    n = sum(p.numel() for p in mmlop.prompt_learner.parameters() if p.requires_grad)
    assert n == 9 * (4 + 768 + 1024) == 16_164
    ivlp = IVLPCLIP(model, classes, IVLPSettings(n_ctx_text=4, n_ctx_vision=4, depth_text=9,
                                                 depth_vision=9))
    assert sum(p.numel() for p in ivlp.prompt_learner.parameters()) == 9 * 4 * (768 + 1024)
