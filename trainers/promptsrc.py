"""The ``PromptSRC`` trainer: IVLP prompts, mutual-agreement losses and Gaussian prompt aggregation.

Loss (``reference/maple_promptsrc.md`` §3.2, through ``trainers/consistency.py``):
``CE + TEXT_LOSS_WEIGHT * L1(t, t_zs) + IMAGE_LOSS_WEIGHT * L1(f, f_zs) + KL_LOSS_WEIGHT *
KL(p_zs || p)`` (KL summed and divided by B*C, temperature 1 on CLIP's logit scale). ``t_zs`` are
the frozen 60-template text anchors of the trained classes (``trainers/zeroshot_features.py``:
the mean of the normalized per-template features, re-normalized; upstream averaged the
un-normalized features), ``f_zs`` the frozen image features of the same augmented batch.

GPA (§3.3, ``trainers/gpa.py``): after the last batch of every epoch ``e`` (after the optimizer
and LR-scheduler steps) the prompt tensors (fp32, nothing else) are accumulated with the
normalized weight ``N(e; GPA_MEAN, GPA_STD^2)``; after the last epoch the aggregate replaces the
prompts, so it is what is saved as ``model.pth.tar-<MAX_EPOCH>`` and tested. Every checkpoint
``prompt_learner/model.pth.tar-<e>`` gets a sibling ``prompt_learner/gpa_state.pth.tar-<e>``
(the accumulator after epoch ``e``, written atomically), restored on resume, so a resumed run
aggregates exactly as an uninterrupted one.

Config node ``TRAINER.PROMPTSRC``: IVLP's keys (``N_CTX_TEXT``/``N_CTX_VISION`` 4,
``PROMPT_DEPTH_TEXT``/``PROMPT_DEPTH_VISION`` 9, ``CTX_INIT``, ``PREC``, ``TRUNCATE_TEXT``,
``CACHE_TEXT``) plus ``TEXT_LOSS_WEIGHT`` 25, ``IMAGE_LOSS_WEIGHT`` 10, ``KL_LOSS_WEIGHT`` 1
(hard-coded upstream), ``GPA`` True, ``GPA_MEAN`` 15, ``GPA_STD`` 1. Configs per protocol:
``vit_b16_c2_ep20_batch4_4+4ctx.yaml`` (base-to-novel, GPA 15/1),
``..._cross_datasets.yaml`` (depth 3, GPA 6/10), ``vit_b16_c2_ep50_batch4_4+4ctx_few_shot.yaml``
(50 epochs, GPA 30/30; upstream used 45/5 for StanfordCars, Flowers102, FGVCAircraft, DTD and
EuroSAT: append ``TRAINER.PROMPTSRC.GPA_MEAN 45 TRAINER.PROMPTSRC.GPA_STD 5``).
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn
from yacs.config import CfgNode as CN

from dassl.engine import TRAINER_REGISTRY
from dassl.metrics import compute_accuracy

from .clip_backbone import Precision
from .consistency import consistency_loss
from .gpa import GaussianPromptAggregator
from .ivlp import add_ivlp_keys
from .ivlp_model import IVLPCLIP, IVLPSettings
from .prompt_trainer import PromptTrainer
from .templates import IMAGENET_TEMPLATES_60

GPA_STATE_FILE = "gpa_state.pth.tar-{epoch}"


def add_config(cfg) -> None:
    """Add the ``TRAINER.PROMPTSRC`` node (see the module docstring)."""
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


def gpa_state(gpa: GaussianPromptAggregator) -> dict:
    """The accumulator as a checkpointable dict (tensors on CPU)."""
    return {"weights": list(gpa.weights), "epochs_added": list(gpa.epochs_added),
            "sum": {k: v.detach().cpu() for k, v in gpa.sum.items()}}


def restore_gpa(gpa: GaussianPromptAggregator, state: dict, path: str,
                device: torch.device) -> None:
    """Load ``state`` (from ``path``) into ``gpa``; the Gaussian must be the same."""
    stored = state["weights"]
    if len(stored) != len(gpa.weights) or any(abs(a - b) > 1e-12
                                              for a, b in zip(stored, gpa.weights)):
        raise ValueError(f"{path} was written with another GPA schedule (OPTIM.MAX_EPOCH, "
                         "TRAINER.PROMPTSRC.GPA_MEAN or GPA_STD differ from this run); resume "
                         "with the original values or train from scratch in a new output dir")
    gpa.weights = list(stored)
    gpa.epochs_added = list(state["epochs_added"])
    gpa.sum = {k: v.to(device) for k, v in state["sum"].items()}


def save_atomic(obj, path: str) -> None:
    """``torch.save(obj, path)`` through a temporary file and ``os.replace``."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".pth")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


