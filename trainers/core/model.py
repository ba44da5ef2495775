"""``PromptedCLIP``: a frozen CLIP plus a prompt learner, the base of every deep-prompt method.

A prompt learner is any ``nn.Module`` whose ``forward()`` returns ``(text_prompts,
vision_prompts)``, two lists indexed by layer of ``Tensor[n, D] | None`` (the placement is the
IVLP/PromptSRC one, see ``encoders``). ``PromptedCLIP`` owns everything else:

* the class-dependent text inputs ``class_prompts`` (``ClassPrompts`` for "<prefix> <class>."),
  rebuilt for each class set and never saved;
* the frozen CLIP (``clip_model``), cast for the precision **after** the fp32 work is done
  (prompt initialization by the caller, zero-shot anchors), kept in eval mode whatever mode the
  trainer sets (``train()`` is overridden), with ``requires_grad`` off;
* optional frozen zero-shot text anchors ``text_anchors [C, E]`` (template ensemble, fp32,
  normalized, non-persistent, computed once per class set through ``anchors``);
* ``encode_class_texts(text_prompts)``: normalized prompted text features ``[C, E]`` (fp32);
  ``cached(compute)`` reuses them while autograd is off until a prompt parameter changes
  (``TextFeatureCache``), so an evaluation encodes the class texts once;
* ``image_features(images, prompts)``: normalized image features ``[B, E]`` (fp32);
* ``logit_scale``: CLIP's frozen ``exp(logit_scale)``;
* ``forward(images)``: the logits of the (text, vision) prompts; methods with another output
  (MMLoP's and PromptSRC's training targets, CoOp's layouts, CoCoOp's per-image context)
  override it.

Switches (plain attributes, for equivalence tests and benchmarks): ``truncate_text`` (run the text
tower only up to the last end-of-text row), ``shared_prefix`` (run the rows before the class name
once for all classes, ``encoders``) and ``text_cache.enabled``.

Shared prefix: ``prefix_len`` (``shared_prefix_rows(class_prompts)``) is the number of rows at
the start of every class prompt that are the same for all classes: the start token and the BPE
tokens of the prompt prefix. ``encode_class_texts`` (the IVLP/PromptSRC placement: prompt rows
right after the start token, class name after the prompt prefix) declares them to the text
encoder, which runs them once when the call's prompts are ``[n, D]`` tensors (shared) lying inside
them. A method that calls ``text_encoder`` with embeddings of its own (CoOp assembles its context
into them) gets the plain path unless it declares its shared rows in ``text_encoder.prefix_len``
(CoOp does for its ``end`` position with one context for all classes; its other layouts put
class-specific rows before or among the context rows). Per-sequence prompts ``[N, n, D]``
(CoCoOp) always run the plain path.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .anchors import cached_text_features
from .backbone import freeze
from .encoders import PromptedImageEncoder, PromptedTextEncoder
from .precision import Precision, cast_backbone, resolve_precision
from .text_inputs import ClassPrompts, count_tokens


def shared_prefix_rows(class_prompts: ClassPrompts) -> int:
    """Rows at the start of every class's sequence that are the same for all classes: the start
    token and the prompt prefix's BPE tokens (``1 + count_tokens(prefix)``), or 0 when the class
    prompts do not all begin with them or an end-of-text row falls inside them, or when the prefix
    is empty (only the start token would be shared)."""
    cp = class_prompts
    if not cp.prefix:
        return 0
    rows = 1 + count_tokens(cp.prefix)
    tokens = cp.tokens.cpu()
    if rows > int(cp.eot_index.min()) or not bool((tokens[:, :rows] == tokens[:1, :rows]).all()):
        return 0
    return rows


class TextFeatureCache:
    """Caches text features computed while autograd is off (evaluation), keyed by the prompt
    parameters' identity and in-place version counters: any optimizer step, ``load_state_dict`` or
    ``copy_`` changes the key, so a stale entry is never returned. Use ``get(params, compute)``."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._value: torch.Tensor | None = None
        self.enabled = True
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _key_of(params: Sequence[torch.Tensor], extra: tuple) -> tuple:
        return tuple((p.data_ptr(), p._version, tuple(p.shape)) for p in params) + extra

    def clear(self) -> None:
        self._key = None
        self._value = None

    def get(self, params: Sequence[torch.Tensor], compute, extra: tuple = ()) -> torch.Tensor:
        """``compute()`` or the cached result; caching applies only when grad is disabled."""
        if not self.enabled or torch.is_grad_enabled():
            return compute()
        key = self._key_of(params, extra)
        if self._key == key and self._value is not None:
            self.hits += 1
            return self._value
        self.misses += 1
        value = compute()
        self._key, self._value = key, value
        return value


