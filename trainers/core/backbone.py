"""The frozen CLIP backbone: loading it, freezing it, and the widths and depths prompts must fit.

``load_clip_to_cpu(name)`` takes an OpenAI model name (``ViT-B/16``), the path of a model file
(TorchScript archive or plain state dict: offline machines, custom checkpoints, tiny test models)
or an open_clip model, ``open_clip:<model>:<pretrained tag>`` (e.g.
``open_clip:ViT-B-16:laion2b_s34b_b88k``) or ``open_clip:<model>:<weights file>``
(``clip.open_clip_models``; ``python -m clip.models`` lists them), and returns the model on CPU in
**fp32**, eval mode, every parameter frozen; the precision of the run is applied later
(``precision.cast_backbone``), after the fp32 work (prompt initialization, zero-shot anchors) is
done. Every model has OpenAI's module and parameter names, so prompts, trainers and checkpoints
work on all of them; widths, depths, heads and activation are the model's.

``check_input_config(cfg, clip_model)`` checks ``INPUT.SIZE`` against the model's resolution and,
for open_clip models (which state the preprocessing they were trained with), ``INPUT.PIXEL_MEAN``
and ``INPUT.PIXEL_STD``: a mismatch is one error naming the keys and the values to set.
``input_config(name)`` tells an open_clip tag's preprocessing without loading weights.

``backbone_dims(clip_model)`` reads the widths and layer counts off a loaded model;
``known_layers(name)`` gives the layer counts of a published model name (OpenAI, or open_clip with
a pretrained tag) without loading it, and ``file_layers(path)`` those of a model file from its
parameter names, so config checks can reject a prompt depth before anything else is loaded.
"""
from __future__ import annotations

import functools
import os
from typing import NamedTuple

from torch import nn

import clip
from clip import open_clip_models
from clip.model import MODEL_CONFIGS
from dassl.utils.errors import UserError


class BackboneError(UserError, ValueError):
    """``MODEL.BACKBONE.NAME`` names a model that cannot be used, or the config's input settings
    do not fit it; the message says what to change."""


class BackboneNotFoundError(UserError, FileNotFoundError):
    """``MODEL.BACKBONE.NAME`` is neither a known model name nor an existing file."""


class BackboneDependencyError(UserError, ImportError):
    """An open_clip backbone was named and open_clip is not installed (the message says how)."""


class BackboneDims(NamedTuple):
    """Widths and depths of a CLIP; the vision entries are 0 for a ResNet image tower."""

    text_width: int
    vision_width: int
    text_layers: int
    vision_layers: int


def backbone_dims(clip_model: nn.Module) -> BackboneDims:
    """``(text_width, vision_width, text_layers, vision_layers)`` of a loaded CLIP."""
    visual = clip_model.visual
    text_width = int(clip_model.ln_final.weight.shape[0])
    text_layers = len(clip_model.transformer.resblocks)
    if not hasattr(visual, "class_embedding"):
        return BackboneDims(text_width, 0, text_layers, 0)
    return BackboneDims(text_width, int(visual.conv1.weight.shape[0]), text_layers,
                        len(visual.transformer.resblocks))


def known_layers(name: str) -> tuple[int, int] | None:
    """``(text_layers, vision_layers)`` of a published model name (0 vision layers for ResNets):
    an OpenAI name, or an open_clip name with a pretrained tag; ``None`` for a file path (or an
    open_clip name that loading will reject with its own message)."""
    if open_clip_models.is_open_clip_name(name):
        return open_clip_models.layers(name)
    config = MODEL_CONFIGS.get(name)
    if config is None:
        return None
    vision = config["vision_layers"]
    return int(config["transformer_layers"]), (vision if isinstance(vision, int) else 0)


