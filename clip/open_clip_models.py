"""open_clip models (LAION, DataComp, MetaCLIP, DFN, ...) as this project's OpenAI-layout ``CLIP``.

Names
    ``open_clip:<model>:<tag>``   a pretrained tag of open_clip's registry, e.g.
                                  ``open_clip:ViT-B-16:laion2b_s34b_b88k``; the file is downloaded
                                  and cached by open_clip's own mechanism
                                  (``open_clip.pretrained.download_pretrained``: the Hugging Face
                                  hub cache, or ``~/.cache/clip`` for URL downloads; ``cache_dir`` /
                                  ``clip.load(download_root=...)`` overrides it).
    ``open_clip:<model>:<path>``  a local open_clip weights file (``.bin``, ``.pt``, ``.pth``,
                                  ``.safetensors``; a training checkpoint with a ``state_dict``
                                  entry works too).
    ``open_clip:<model>``         refused: random weights are never used silently.

``<model>`` is an open_clip model config name (``open_clip.list_models()``; ``ViT-B/16`` is read
as ``ViT-B-16``). open_clip is an optional dependency (``pip install -e ".[open_clip]"``); it is
imported only when such a name is used.

Supported models
    Those whose towers are CLIP transformers in OpenAI's layout, i.e. whose open_clip config uses
    only: a ViT image tower (``layers`` an int) or OpenAI's ModifiedResNet (``layers`` a 4-tuple)
    with any ``width``, ``head_width``, ``mlp_ratio``, ``patch_size``, square ``image_size``; a
    causal text transformer with argmax (end-of-text) pooling and a bias-free projection, any
    ``width``, ``heads``, ``layers``, ``mlp_ratio``, ``context_length`` and a ``vocab_size`` that
    holds the CLIP BPE; QuickGELU or GELU. Every other config entry must have open_clip's default
    value; one that does not (timm towers, Hugging Face text towers and tokenizers, SigLIP's
    logit bias, CoCa's decoder, layer scale, other pooling or normalization, custom attention
    blocks, ...) makes the model unsupported, and the error names the entries
    (``unsupported_features``). ``python -m clip.models`` lists the supported models and tags.

From open_clip's config to this project's model
    The architecture is read from the weights' shapes (widths, layers, patch size, resolution,
    context length, vocabulary, MLP widths: a local file may be a reduced model) and completed
    by the named config with what shapes cannot tell: the activation (``quick_gelu``), the
    attention head width (``vision_cfg.head_width``; text: ``width / heads``) and the tokenizer.
    For a pretrained tag the two must agree (else the download does not hold that model); for a
    file a difference is printed. The parameters keep OpenAI's names (open_clip uses them too;
    ``module.`` prefixes and a ``text.`` sub-module are mapped), so prompt learners, trainers,
    checkpoints and the exact speed-ups work unchanged. The model is built on the meta device
    and assigned the file's tensors: no random numbers are drawn and no second copy is made.

Preprocessing
    The model carries ``preprocess_cfg`` (``size``, ``mean``, ``std``, ``interpolation``,
    ``resize_mode``): open_clip's defaults (OpenAI's normalization, bicubic, shortest-edge resize
    then center crop), the pretrained tag's values over them, and the resolution of the weights.
    ``PromptTrainer.load_backbone`` checks ``INPUT.SIZE`` and ``INPUT.PIXEL_MEAN/STD`` against it
    (``trainers.core.backbone.check_input_config``).

Tokenizer
    The supported models use open_clip's ``SimpleTokenizer``, the CLIP BPE that ``clip.tokenize``
    implements, at the model's ``context_length`` (``model.context_length``): token ids are the
    same for every text that fits.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import torch

from .model import CLIP, build_model_with_config, config_from_state_dict

PREFIX = "open_clip:"
INSTALL_HINT = 'pip install -e ".[open_clip]"   (or: pip install "open-clip-torch>=2.20")'
WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors")
BPE_VOCAB_SIZE = 49408      # ids of the CLIP BPE, <|endoftext|> (49407) the largest

# Config entries that may take any value: the architecture entries this module maps, and entries
# that change nothing in a frozen model at evaluation (training-time patch dropout, the source of
# initial weights, extra outputs, ids used only by pooling types that are refused anyway).
_MAPPED_TOP = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "custom_text", "init_logit_scale",
               "nonscalar_logit_scale"}
_MAPPED_VISION = {"layers", "width", "head_width", "mlp_ratio", "patch_size", "image_size",
                  "patch_dropout", "timm_model_pretrained", "output_tokens"}
_MAPPED_TEXT = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio", "pad_id",
                "eos_id", "hf_model_pretrained", "tokenizer_mode", "output_tokens"}

# What a non-default entry means, for the error message.
_FEATURES = {
    "timm_model_name": "a timm image tower",
    "timm_pool": "timm pooling", "timm_proj": "a timm projection", "timm_proj_bias": "a timm projection",
    "timm_drop": "timm head dropout", "timm_drop_path": "timm stochastic depth",
    "ls_init_value": "layer scale",
    "attentional_pool": "attentional pooling", "attn_pooler_queries": "attentional pooling",
    "attn_pooler_heads": "attentional pooling",
    "no_ln_pre": "no LayerNorm before the transformer",
    "pos_embed_type": "a fixed positional embedding",
    "final_ln_after_pool": "the final LayerNorm after pooling",
    "pool_type": "another pooling type",
    "act_kwargs": "activation options", "norm_kwargs": "LayerNorm options",
    "block_type": "custom attention blocks", "qk_norm": "custom attention blocks",
    "scaled_cosine_attn": "custom attention blocks", "scale_heads": "custom attention blocks",
    "scale_attn_inner": "custom attention blocks", "scale_attn": "custom attention blocks",
    "scale_fc": "custom attention blocks",
    "hf_model_name": "a Hugging Face text tower", "hf_proj_type": "a Hugging Face text tower",
    "hf_pooler_type": "a Hugging Face text tower",
    "hf_tokenizer_name": "a Hugging Face tokenizer", "tokenizer_kwargs": "tokenizer options",
    "embed_cls": "a text CLS token (CoCa)",
    "no_causal_mask": "a bidirectional text tower",
    "proj_bias": "a text projection with bias", "proj_type": "another text projection",
    "init_logit_bias": "SigLIP's sigmoid logit bias",
    "multimodal_cfg": "CoCa's multimodal text decoder",
}


class OpenClipError(ValueError):
    """A bad ``open_clip:`` name, an unsupported model, or weights that do not fit it."""


class OpenClipNotInstalledError(ImportError):
    """open_clip (the optional extra) is needed for an ``open_clip:`` name and is missing."""


@dataclasses.dataclass(frozen=True)
class OpenClipName:
    """A parsed ``open_clip:<model>[:<tag or path>]``: exactly one of ``tag`` / ``path`` is set
    when weights are named."""

    name: str
    model: str
    tag: str | None = None
    path: str | None = None


def is_open_clip_name(name: Any) -> bool:
    """Whether ``name`` (a ``MODEL.BACKBONE.NAME``) names an open_clip model."""
    return isinstance(name, str) and name.startswith(PREFIX)


def _looks_like_path(text: str) -> bool:
    return (text.lower().endswith(WEIGHT_SUFFIXES) or "/" in text or os.sep in text
            or text.startswith(("~", ".")) or os.path.isfile(os.path.expanduser(text)))


def parse_name(name: str) -> OpenClipName:
    """Split ``open_clip:<model>[:<tag or path>]`` (no import of open_clip, no file access but a
    ``isfile`` test). A path may itself hold colons: only the first one after the model splits."""
    if not is_open_clip_name(name):
        raise OpenClipError(f"{name!r} does not start with {PREFIX!r}")
    model, _, weights = name[len(PREFIX):].partition(":")
    model, weights = model.strip().replace("/", "-"), weights.strip()
    if not model:
        raise OpenClipError(f"{name!r} names no model: use {PREFIX}<model>:<pretrained tag> or "
                            f"{PREFIX}<model>:<weights file> (python -m clip.models lists them)")
    if not weights:
        return OpenClipName(name, model)
    if _looks_like_path(weights):
        return OpenClipName(name, model, path=os.path.expanduser(weights))
    return OpenClipName(name, model, tag=weights)


def import_open_clip():
    """The ``open_clip`` module, or ``OpenClipNotInstalledError`` saying how to install it."""
    try:
        import open_clip
    except ImportError:
        raise OpenClipNotInstalledError(
            "open_clip backbones (MODEL.BACKBONE.NAME open_clip:...) need the optional package "
            f"open_clip, which is not installed: {INSTALL_HINT}") from None
    return open_clip


def model_config(model: str) -> dict:
    """open_clip's config of ``model`` (a copy), or ``OpenClipError`` for an unknown name."""
    oc = import_open_clip()
    config = oc.get_model_config(model)
    if config is None:
        close = [m for m in oc.list_models() if m.lower().startswith(model.lower().split("-")[0])]
        raise OpenClipError(
            f"unknown open_clip model {model!r}" + (f" (similar: {', '.join(close[:12])})" if close else "")
            + "; python -m clip.models lists the supported models and their pretrained tags")
    return config


