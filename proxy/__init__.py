"""Offline proxy benchmark: a tiny CLIP pretrained on synthetic shapes, and the demo driver.

Modules: ``tiny_clip`` (architecture and pretraining settings), ``data`` (on-the-fly batches),
``pretrain`` (``python -m proxy.pretrain``, cached checkpoint), ``zeroshot`` (in-memory zero-shot
accuracy per style), ``runs`` (base-to-novel runs through the sweep engine), ``protocols`` (the
domain-generalization, cross-dataset and few-shot protocols on class subsets, and the tables),
``stats`` (mean ± Student-t intervals over seeds, paired differences), ``demo`` (``python demo.py``:
the default demo and ``--full``), ``plot`` (HM vs parameters, few-shot curves).
"""
