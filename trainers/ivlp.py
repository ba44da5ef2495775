"""The ``IVLP`` trainer: independent deep vision and language prompting, cross-entropy only.

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
TRUNCATE_TEXT        True            exact speed-up: text tower up to the last EOT row
CACHE_TEXT           True            exact speed-up: text features once per evaluation
===================  ==============  ====================================================

Configs: ``configs/trainers/IVLP/vit_b16_c2_ep5_batch4_2+2ctx.yaml`` (MaPLe repo, depth 12),
``vit_b16_c2_ep20_batch4_4+4ctx.yaml`` (PromptSRC repo, depth 9),
``vit_b16_c2_ep5_batch4_4ctx_language_only.yaml`` (4 text tokens, depth 12, no vision prompt).
"""
from __future__ import annotations

import torch.nn.functional as F
from yacs.config import CfgNode as CN

from dassl.engine import TRAINER_REGISTRY

from .ivlp_model import IVLPCLIP, IVLPSettings
from .prompt_trainer import PromptTrainer


def add_ivlp_keys(node: CN) -> CN:
    """IVLP's keys with upstream defaults (shared by ``TRAINER.IVLP`` and ``TRAINER.PROMPTSRC``)."""
    node.N_CTX_TEXT = 2
    node.N_CTX_VISION = 2
    node.PROMPT_DEPTH_TEXT = 9
    node.PROMPT_DEPTH_VISION = 9
    node.CTX_INIT = "a photo of a"
    node.PREC = "fp16"
    node.TRUNCATE_TEXT = True
    node.CACHE_TEXT = True
    return node


def add_config(cfg) -> None:
    """Add the ``TRAINER.IVLP`` node (see the module docstring)."""
    cfg.TRAINER.IVLP = add_ivlp_keys(CN())


class CrossEntropyPromptTrainer(PromptTrainer):
    """A prompt trainer whose model maps images to logits and whose loss is cross-entropy."""

    def forward_backward(self, batch) -> dict:
        image, label = self.parse_batch_train(batch)
        output = self.model(image)
        return self.finish_step(F.cross_entropy(output, label), output, label)


@TRAINER_REGISTRY.register()
class IVLP(CrossEntropyPromptTrainer):
    """Independent Vision-Language Prompting (the MaPLe paper's baseline)."""

    def build_model(self) -> None:
        settings = IVLPSettings.from_cfg(self.cfg.TRAINER.IVLP, "TRAINER.IVLP")
        clip_model = self.load_backbone("TRAINER.IVLP.PREC")
        print("Building custom CLIP")
        self.model = IVLPCLIP(clip_model, self.dm.dataset.classnames, settings, self.precision)
        self.register_prompt_learner(self.model.prompt_learner)
