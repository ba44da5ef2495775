"""The ``CoOp`` trainer: a learnable text context shared by all classes (or one per class).

Config node ``TRAINER.COOP`` (upstream names and defaults): ``N_CTX`` 16, ``CSC`` False,
``CTX_INIT`` "" (e.g. "a photo of a": then the context starts as those tokens' embeddings and
N_CTX is its number of BPE tokens; upstream counted words, which differs for words such as
"itap"), ``CLASS_TOKEN_POSITION`` end/middle/front, ``PREC`` fp16/fp32/bf16/amp (fp32 on CPU),
plus ``PROMPT_PREC`` (``fp32`` default; ``upstream``: under ``PREC fp16`` ``ctx`` is an fp16
parameter trained without gradient scaling, as upstream, ``core/precision.py``),
``TRUNCATE_TEXT``, ``CACHE_TEXT`` and ``SHARED_PREFIX`` (the core's exact speed-ups,
``core/shared_keys.py``; ``SHARED_PREFIX`` applies to the ``end`` position with
a generic context, the only layout whose rows before the class name are the same for all classes).
The parameter is ``ctx`` (``[N_CTX, D]``, or ``[n_cls, N_CTX, D]`` with CSC); the registered
module is ``prompt_learner``, whose checkpoints hold ``ctx`` only.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

import clip
from dassl.engine import TRAINER_REGISTRY

from .core import checks
from .core.context import clean_ctx_init, context_parameter, text_context
from .core.model import PromptedCLIP
from .core.precision import Precision
from .core.shared_keys import ALL_SHARED, add_shared_keys, speed_ups
from .core.text_inputs import count_tokens
from .core.trainer import CrossEntropyPromptTrainer

POSITIONS = ("end", "middle", "front")


class CoOpPromptLearner(nn.Module):
    """``ctx`` and the layout of "[SOS] ctx class ." per ``CLASS_TOKEN_POSITION``.

    ``assemble(embeddings, name_lens)`` takes the token embeddings ``[C, L, D]`` of the
    placeholder prompts (``ClassPrompts``) and returns them with the context inserted.
    """

    def __init__(self, n_ctx: int, ctx_dim: int, n_cls: int, csc: bool, position: str,
                 init_embeddings: torch.Tensor | None = None):
        super().__init__()
        if position not in POSITIONS:
            raise ValueError(f"TRAINER.COOP.CLASS_TOKEN_POSITION must be one of "
                             f"{', '.join(POSITIONS)}, got {position!r}")
        self.n_ctx, self.position = n_ctx, position
        if init_embeddings is not None:
            self.ctx = context_parameter(init_embeddings)
        elif csc:
            print("Initializing class-specific contexts")
            self.ctx = nn.Parameter(torch.randn(n_cls, n_ctx, ctx_dim) * 0.02)
        else:
            print("Initializing a generic context")
            self.ctx = nn.Parameter(torch.randn(n_ctx, ctx_dim) * 0.02)

    def assemble(self, embeddings: torch.Tensor, name_lens: Sequence[int]) -> torch.Tensor:
        c = embeddings.shape[0]
        ctx = self.ctx.to(embeddings.dtype)
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(c, -1, -1)
        prefix, suffix = embeddings[:, :1], embeddings[:, 1 + self.n_ctx:]
        if self.position == "end":
            return torch.cat([prefix, ctx, suffix], dim=1)
        rows = []
        half = self.n_ctx // 2
        for i, n in enumerate(name_lens):
            name, rest = suffix[i:i + 1, :n], suffix[i:i + 1, n:]
            if self.position == "middle":
                parts = [prefix[i:i + 1], ctx[i:i + 1, :half], name, ctx[i:i + 1, half:], rest]
            else:
                parts = [prefix[i:i + 1], name, ctx[i:i + 1], rest]
            rows.append(torch.cat(parts, dim=1))
        return torch.cat(rows, dim=0)


class CoOpCLIP(PromptedCLIP):
    """Frozen CLIP + ``CoOpPromptLearner``; ``forward(images)`` -> logits ``[B, C]``."""

    def __init__(self, clip_model: nn.Module, classnames: Sequence[str], n_ctx: int,
                 ctx_init: str = "", csc: bool = False, position: str = "end",
                 precision: Precision | None = None, truncate_text: bool = True,
                 cache_text: bool = True, shared_prefix: bool = True):
        if clean_ctx_init(ctx_init):
            n_ctx = count_tokens(clean_ctx_init(ctx_init))
        context = text_context(clip_model, ctx_init, n_ctx)
        print(f'Initial context: "{context.prefix}"')
        print(f"Number of context words (tokens): {n_ctx}")
        learner = CoOpPromptLearner(n_ctx, int(clip_model.ln_final.weight.shape[0]),
                                    len(classnames), csc and context.init is None, position,
                                    context.init)
        super().__init__(clip_model, classnames, learner, context.prefix, precision,
                         truncate_text=truncate_text, cache_text=cache_text,
                         shared_prefix=shared_prefix)
        if position == "end" and learner.ctx.dim() == 2:
            # "[SOS] ctx <class>.": the rows before the class name are the same for all classes
            # (middle/front/CSC put class-specific rows among them and declare none)
            self.text_encoder.prefix_len = self.prefix_len

    def encode_class_texts(self, text_prompts=()) -> torch.Tensor:
        cp = self.class_prompts
        embeddings = self.prompt_learner.assemble(cp.inputs(self.truncate_text), cp.name_lens)
        with self.precision.autocast():
            feats = self.text_encoder(embeddings, cp.eot_index, seq_len=cp.seq_len,
                                      truncate=self.truncate_text)
        return F.normalize(feats.float(), dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.prompt_learner.training:
            text = self.encode_class_texts()
        else:
            text = self.cached(self.encode_class_texts)
        return self.logit_scale * self.image_features(images) @ text.t()


@TRAINER_REGISTRY.register()
class CoOp(CrossEntropyPromptTrainer):
    """Context Optimization (Zhou et al., IJCV 2022)."""

    description = "learned text context shared by all classes (or one per class)"
    config_node = "COOP"
    # Base-to-novel: the recipe behind the published CoOp row (upstream's 200-epoch ViT-B/16 config
    # with "a photo of a", 50 epochs on ImageNet); vit_b16_c4_ep10_batch1_ctxv1 is a short alternative.
    default_configs = {"base2new": "vit_b16_ctxv1", "base2new:imagenet": "vit_b16_ep50_ctxv1",
                       "xd": "vit_b16_ep50_ctxv1", "few_shot": "vit_b16_ep50_ctxv1"}
    tiny_config = "tiny_ctx4_ep10"
    table_order = 10
    upstream_fp16_prompts = ("ctx",)

    @classmethod
    def add_config(cls, cfg) -> None:
        """Upstream keys plus the shared ones (precision, prompt dtype, the three speed-ups)."""
        node = cfg.TRAINER.COOP = CN()
        node.N_CTX = 16
        node.CSC = False
        node.CTX_INIT = ""
        node.CLASS_TOKEN_POSITION = "end"
        add_shared_keys(node, ALL_SHARED)

    @classmethod
    def check_config(cls, cfg, node, prefix: str) -> None:
        super().check_config(cfg, node, prefix)
        checks.check_range(node, prefix, "N_CTX", low=1)
        checks.check_choice(node, prefix, "CLASS_TOKEN_POSITION", POSITIONS)
        checks.check_ctx_init(node, prefix)

    def build_model(self) -> None:
        node = self.node
        clip_model = self.load_backbone()
        print("Building custom CLIP")
        self.model = CoOpCLIP(clip_model, self.dm.dataset.classnames, node.N_CTX, node.CTX_INIT,
                              node.CSC, node.CLASS_TOKEN_POSITION, self.precision,
                              **speed_ups(node))
        self.register_prompt_learner(self.model.prompt_learner)


def load_clip_to_cpu(cfg) -> nn.Module:
    """Upstream CoOp's ``load_clip_to_cpu(cfg)``, for upstream-style trainer files that import it:
    the CLIP of ``cfg.MODEL.BACKBONE.NAME`` on the CPU as OpenAI's ``build_model`` returns it
    (fp16 weights, eval mode). This project's trainers load through ``core.backbone`` instead."""
    from clip import clip as openai_api

    name = cfg.MODEL.BACKBONE.NAME
    path = os.path.expanduser(name)
    if not os.path.isfile(path):
        path = openai_api._download(openai_api._MODELS[name])
    return clip.build_model(openai_api.load_state_dict(path)).eval()
