"""Config checks a trainer runs in ``check_cfg``, before the dataset or CLIP is loaded.

yacs already refuses unknown keys and values of the wrong type; these helpers check what yacs
cannot (ranges, choices, token counts, depths that must fit the backbone), so a bad value stops a
run within a second with one message naming the key, the value and what is allowed, instead of
after minutes of data and model loading. Each helper takes the trainer's config node and its full
key (``"TRAINER.MMLOP"``) and raises ``ConfigError``.
"""
from __future__ import annotations

from typing import Sequence

from dassl.config import ConfigError
from dassl.engine.config_checks import check_choice, check_range, fail  # noqa: F401  (the trainers' helpers)

from .backbone import backbone_dims, file_layers, known_layers
from .context import clean_ctx_init
from .text_inputs import count_tokens


def check_ctx_init(node, prefix: str, n_ctx_key: str | None = None, exact: bool = False) -> None:
    """``CTX_INIT`` must tokenize to at least one token (to exactly ``node[n_ctx_key]`` tokens
    with ``exact``) when it is not empty."""
    text = clean_ctx_init(node.CTX_INIT)
    if not text:
        return
    n_tokens = count_tokens(text)
    if n_tokens < 1:
        fail(f"{prefix}.CTX_INIT", node.CTX_INIT, "it must hold at least one token, or be ''")
    if exact and n_tokens != node[n_ctx_key]:
        fail(f"{prefix}.CTX_INIT", node.CTX_INIT,
             f"it is {n_tokens} BPE tokens but {prefix}.{n_ctx_key} is {node[n_ctx_key]}; they "
             "must match (or set CTX_INIT '' for a random initialization)")


def config_layers(cfg) -> tuple[int, int] | None:
    """``(text_layers, vision_layers)`` of ``MODEL.BACKBONE.NAME`` before it is loaded: a
    published model name, or a model file (its layers counted from its parameter names); ``None``
    when unknown (an open_clip weights file is checked once loaded)."""
    return known_layers(cfg.MODEL.BACKBONE.NAME) or file_layers(cfg.MODEL.BACKBONE.NAME)


def check_depth(cfg, node, prefix: str, name: str, tower: str, low: int = 1) -> None:
    """``low <= node[name] <= layers`` of the ``tower`` ("text" or "vision") of
    ``MODEL.BACKBONE.NAME`` (``config_layers``)."""
    check_depth_fits(node, prefix, name, tower, config_layers(cfg), cfg.MODEL.BACKBONE.NAME, low)


def check_depth_fits(node, prefix: str, name: str, tower: str, layers: tuple[int, int] | None,
                     backbone: str, low: int = 1) -> None:
    """``low <= node[name] <= layers`` of the ``tower`` of ``layers`` (``(text, vision)``, from the
    config or from a loaded model; ``None``: only the lower bound), naming ``backbone``."""
    check_range(node, prefix, name, low=low)
    if layers is None:
        return
    n = layers[0] if tower == "text" else layers[1]
    if node[name] > n:
        fail(f"{prefix}.{name}", node[name],
             f"{backbone} has {n} {tower} layers"
             + ("" if n else " (a ResNet image tower takes no vision prompts)"))


def check_loaded(check, node, prefix: str, clip_model) -> None:
    """Run a trainer's key check, ``check(node, prefix, layers, backbone)``, the one its
    ``check_config`` runs before anything is loaded, on a loaded model's layer counts: a model
    built directly in Python is refused with the same message, as ``ValueError``."""
    dims = backbone_dims(clip_model)
    try:
        check(node, prefix, (dims.text_layers, dims.vision_layers), "this backbone")
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def check_gpa(cfg, node, prefix: str) -> None:
    """With ``GPA`` on, the Gaussian over ``1..OPTIM.MAX_EPOCH`` must give some epoch weight."""
    from .gpa import gpa_weights

    if not node.GPA:
        return
    if node.GPA_STD <= 0:
        fail(f"{prefix}.GPA_STD", node.GPA_STD, "it must be > 0")
    try:
        gpa_weights(cfg.OPTIM.MAX_EPOCH, node.GPA_MEAN, node.GPA_STD)
    except ValueError as exc:
        raise ConfigError(f"{prefix}.GPA_MEAN / {prefix}.GPA_STD: {exc}") from None


def check_loss_weights(node, prefix: str, names: Sequence[str]) -> None:
    for name in names:
        check_range(node, prefix, name, low=0.0)
