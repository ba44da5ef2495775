"""The ``IVLP`` trainer: independent deep vision and language prompting, cross-entropy only.

Prompts: text ``P_l [N_CTX_TEXT, D_t]`` for layers ``l < PROMPT_DEPTH_TEXT`` and vision
``V_l [N_CTX_VISION, D_v]`` for ``l < PROMPT_DEPTH_VISION`` (0 = no vision prompt: deep language
prompting), placed the IVLP/PromptSRC way (``core/encoders.py``). ``P_0`` starts from ``CTX_INIT``
(``core/context.py``: with 2 tokens and "a photo of a", "of a" stays as fixed words after the
learned ones); every other prompt is ``N(0, 0.02^2)``. Parameter names (the same as MMLoP's
full-rank prompts, so values copy across): ``ctx_text.<l>``, ``ctx_vision.<l>``. ViT-B/16: 4+4 at
depth 9 = 46,080; 2+2 at depth 12 = 30,720.

Config node ``TRAINER.IVLP`` (upstream names; defaults as upstream ``train.py``):

===================  ==============  ====================================================
key                  default         meaning
===================  ==============  ====================================================
N_CTX_TEXT           2               text prompt tokens per layer
N_CTX_VISION         2               vision prompt tokens per layer
PROMPT_DEPTH_TEXT    9               prompted text layers (>= 1)
PROMPT_DEPTH_VISION  9               prompted vision layers (0: language-only prompting)
CTX_INIT             "a photo of a"  text init and prompt text ('' = random, "X"s)
PREC                 "fp16"          ``fp32``/``fp16``/``bf16``/``amp`` (fp32 on CPU)
PROMPT_PREC          "fp32"          ``upstream``: under ``PREC fp16``, ``ctx_text.0`` is an
                                     fp16 parameter, no gradient scaling (as upstream;
                                     ``core/precision.py``)
TRUNCATE_TEXT        True            exact speed-up: text tower up to the last EOT row
CACHE_TEXT           True            exact speed-up: text features once per evaluation
SHARED_PREFIX        True            exact speed-up: rows before the class name run once
===================  ==============  ====================================================

Configs: ``configs/trainers/IVLP/vit_b16_c2_ep5_batch4_2+2ctx.yaml`` (MaPLe repo, depth 12),
``vit_b16_c2_ep20_batch4_4+4ctx.yaml`` (PromptSRC repo, depth 9),
``vit_b16_c2_ep5_batch4_4ctx_language_only.yaml`` (4 text tokens, depth 12, no vision prompt).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from yacs.config import CfgNode as CN

from dassl.engine import TRAINER_REGISTRY

from .core import checks
from .core.backbone import backbone_dims
from .core.context import context_parameter, normal_prompt, text_context
from .core.model import PromptedCLIP
from .core.precision import Precision
from .core.shared_keys import ALL_SHARED, add_shared_keys, speed_ups
from .core.trainer import CrossEntropyPromptTrainer


def add_ivlp_keys(node: CN) -> CN:
    """IVLP's keys with upstream defaults (shared by ``TRAINER.IVLP`` and ``TRAINER.PROMPTSRC``)."""
    node.N_CTX_TEXT = 2
    node.N_CTX_VISION = 2
    node.PROMPT_DEPTH_TEXT = 9
    node.PROMPT_DEPTH_VISION = 9
    node.CTX_INIT = "a photo of a"
    add_shared_keys(node, ALL_SHARED)
    return node


def check_ivlp_keys(node, prefix: str, layers: tuple[int, int] | None, backbone: str) -> None:
    """Every rule on IVLP's keys (shared with PromptSRC), in one place: ``check_config`` runs it
    before loading (``layers`` of the configured backbone, ``checks.config_layers``) and
    ``IVLPSettings.validate`` on the loaded model's (``checks.check_loaded``)."""
    checks.check_range(node, prefix, "N_CTX_TEXT", low=1)
    checks.check_depth_fits(node, prefix, "PROMPT_DEPTH_TEXT", "text", layers, backbone)
    checks.check_depth_fits(node, prefix, "PROMPT_DEPTH_VISION", "vision", layers, backbone, low=0)
    if node.PROMPT_DEPTH_VISION:
        checks.check_range(node, prefix, "N_CTX_VISION", low=1)
    checks.check_ctx_init(node, prefix)


