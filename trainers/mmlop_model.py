"""MMLoP's model: low-rank deep vision+language prompts with a shared factor, on ``PromptedCLIP``.

Prompts of layer ``l < PROMPT_DEPTH`` (``reference/mmlop_method.md``):
``P_t^l = U^l V_t^l`` (``[n, D_t]``) and ``P_v^l = U^l V_v^l`` (``[n, D_v]``), ``U^l [n, r]``.

``SHARE_U``: ``modality`` (one ``U^l`` per layer for both towers, the paper's choice),
``none`` (``U_t^l`` and ``U_v^l``), ``modality_and_layers`` (one ``U`` for every layer and both
towers). ``LOW_RANK False`` gives full-rank ``[n, D]`` prompts per layer and tower (IVLP).

Initialization: with ``CTX_INIT`` (exactly ``N_CTX`` BPE tokens), the layer-0 text prompt starts
as the best rank-r approximation (truncated SVD) of those tokens' embeddings (full-rank: the
embeddings themselves); every other prompt starts with entries of standard deviation about 0.02.
``U`` entries have unit mean square (``U^0 = sqrt(n) A_r`` from the SVD, random ``U ~ N(0, 1)``)
and ``V ~ N(0, 0.02^2 / r)``, so ``U V`` has entries of standard deviation 0.02 on average in
both modalities.

Parameter names: ``U`` (``ParameterList`` per layer, or one ``Parameter`` for
``modality_and_layers``), ``U_text``/``U_vision`` (``none``), ``V_text``, ``V_vision``; full rank:
``ctx_text``, ``ctx_vision``. Counts on ViT-B/16 with the defaults (n 4, r 1, depth 9): 11,556;
``none`` 11,592; ``modality_and_layers`` 11,524; full rank 46,080.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

import clip

from .consistency import drift_correct
from .prompted_clip import count_tokens
from .prompted_model import PromptedCLIP
from .clip_backbone import Precision
from .templates import IMAGENET_TEMPLATES_60

SHARE_U_CHOICES = ("none", "modality", "modality_and_layers")
PROMPT_STD = 0.02


@dataclass(frozen=True)
class MMLoPSettings:
    """The ``TRAINER.MMLOP`` keys that shape the model (see ``trainers/mmlop.py``)."""

    n_ctx: int = 4
    rank: int = 1
    prompt_depth: int = 9
    share_u: str = "modality"
    low_rank: bool = True
    ctx_init: str = "a photo of a"
    text_loss_weight: float = 25.0
    image_loss_weight: float = 10.0
    kl_loss_weight: float = 1.0
    drift_correction: bool = True
    truncate_text: bool = True
    cache_text: bool = True

    @classmethod
    def from_cfg(cls, node) -> "MMLoPSettings":
        """From the ``cfg.TRAINER.MMLOP`` node."""
        return cls(n_ctx=node.N_CTX, rank=node.RANK, prompt_depth=node.PROMPT_DEPTH,
                   share_u=node.SHARE_U, low_rank=not node.FULL_RANK, ctx_init=node.CTX_INIT,
                   text_loss_weight=float(node.TEXT_LOSS_WEIGHT),
                   image_loss_weight=float(node.IMAGE_LOSS_WEIGHT),
                   kl_loss_weight=float(node.KL_LOSS_WEIGHT),
                   drift_correction=node.DRIFT_CORRECTION, truncate_text=node.TRUNCATE_TEXT,
                   cache_text=node.CACHE_TEXT)

    @property
    def needs_anchors(self) -> bool:
        return self.drift_correction or bool(self.text_loss_weight or self.kl_loss_weight)

    @property
    def needs_zero_shot_image(self) -> bool:
        return bool(self.image_loss_weight or self.kl_loss_weight)

    def validate(self, text_layers: int, vision_layers: int) -> None:
        """Raise ``ValueError`` naming the ``TRAINER.MMLOP`` key that is out of range."""
        if self.n_ctx < 1:
            raise ValueError(f"TRAINER.MMLOP.N_CTX must be >= 1, got {self.n_ctx}")
        max_depth = min(text_layers, vision_layers)
        if not 1 <= self.prompt_depth <= max_depth:
            raise ValueError(f"TRAINER.MMLOP.PROMPT_DEPTH must be in 1..{max_depth} for this "
                             f"backbone, got {self.prompt_depth}")
        if self.low_rank and not 1 <= self.rank <= self.n_ctx:
            raise ValueError(f"TRAINER.MMLOP.RANK must be in 1..N_CTX ({self.n_ctx}), "
                             f"got {self.rank}")
        if self.share_u not in SHARE_U_CHOICES:
            raise ValueError(f"TRAINER.MMLOP.SHARE_U must be one of {', '.join(SHARE_U_CHOICES)}, "
                             f"got {self.share_u!r}")


def _normal(*shape: int, std: float) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape) * std)


class MMLoPPromptLearner(nn.Module):
    """Low-rank (or full-rank) deep prompts; ``forward()`` -> ``(text_prompts, vision_prompts)``.

    ``init_embeddings``: ``[n_ctx, D_t]`` embeddings of ``CTX_INIT`` (or ``None``: random init).
    """

    def __init__(self, settings: MMLoPSettings, text_dim: int, vision_dim: int,
                 init_embeddings: torch.Tensor | None = None):
        super().__init__()
        s = settings
        self.settings = s
        n, r, depth = s.n_ctx, s.rank, s.prompt_depth
        if init_embeddings is not None and tuple(init_embeddings.shape) != (n, text_dim):
            raise ValueError(f"init_embeddings must be [{n}, {text_dim}], "
                             f"got {tuple(init_embeddings.shape)}")
        if not s.low_rank:
            text = [_normal(n, text_dim, std=PROMPT_STD) for _ in range(depth)]
            if init_embeddings is not None:
                text[0] = nn.Parameter(init_embeddings.detach().float().clone())
            self.ctx_text = nn.ParameterList(text)
            self.ctx_vision = nn.ParameterList(
                [_normal(n, vision_dim, std=PROMPT_STD) for _ in range(depth)])
            return
        v_std = PROMPT_STD / math.sqrt(r)
        u_text = [_normal(n, r, std=1.0) for _ in range(depth)]
        v_text = [_normal(r, text_dim, std=v_std) for _ in range(depth)]
        if init_embeddings is not None:
            a, sv, bh = torch.linalg.svd(init_embeddings.detach().float(), full_matrices=False)
            u_text[0] = nn.Parameter(a[:, :r] * math.sqrt(n))
            v_text[0] = nn.Parameter(sv[:r, None] * bh[:r] / math.sqrt(n))
        self.V_text = nn.ParameterList(v_text)
        self.V_vision = nn.ParameterList([_normal(r, vision_dim, std=v_std) for _ in range(depth)])
        if s.share_u == "modality":
            self.U = nn.ParameterList(u_text)
        elif s.share_u == "none":
            self.U_text = nn.ParameterList(u_text)
            self.U_vision = nn.ParameterList([_normal(n, r, std=1.0) for _ in range(depth)])
        else:
            self.U = u_text[0]

    def _u(self, layer: int, tower: str) -> torch.Tensor:
        share = self.settings.share_u
        if share == "modality":
            return self.U[layer]
        if share == "none":
            return (self.U_text if tower == "text" else self.U_vision)[layer]
        return self.U

    def forward(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-layer prompts: text ``[n, D_t]`` and vision ``[n, D_v]``, ``PROMPT_DEPTH`` each."""
        if not self.settings.low_rank:
            return list(self.ctx_text), list(self.ctx_vision)
        depth = self.settings.prompt_depth
        text = [self._u(l, "text") @ self.V_text[l] for l in range(depth)]
        vision = [self._u(l, "vision") @ self.V_vision[l] for l in range(depth)]
        return text, vision


