"""Fixtures shared by several test files (pytest finds them here without an import)."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def vit_b16():
    """CLIP ViT-B/16 with random weights (``torch.manual_seed(0)``), in eval mode; one per test module."""
    from clip.model import CLIP, MODEL_CONFIGS

    torch.manual_seed(0)
    return CLIP(**MODEL_CONFIGS["ViT-B/16"]).eval()
