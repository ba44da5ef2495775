"""The ``Classification`` evaluator: accuracy, error rate, macro-F1, optional per-class results."""
from __future__ import annotations

import os
from collections import OrderedDict, defaultdict
from typing import Optional

import numpy as np
import torch

from dassl.utils.registry import Registry

EVALUATOR_REGISTRY = Registry("EVALUATOR")


class EvaluatorBase:
    """Interface: ``reset()``, ``process(model_output, ground_truth)``, ``evaluate() -> OrderedDict``."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def reset(self) -> None:
        raise NotImplementedError

    def process(self, mo: torch.Tensor, gt: torch.Tensor) -> None:
        raise NotImplementedError

    def evaluate(self) -> OrderedDict[str, float]:
        raise NotImplementedError


def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro-averaged F1 over the labels present in ``y_true`` (sklearn's rule), in [0, 1]."""
    scores = []
    for label in np.unique(y_true):
        tp = np.sum((y_pred == label) & (y_true == label))
        fp = np.sum((y_pred == label) & (y_true != label))
        fn = np.sum((y_pred != label) & (y_true == label))
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom > 0 else 0.0)
    return float(np.mean(scores)) if scores else 0.0


@EVALUATOR_REGISTRY.register()
class Classification(EvaluatorBase):
    """Top-1 classification results in percent; prints Dassl's result block in ``evaluate()``."""

    def __init__(self, cfg, lab2cname: Optional[dict] = None, **kwargs) -> None:
        super().__init__(cfg)
        self._lab2cname = lab2cname
        self._per_class_res = None
        self.reset()

    def reset(self) -> None:
        self._correct = 0
        self._total = 0
        self._y_true: list[int] = []
        self._y_pred: list[int] = []
        self._per_class_res = defaultdict(list) if self.cfg.TEST.PER_CLASS_RESULT else None

    def process(self, mo: torch.Tensor, gt: torch.Tensor) -> None:
        """``mo``: logits [B, C]; ``gt``: labels [B]."""
        pred = mo.max(1)[1]
        matches = pred.eq(gt).int()
        self._correct += int(matches.sum().item())
        self._total += gt.shape[0]
        self._y_true.extend(gt.detach().cpu().tolist())
        self._y_pred.extend(pred.detach().cpu().tolist())
        if self._per_class_res is not None:
            for label, hit in zip(gt.tolist(), matches.tolist()):
                self._per_class_res[label].append(hit)

    @property
    def total(self) -> int:
        return self._total

    @property
    def correct(self) -> int:
        return self._correct

    def evaluate(self) -> OrderedDict[str, float]:
        """Print the result block and return ``accuracy``, ``error_rate``, ``macro_f1`` (percent)."""
        if self._total == 0:
            raise RuntimeError("The evaluator received no samples; the evaluation loader is empty")
        results: OrderedDict[str, float] = OrderedDict()
        acc = 100.0 * self._correct / self._total
        err = 100.0 - acc
        y_true, y_pred = np.asarray(self._y_true), np.asarray(self._y_pred)
        macro_f1 = 100.0 * _macro_f1(y_true, y_pred)
        results["accuracy"] = acc
        results["error_rate"] = err
        results["macro_f1"] = macro_f1
        print(
            "=> result\n"
            f"* total: {self._total:,}\n"
            f"* correct: {self._correct:,}\n"
            f"* accuracy: {acc:.1f}%\n"
            f"* error: {err:.1f}%\n"
            f"* macro_f1: {macro_f1:.1f}%"
        )
        if self._per_class_res is not None:
            accs = []
            print("=> per-class result")
            for label in sorted(self._per_class_res):
                hits = self._per_class_res[label]
                correct, total = sum(hits), len(hits)
                class_acc = 100.0 * correct / total
                accs.append(class_acc)
                classname = self._lab2cname.get(label, str(label)) if self._lab2cname else str(label)
                print(f"* class: {label} ({classname})\ttotal: {total:,}\tcorrect: {correct:,}\tacc: {class_acc:.1f}%")
            mean_acc = float(np.mean(accs))
            print(f"* average: {mean_acc:.1f}%")
            results["perclass_accuracy"] = mean_acc
        if self.cfg.TEST.COMPUTE_CMAT:
            labels = sorted(set(self._y_true) | set(self._y_pred))
            index = {label: i for i, label in enumerate(labels)}
            cmat = np.zeros((len(labels), len(labels)), dtype=np.float64)
            for t, p in zip(self._y_true, self._y_pred):
                cmat[index[t], index[p]] += 1
            row_sums = cmat.sum(axis=1, keepdims=True)
            cmat = np.divide(cmat, row_sums, out=np.zeros_like(cmat), where=row_sums > 0)
            save_path = os.path.join(self.cfg.OUTPUT_DIR, "cmat.pt")
            os.makedirs(self.cfg.OUTPUT_DIR, exist_ok=True)
            torch.save(torch.from_numpy(cmat), save_path)
            print(f"Confusion matrix is saved to {save_path}")
        return results
