"""The config keys the prompt trainers share, declared once with their defaults and checks.

=============  =======  =========================================================================
key            default  meaning
=============  =======  =========================================================================
PREC           "fp16"   numeric precision: ``fp32``/``fp16``/``bf16``/``amp`` (``precision.py``;
                        fp32 on CPU)
PROMPT_PREC    "fp32"   dtype of the prompt parameters: ``fp32``, or ``upstream`` (the tensors
                        upstream holds in fp16 are fp16 under ``PREC fp16``, ``precision.py``)
TRUNCATE_TEXT  True     exact speed-up: the text tower runs up to the last end-of-text row
                        (``encoders.py``)
CACHE_TEXT     True     exact speed-up: class text features once per evaluation (``model.py``)
SHARED_PREFIX  True     exact speed-up: the rows before the class name run once for all classes
                        (``model.py``)
=============  =======  =========================================================================

A trainer's ``add_config`` adds its own keys, then ``add_shared_keys(node, names)`` with the shared
keys it reads: not every trainer reads every one (CoCoOp's text features change with each image, so
it neither caches them nor shares a prefix; MMLoP has no upstream fp16 prompts, so no
``PROMPT_PREC``; ZeroshotCLIP and VPT learn no text). ``PromptTrainer.check_config`` runs
``check_shared_keys`` on every node, and ``speed_ups(node)`` hands the speed-up switches a node has
to ``PromptedCLIP``.
"""
from __future__ import annotations

from typing import Sequence

from .checks import check_choice
from .precision import PRECISIONS, PROMPT_PRECS

SHARED_DEFAULTS = {
    "PREC": "fp16",
    "PROMPT_PREC": "fp32",
    "TRUNCATE_TEXT": True,
    "CACHE_TEXT": True,
    "SHARED_PREFIX": True,
}
PRECISION_KEYS = ("PREC", "PROMPT_PREC")
SPEED_UPS = ("TRUNCATE_TEXT", "CACHE_TEXT", "SHARED_PREFIX")
ALL_SHARED = PRECISION_KEYS + SPEED_UPS


def add_shared_keys(node, names: Sequence[str] = ALL_SHARED) -> None:
    """Add the shared keys ``names`` to the config node ``node`` with their defaults."""
    unknown = [n for n in names if n not in SHARED_DEFAULTS]
    if unknown:
        raise KeyError(f"{unknown} are not shared trainer keys; the shared keys are "
                       f"{', '.join(SHARED_DEFAULTS)} (trainers/core/shared_keys.py)")
    for name in names:
        node[name] = SHARED_DEFAULTS[name]


def check_shared_keys(node, prefix: str) -> None:
    """The choices of ``PREC`` and ``PROMPT_PREC`` where ``node`` has them (the speed-ups are
    booleans, which yacs checks)."""
    if "PREC" in node:
        check_choice(node, prefix, "PREC", PRECISIONS)
    if "PROMPT_PREC" in node:
        check_choice(node, prefix, "PROMPT_PREC", PROMPT_PRECS)


def speed_ups(node) -> dict[str, bool]:
    """The speed-up switches ``node`` has, as ``PromptedCLIP`` keyword arguments
    (``truncate_text``, ``cache_text``, ``shared_prefix``); absent ones keep the model's default."""
    return {name.lower(): node[name] for name in SPEED_UPS if name in node}
