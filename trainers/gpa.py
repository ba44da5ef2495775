"""Gaussian prompt aggregation (PromptSRC's GPA), on the trainable prompt tensors only, in fp32.

The weight of epoch ``e`` (1-based, ``e = 1..max_epoch``) is the normal pdf ``N(e; mean, std^2)``,
normalized to sum to 1. After each epoch ``add(epoch, module)`` accumulates ``w_e * p`` for every
trainable parameter ``p``; ``load_into(module)`` copies the weighted sum, divided by the weight of
the epochs actually added (1 for a full run; a resumed run averages the epochs it saw), into the
parameters.
"""
from __future__ import annotations

import math

import torch
from torch import nn


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
