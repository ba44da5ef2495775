"""Gaussian prompt aggregation (PromptSRC's GPA), on the trainable prompt tensors only, in fp32.

The weight of epoch ``e`` (1-based, ``e = 1..max_epoch``) is the normal pdf ``N(e; mean, std^2)``,
normalized to sum to 1. After each epoch ``add(epoch, module)`` accumulates ``w_e * p`` for every
trainable parameter ``p``; ``load_into(module)`` copies the weighted sum, divided by the weight of
the epochs actually added (1 for a full run), into the parameters.

``GPAMixin`` makes that survive a resume for a Dassl trainer: every regular checkpoint
``<dir>/prompt_learner/model.pth.tar-<e>`` gets a sibling ``gpa_state.pth.tar-<e>`` holding the
accumulator after epoch ``e`` (written atomically), which ``resume_model_if_exist`` restores, so a
resumed run aggregates exactly as an uninterrupted one.
"""
from __future__ import annotations

import math
import os
from typing import Optional

import torch
from torch import nn

from dassl.utils.tools import atomic_write, mkdir_if_missing

GPA_MODEL_NAME = "prompt_learner"
GPA_STATE_FILE = "gpa_state.pth.tar-{epoch}"


def gpa_weights(max_epoch: int, mean: float, std: float) -> list[float]:
    """Normalized Gaussian weights for epochs ``1..max_epoch``."""
    if std <= 0:
        raise ValueError(f"GPA_STD must be > 0, got {std}")
    raw = [math.exp(-0.5 * ((e - mean) / std) ** 2) for e in range(1, max_epoch + 1)]
    total = sum(raw)
    if total == 0:
        raise ValueError(f"GPA_MEAN {mean} / GPA_STD {std} give zero weight to every epoch "
                         f"1..{max_epoch}")
    return [w / total for w in raw]


class GaussianPromptAggregator:
    """Accumulates the weighted average of a module's trainable parameters over epochs."""

    def __init__(self, max_epoch: int, mean: float, std: float):
        self.weights = gpa_weights(max_epoch, mean, std)
        self.sum: dict[str, torch.Tensor] = {}
        self.epochs_added: list[int] = []

    @torch.no_grad()
    def add(self, epoch: int, module: nn.Module) -> None:
        """Add epoch ``epoch`` (1-based) with its weight."""
        w = self.weights[epoch - 1]
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            term = p.detach().float() * w
            self.sum[name] = self.sum[name] + term if name in self.sum else term
        self.epochs_added.append(epoch)

    @torch.no_grad()
    def load_into(self, module: nn.Module) -> None:
        """Copy the aggregate into ``module``'s trainable parameters."""
        if not self.sum:
            raise RuntimeError("GPA has accumulated no epoch yet")
        total = sum(self.weights[e - 1] for e in self.epochs_added)
        for name, p in module.named_parameters():
            if name in self.sum:
                p.copy_((self.sum[name] / total).to(p.dtype))


def gpa_state(gpa: GaussianPromptAggregator) -> dict:
    """The accumulator as a checkpointable dict (tensors on CPU)."""
    return {"weights": list(gpa.weights), "epochs_added": list(gpa.epochs_added),
            "sum": {k: v.detach().cpu() for k, v in gpa.sum.items()}}


def restore_gpa(gpa: GaussianPromptAggregator, state: dict, path: str, device: torch.device,
                node_key: str = "TRAINER.<NAME>") -> None:
    """Load ``state`` (from ``path``) into ``gpa``; the Gaussian must be the same. ``node_key`` is
    the trainer's config node (``TRAINER.PROMPTSRC``), named in the error."""
    stored = state["weights"]
    if len(stored) != len(gpa.weights) or any(abs(a - b) > 1e-12
                                              for a, b in zip(stored, gpa.weights)):
        raise ValueError(f"{path} was written with another GPA schedule (OPTIM.MAX_EPOCH, "
                         f"{node_key}.GPA_MEAN or GPA_STD differ from this run); resume "
                         "with the original values or train from scratch in a new output dir")
    gpa.weights = list(stored)
    gpa.epochs_added = list(state["epochs_added"])
    gpa.sum = {k: v.to(device) for k, v in state["sum"].items()}


def save_atomic(obj, path: str) -> None:
    """``torch.save(obj, path)`` through a temporary file and ``os.replace``."""
    mkdir_if_missing(os.path.dirname(os.path.abspath(path)))
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


class GPAMixin:
    """Resumable GPA for a Dassl trainer whose prompts are registered as ``prompt_learner``.

    Put it before the trainer base (``class PromptSRC(GPAMixin, PromptTrainer)``). In
    ``build_model`` call ``build_gpa(node, "TRAINER.<NAME>")`` (``node`` holds ``GPA``,
    ``GPA_MEAN``, ``GPA_STD``; the key is named in errors); after the optimizer and LR-scheduler
    steps of the last batch of every epoch, ``aggregate(epoch)`` (1-based epoch) must run:
    ``PromptTrainer.finish_step`` calls it through the ``epoch_trained`` hook. The mixin writes the
    accumulator beside every regular checkpoint and restores it on resume; with
    ``GPA`` False all of this is a no-op.
    """

    gpa: Optional[GaussianPromptAggregator] = None
    gpa_node_key: str = "TRAINER.<NAME>"
    gpa_loaded_message: str = "GPA: loaded the Gaussian-weighted average of {n} epochs"

    def build_gpa(self, node, node_key: str) -> None:
        """An aggregator over ``OPTIM.MAX_EPOCH`` epochs when ``node.GPA``, else none."""
        self.gpa_node_key = node_key
        self.gpa = (GaussianPromptAggregator(self.cfg.OPTIM.MAX_EPOCH, node.GPA_MEAN, node.GPA_STD)
                    if node.GPA else None)

    def aggregate(self, epoch: int) -> None:
        """Add the prompts after ``epoch`` (1-based) to the GPA; load the aggregate after the
        last epoch."""
        if self.gpa is None:
            return
        module = self._models[GPA_MODEL_NAME]
        self.gpa.add(epoch, module)
        if epoch == self.max_epoch:
            self.gpa.load_into(module)
            print(self.gpa_loaded_message.format(n=len(self.gpa.epochs_added)))

    def epoch_trained(self, epoch: int) -> None:
        self.aggregate(epoch)
        super().epoch_trained(epoch)

    def save_model(self, epoch: int, directory: str, is_best: bool = False, val_result=None,
                   model_name: str = "") -> None:
        super().save_model(epoch, directory, is_best, val_result, model_name)
        if self.gpa is not None and not model_name:
            path = os.path.join(directory, GPA_MODEL_NAME, GPA_STATE_FILE.format(epoch=epoch + 1))
            save_atomic(gpa_state(self.gpa), path)

    def resume_model_if_exist(self, directory: str) -> int:
        start_epoch = super().resume_model_if_exist(directory)
        if self.gpa is None or start_epoch == 0 or start_epoch >= self.max_epoch:
            return start_epoch
        path = os.path.join(directory, GPA_MODEL_NAME, GPA_STATE_FILE.format(epoch=start_epoch))
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} is missing: the GPA accumulator of epoch {start_epoch} cannot be "
                "restored, so resuming would aggregate only the remaining epochs. Train from "
                f"scratch in a new output dir, or resume with {self.gpa_node_key}.GPA False")
        restore_gpa(self.gpa, torch.load(path, map_location="cpu", weights_only=True), path,
                    self.device, self.gpa_node_key)
        print(f'GPA: restored the accumulator of epochs {self.gpa.epochs_added} from "{path}"')
        return start_epoch
