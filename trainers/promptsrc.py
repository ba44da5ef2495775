"""The ``PromptSRC`` trainer: IVLP prompts, mutual-agreement losses and Gaussian prompt aggregation.

Loss (docs/METHOD.md, through ``core/losses.py``):
``CE + TEXT_LOSS_WEIGHT * L1(t, t_zs) + IMAGE_LOSS_WEIGHT * L1(f, f_zs) + KL_LOSS_WEIGHT *
KL(p_zs || p)`` (KL summed and divided by B*C, temperature 1 on CLIP's logit scale). ``t_zs`` are
the frozen 60-template text anchors of the trained classes (``core/anchors.py``:
the mean of the normalized per-template features, re-normalized; upstream averaged the
un-normalized features), ``f_zs`` the frozen image features of the same augmented batch.

GPA (``core/gpa.py``'s ``GPAMixin``, shared with MMLoP): after the last batch of every
epoch ``e`` (after the optimizer and LR-scheduler steps) the prompt tensors (fp32, nothing else)
are accumulated with the normalized weight ``N(e; GPA_MEAN, GPA_STD^2)``; after the last epoch the
aggregate replaces the prompts, so it is what is saved as ``model.pth.tar-<MAX_EPOCH>`` and
tested. Every checkpoint ``prompt_learner/model.pth.tar-<e>`` holds the accumulator after epoch
``e`` in the same file, restored on resume, so a resumed run aggregates exactly as an uninterrupted
one; a changed schedule stops the resume with an error naming ``TRAINER.PROMPTSRC.GPA*``.

Config node ``TRAINER.PROMPTSRC``: IVLP's keys (``N_CTX_TEXT``/``N_CTX_VISION`` 4,
``PROMPT_DEPTH_TEXT``/``PROMPT_DEPTH_VISION`` 9, ``CTX_INIT``, ``PREC``, ``PROMPT_PREC``
(``upstream``: ``ctx_text.0`` fp16 under ``PREC fp16``, as IVLP), ``TRUNCATE_TEXT``,
``CACHE_TEXT``, ``SHARED_PREFIX``) plus ``TEXT_LOSS_WEIGHT`` 25, ``IMAGE_LOSS_WEIGHT`` 10, ``KL_LOSS_WEIGHT`` 1
(hard-coded upstream), ``GPA`` True, ``GPA_MEAN`` 15, ``GPA_STD`` 1. Configs per protocol:
``vit_b16_c2_ep20_batch4_4+4ctx.yaml`` (base-to-novel, GPA 15/1),
``..._cross_datasets.yaml`` (depth 3, GPA 6/10), ``vit_b16_c2_ep50_batch4_4+4ctx_few_shot.yaml``
(50 epochs, GPA 30/30; upstream used 45/5 for StanfordCars, Flowers102, FGVCAircraft, DTD and
EuroSAT: append ``TRAINER.PROMPTSRC.GPA_MEAN 45 TRAINER.PROMPTSRC.GPA_STD 5``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from yacs.config import CfgNode as CN

from dassl.engine import TRAINER_REGISTRY

from .core import checks
from .core.gpa import GPAMixin
from .core.losses import consistency_loss
from .core.precision import Precision
from .core.templates import IMAGENET_TEMPLATES_60
from .core.trainer import PromptTrainer
from .ivlp import IVLPCLIP, IVLPSettings, add_ivlp_keys, check_ivlp_keys

LOSS_WEIGHT_KEYS = ("TEXT_LOSS_WEIGHT", "IMAGE_LOSS_WEIGHT", "KL_LOSS_WEIGHT")


@dataclass
class PromptSRCOutput:
    """Training-time outputs (fp32): ``logits [B, C]``, ``text [C, E]`` prompted text features,
    ``image [B, E]`` prompted image features, ``image_zs [B, E]`` frozen image features,
    ``zs_logits [B, C]`` frozen logits."""

    logits: torch.Tensor
    text: torch.Tensor
    image: torch.Tensor
    image_zs: torch.Tensor
    zs_logits: torch.Tensor


class PromptSRCCLIP(IVLPCLIP):
    """IVLP + frozen 60-template text anchors; ``forward(images)`` returns ``PromptSRCOutput``
    while ``prompt_learner`` is in training mode and logits ``[B, C]`` otherwise (no zero-shot
    ensembling at test time, as upstream)."""

    def __init__(self, clip_model: nn.Module, classnames: Sequence[str], settings: IVLPSettings,
                 precision: Precision | None = None):
        super().__init__(clip_model, classnames, settings, precision,
                         anchor_templates=IMAGENET_TEMPLATES_60)

    def forward(self, images: torch.Tensor):
        if not self.prompt_learner.training:
            return super().forward(images)
        text, vision_prompts = self.prompted_features()
        scale = self.logit_scale
        image = self.image_features(images, vision_prompts)
        with torch.no_grad():
            image_zs = self.image_features(images)
            zs_logits = scale * image_zs @ self.text_anchors.t()
        return PromptSRCOutput(scale * image @ text.t(), text, image, image_zs, zs_logits)


@TRAINER_REGISTRY.register()
class PromptSRC(GPAMixin, PromptTrainer):
    """Self-regulating Prompts (Khattak et al., ICCV 2023)."""

    description = "IVLP prompts + agreement with frozen CLIP (L1, KL) + Gaussian prompt aggregation"
    config_node = "PROMPTSRC"
    default_configs = {"base2new": "vit_b16_c2_ep20_batch4_4+4ctx",
                       "xd": "vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets",
                       "few_shot": "vit_b16_c2_ep50_batch4_4+4ctx_few_shot"}
    tiny_config = "tiny_4+4ctx_ep10"
    table_order = 50
    upstream_fp16_prompts = ("ctx_text.0",)
    gpa_loaded_message = "GPA: loaded the Gaussian-weighted average of the prompts of {n} epochs"

    @classmethod
    def add_config(cls, cfg) -> None:
        node = add_ivlp_keys(CN())
        node.N_CTX_TEXT = 4
        node.N_CTX_VISION = 4
        node.TEXT_LOSS_WEIGHT = 25.0
        node.IMAGE_LOSS_WEIGHT = 10.0
        node.KL_LOSS_WEIGHT = 1.0
        node.GPA = True
        node.GPA_MEAN = 15.0
        node.GPA_STD = 1.0
        cfg.TRAINER.PROMPTSRC = node

    @classmethod
    def check_config(cls, cfg, node, prefix: str) -> None:
        super().check_config(cfg, node, prefix)
        check_ivlp_keys(node, prefix, checks.config_layers(cfg), cfg.MODEL.BACKBONE.NAME)
        checks.check_loss_weights(node, prefix, LOSS_WEIGHT_KEYS)
        checks.check_gpa(cfg, node, prefix)

    def build_model(self) -> None:
        node = self.node
        settings = IVLPSettings.from_cfg(node, "TRAINER.PROMPTSRC")
        clip_model = self.load_backbone()
        print("Building custom CLIP")
        self.model = PromptSRCCLIP(clip_model, self.dm.dataset.classnames, settings,
                                   self.precision)
        self.register_prompt_learner(self.model.prompt_learner)
        self.loss_weights = tuple(float(node[k]) for k in LOSS_WEIGHT_KEYS)
        self.build_gpa(node, "TRAINER.PROMPTSRC")

    def forward_backward(self, batch) -> dict:
        image, label = self.parse_batch_train(batch)
        out = self.model(image)
        loss, parts = consistency_loss(out.logits, label, out.text, self.model.text_anchors,
                                       out.image, out.image_zs, out.zs_logits,
                                       *self.loss_weights)
        return self.finish_step(loss, out.logits, label, parts)