def _defaults(cls) -> dict:
    return {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
            for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}


def _towers(config: Mapping) -> tuple[dict, dict]:
    """``vision_cfg`` and ``text_cfg`` completed with open_clip's defaults."""
    oc = import_open_clip()
    vision = {**_defaults(oc.CLIPVisionCfg), **config.get("vision_cfg", {})}
    text = {**_defaults(oc.CLIPTextCfg), **config.get("text_cfg", {})}
    return vision, text


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def unsupported_features(model: str, config: Mapping) -> list[str]:
    """What makes ``model`` (open_clip config ``config``) other than CLIP transformers in
    OpenAI's layout, one ``"<what> (<key> = <value>)"`` entry each; empty when supported."""
    oc = import_open_clip()
    found = []

    def add(key: str, value, feature: str | None = None) -> None:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        found.append(f"{feature or _FEATURES.get(key.split('.')[-1], 'an unknown setting')} "
                     f"({key} = {shown})")

    for key, value in config.items():
        if key not in _MAPPED_TOP and value not in (None, False, {}):
            add(key, value)
    for tower, cls, mapped, foreign in (("vision_cfg", oc.CLIPVisionCfg, _MAPPED_VISION, "timm_"),
                                        ("text_cfg", oc.CLIPTextCfg, _MAPPED_TEXT, "hf_")):
        defaults = _defaults(cls)
        entries = config.get(tower, {})
        # a timm / Hugging Face tower is one reason: its own options are not listed one by one
        tower_key = f"{foreign}model_name"
        for key, value in entries.items():
            if key in mapped or (entries.get(tower_key) and key.startswith(foreign) and key != tower_key
                                 and key != "hf_tokenizer_name"):
                continue
            if key not in defaults or not _same(value, defaults[key]):
                add(f"{tower}.{key}", value)
    vision, text = _towers(config)
    if "timm_model_name" not in config.get("vision_cfg", {}):
        for key in ("image_size", "patch_size"):
            value = vision[key]
            if isinstance(value, (list, tuple)) and len(set(value)) != 1:
                add(f"vision_cfg.{key}", value, "non-square images or patches")
    if "hf_model_name" not in config.get("text_cfg", {}) and text["vocab_size"] < BPE_VOCAB_SIZE:
        add("text_cfg.vocab_size", text["vocab_size"], "a vocabulary other than the CLIP BPE")
    if "siglip" in model.lower() and not found:
        add("model name", model, "SigLIP's tokenizer (open_clip picks it by name)")
    return found