def ctx_init_embeddings(clip_model: nn.Module, ctx_init: str, n_ctx: int) -> torch.Tensor | None:
    """Token embeddings ``[n_ctx, D]`` of ``ctx_init`` (fp32), or ``None`` when it is empty."""
    text = ctx_init.replace("_", " ").strip()
    if not text:
        return None
    n_tokens = count_tokens(text)
    if n_tokens != n_ctx:
        raise ValueError(f"TRAINER.MMLOP.CTX_INIT {ctx_init!r} is {n_tokens} BPE tokens but "
                         f"TRAINER.MMLOP.N_CTX is {n_ctx}; they must match (or set CTX_INIT '' "
                         "for a random initialization)")
    tokens = clip.tokenize(text, context_length=int(clip_model.positional_embedding.shape[0]))
    weight = clip_model.token_embedding.weight
    with torch.no_grad():
        return weight[tokens[0, 1:1 + n_ctx].to(weight.device)].detach().float().cpu()


@dataclass
class MMLoPOutput:
    """Training-time outputs (all fp32): logits ``[B, C]`` (drift-corrected when enabled),
    ``text [C, E]`` prompted text features before correction, ``text_anchors [C, E]``,
    ``image [B, E]``, ``image_zs [B, E]`` and ``zs_logits [B, C]`` (None when not needed)."""

    logits: torch.Tensor
    text: torch.Tensor
    text_anchors: torch.Tensor | None
    image: torch.Tensor
    image_zs: torch.Tensor | None
    zs_logits: torch.Tensor | None


