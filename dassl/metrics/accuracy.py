"""``compute_accuracy``: top-k accuracy of a batch, in percent."""
from __future__ import annotations

from typing import Sequence

import torch


def compute_accuracy(output: torch.Tensor, target: torch.Tensor, topk: Sequence[int] = (1,)) -> list[torch.Tensor]:
    """Top-k accuracies (percent) of ``output`` [B, C] (or a tuple whose first item is it) vs ``target`` [B].

    Returns one 1-element tensor per ``k``, as Dassl does.
    """
    if isinstance(output, (tuple, list)):
        output = output[0]
    maxk = max(topk)
    batch_size = target.size(0)
    _, pred = output.topk(maxk, 1, True, True)
    correct = pred.t().eq(target.view(1, -1).expand_as(pred.t()))
    res = []
    for k in topk:
        correct_k = correct[:k].reshape(-1).float().sum(0, keepdim=True)
        res.append(correct_k.mul_(100.0 / batch_size))
    return res
