"""The ``VPT`` trainer: deep vision-only prompts against a fixed text prompt (the MaPLe
repository's "deep vision prompting" baseline), cross-entropy only.

Prompts: vision ``V_l [N_CTX_VISION, D_v]`` for layers ``l < PROMPT_DEPTH_VISION``, ``N(0, 0.02^2)``,
placed as IVLP's vision prompts (``core/encoders.py``; parameter names ``ctx_vision.<l>`` as
IVLP's). The text side learns nothing: each class is the frozen CLIP text feature of
"<CTX_INIT> <class>." (default "a photo of a <class>.", the text upstream hard-codes), computed
once per class set in fp32 before the backbone is cast. ViT-B/16 with the shipped config (8
tokens, depth 12): 12 x 8 x 768 = 73,728 trainable parameters.

Config node ``TRAINER.VPT`` (upstream's key names; defaults as upstream ``train.py``):

===================  ==============  ====================================================
key                  default         meaning
===================  ==============  ====================================================
N_CTX_VISION         2               vision prompt tokens per layer
PROMPT_DEPTH_VISION  1               prompted vision layers (>= 1; 1 = shallow VPT)
CTX_INIT             "a photo of a"  the fixed text before the class name ('' = the name
                                     alone); upstream reads no key for it
PREC                 "fp16"          ``fp32``/``fp16``/``bf16``/``amp`` (fp32 on CPU)
===================  ==============  ====================================================

Upstream's VPT runs its whole model in fp32 whatever ``PREC`` says, so the shipped config sets
``PREC "fp32"`` (its upstream file says "fp16"). Configs:
``configs/trainers/VPT/vit_b16_c2_ep5_batch4_4.yaml`` (MaPLe repo; the name says 4, the file
has 8 tokens), ``tiny_4ctx_ep10.yaml`` (the offline proxy benchmark).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from yacs.config import CfgNode as CN

from dassl.engine import TRAINER_REGISTRY

from .core import checks
from .core.backbone import backbone_dims
from .core.context import clean_ctx_init, normal_prompt
from .core.model import PromptedCLIP
from .core.precision import Precision
from .core.shared_keys import add_shared_keys
from .core.trainer import CrossEntropyPromptTrainer


class VPTPromptLearner(nn.Module):
    """``depth`` vision prompts ``[n_ctx, vision_dim]``; ``forward()`` -> ``([], vision)``."""

    def __init__(self, n_ctx: int, depth: int, vision_dim: int):
        super().__init__()
        self.ctx_vision = nn.ParameterList([normal_prompt(n_ctx, vision_dim) for _ in range(depth)])

    def forward(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return [], list(self.ctx_vision)


def check_vpt_keys(node, prefix: str, layers: tuple[int, int] | None, backbone: str) -> None:
    """Every rule on VPT's keys, in one place: ``VPT.check_config`` runs it before loading,
    ``VPTCLIP`` on the loaded model's layers (``checks.check_loaded``)."""
    checks.check_range(node, prefix, "N_CTX_VISION", low=1)
    checks.check_depth_fits(node, prefix, "PROMPT_DEPTH_VISION", "vision", layers, backbone)


class VPTCLIP(PromptedCLIP):
    """Frozen CLIP + ``VPTPromptLearner``; ``forward(images)`` -> logits ``[B, C]`` (fp32)
    against the fixed class texts ``text_anchors``."""

    def __init__(self, clip_model: nn.Module, classnames: Sequence[str], n_ctx: int, depth: int,
                 ctx_init: str = "a photo of a", precision: Precision | None = None,
                 key: str = "TRAINER.VPT"):
        checks.check_loaded(check_vpt_keys, CN({"N_CTX_VISION": n_ctx, "PROMPT_DEPTH_VISION": depth}), key,
                            clip_model)
        vision_width = backbone_dims(clip_model).vision_width
        prefix = clean_ctx_init(ctx_init)
        template = f"{prefix} {{}}." if prefix else "{}."
        print(f'Fixed text: "{template.format("<class>")}"')
        print(f"Number of context words (tokens) for vision prompting: {n_ctx}")
        learner = VPTPromptLearner(n_ctx, depth, vision_width)
        super().__init__(clip_model, classnames, learner, prefix, precision,
                         anchor_templates=(template,))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _, vision_prompts = self.prompt_learner()
        return self.logit_scale * self.image_features(images, vision_prompts) @ self.text_anchors.t()


@TRAINER_REGISTRY.register()
class VPT(CrossEntropyPromptTrainer):
    """Deep Visual Prompt Tuning with a fixed text prompt (the MaPLe paper's baseline)."""

    description = "deep vision-only prompts against the fixed text 'a photo of a <class>.'"
    config_node = "VPT"
    default_configs = {"base2new": "vit_b16_c2_ep5_batch4_4"}
    tiny_config = "tiny_4ctx_ep10"
    table_order = 25

    @classmethod
    def add_config(cls, cfg) -> None:
        node = cfg.TRAINER.VPT = CN()
        node.N_CTX_VISION = 2
        node.PROMPT_DEPTH_VISION = 1
        node.CTX_INIT = "a photo of a"
        add_shared_keys(node, ("PREC",))        # the text side is fixed: no text speed-ups

    @classmethod
    def check_config(cls, cfg, node, prefix: str) -> None:
        super().check_config(cfg, node, prefix)
        check_vpt_keys(node, prefix, checks.config_layers(cfg), cfg.MODEL.BACKBONE.NAME)

    def build_model(self) -> None:
        node = self.node
        clip_model = self.load_backbone()
        print("Building custom CLIP")
        self.model = VPTCLIP(clip_model, self.dm.dataset.classnames, node.N_CTX_VISION,
                             node.PROMPT_DEPTH_VISION, node.CTX_INIT, self.precision)
        self.register_prompt_learner(self.model.prompt_learner)