@TRAINER_REGISTRY.register()
class PromptSRC(PromptTrainer):
    """Self-regulating Prompts (Khattak et al., ICCV 2023)."""

    gpa: Optional[GaussianPromptAggregator] = None

    def build_model(self) -> None:
        cfg = self.cfg
        node = cfg.TRAINER.PROMPTSRC
        settings = IVLPSettings.from_cfg(node, "TRAINER.PROMPTSRC")
        clip_model = self.load_backbone("TRAINER.PROMPTSRC.PREC")
        print("Building custom CLIP")
        self.model = PromptSRCCLIP(clip_model, self.dm.dataset.classnames, settings,
                                   self.precision)
        self.register_prompt_learner(self.model.prompt_learner)
        self.loss_weights = (float(node.TEXT_LOSS_WEIGHT), float(node.IMAGE_LOSS_WEIGHT),
                             float(node.KL_LOSS_WEIGHT))
        if node.GPA:
            self.gpa = GaussianPromptAggregator(cfg.OPTIM.MAX_EPOCH, node.GPA_MEAN, node.GPA_STD)

    def forward_backward(self, batch) -> dict:
        image, label = self.parse_batch_train(batch)
        out = self.model(image)
        loss, parts = consistency_loss(out.logits, label, out.text, self.model.text_anchors,
                                       out.image, out.image_zs, out.zs_logits,
                                       *self.loss_weights)
        self.backward_and_update(loss)
        summary = {"loss": loss.item(), "acc": compute_accuracy(out.logits, label)[0].item()}
        summary.update(parts)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
            self.aggregate(self.epoch + 1)
        return summary

    def aggregate(self, epoch: int) -> None:
        """Add the prompts after ``epoch`` (1-based) to the GPA; load the aggregate after the
        last epoch."""
        if self.gpa is None:
            return
        self.gpa.add(epoch, self.model.prompt_learner)
        if epoch == self.max_epoch:
            self.gpa.load_into(self.model.prompt_learner)
            print(f"GPA: loaded the Gaussian-weighted average of the prompts of "
                  f"{len(self.gpa.epochs_added)} epochs")

    def save_model(self, epoch: int, directory: str, is_best: bool = False, val_result=None,
                   model_name: str = "") -> None:
        super().save_model(epoch, directory, is_best, val_result, model_name)
        if self.gpa is not None and not model_name:
            path = os.path.join(directory, "prompt_learner", GPA_STATE_FILE.format(epoch=epoch + 1))
            save_atomic(gpa_state(self.gpa), path)

    def resume_model_if_exist(self, directory: str) -> int:
        start_epoch = super().resume_model_if_exist(directory)
        if self.gpa is None or start_epoch == 0 or start_epoch >= self.max_epoch:
            return start_epoch
        path = os.path.join(directory, "prompt_learner", GPA_STATE_FILE.format(epoch=start_epoch))
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} is missing: the GPA accumulator of epoch {start_epoch} cannot be "
                "restored, so resuming would aggregate only the remaining epochs. Train from "
                "scratch in a new output dir, or resume with TRAINER.PROMPTSRC.GPA False")
        restore_gpa(self.gpa, torch.load(path, map_location="cpu", weights_only=True), path,
                    self.device)
        print(f'GPA: restored the accumulator of epochs {self.gpa.epochs_added} from "{path}"')
        return start_epoch