def file_layers(name: str) -> tuple[int, int] | None:
    """``(text_layers, vision_layers)`` of a model file (0 vision layers for a ResNet image tower),
    counted from its parameter names (``transformer.resblocks.N.``, ``visual.transformer.resblocks.N.``)
    without building the model, so a prompt depth that does not fit is refused before the dataset
    is loaded. ``None`` when ``name`` is no file or is unreadable (loading reports that)."""
    path = os.path.expanduser(name)
    if open_clip_models.is_open_clip_name(name) or not os.path.isfile(path):
        return None
    stat = os.stat(path)
    return _counted_layers(os.path.realpath(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _counted_layers(path: str, size: int, mtime_ns: int) -> tuple[int, int] | None:
    """``file_layers`` of one version of a file (size and mtime key the cache: a sweep checks one
    file for every job)."""
    try:
        keys = clip.clip.load_state_dict(path).keys()
    except (OSError, RuntimeError):
        return None

    def depth(prefix: str) -> int:
        blocks = {int(k[len(prefix):].split(".", 1)[0]) for k in keys
                  if k.startswith(prefix) and k[len(prefix):].split(".", 1)[0].isdigit()}
        return max(blocks) + 1 if blocks else 0

    text = depth("transformer.resblocks.")
    return (text, depth("visual.transformer.resblocks.")) if text else None


def input_config(name: str) -> dict | None:
    """The preprocessing (``size``, ``mean``, ``std``, ``interpolation``, ``resize_mode``) an
    open_clip name with a pretrained tag expects, read from open_clip's registry without loading
    weights; ``None`` for other names."""
    if open_clip_models.is_open_clip_name(name):
        return open_clip_models.input_config(name)
    return None


def freeze(model: nn.Module) -> nn.Module:
    """Turn off gradients of every parameter of ``model`` and put it in eval mode."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def _load_open_clip(name: str) -> nn.Module:
    try:
        model, _ = clip.load(name, device="cpu", jit=False, precision="fp32")
    except open_clip_models.OpenClipNotInstalledError as e:
        raise BackboneDependencyError(f"MODEL.BACKBONE.NAME {name!r}: {e}") from None
    except open_clip_models.OpenClipError as e:
        raise BackboneError(f"MODEL.BACKBONE.NAME {name!r}: {e}") from None
    except FileNotFoundError as e:
        raise BackboneNotFoundError(f"MODEL.BACKBONE.NAME {name!r}: {e}") from None
    return model


def load_clip_to_cpu(name: str) -> nn.Module:
    """A frozen fp32 CLIP on CPU from an OpenAI model name, a model-file path or an open_clip
    name (see the module docstring)."""
    if not name:
        raise BackboneError("MODEL.BACKBONE.NAME is empty: set it to a CLIP model name "
                            f"({', '.join(clip.available_models())}), a model file path or "
                            "open_clip:<model>:<pretrained tag or weights file>")
    if open_clip_models.is_open_clip_name(name):
        return freeze(_load_open_clip(name).float())
    path = os.path.expanduser(name)
    if name not in clip.available_models() and not os.path.isfile(path):
        raise BackboneNotFoundError(
            f"MODEL.BACKBONE.NAME {name!r} is neither a CLIP model name "
            f"({', '.join(clip.available_models())}) nor an existing file (open_clip models: "
            "open_clip:<model>:<pretrained tag or weights file>; python -m clip.models lists them)")
    model, _ = clip.load(name, device="cpu", jit=False, precision="fp32")
    return freeze(model.float())


def _floats(values) -> list[float]:
    return [float(v) for v in values]


def _close(a, b, tol: float = 1e-6) -> bool:
    a, b = _floats(a), _floats(b)
    return len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b))


def check_input_config(cfg, clip_model: nn.Module) -> None:
    """The dataset transforms must feed the model what it was trained on: ``INPUT.SIZE`` equal
    to its input resolution (every model) and, for models that state their preprocessing
    (open_clip, ``preprocess_cfg``), ``INPUT.PIXEL_MEAN`` / ``INPUT.PIXEL_STD`` equal to their
    normalization. A mismatch raises one ``BackboneError`` naming every differing key and the
    values to set; a different ``INPUT.INTERPOLATION`` or a model trained on squashed (not
    center-cropped) images is printed as a note.

    The config is not changed in place: the transforms are built (and the config written to
    ``config.yaml``) before the backbone is loaded, so the run would otherwise use and record
    values that differ from those the model needs."""
    name = cfg.MODEL.BACKBONE.NAME
    size = int(clip_model.visual.input_resolution)
    preprocess = getattr(clip_model, "preprocess_cfg", None)
    problems, fixes = [], []
    if tuple(cfg.INPUT.SIZE)[0] != size or tuple(cfg.INPUT.SIZE)[-1] != size:
        problems.append(f"cfg_imsize ({cfg.INPUT.SIZE[0]}) must equal to clip_imsize ({size}): "
                        f"INPUT.SIZE is {tuple(cfg.INPUT.SIZE)}, the model takes ({size}, {size})")
        fixes.append(f'INPUT.SIZE "({size}, {size})"')
    if preprocess is not None:
        for key, value in (("PIXEL_MEAN", preprocess["mean"]), ("PIXEL_STD", preprocess["std"])):
            if not _close(cfg.INPUT[key], value):
                problems.append(f"INPUT.{key} is {_floats(cfg.INPUT[key])}, the model was trained "
                                f"with {_floats(value)}")
                fixes.append(f'INPUT.{key} "{_floats(value)}"')
    if problems:
        raise BackboneError(
            f"the input settings do not fit MODEL.BACKBONE.NAME {name}: " + "; ".join(problems)
            + ". Set them in the trainer config or append them to the command: " + " ".join(fixes))
    if preprocess is None:
        return
    interpolation = preprocess.get("interpolation")
    if interpolation and cfg.INPUT.INTERPOLATION != interpolation:
        print(f"Note: INPUT.INTERPOLATION is {cfg.INPUT.INTERPOLATION!r}; {name} was trained with "
              f"{interpolation!r} (set INPUT.INTERPOLATION {interpolation} to match)")
    if preprocess.get("resize_mode", "shortest") != "shortest":
        print(f"Note: {name} was evaluated with resize_mode {preprocess['resize_mode']!r}; the "
              "test transform here resizes the shorter edge and center-crops")
