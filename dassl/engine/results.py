"""The machine-readable ``results.json`` written next to ``log.txt`` by the final test.

Schema (one JSON object):

==========================  =========================================================================
key                         value
==========================  =========================================================================
split                       "test" or "val": the split that was evaluated
accuracy                    top-1 accuracy in percent (float, full precision)
error_rate                  100 - accuracy
macro_f1                    macro-averaged F1 over the labels present, in percent
perclass_accuracy           mean of per-class accuracies (only with TEST.PER_CLASS_RESULT)
total, correct              number of evaluated images / of correct predictions (int or null)
num_classes                 number of classes of the dataset the model was evaluated on
trainer, dataset            cfg.TRAINER.NAME, cfg.DATASET.NAME
subsample_classes           cfg.DATASET.SUBSAMPLE_CLASSES ("all", "base" or "new")
num_shots                   cfg.DATASET.NUM_SHOTS (-1: all images)
seed                        cfg.SEED
backbone                    cfg.MODEL.BACKBONE.NAME
epoch                       training epochs behind the evaluated weights (null when unknown)
num_trainable_params        elements of the parameters with requires_grad in the registered models
output_dir                  cfg.OUTPUT_DIR
==========================  =========================================================================
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Optional

import torch.nn as nn

from dassl.utils.tools import write_json

RESULTS_FILE = "results.json"


def count_trainable_params(models: Iterable[nn.Module]) -> int:
    """Elements of the distinct parameters with ``requires_grad`` over ``models``."""
    seen: set[int] = set()
    total = 0
    for model in models:
        for param in model.parameters():
            if param.requires_grad and id(param) not in seen:
                seen.add(id(param))
                total += param.numel()
    return total


def build_results(
    cfg,
    split: str,
    metrics: Mapping[str, float],
    *,
    total: Optional[int],
    correct: Optional[int],
    num_classes: int,
    epoch: Optional[int],
    num_trainable_params: int,
) -> dict[str, Any]:
    """The results record described in the module docstring."""
    record: dict[str, Any] = {"split": split}
    record.update({key: float(value) for key, value in metrics.items()})
    record.update(
        {
            "total": total,
            "correct": correct,
            "num_classes": int(num_classes),
            "trainer": cfg.TRAINER.NAME,
            "dataset": cfg.DATASET.NAME,
            "subsample_classes": cfg.DATASET.SUBSAMPLE_CLASSES,
            "num_shots": int(cfg.DATASET.NUM_SHOTS),
            "seed": int(cfg.SEED),
            "backbone": cfg.MODEL.BACKBONE.NAME,
            "epoch": epoch,
            "num_trainable_params": int(num_trainable_params),
            "output_dir": cfg.OUTPUT_DIR,
        }
    )
    return record


def write_results(record: Mapping[str, Any], output_dir: str) -> str:
    """Write ``record`` atomically to ``output_dir/results.json``; return the path."""
    fpath = os.path.join(output_dir, RESULTS_FILE)
    write_json(dict(record), fpath)
    return fpath
