"""The frozen CLIP backbone: loading it, freezing it, and the widths and depths prompts must fit.

``load_clip_to_cpu(name)`` takes an OpenAI model name (``ViT-B/16``) or the path of a model file
(TorchScript archive or plain state dict: offline machines, custom checkpoints, tiny test models)
and returns the model on CPU in **fp32**, eval mode, every parameter frozen; the precision of the
run is applied later (``precision.cast_backbone``), after the fp32 work (prompt initialization,
zero-shot anchors) is done.

``backbone_dims(clip_model)`` reads the widths and layer counts off a loaded model;
``known_layers(name)`` gives the layer counts of a published model name without loading it, so
config checks can reject a prompt depth before anything is loaded.
"""
from __future__ import annotations

import os
from typing import NamedTuple

from torch import nn

import clip
from clip.model import MODEL_CONFIGS


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
    """``(text_layers, vision_layers)`` of a published model name (0 vision layers for ResNets), or
    ``None`` for a file path."""
    config = MODEL_CONFIGS.get(name)
    if config is None:
        return None
    vision = config["vision_layers"]
    return int(config["transformer_layers"]), (vision if isinstance(vision, int) else 0)


def freeze(model: nn.Module) -> nn.Module:
    """Turn off gradients of every parameter of ``model`` and put it in eval mode."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def load_clip_to_cpu(name: str) -> nn.Module:
    """A frozen fp32 CLIP on CPU from an OpenAI model name or a model-file path."""
    if not name:
        raise ValueError("MODEL.BACKBONE.NAME is empty: set it to a CLIP model name "
                         f"({', '.join(clip.available_models())}) or a model file path")
    path = os.path.expanduser(name)
    if name not in clip.available_models() and not os.path.isfile(path):
        raise FileNotFoundError(
            f"MODEL.BACKBONE.NAME {name!r} is neither a CLIP model name "
            f"({', '.join(clip.available_models())}) nor an existing file")
    model, _ = clip.load(name, device="cpu", jit=False, precision="fp32")
    return freeze(model.float())
