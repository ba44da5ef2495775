"""Loading the frozen CLIP backbone and choosing the numeric precision.

``load_clip_to_cpu(name)`` takes an OpenAI model name (``ViT-B/16``) or the path of a model file
(TorchScript archive or plain state dict: offline machines, custom checkpoints, tiny test models)
and returns the model on CPU in **fp32**, eval mode, every parameter frozen.

``resolve_precision(prec, device)`` maps ``TRAINER.<NAME>.PREC`` to a ``Precision``:

=======  ====================  ========  ==============================================
PREC     frozen CLIP weights   autocast  gradient scaling (CUDA)
=======  ====================  ========  ==============================================
fp32     fp32                  no        no
fp16     fp16                  no        yes (prompt parameters stay fp32)
bf16     bf16                  no        no
amp      fp32                  fp16      yes
=======  ====================  ========  ==============================================

Trainable prompt parameters are always fp32. On CPU every PREC falls back to fp32 (one printed
note), since half-precision CPU kernels are slow or missing.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
from torch import nn

import clip

PRECISIONS = ("fp32", "fp16", "bf16", "amp")


@dataclass(frozen=True)
class Precision:
    """What a ``PREC`` value means on a device (see the module docstring)."""

    name: str
    weight_dtype: torch.dtype
    autocast_dtype: torch.dtype | None
    use_grad_scaler: bool
    device_type: str

    def autocast(self):
        """Context manager: ``torch.autocast`` for ``amp``, else a no-op."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.autocast_dtype)


def resolve_precision(prec: str, device: torch.device | str, key: str = "PREC") -> Precision:
    """``Precision`` for ``prec`` on ``device``; non-fp32 on CPU falls back to fp32 with a note."""
    if prec not in PRECISIONS:
        raise ValueError(f"{key} must be one of {', '.join(PRECISIONS)}; got {prec!r}")
    device = torch.device(device)
    if device.type != "cuda" and prec != "fp32":
        print(f"Note: {key} {prec} is not supported on {device.type}; using fp32")
        prec = "fp32"
    if prec == "fp16":
        return Precision("fp16", torch.float16, None, True, device.type)
    if prec == "bf16":
        return Precision("bf16", torch.bfloat16, None, False, device.type)
    if prec == "amp":
        return Precision("amp", torch.float32, torch.float16, True, device.type)
    return Precision("fp32", torch.float32, None, False, device.type)


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


def cast_backbone(model: nn.Module, precision: Precision, device: torch.device | str) -> nn.Module:
    """Move the frozen CLIP to ``device`` and cast its floating-point weights for ``precision``."""
    return model.to(device=device, dtype=precision.weight_dtype)
