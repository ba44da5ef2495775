"""Running averages used by the training loop (Dassl's ``AverageMeter`` and ``MetricMeter``)."""
from __future__ import annotations

from collections import OrderedDict
from typing import Mapping

import torch


class AverageMeter:
    """Tracks ``val`` (last value), ``sum``, ``count`` and ``avg``; ``ema=True`` keeps an EMA."""

    def __init__(self, ema: bool = False) -> None:
        self.ema = ema
        self.reset()

    def reset(self) -> None:
        self.val = 0.0
        self.avg = 0.0
        self.sum = 0.0
        self.count = 0

    def update(self, val: float, n: int = 1) -> None:
        if isinstance(val, torch.Tensor):
            val = val.item()
        self.val = val
        self.sum += val * n
        self.count += n
        if self.ema:
            self.avg = self.avg * 0.9 + self.val * 0.1
        else:
            self.avg = self.sum / self.count


class MetricMeter:
    """A dict of :class:`AverageMeter` keyed by loss name, printed ``name val (avg)`` in order."""

    def __init__(self, delimiter: str = " ") -> None:
        self.meters: OrderedDict[str, AverageMeter] = OrderedDict()
        self.delimiter = delimiter

    def update(self, input_dict: Mapping[str, float] | None) -> None:
        if input_dict is None:
            return
        if not isinstance(input_dict, Mapping):
            raise TypeError("Input to MetricMeter.update() must be a dictionary")
        for key, value in input_dict.items():
            if isinstance(value, torch.Tensor):
                value = value.item()
            self.meters.setdefault(key, AverageMeter()).update(value)

    def __str__(self) -> str:
        return self.delimiter.join(f"{name} {meter.val:.4f} ({meter.avg:.4f})" for name, meter in self.meters.items())