class PromptedCLIP(nn.Module):
    """Frozen CLIP + ``prompt_learner`` (see the module docstring).

    ``clip_model`` must be fp32 on the target device; it is frozen and cast for ``precision``
    here. ``anchor_templates`` (optional) requests zero-shot text anchors for ``classnames``.
    ``shared_prefix`` switches on the one-off encoding of the rows shared by all classes (see
    the module docstring).
    """

    def __init__(self, clip_model: nn.Module, classnames: Sequence[str], prompt_learner: nn.Module,
                 prompt_prefix: str, precision: Precision | None = None,
                 anchor_templates: Sequence[str] | None = None, truncate_text: bool = True,
                 cache_text: bool = True, shared_prefix: bool = True):
        super().__init__()
        device = clip_model.token_embedding.weight.device
        self.precision = precision or resolve_precision("fp32", device)
        freeze(clip_model)
        self.classnames = list(classnames)
        self.class_prompts = ClassPrompts(clip_model, classnames, prompt_prefix)
        anchors = None
        if anchor_templates:
            anchors = cached_text_features(clip_model, classnames, anchor_templates).clone()
        self.register_buffer("text_anchors", anchors, persistent=False)
        self.clip_model = cast_backbone(clip_model, self.precision, device)
        self.prompt_learner = prompt_learner.to(device)
        self.text_encoder = PromptedTextEncoder(self.clip_model)
        self.prefix_len = shared_prefix_rows(self.class_prompts)
        self.shared_prefix = shared_prefix
        self.image_encoder = PromptedImageEncoder(self.clip_model)
        self.truncate_text = truncate_text
        self.text_cache = TextFeatureCache()
        self.text_cache.enabled = cache_text

    def train(self, mode: bool = True) -> PromptedCLIP:
        super().train(mode)
        self.clip_model.eval()
        return self

    @property
    def shared_prefix(self) -> bool:
        """Whether the rows shared by all classes run once (kept on ``text_encoder``, so calls
        that rely on its own ``prefix_len`` follow it too)."""
        return self.text_encoder.shared_prefix

    @shared_prefix.setter
    def shared_prefix(self, on: bool) -> None:
        self.text_encoder.shared_prefix = bool(on)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clip_model.logit_scale.detach().float().exp()

    def prompt_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters (those of ``prompt_learner``)."""
        return [p for p in self.prompt_learner.parameters() if p.requires_grad]

    def encode_class_texts(self, text_prompts: Sequence[torch.Tensor | None]) -> torch.Tensor:
        """Normalized prompted text features ``[C, E]`` (fp32) for the given text prompts."""
        cp = self.class_prompts
        with self.precision.autocast():
            feats = self.text_encoder(cp.inputs(self.truncate_text), cp.eot_index, text_prompts,
                                      seq_len=cp.seq_len, truncate=self.truncate_text,
                                      prefix_len=self.prefix_len if self.shared_prefix else 0)
        return F.normalize(feats.float(), dim=-1)

    def image_features(self, images: torch.Tensor,
                       prompts: Sequence[torch.Tensor | None] = ()) -> torch.Tensor:
        """Normalized image features ``[B, E]`` (fp32)."""
        with self.precision.autocast():
            feats = self.image_encoder(images, prompts)
        return F.normalize(feats.float(), dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C]`` (fp32) for a prompt learner returning ``(text_prompts,
        vision_prompts)``; the class text features are computed once per evaluation."""
        text_prompts, vision_prompts = self.prompt_learner()
        text = self.cached(lambda: self.encode_class_texts(text_prompts))
        return self.logit_scale * self.image_features(images, vision_prompts) @ text.t()

    def cached(self, compute) -> torch.Tensor:
        """``compute()``, reused while autograd is off and no prompt parameter changed."""
        return self.text_cache.get(self.prompt_parameters(), compute,
                                   extra=(self.truncate_text, self.shared_prefix,
                                          len(self.classnames)))
