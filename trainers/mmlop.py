"""The ``MMLoP`` trainer: multi-modal low-rank prompts, consistency loss, drift correction, GPA.

Config node ``TRAINER.MMLOP`` (``reference/mmlop_method.md`` §2; defaults = the paper's model):

====================  ==============  =====================================================
key                   default         meaning
====================  ==============  =====================================================
N_CTX                 4               prompt tokens per modality and layer
RANK                  1               rank r of ``P^l = U^l V^l``
PROMPT_DEPTH          9               prompted layers (9 base-to-novel/few-shot, 3 cross)
SHARE_U               "modality"      ``none`` / ``modality`` / ``modality_and_layers``
FULL_RANK             False           True: full-rank prompts per tower (IVLP)
CTX_INIT              "a photo of a"  layer-0 text init ('' = random); N_CTX BPE tokens
TEXT_LOSS_WEIGHT      25.0            L1(prompted text, 60-template text anchors)
IMAGE_LOSS_WEIGHT     10.0            L1(prompted image, frozen image features)
KL_LOSS_WEIGHT        1.0             KL(zero-shot || prompted) logits, PromptSRC scaling
DRIFT_CORRECTION      True            uniform drift correction of the class text features
GPA                   False           Gaussian prompt aggregation over epochs
GPA_MEAN, GPA_STD     15.0, 1.0       its Gaussian over 1-based epochs
PREC                  "fp16"          ``fp32``/``fp16``/``bf16``/``amp`` (fp32 on CPU)
TRUNCATE_TEXT         True            exact speed-up: text tower up to the last EOT row
CACHE_TEXT            True            exact speed-up: text features once per evaluation
====================  ==============  =====================================================

Ablation rows of the paper (Table 4), by config alone (append to any MMLoP command):

* IVLP: ``TRAINER.MMLOP.FULL_RANK True TRAINER.MMLOP.TEXT_LOSS_WEIGHT 0.0
  TRAINER.MMLOP.IMAGE_LOSS_WEIGHT 0.0 TRAINER.MMLOP.KL_LOSS_WEIGHT 0.0
  TRAINER.MMLOP.DRIFT_CORRECTION False``
* + low-rank: ``TRAINER.MMLOP.SHARE_U none TRAINER.MMLOP.TEXT_LOSS_WEIGHT 0.0
  TRAINER.MMLOP.IMAGE_LOSS_WEIGHT 0.0 TRAINER.MMLOP.KL_LOSS_WEIGHT 0.0
  TRAINER.MMLOP.DRIFT_CORRECTION False``
* + consistency: ``TRAINER.MMLOP.SHARE_U none TRAINER.MMLOP.DRIFT_CORRECTION False``
* + drift correction: ``TRAINER.MMLOP.SHARE_U none``
* + shared U (MMLoP): no opts.

GPA (``trainers/gpa.py``'s ``GPAMixin``, shared with PromptSRC): after the optimizer and
LR-scheduler steps of the last batch of epoch ``e`` the prompt tensors are accumulated with weight
``N(e; GPA_MEAN, GPA_STD^2)`` (normalized over ``1..OPTIM.MAX_EPOCH``); after the last epoch the
aggregate replaces the prompts, so it is what ``model.pth.tar-<MAX_EPOCH>`` holds and what is
tested. Every checkpoint ``prompt_learner/model.pth.tar-<e>`` gets a sibling
``prompt_learner/gpa_state.pth.tar-<e>`` (the accumulator, written atomically) that ``--resume``
restores, so a resumed run aggregates exactly as an uninterrupted one; a missing state file or a
changed schedule stops the resume with an error naming ``TRAINER.MMLOP.GPA*``.
"""
from __future__ import annotations

from yacs.config import CfgNode as CN

from dassl.engine import TRAINER_REGISTRY

from .consistency import consistency_loss
from .gpa import GPAMixin
from .mmlop_model import MMLoPCLIP, MMLoPSettings
from .prompt_trainer import PromptTrainer


def add_config(cfg) -> None:
    """Add the ``TRAINER.MMLOP`` node (see the module docstring)."""
    cfg.TRAINER.MMLOP = CN()
    node = cfg.TRAINER.MMLOP
    node.N_CTX = 4
    node.RANK = 1
    node.PROMPT_DEPTH = 9
    node.SHARE_U = "modality"
    node.FULL_RANK = False
    node.CTX_INIT = "a photo of a"
    node.TEXT_LOSS_WEIGHT = 25.0
    node.IMAGE_LOSS_WEIGHT = 10.0
    node.KL_LOSS_WEIGHT = 1.0
    node.DRIFT_CORRECTION = True
    node.GPA = False
    node.GPA_MEAN = 15.0
    node.GPA_STD = 1.0
    node.PREC = "fp16"
    node.TRUNCATE_TEXT = True
    node.CACHE_TEXT = True


@TRAINER_REGISTRY.register()
class MMLoP(GPAMixin, PromptTrainer):
    """Multi-Modal Low-Rank Prompting (``reference/mmlop_method.md``)."""

    def build_model(self) -> None:
        cfg = self.cfg
        settings = MMLoPSettings.from_cfg(cfg.TRAINER.MMLOP)
        clip_model = self.load_backbone("TRAINER.MMLOP.PREC")
        print("Building custom CLIP")
        self.model = MMLoPCLIP(clip_model, self.dm.dataset.classnames, settings, self.precision)
        self.settings = settings
        self.register_prompt_learner(self.model.prompt_learner)
        self.build_gpa(cfg.TRAINER.MMLOP, "TRAINER.MMLOP")

    def forward_backward(self, batch) -> dict:
        image, label = self.parse_batch_train(batch)
        s = self.settings
        out = self.model(image)
        loss, parts = consistency_loss(out.logits, label, out.text, out.text_anchors, out.image,
                                       out.image_zs, out.zs_logits, s.text_loss_weight,
                                       s.image_loss_weight, s.kl_loss_weight)
        return self.finish_step(loss, out.logits, label, parts)

    def model_inference(self, input):
        return self.model(input)
