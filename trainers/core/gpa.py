"""Gaussian prompt aggregation (PromptSRC's GPA), on the trainable prompt tensors only, in fp32.

The weight of epoch ``e`` (1-based, ``e = 1..max_epoch``) is the normal pdf ``N(e; mean, std^2)``,
normalized to sum to 1. After each epoch ``add(epoch, module)`` accumulates ``w_e * p`` for every
trainable parameter ``p``; ``load_into(module)`` copies the weighted sum, divided by the weight of
the epochs actually added (1 for a full run), into the parameters.

``GPAMixin`` makes that survive a resume for a Dassl trainer: every regular checkpoint
``<dir>/prompt_learner/model.pth.tar-<e>`` holds the accumulator after epoch ``e`` (key
``gpa_state``, in the same atomically written file, so no kill can separate them), which
``resume_model_if_exist`` restores, so a resumed run aggregates exactly as an uninterrupted one.
Checkpoints of older versions kept it in a sibling ``gpa_state.pth.tar-<e>``, still read; a
checkpoint with neither is skipped for the previous epoch's.
"""
from __future__ import annotations

import math
import os
from typing import Optional

import torch
from torch import nn

from dassl.utils import ResumeMismatchError, load_checkpoint

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
        raise ResumeMismatchError(f"{path} was written with another GPA schedule (OPTIM.MAX_EPOCH, "
                         f"{node_key}.GPA_MEAN or GPA_STD differ from this run); resume "
                         "with the original values or train from scratch in a new output dir")
    gpa.weights = list(stored)
    gpa.epochs_added = list(state["epochs_added"])
    gpa.sum = {k: v.to(device) for k, v in state["sum"].items()}


class GPAMixin:
    """Resumable GPA for a Dassl trainer whose prompts are registered as ``prompt_learner``.

    Put it before the trainer base (``class PromptSRC(GPAMixin, PromptTrainer)``). In
    ``build_model`` call ``build_gpa(node, "TRAINER.<NAME>")`` (``node`` holds ``GPA``,
    ``GPA_MEAN``, ``GPA_STD``; the key is named in errors); after the optimizer and LR-scheduler
    steps of the last batch of every epoch, ``aggregate(epoch)`` (1-based epoch) must run:
    ``PromptTrainer.finish_step`` calls it through the ``epoch_trained`` hook. The mixin stores the
    accumulator in every checkpoint of the prompt learner and restores it on resume; with
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

    def checkpoint_state(self, name: str) -> dict:
        """The accumulator rides in the prompt learner's checkpoint itself, so a checkpoint is
        never on disk without the GPA state of its epoch."""
        state = super().checkpoint_state(name)
        if self.gpa is not None and name == GPA_MODEL_NAME:
            state["gpa_state"] = gpa_state(self.gpa)
        return state

    def _stored_gpa(self, path: str, checkpoint: dict) -> Optional[dict]:
        """The GPA state of ``checkpoint``: inside it, or (checkpoints of older versions) in the
        sibling ``gpa_state.pth.tar-<e>``; None when neither exists."""
        if "gpa_state" in checkpoint:
            return checkpoint["gpa_state"]
        legacy = os.path.join(os.path.dirname(path), GPA_STATE_FILE.format(epoch=checkpoint["epoch"]))
        return load_checkpoint(legacy) if os.path.isfile(legacy) else None

    def _needs_gpa(self, name: str, checkpoint: dict) -> bool:
        return self.gpa is not None and name == GPA_MODEL_NAME and int(checkpoint["epoch"]) < self.max_epoch

    def checkpoint_problem(self, name: str, path: str, checkpoint: dict) -> Optional[str]:
        if self._needs_gpa(name, checkpoint) and self._stored_gpa(path, checkpoint) is None:
            return "has no GPA state (its save was interrupted before the GPA state was written)"
        return super().checkpoint_problem(name, path, checkpoint)

    def restore_checkpoint_state(self, name: str, path: str, checkpoint: dict) -> None:
        super().restore_checkpoint_state(name, path, checkpoint)
        if not self._needs_gpa(name, checkpoint):
            return
        restore_gpa(self.gpa, self._stored_gpa(path, checkpoint), path, self.device, self.gpa_node_key)
        print(f'GPA: restored the accumulator of epochs {self.gpa.epochs_added} from "{path}"')
