"""The ``ZeroshotCLIP`` trainer: frozen CLIP with hand-written prompts (evaluation only).

Config node ``TRAINER.ZEROSHOTCLIP``: ``ENSEMBLE`` False (one template per dataset, CoOp's
``CUSTOM_TEMPLATES``; datasets without one use "a photo of a {}.") or True (the 60-template
ImageNet ensemble, ``core.templates.IMAGENET_TEMPLATES_60``), and ``PREC`` (fp32 on CPU). Nothing is
registered or trained: run it with ``--eval-only``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from dassl.engine import TRAINER_REGISTRY

from .core.anchors import cached_text_features
from .core.encoders import PromptedImageEncoder
from .core.methods import PROTOCOLS
from .core.precision import cast_backbone
from .core.shared_keys import add_shared_keys
from .core.templates import IMAGENET_TEMPLATES_60, dataset_template, fill
from .core.trainer import PromptTrainer


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(PromptTrainer):
    """Zero-shot CLIP: ``logit_scale * normalize(image) @ normalize(text)^T``."""

    description = "frozen CLIP with hand-written prompts"
    trains = False
    config_node = "ZEROSHOTCLIP"
    default_configs = dict.fromkeys(PROTOCOLS, "vit_b16")
    tiny_config = "tiny_clip"
    table_order = 0

    @classmethod
    def add_config(cls, cfg) -> None:
        node = cfg.TRAINER.ZEROSHOTCLIP = CN()
        node.ENSEMBLE = False
        add_shared_keys(node, ("PREC",))

    def build_model(self) -> None:
        cfg = self.cfg
        clip_model = self.load_backbone()
        classnames = self.dm.dataset.classnames
        if cfg.TRAINER.ZEROSHOTCLIP.ENSEMBLE:
            templates = IMAGENET_TEMPLATES_60
            print(f"Prompt ensembling (n={len(templates)})")
        else:
            templates = (dataset_template(cfg.DATASET.NAME),)
            print(f"Prompts: {[fill(templates[0], c) for c in classnames]}")
        self.text_features = cached_text_features(clip_model, classnames, templates).clone()
        self.clip_model = cast_backbone(clip_model, self.precision, self.device)
        self.image_encoder = PromptedImageEncoder(self.clip_model)
        print("Number of trainable parameters: 0")

    def model_inference(self, input: torch.Tensor) -> torch.Tensor:
        with self.precision.autocast():
            image = self.image_encoder(input)
        image = F.normalize(image.float(), dim=-1)
        scale = self.clip_model.logit_scale.detach().float().exp()
        return scale * image @ self.text_features.t()

    def forward_backward(self, batch) -> dict:
        raise RuntimeError("ZeroshotCLIP has nothing to train: run train.py with --eval-only")
