"""IVLP's model: independent deep vision and language prompts (full rank) on ``PromptedCLIP``.

Prompts (``reference/maple_promptsrc.md`` §1.4): text ``P_l [N_CTX_TEXT, D_t]`` for layers
``l < PROMPT_DEPTH_TEXT`` and vision ``V_l [N_CTX_VISION, D_v]`` for ``l < PROMPT_DEPTH_VISION``
(0 = no vision prompt: deep language prompting). Placement is the core's (IVLP/PromptSRC).

Initialization (upstream): ``P_0`` starts as the embeddings of the first ``N_CTX_TEXT`` BPE tokens
of ``CTX_INIT`` and the prompt text is the whole ``CTX_INIT`` (with 2 tokens and "a photo of a",
"of a" stays as fixed words after the learned ones); when ``CTX_INIT`` is empty or shorter than
``N_CTX_TEXT`` tokens, ``P_0 ~ N(0, 0.02^2)`` and the prompt text is ``N_CTX_TEXT`` "X"s. Every
other prompt is ``N(0, 0.02^2)``.

Parameter names (the same as MMLoP's full-rank prompts, so values copy across): ``ctx_text.<l>``,
``ctx_vision.<l>``. ViT-B/16: 4+4 at depth 9 = 46,080; 2+2 at depth 12 = 30,720.

``text_context(clip_model, ctx_init, n_ctx)`` (the upstream text-init rule) is shared with MaPLe,
PromptSRC and CoCoOp.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

import clip

from .clip_backbone import Precision
from .prompted_clip import count_tokens
from .prompted_model import PromptedCLIP

PROMPT_STD = 0.02


def text_context(clip_model: nn.Module, ctx_init: str,
                 n_ctx: int) -> tuple[str, torch.Tensor | None]:
    """``(prompt_prefix, init)``: the text the class prompts start with and the ``[n_ctx, D_t]``
    fp32 CPU embeddings of its first ``n_ctx`` tokens, or ``("X X ... X", None)`` for a random
    initialization (empty ``ctx_init`` or fewer than ``n_ctx`` tokens)."""
    text = ctx_init.replace("_", " ").strip()
    if text:
        n_tokens = count_tokens(text)
        if n_tokens >= n_ctx:
            length = int(clip_model.positional_embedding.shape[0])
            tokens = clip.tokenize(text, context_length=length)
            weight = clip_model.token_embedding.weight
            with torch.no_grad():
                init = weight[tokens[0, 1:1 + n_ctx].to(weight.device)].detach().float().cpu()
            return text, init
        print(f'Note: CTX_INIT "{text}" has {n_tokens} tokens, fewer than the {n_ctx} context '
              "tokens: random initialization")
    return " ".join(["X"] * n_ctx), None


def backbone_dims(clip_model: nn.Module) -> tuple[int, int, int, int]:
    """``(text_width, vision_width, text_layers, vision_layers)`` of a ViT CLIP (0s for ResNet)."""
    visual = clip_model.visual
    text_width = int(clip_model.ln_final.weight.shape[0])
    if not hasattr(visual, "class_embedding"):
        return text_width, 0, len(clip_model.transformer.resblocks), 0
    return (text_width, int(visual.conv1.weight.shape[0]), len(clip_model.transformer.resblocks),
            len(visual.transformer.resblocks))


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
    key: str = "TRAINER.IVLP"

    @classmethod
    def from_cfg(cls, node, key: str) -> "IVLPSettings":
        """From a ``cfg.TRAINER.<NAME>`` node with IVLP's keys."""
        return cls(n_ctx_text=node.N_CTX_TEXT, n_ctx_vision=node.N_CTX_VISION,
                   depth_text=node.PROMPT_DEPTH_TEXT, depth_vision=node.PROMPT_DEPTH_VISION,
                   ctx_init=node.CTX_INIT, truncate_text=node.TRUNCATE_TEXT,
                   cache_text=node.CACHE_TEXT, key=key)

    def validate(self, clip_model: nn.Module) -> None:
        """Raise ``ValueError`` naming the key that does not fit ``clip_model``."""
        _, vision_width, text_layers, vision_layers = backbone_dims(clip_model)
        k = self.key
        if self.n_ctx_text < 1:
            raise ValueError(f"{k}.N_CTX_TEXT must be >= 1, got {self.n_ctx_text}")
        if not 1 <= self.depth_text <= text_layers:
            raise ValueError(f"{k}.PROMPT_DEPTH_TEXT must be in 1..{text_layers} for this "
                             f"backbone, got {self.depth_text}")
        if self.depth_vision == 0:
            return
        if not vision_width:
            raise ValueError(f"{k}.PROMPT_DEPTH_VISION {self.depth_vision} needs a ViT backbone; "
                             "this CLIP has a ResNet image tower (set it to 0 or use ViT-*)")
        if not 0 <= self.depth_vision <= vision_layers:
            raise ValueError(f"{k}.PROMPT_DEPTH_VISION must be in 0..{vision_layers} for this "
                             f"backbone, got {self.depth_vision}")
        if self.n_ctx_vision < 1:
            raise ValueError(f"{k}.N_CTX_VISION must be >= 1, got {self.n_ctx_vision}")


def normal_prompt(n: int, dim: int) -> nn.Parameter:
    """A ``[n, dim]`` prompt with entries ``N(0, 0.02^2)``."""
    return nn.Parameter(torch.randn(n, dim) * PROMPT_STD)


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
            text[0] = nn.Parameter(init.detach().float().clone())
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
        prefix, init = text_context(clip_model, settings.ctx_init, settings.n_ctx_text)
        print(f'Initial text context: "{prefix}"')
        print(f"Number of context words (tokens) for language prompting: {settings.n_ctx_text}")
        print(f"Number of context words (tokens) for vision prompting: "
              f"{settings.n_ctx_vision if settings.depth_vision else 0}")
        learner = IVLPPromptLearner(settings, text_dim, vision_dim, init)
        super().__init__(clip_model, classnames, learner, prefix, precision,
                         anchor_templates=anchor_templates, truncate_text=settings.truncate_text,
                         cache_text=settings.cache_text)
        self.settings = settings

    def prompted_features(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Normalized class text features ``[C, E]`` (cached while autograd is off) and the
        vision prompts."""
        text_prompts, vision_prompts = self.prompt_learner()
        return self.cached(lambda: self.encode_class_texts(text_prompts)), vision_prompts

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        text, vision_prompts = self.prompted_features()
        return self.logit_scale * self.image_features(images, vision_prompts) @ text.t()
