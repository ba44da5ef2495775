"""The ``MaPLe`` trainer: deep text prompts coupled to vision prompts by per-layer linear maps.

Model (docs/METHOD.md), depth ``J = PROMPT_DEPTH``, ``n = N_CTX``:

* text prompts ``P_0 = ctx`` (the first ``n`` token embeddings of ``CTX_INIT``, whose whole text
  is the prompt prefix; random ``N(0, 0.02^2)`` and "X"s when it is empty or too short) and
  ``P_k = compound_prompts_text[k-1]`` (``N(0, 0.02^2)``), each ``[n, D_t]``;
* couplings ``F_0 = proj`` and ``F_k = compound_prompt_projections[k-1]``: ``Linear(D_t, D_v)``
  with PyTorch's default init, the deeper ones ``J-1`` copies of one freshly initialized layer
  (so they start identical, as upstream); ``D_t``/``D_v`` are the loaded CLIP's widths;
* vision prompts ``V_k = F_k(P_k)`` (``[n, D_v]``), placed like IVLP's.

All trainable tensors are fp32 by default (upstream's fp16 ``proj`` breaks its fp32 and amp
runs); they are cast to the activation dtype where inserted. With ``PROMPT_PREC upstream`` and
``PREC fp16``, ``ctx`` and ``proj`` are fp16 parameters and the rest fp32, trained without
gradient scaling, as upstream (``core/precision.py``). ViT-B/16, ``n`` 2, ``J`` 9: 3,555,072
parameters.

Config node ``TRAINER.MAPLE`` (upstream names): ``N_CTX`` 2, ``CTX_INIT`` "a photo of a",
``PREC`` "fp16" (``fp32``/``fp16``/``bf16``/``amp``; fp32 on CPU), ``PROMPT_DEPTH`` 9, plus
``PROMPT_PREC`` (``fp32``/``upstream``), ``TRUNCATE_TEXT``, ``CACHE_TEXT`` and
``SHARED_PREFIX`` (the core's exact speed-ups, ``core/shared_keys.py``). Configs:
``configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml`` (base-to-novel) and
``vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml`` (ImageNet -> others, depth 3, 2 epochs).
"""
from __future__ import annotations

import copy
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


class MaPLePromptLearner(nn.Module):
    """``forward()`` -> ``([P_0 .. P_{J-1}], [F_0(P_0) .. F_{J-1}(P_{J-1})])``."""

    def __init__(self, n_ctx: int, depth: int, text_dim: int, vision_dim: int,
                 init: torch.Tensor | None = None):
        super().__init__()
        ctx = normal_prompt(n_ctx, text_dim)        # drawn even when replaced: same random stream
        self.ctx = ctx if init is None else context_parameter(init)
        self.proj = nn.Linear(text_dim, vision_dim)
        self.compound_prompts_text = nn.ParameterList(
            [normal_prompt(n_ctx, text_dim) for _ in range(depth - 1)])
        deep = nn.Linear(text_dim, vision_dim)
        self.compound_prompt_projections = nn.ModuleList(
            [copy.deepcopy(deep) for _ in range(depth - 1)])

    def forward(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        text = [self.ctx, *self.compound_prompts_text]
        maps = [self.proj, *self.compound_prompt_projections]
        return text, [f(p) for f, p in zip(maps, text)]


def check_maple_keys(node, prefix: str, layers: tuple[int, int] | None, backbone: str) -> None:
    """Every rule on MaPLe's keys, in one place: ``MaPLe.check_config`` runs it before loading,
    ``MaPLeCLIP`` on the loaded model's layers (``checks.check_loaded``). The depth applies to both
    towers (the vision prompts are maps of the text prompts), so a ResNet image tower is refused."""
    checks.check_range(node, prefix, "N_CTX", low=1)
    checks.check_depth_fits(node, prefix, "PROMPT_DEPTH", "text", layers, backbone)
    checks.check_depth_fits(node, prefix, "PROMPT_DEPTH", "vision", layers, backbone)
    checks.check_ctx_init(node, prefix)


class MaPLeCLIP(PromptedCLIP):
    """Frozen CLIP + ``MaPLePromptLearner``; ``forward(images)`` -> logits ``[B, C]`` (fp32)."""

    def __init__(self, clip_model: nn.Module, classnames: Sequence[str], n_ctx: int = 2,
                 depth: int = 9, ctx_init: str = "a photo of a",
                 precision: Precision | None = None, truncate_text: bool = True,
                 cache_text: bool = True, shared_prefix: bool = True):
        checks.check_loaded(check_maple_keys, CN({"N_CTX": n_ctx, "PROMPT_DEPTH": depth, "CTX_INIT": ctx_init}),
                            "TRAINER.MAPLE", clip_model)
        text_dim, vision_dim, _, _ = backbone_dims(clip_model)
        context = text_context(clip_model, ctx_init, n_ctx)
        print("MaPLe design: Multi-modal Prompt Learning")
        print(f'Initial context: "{context.prefix}"')
        print(f"Number of MaPLe context words (tokens): {n_ctx}")
        learner = MaPLePromptLearner(n_ctx, depth, text_dim, vision_dim, context.init)
        super().__init__(clip_model, classnames, learner, context.prefix, precision,
                         truncate_text=truncate_text, cache_text=cache_text,
                         shared_prefix=shared_prefix)


@TRAINER_REGISTRY.register()
class MaPLe(CrossEntropyPromptTrainer):
    """Multi-modal Prompt Learning (Khattak et al., CVPR 2023)."""

    description = "deep text prompts; vision prompts are per-layer linear maps of them"
    config_node = "MAPLE"
    default_configs = {"base2new": "vit_b16_c2_ep5_batch4_2ctx",
                       "xd": "vit_b16_c2_ep5_batch4_2ctx_cross_datasets"}
    tiny_config = "tiny_2ctx_ep10"
    table_order = 40
    upstream_fp16_prompts = ("ctx", "proj")

    @classmethod
    def add_config(cls, cfg) -> None:
        node = cfg.TRAINER.MAPLE = CN()
        node.N_CTX = 2
        node.CTX_INIT = "a photo of a"
        node.PROMPT_DEPTH = 9
        add_shared_keys(node, ALL_SHARED)

    @classmethod
    def check_config(cls, cfg, node, prefix: str) -> None:
        super().check_config(cfg, node, prefix)
        check_maple_keys(node, prefix, checks.config_layers(cfg), cfg.MODEL.BACKBONE.NAME)

    def build_model(self) -> None:
        node = self.node
        clip_model = self.load_backbone()
        print("Building custom CLIP")
        self.model = MaPLeCLIP(clip_model, self.dm.dataset.classnames, node.N_CTX,
                               node.PROMPT_DEPTH, node.CTX_INIT, self.precision,
                               **speed_ups(node))
        self.register_prompt_learner(self.model.prompt_learner)
