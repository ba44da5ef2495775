"""The ``CoCoOp`` trainer: a text context shifted per image by a small meta-network.

Model (docs/METHOD.md): ``ctx [N_CTX, D_t]`` (CoOp's init: the embeddings of
``CTX_INIT``, whose BPE length then sets the number of tokens, or ``N(0, 0.02^2)`` and "X"s) and
``meta_net`` = ``linear1`` (``E -> E // 16``), ``relu``, ``linear2`` (``E // 16 -> D_t``), where
``E`` is CLIP's embedding width. For normalized image features ``f [B, E]`` each image ``i`` gets
its own context ``ctx + meta_net(f_i)`` (the bias added to every token), hence its own class text
features ``t_i [C, E]`` and logits ``scale * f_i . t_i``. The text tower runs on ``B * C``
sequences, truncated after the last end-of-text row, in chunks of at most ``text_batch``
sequences (whole images per chunk). ViT-B/16 with 4 tokens: 35,360 parameters
(``ctx``, ``meta_net.linear1.*``, ``meta_net.linear2.*``).

Config node ``TRAINER.COCOOP`` (upstream names and defaults): ``N_CTX`` 16, ``CTX_INIT`` "",
``PREC`` "fp16" (``fp32``/``fp16``/``bf16``/``amp``; fp32 on CPU), plus ``PROMPT_PREC``
(``fp32`` default; ``upstream``: under ``PREC fp16`` ``ctx`` and the meta-net are fp16
parameters trained without gradient scaling, as upstream, ``core/precision.py``) and
``TRUNCATE_TEXT``.
Configs: ``configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml`` (base-to-novel and
cross-dataset), ``vit_b16_c4_ep10_batch1.yaml``, ``vit_b16_c8_ep10_batch1.yaml``,
``vit_b16_c16_ep10_batch1.yaml``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from dassl.engine import TRAINER_REGISTRY

from .core import checks
from .core.context import clean_ctx_init, context_parameter, normal_prompt, text_context
from .core.model import PromptedCLIP
from .core.precision import Precision
from .core.shared_keys import PRECISION_KEYS, add_shared_keys, speed_ups
from .core.text_inputs import count_tokens
from .core.trainer import CrossEntropyPromptTrainer


class CoCoOpPromptLearner(nn.Module):
    """``ctx`` and ``meta_net``; ``forward(image_features [B, E])`` -> contexts ``[B, n, D_t]``."""

    def __init__(self, n_ctx: int, ctx_dim: int, vis_dim: int, init: torch.Tensor | None = None):
        super().__init__()
        self.ctx = normal_prompt(n_ctx, ctx_dim) if init is None else context_parameter(init)
        hidden = vis_dim // 16
        if hidden < 1:
            raise ValueError(f"CoCoOp's meta-net needs an embedding width >= 16, got {vis_dim}")
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(vis_dim, hidden)),
            ("relu", nn.ReLU(inplace=True)),
            ("linear2", nn.Linear(hidden, ctx_dim)),
        ]))

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        bias = self.meta_net(image_features.to(self.ctx.dtype))
        return self.ctx.unsqueeze(0) + bias.unsqueeze(1)


class CoCoOpCLIP(PromptedCLIP):
    """Frozen CLIP + ``CoCoOpPromptLearner``; ``forward(images)`` -> logits ``[B, C]`` (fp32)."""

    def __init__(self, clip_model: nn.Module, classnames: Sequence[str], n_ctx: int = 16,
                 ctx_init: str = "", precision: Precision | None = None,
                 truncate_text: bool = True, text_batch: int = 4096):
        if clean_ctx_init(ctx_init):
            n_ctx = count_tokens(clean_ctx_init(ctx_init))
        if n_ctx < 1:
            raise ValueError(f"TRAINER.COCOOP.N_CTX must be >= 1, got {n_ctx}")
        context = text_context(clip_model, ctx_init, n_ctx)
        print(f'Initial context: "{context.prefix}"')
        print(f"Number of context words (tokens): {n_ctx}")
        embed_dim = int(clip_model.text_projection.shape[1])
        learner = CoCoOpPromptLearner(n_ctx, int(clip_model.ln_final.weight.shape[0]), embed_dim,
                                      context.init)
        super().__init__(clip_model, classnames, learner, context.prefix, precision,
                         truncate_text=truncate_text, cache_text=False)
        self.text_batch = text_batch

    def per_image_text_features(self, contexts: torch.Tensor) -> torch.Tensor:
        """Normalized class text features ``[B, C, E]`` (fp32) for per-image contexts
        ``[B, n, D_t]``."""
        cp = self.class_prompts
        emb = cp.inputs(self.truncate_text)                       # [C, L, D]
        n_cls = emb.shape[0]
        per_chunk = max(1, self.text_batch // n_cls)
        feats = []
        for start in range(0, contexts.shape[0], per_chunk):
            ctx = contexts[start:start + per_chunk]               # [b, n, D]
            b = ctx.shape[0]
            prompts = ctx.unsqueeze(1).expand(b, n_cls, -1, -1).reshape(b * n_cls, *ctx.shape[1:])
            with self.precision.autocast():
                out = self.text_encoder(emb.repeat(b, 1, 1), cp.eot_index.repeat(b), [prompts],
                                        seq_len=cp.seq_len, truncate=self.truncate_text)
            feats.append(F.normalize(out.float(), dim=-1).view(b, n_cls, -1))
        return torch.cat(feats)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        image = self.image_features(images)                       # [B, E]
        text = self.per_image_text_features(self.prompt_learner(image))
        return self.logit_scale * torch.einsum("be,bce->bc", image, text)


@TRAINER_REGISTRY.register()
class CoCoOp(CrossEntropyPromptTrainer):
    """Conditional Context Optimization (Zhou et al., CVPR 2022)."""

    description = "text context shifted per image by a small meta-network"
    config_node = "COCOOP"
    default_configs = {"base2new": "vit_b16_c4_ep10_batch1_ctxv1",
                       "xd": "vit_b16_c4_ep10_batch1_ctxv1"}
    tiny_config = "tiny_c4_ep10_batch4_ctxv1"
    table_order = 20
    upstream_fp16_prompts = ("ctx", "meta_net")

    @classmethod
    def add_config(cls, cfg) -> None:
        node = cfg.TRAINER.COCOOP = CN()
        node.N_CTX = 16
        node.CTX_INIT = ""
        # per-image text features: nothing to cache once per evaluation, no prefix common to all
        add_shared_keys(node, PRECISION_KEYS + ("TRUNCATE_TEXT",))

    @classmethod
    def check_config(cls, cfg, node, prefix: str) -> None:
        super().check_config(cfg, node, prefix)
        checks.check_range(node, prefix, "N_CTX", low=1)
        checks.check_ctx_init(node, prefix)

    def build_model(self) -> None:
        node = self.node
        clip_model = self.load_backbone()
        print("Building custom CLIP")
        self.model = CoCoOpCLIP(clip_model, self.dm.dataset.classnames, node.N_CTX,
                                node.CTX_INIT, self.precision, **speed_ups(node))
        self.register_prompt_learner(self.model.prompt_learner)