def check_supported(model: str, config: Mapping) -> None:
    """``OpenClipError`` naming what is not supported, unless ``model`` is supported."""
    found = unsupported_features(model, config)
    if found:
        raise OpenClipError(
            f"open_clip model {model!r} is not supported: it has " + "; ".join(found) + ". This "
            "project supports open_clip models whose towers are CLIP transformers in OpenAI's "
            "layout (ViT-B/32, B/16, L/14, H/14, g/14, bigG/14 families and OpenAI's ResNets, "
            "with their LAION, DataComp, MetaCLIP, DFN, ... tags): python -m clip.models lists them")


def _square(value) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def architecture(config: Mapping) -> dict:
    """``CLIP`` keyword arguments of a supported open_clip config."""
    vision, text = _towers(config)
    resnet = isinstance(vision["layers"], (list, tuple))
    width, twidth = int(vision["width"]), int(text["width"])
    arch = dict(
        embed_dim=int(config["embed_dim"]),
        image_resolution=_square(vision["image_size"]),
        vision_layers=tuple(vision["layers"]) if resnet else int(vision["layers"]),
        vision_width=width,
        vision_patch_size=None if resnet else _square(vision["patch_size"]),
        context_length=int(text["context_length"]),
        vocab_size=int(text["vocab_size"]),
        transformer_width=twidth,
        transformer_heads=int(text["heads"]),
        transformer_layers=int(text["layers"]),
        vision_heads=(width * 32 if resnet else width) // int(vision["head_width"]),
        vision_mlp_width=None if resnet else int(width * vision["mlp_ratio"]),
        text_mlp_width=int(twidth * text["mlp_ratio"]),
        activation="quick_gelu" if config.get("quick_gelu") else "gelu",
    )
    return arch


