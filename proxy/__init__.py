"""Offline proxy benchmark: a tiny CLIP pretrained on synthetic shapes, and the demo driver.

Modules: ``tiny_clip`` (architecture and pretraining settings), ``data`` (on-the-fly batches),
``pretrain`` (``python -m proxy.pretrain``, cached checkpoint), ``zeroshot`` (in-memory zero-shot
accuracy per style), ``demo`` (base-to-novel runs through ``train.py``, table, plot), ``plot``.
"""