@dataclass(frozen=True)
class IVLPSettings:
    """The config keys that shape an IVLP (or PromptSRC) model; ``key`` names the config node."""

    n_ctx_text: int = 2
    n_ctx_vision: int = 2
    depth_text: int = 9
    depth_vision: int = 9
    ctx_init: str = "a photo of a"
    truncate_text: bool = True
    cache_text: bool = True
    shared_prefix: bool = True
    key: str = "TRAINER.IVLP"

    @classmethod
    def from_cfg(cls, node, key: str) -> IVLPSettings:
        """From a ``cfg.TRAINER.<NAME>`` node with IVLP's keys."""
        return cls(n_ctx_text=node.N_CTX_TEXT, n_ctx_vision=node.N_CTX_VISION,
                   depth_text=node.PROMPT_DEPTH_TEXT, depth_vision=node.PROMPT_DEPTH_VISION,
                   ctx_init=node.CTX_INIT, key=key, **speed_ups(node))

    def validate(self, clip_model: nn.Module) -> None:
        """Raise ``ValueError`` with ``check_ivlp_keys``'s message for a key that does not fit
        ``clip_model``."""
        node = CN({"N_CTX_TEXT": self.n_ctx_text, "N_CTX_VISION": self.n_ctx_vision,
                   "PROMPT_DEPTH_TEXT": self.depth_text, "PROMPT_DEPTH_VISION": self.depth_vision,
                   "CTX_INIT": self.ctx_init})
        checks.check_loaded(check_ivlp_keys, node, self.key, clip_model)


class IVLPPromptLearner(nn.Module):
    """Independent per-layer text and vision prompts; ``forward()`` -> ``(text, vision)`` lists.

    ``init``: ``[n_ctx_text, text_dim]`` initial ``P_0`` (or ``None``: random).
    """

    def __init__(self, settings: IVLPSettings, text_dim: int, vision_dim: int,
                 init: torch.Tensor | None = None):
        super().__init__()
        s = settings
        text = [normal_prompt(s.n_ctx_text, text_dim) for _ in range(s.depth_text)]
        if init is not None:
            if tuple(init.shape) != (s.n_ctx_text, text_dim):
                raise ValueError(f"init must be [{s.n_ctx_text}, {text_dim}], "
                                 f"got {tuple(init.shape)}")
            text[0] = context_parameter(init)
        self.ctx_text = nn.ParameterList(text)
        self.ctx_vision = nn.ParameterList(
            [normal_prompt(s.n_ctx_vision, vision_dim) for _ in range(s.depth_vision)])

    def forward(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return list(self.ctx_text), list(self.ctx_vision)


class IVLPCLIP(PromptedCLIP):
    """Frozen CLIP + ``IVLPPromptLearner``; ``forward(images)`` -> logits ``[B, C]`` (fp32).

    ``anchor_templates`` (PromptSRC) requests the zero-shot text anchors ``text_anchors``.
    """

    def __init__(self, clip_model: nn.Module, classnames: Sequence[str], settings: IVLPSettings,
                 precision: Precision | None = None,
                 anchor_templates: Sequence[str] | None = None):
        settings.validate(clip_model)
        text_dim, vision_dim, _, _ = backbone_dims(clip_model)
        context = text_context(clip_model, settings.ctx_init, settings.n_ctx_text)
        print(f'Initial text context: "{context.prefix}"')
        print(f"Number of context words (tokens) for language prompting: {settings.n_ctx_text}")
        print(f"Number of context words (tokens) for vision prompting: "
              f"{settings.n_ctx_vision if settings.depth_vision else 0}")
        learner = IVLPPromptLearner(settings, text_dim, vision_dim, context.init)
        super().__init__(clip_model, classnames, learner, context.prefix, precision,
                         anchor_templates=anchor_templates, truncate_text=settings.truncate_text,
                         cache_text=settings.cache_text, shared_prefix=settings.shared_prefix)
        self.settings = settings

    def prompted_features(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Normalized class text features ``[C, E]`` (cached while autograd is off) and the
        vision prompts."""
        text_prompts, vision_prompts = self.prompt_learner()
        return self.cached(lambda: self.encode_class_texts(text_prompts)), vision_prompts


@TRAINER_REGISTRY.register()
class IVLP(CrossEntropyPromptTrainer):
    """Independent Vision-Language Prompting (the MaPLe paper's baseline)."""

    description = "independent deep text and vision prompts, full rank, cross-entropy only"
    config_node = "IVLP"
    default_configs = {"base2new": "vit_b16_c2_ep20_batch4_4+4ctx"}
    tiny_config = "tiny_4+4ctx_ep10"
    table_order = 30
    upstream_fp16_prompts = ("ctx_text.0",)

    @classmethod
    def add_config(cls, cfg) -> None:
        cfg.TRAINER.IVLP = add_ivlp_keys(CN())

    @classmethod
    def check_config(cls, cfg, node, prefix: str) -> None:
        super().check_config(cfg, node, prefix)
        check_ivlp_keys(node, prefix, checks.config_layers(cfg), cfg.MODEL.BACKBONE.NAME)

    def build_model(self) -> None:
        settings = IVLPSettings.from_cfg(self.node, "TRAINER.IVLP")
        clip_model = self.load_backbone()
        print("Building custom CLIP")
        self.model = IVLPCLIP(clip_model, self.dm.dataset.classnames, settings, self.precision)
        self.register_prompt_learner(self.model.prompt_learner)
