"""Numeric precision of a run: what ``TRAINER.<NAME>.PREC`` means on a device.

=======  ====================  ========  ==============================================
PREC     frozen CLIP weights   autocast  gradient scaling (CUDA)
=======  ====================  ========  ==============================================
fp32     fp32                  no        no
fp16     fp16 (OpenAI's rule)  no        yes (no with ``PROMPT_PREC upstream``)
bf16     bf16 (OpenAI's rule)  no        no
amp      fp32                  fp16      yes
=======  ====================  ========  ==============================================

"OpenAI's rule" is ``clip.model.convert_weights``: Conv/Linear/attention weights and the two
projections take the half type; token and positional embeddings, ``class_embedding``, LayerNorms
and ``logit_scale`` stay fp32, so ``exp(logit_scale)`` is 100.00 under every precision (docs/PRECISION.md).

``TRAINER.<NAME>.PROMPT_PREC`` chooses the dtype of the trainable prompt parameters:

* ``fp32`` (default): every prompt parameter is fp32, whatever ``PREC`` says; under ``fp16`` the
  prompts are cast where they enter the towers and the loss goes through a gradient scaler.
* ``upstream``: each prompt tensor gets the dtype the upstream code trains it in under ``PREC``.
  Under ``fp16`` the tensors upstream holds in fp16 (each trainer lists them in its
  ``upstream_fp16_prompts``) become fp16 parameters, the others stay fp32, and all are trained
  with plain SGD and no gradient scaling, as upstream: an update smaller than half the fp16
  spacing at a value is lost (about 7.6e-6 at 0.02, the scale of a random prompt). Under
  ``fp32``, ``amp`` and ``bf16`` upstream trains its prompts in fp32 (or has no such mode), so
  nothing changes.

``prompt_dtype`` decides the dtype of one tensor and ``scales_gradients`` whether the loss is
scaled; ``cast_prompt_parameters`` applies ``prompt_dtype`` to a prompt learner. On CPU every PREC
falls back to fp32 (one printed note), since half-precision CPU kernels are slow or missing, so
``upstream`` changes nothing there either.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from clip.model import convert_weights

PRECISIONS = ("fp32", "fp16", "bf16", "amp")
PROMPT_PRECS = ("fp32", "upstream")


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
    """Move the fp32 frozen CLIP to ``device`` and cast its weights for ``precision`` with OpenAI's
    rule (``clip.model.convert_weights``): under fp16 and bf16 only the Conv/Linear/attention
    weights and the two projections change dtype; embeddings, LayerNorms and ``logit_scale`` stay
    fp32, as in the models upstream's ``PREC fp16`` runs (OpenAI's ``build_model``)."""
    model = model.to(device=device, dtype=torch.float32)
    if precision.weight_dtype == torch.float32:
        return model
    return convert_weights(model, precision.weight_dtype)


def upstream_half_prompts(precision: Precision, prompt_prec: str) -> bool:
    """Whether prompts that upstream holds in fp16 are fp16 parameters here: ``PROMPT_PREC``
    ``upstream`` with an fp16 run (``precision`` as resolved for the device)."""
    if prompt_prec not in PROMPT_PRECS:
        raise ValueError(f"PROMPT_PREC must be one of {', '.join(PROMPT_PRECS)}; got {prompt_prec!r}")
    return prompt_prec == "upstream" and precision.name == "fp16"


def prompt_dtype(precision: Precision, prompt_prec: str, fp16_upstream: bool) -> torch.dtype:
    """The dtype of one trainable prompt tensor: fp16 when upstream trains it as an fp16 parameter
    (``fp16_upstream``) and ``upstream_half_prompts``; fp32 otherwise."""
    if fp16_upstream and upstream_half_prompts(precision, prompt_prec):
        return torch.float16
    return torch.float32


def scales_gradients(precision: Precision, prompt_prec: str) -> bool:
    """Whether the loss goes through a gradient scaler: as ``precision`` says, except with fp16
    prompt parameters (``upstream_half_prompts``), which upstream trains with plain SGD (and which
    a gradient scaler refuses to unscale)."""
    return precision.use_grad_scaler and not upstream_half_prompts(precision, prompt_prec)


def _listed(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def cast_prompt_parameters(module: nn.Module, precision: Precision, prompt_prec: str,
                           fp16_upstream: Sequence[str] = ()) -> list[str]:
    """Give every trainable parameter of ``module`` its ``prompt_dtype`` in place (the parameter
    objects stay the same); returns the names whose dtype changed.

    ``fp16_upstream``: the parameters upstream holds in fp16, as parameter names of ``module``
    (``"ctx"``, ``"ctx_text.0"``) or names of its sub-modules (``"meta_net"``: all of its
    parameters)."""
    changed = []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        dtype = prompt_dtype(precision, prompt_prec, _listed(name, fp16_upstream))
        if param.dtype != dtype:
            param.data = param.data.to(dtype)
            changed.append(name)
    return changed