class MMLoPCLIP(PromptedCLIP):
    """Frozen CLIP + ``MMLoPPromptLearner``; ``forward(images)`` returns ``MMLoPOutput`` while
    ``prompt_learner`` is in training mode (the trainer sets only the registered prompt learner's
    mode) and logits ``[B, C]`` in eval mode."""

    def __init__(self, clip_model: nn.Module, classnames: Sequence[str], settings: MMLoPSettings,
                 precision: Precision | None = None):
        settings.validate(len(clip_model.transformer.resblocks),
                          len(getattr(clip_model.visual, "transformer", clip_model.transformer)
                              .resblocks))
        if not hasattr(clip_model.visual, "class_embedding"):
            raise ValueError("MMLoP needs a ViT backbone (vision prompts); got a ResNet CLIP")
        init = ctx_init_embeddings(clip_model, settings.ctx_init, settings.n_ctx)
        prefix = settings.ctx_init.replace("_", " ").strip() if init is not None else \
            " ".join(["X"] * settings.n_ctx)
        learner = MMLoPPromptLearner(settings, text_dim=int(clip_model.ln_final.weight.shape[0]),
                                     vision_dim=int(clip_model.visual.conv1.weight.shape[0]),
                                     init_embeddings=init)
        super().__init__(clip_model, classnames, learner, prefix, precision,
                         anchor_templates=IMAGENET_TEMPLATES_60 if settings.needs_anchors else None,
                         truncate_text=settings.truncate_text, cache_text=settings.cache_text)
        self.settings = settings

    def correct(self, text: torch.Tensor) -> torch.Tensor:
        """Drift-corrected text features when ``DRIFT_CORRECTION`` is on, else ``text``."""
        if self.settings.drift_correction:
            return drift_correct(text, self.text_anchors)
        return text

    def forward(self, images: torch.Tensor):
        text_prompts, vision_prompts = self.prompt_learner()
        scale = self.logit_scale
        if not self.prompt_learner.training:
            text = self.cached(lambda: self.correct(self.encode_class_texts(text_prompts)))
            return scale * self.image_features(images, vision_prompts) @ text.t()
        text = self.encode_class_texts(text_prompts)
        image = self.image_features(images, vision_prompts)
        logits = scale * image @ self.correct(text).t()
        image_zs = zs_logits = None
        if self.settings.needs_zero_shot_image:
            with torch.no_grad():
                image_zs = self.image_features(images)
                if self.settings.kl_loss_weight:
                    zs_logits = scale * image_zs @ self.text_anchors.t()
        return MMLoPOutput(logits, text, self.text_anchors, image, image_zs, zs_logits)