def architecture_from_state_dict(state_dict: Mapping[str, torch.Tensor], config: Mapping) -> dict:
    """``CLIP`` keyword arguments of OpenAI-layout weights: sizes from the tensors' shapes, head
    widths and activation from open_clip's ``config`` (a file may be a reduced model of it)."""
    vision, text = _towers(config)
    try:
        arch = config_from_state_dict(state_dict)
    except (KeyError, ValueError) as e:
        raise OpenClipError(f"the weights are not an open_clip CLIP in OpenAI's layout: {e!r}") from None
    resnet = isinstance(arch["vision_layers"], tuple)
    width, twidth = arch["vision_width"], arch["transformer_width"]
    head_width = int(vision["head_width"])
    text_head_width = int(text["width"]) // int(text["heads"])
    for what, w, hw in (("vision", width * 32 if resnet else width, head_width),
                        ("text", twidth, text_head_width)):
        if w % hw:
            raise OpenClipError(f"the weights' {what} width {w} is not a multiple of the head width "
                                f"{hw} of the named open_clip config")
    arch.update(
        transformer_heads=twidth // text_head_width,
        vision_heads=(width * 32 if resnet else width) // head_width,
        vision_mlp_width=None if resnet else int(
            state_dict["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        text_mlp_width=int(state_dict["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        activation="quick_gelu" if config.get("quick_gelu") else "gelu",
    )
    return arch


def to_openai_layout(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip's state dict under OpenAI's names: ``module.`` (DDP) prefixes dropped, a
    ``text.`` sub-module (``custom_text``) flattened, buffers and OpenAI's non-parameter entries
    dropped, a 1-element ``logit_scale`` made a scalar."""
    sd = dict(state_dict)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    if any(k.startswith("text.") for k in sd):
        sd = {(k[len("text."):] if k.startswith("text.") else k): v for k, v in sd.items()}
    for key in ("attn_mask", "input_resolution", "context_length", "vocab_size"):
        sd.pop(key, None)
    if "logit_bias" in sd:
        raise OpenClipError("the weights hold a logit_bias (a SigLIP model): not supported")
    scale = sd.get("logit_scale")
    if isinstance(scale, torch.Tensor) and scale.dim() and scale.numel() == 1:
        sd["logit_scale"] = scale.reshape(())
    return sd


def read_weights(path: str) -> dict[str, torch.Tensor]:
    """A state dict from an open_clip weights file: ``.safetensors`` with safetensors, anything
    else as ``clip.load_state_dict`` reads it (``torch.load(weights_only=True)``, a
    ``state_dict`` entry, or an OpenAI TorchScript archive)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"open_clip weights file not found: {path}")
    if path.lower().endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise OpenClipNotInstalledError(f"reading {path} needs safetensors (installed with open_clip): "
                                            f"{INSTALL_HINT}") from None
        return dict(load_file(path, device="cpu"))
    from .clip import load_state_dict
    return load_state_dict(path)


def pretrained_tags(model: str) -> list[str]:
    """open_clip's pretrained tags of ``model`` (whatever their activation)."""
    return list(import_open_clip().list_pretrained_tags_by_model(model))


def _activation_name(quick: bool) -> str:
    return "QuickGELU" if quick else "GELU"


def _check_tag_activation(model: str, tag: str, config: Mapping, pretrained_cfg: Mapping) -> None:
    """Refuse a tag trained with another activation than ``model``'s config (open_clip only warns;
    the features would be silently off), naming the model that fits it."""
    oc = import_open_clip()
    tag_quick = bool(pretrained_cfg.get("quick_gelu", False))
    if tag_quick == bool(config.get("quick_gelu", False)):
        return
    if tag_quick:
        other = f"{model}-quickgelu"
    else:
        other = model[: -len("-quickgelu")] if model.endswith("-quickgelu") else ""
    fits = other and oc.get_model_config(other) is not None and oc.get_pretrained_cfg(other, tag)
    advice = (f"use {PREFIX}{other}:{tag}" if fits else
              f"register a copy of the {model} config with quick_gelu = {tag_quick} "
              "(open_clip.add_model_config) and name it")
    raise OpenClipError(
        f"pretrained tag {tag!r} was trained with {_activation_name(tag_quick)} but open_clip's "
        f"{model} config uses {_activation_name(not tag_quick)}: {advice}")


def resolve_weights(parsed: OpenClipName, config: Mapping,
                    cache_dir: str | None = None) -> tuple[str, dict]:
    """``(local weights path, pretrained cfg)`` of a parsed name; a tag is downloaded (or found in
    the cache) by ``open_clip.pretrained.download_pretrained``. The cfg is ``{}`` for a file."""
    oc = import_open_clip()
    model = parsed.model
    if parsed.path is not None:
        if not os.path.isfile(parsed.path):
            raise FileNotFoundError(f"open_clip weights file not found: {parsed.path} (in {parsed.name})")
        return parsed.path, {}
    tags = pretrained_tags(model)
    listed = ", ".join(tags) if tags else "none are published for this model"
    if parsed.tag is None:
        raise OpenClipError(
            f"{parsed.name!r} names no weights, and random weights are never used: give a "
            f"pretrained tag, {PREFIX}{model}:<tag> (tags: {listed}), or a weights file, "
            f"{PREFIX}{model}:/path/to/weights.bin|.pt|.safetensors")
    pretrained_cfg = oc.get_pretrained_cfg(model, parsed.tag)
    if not pretrained_cfg:
        raise OpenClipError(f"unknown pretrained tag {parsed.tag!r} for open_clip model {model!r} "
                            f"(tags: {listed}); for a local file give its path (ending in "
                            f"{', '.join(WEIGHT_SUFFIXES)})")
    _check_tag_activation(model, parsed.tag, config, pretrained_cfg)
    try:   # open_clip's own download and cache (looked up at call time: tests replace it)
        path = oc.pretrained.download_pretrained(pretrained_cfg, cache_dir=cache_dir)
    except Exception as e:
        raise RuntimeError(f"could not download the weights of {parsed.name} with open_clip "
                           f"({type(e).__name__}: {e}); on an offline machine download them "
                           f"elsewhere and give the file: {PREFIX}{model}:/path/to/weights") from e
    if not path or not os.path.isfile(path):
        raise RuntimeError(f"open_clip returned no weights file for {parsed.name} (got {path!r})")
    return path, dict(pretrained_cfg)


def preprocess_config(pretrained_cfg: Mapping, size: int) -> dict:
    """``size``, ``mean``, ``std``, ``interpolation``, ``resize_mode`` the model expects:
    open_clip's defaults, the pretrained tag's entries over them, the model's resolution."""
    from .clip import MEAN, STD  # open_clip's defaults are OpenAI's (its PreprocessCfg)

    cfg = dict(mean=MEAN, std=STD, interpolation="bicubic", resize_mode="shortest")
    cfg.update({k: v for k, v in pretrained_cfg.items() if k in cfg and v is not None})
    return dict(size=int(size), mean=tuple(float(x) for x in cfg["mean"]),
                std=tuple(float(x) for x in cfg["std"]), interpolation=str(cfg["interpolation"]),
                resize_mode=str(cfg["resize_mode"]))


def _check_tokenizer(model: str) -> None:
    """The tokenizer open_clip pairs with ``model`` must be its ``SimpleTokenizer`` (the CLIP BPE
    that ``clip.tokenize`` implements); the config check already refuses the others, this asks
    open_clip itself."""
    oc = import_open_clip()
    tokenizer = oc.get_tokenizer(model)
    if not isinstance(tokenizer, oc.SimpleTokenizer):
        raise OpenClipError(f"open_clip model {model!r} is not supported: its tokenizer is "
                            f"{type(tokenizer).__name__}, not the CLIP BPE")


def _describe(arch: Mapping) -> str:
    if isinstance(arch["vision_layers"], tuple):
        vision = f"ResNet {arch['vision_layers']} width {arch['vision_width']}"
    else:
        vision = (f"ViT width {arch['vision_width']} x {arch['vision_layers']} layers, "
                  f"{arch['vision_heads']} heads, patch {arch['vision_patch_size']}")
    return (f"{vision}, {arch['image_resolution']} px; text width {arch['transformer_width']} x "
            f"{arch['transformer_layers']} layers, {arch['transformer_heads']} heads, context "
            f"{arch['context_length']}; embed {arch['embed_dim']}; "
            f"{_activation_name(arch['activation'] == 'quick_gelu')}")


# Entries that follow from others (shown only when what they derive from agrees).
_DERIVED = {"transformer_heads": "transformer_width", "text_mlp_width": "transformer_width",
            "vision_heads": "vision_width", "vision_mlp_width": "vision_width"}


def _differences(got: Mapping, expected: Mapping) -> list[str]:
    """``"<key> <got> (config: <expected>)"`` for every entry that differs."""
    return [f"{k} {got[k]} (config: {expected[k]})" for k in expected
            if got.get(k) != expected[k]
            and (k not in _DERIVED or got.get(_DERIVED[k]) == expected[_DERIVED[k]])]


def build(name: str, precision: str = "fp32", cache_dir: str | None = None,
          verbose: bool = True) -> CLIP:
    """This project's ``CLIP`` for ``open_clip:<model>:<tag or path>``, on the CPU in eval mode,
    with ``preprocess_cfg`` (see the module docstring) and ``backbone_name`` (``name``)."""
    parsed = parse_name(name)
    config = model_config(parsed.model)
    check_supported(parsed.model, config)
    _check_tokenizer(parsed.model)
    path, pretrained_cfg = resolve_weights(parsed, config, cache_dir)
    state_dict = to_openai_layout(read_weights(path))
    arch = architecture_from_state_dict(state_dict, config)
    expected = architecture(config)
    differences = _differences(arch, expected)
    if differences and parsed.tag is not None:
        raise OpenClipError(f"the weights of {name} ({path}) do not match open_clip's "
                            f"{parsed.model} config: {'; '.join(differences)}")
    try:
        model = build_model_with_config(state_dict, arch, precision=precision, copy=False)
    except RuntimeError as e:
        raise OpenClipError(f"{path} does not hold the weights of an open_clip {parsed.model}: "
                            f"{str(e).splitlines()[0]}") from None
    model.preprocess_cfg = preprocess_config(pretrained_cfg, model.visual.input_resolution)
    model.backbone_name = name
    if verbose:
        print(f"open_clip {parsed.model} ({parsed.tag or 'file'}) from {path}: {_describe(arch)}")
        if differences:
            print(f"Note: the file's architecture differs from open_clip's {parsed.model} config "
                  f"({'; '.join(differences)}); the file's is used, with the config's head widths "
                  "and activation")
    return model


def supported_models() -> list[tuple[str, list[str]]]:
    """``(model, tags)`` of every supported open_clip model (tags whose activation matches the
    model's config; an empty list: usable with a weights file only)."""
    oc = import_open_clip()
    result = []
    for model in oc.list_models():
        config = oc.get_model_config(model)
        if unsupported_features(model, config):
            continue
        quick = bool(config.get("quick_gelu", False))
        tags = [t for t in pretrained_tags(model)
                if bool(oc.get_pretrained_cfg(model, t).get("quick_gelu", False)) == quick]
        result.append((model, tags))
    return result


def unsupported_models() -> list[tuple[str, list[str]]]:
    """``(model, reasons)`` of every open_clip model that is not supported."""
    oc = import_open_clip()
    found = [(m, unsupported_features(m, oc.get_model_config(m))) for m in oc.list_models()]
    return [(m, reasons) for m, reasons in found if reasons]


def layers(name: str) -> tuple[int, int] | None:
    """``(text layers, vision layers)`` (0 for a ResNet image tower) of an ``open_clip:`` name
    with a pretrained tag, from open_clip's config; ``None`` for a file (its shapes decide) or
    when it cannot be told without loading (unknown, unsupported, open_clip missing)."""
    try:
        parsed = parse_name(name)
        if parsed.path is not None or parsed.tag is None:
            return None
        config = model_config(parsed.model)
        if unsupported_features(parsed.model, config):
            return None
        arch = architecture(config)
    except (OpenClipError, ImportError):
        return None
    vision = arch["vision_layers"]
    return arch["transformer_layers"], (vision if isinstance(vision, int) else 0)


def input_config(name: str) -> dict | None:
    """The ``preprocess_cfg`` of an ``open_clip:`` name with a pretrained tag, without loading
    weights (for checks before the data is read); ``None`` when it cannot be told."""
    try:
        parsed = parse_name(name)
        if parsed.path is not None or parsed.tag is None:
            return None
        config = model_config(parsed.model)
        pretrained_cfg = import_open_clip().get_pretrained_cfg(parsed.model, parsed.tag)
        if unsupported_features(parsed.model, config) or not pretrained_cfg:
            return None
        return preprocess_config(pretrained_cfg, architecture(config)["image_resolution"])
    except (OpenClipError, ImportError):
        return None
