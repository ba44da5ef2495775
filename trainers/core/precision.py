"""Numeric precision of a run: what ``TRAINER.<NAME>.PREC`` means on a device.

=======  ====================  ========  ==============================================
PREC     frozen CLIP weights   autocast  gradient scaling (CUDA)
=======  ====================  ========  ==============================================
fp32     fp32                  no        no
fp16     fp16                  no        yes (prompt parameters stay fp32)
bf16     bf16                  no        no
amp      fp32                  fp16      yes
=======  ====================  ========  ==============================================

Trainable prompt parameters are always fp32 (upstream trains some of them in fp16, where small
updates vanish: docs/METHOD.md). On CPU every PREC falls back to fp32 (one printed note), since
half-precision CPU kernels are slow or missing.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

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


def cast_backbone(model: nn.Module, precision: Precision, device: torch.device | str) -> nn.Module:
    """Move the frozen CLIP to ``device`` and cast its floating-point weights for ``precision``."""
    return model.to(device=device, dtype=precision.weight_dtype)
