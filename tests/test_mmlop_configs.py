"""The shipped MMLoP configs: recipe of the method page, and the paper's ablation rows (Table 4)
with their trainable-parameter counts on ViT-B/16 dimensions (text 512, vision 768)."""
from __future__ import annotations

import os

import pytest

import trainers
from dassl.config import get_cfg_default
from trainers.mmlop import MMLoPPromptLearner, MMLoPSettings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B2N = "vit_b16_c2_ep30_batch4_4+4ctx"


def _cfg(stem):
    cfg = get_cfg_default()
    trainers.extend_cfg(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "trainers", "MMLoP", f"{stem}.yaml"))
    return cfg


@pytest.mark.parametrize("stem, epochs, depth", [
    (B2N, 30, 9), (f"{B2N}_cross_datasets", 30, 3),
    ("vit_b16_c2_ep50_batch4_4+4ctx_few_shot", 50, 9)])
def test_recipe(stem, epochs, depth):
    cfg = _cfg(stem)
    o = cfg.OPTIM
    assert (o.NAME, o.LR, o.MOMENTUM, o.WEIGHT_DECAY, o.MAX_EPOCH) == ("sgd", 0.0025, 0.9, 5e-4,
                                                                       epochs)
    assert (o.LR_SCHEDULER, o.WARMUP_EPOCH, o.WARMUP_TYPE, o.WARMUP_CONS_LR) == \
        ("cosine", 1, "constant", 1e-5)
    assert cfg.DATALOADER.TRAIN_X.BATCH_SIZE == 4 and cfg.DATALOADER.TEST.BATCH_SIZE == 100
    assert cfg.TRAIN.PRINT_FREQ == 20 and tuple(cfg.INPUT.SIZE) == (224, 224)
    assert cfg.INPUT.INTERPOLATION == "bicubic" and cfg.MODEL.BACKBONE.NAME == "ViT-B/16"
    assert cfg.TRAINER.MMLOP.PROMPT_DEPTH == depth and cfg.TRAINER.MMLOP.N_CTX == 4


@pytest.mark.parametrize("suffix, params, low_rank, share_u, losses, drift", [
    ("_abl1_ivlp", 46_080, False, "modality", False, False),
    ("_abl2_lowrank", 11_592, True, "none", False, False),
    ("_abl3_consistency", 11_592, True, "none", True, False),
    ("_abl4_drift", 11_592, True, "none", True, True),
    ("", 11_556, True, "modality", True, True),
    ("_abl5_balanced", 11_556, True, "modality", True, True),     # ours: + BALANCED_INIT
])
def test_ablation_rows(suffix, params, low_rank, share_u, losses, drift):
    s = MMLoPSettings.from_cfg(_cfg(B2N + suffix).TRAINER.MMLOP)
    assert (s.low_rank, s.drift_correction) == (low_rank, drift)
    assert s.balanced_init == suffix.endswith("balanced")
    if low_rank:
        assert s.share_u == share_u
    assert bool(s.text_loss_weight and s.image_loss_weight and s.kl_loss_weight) == losses
    learner = MMLoPPromptLearner(s, text_dim=512, vision_dim=768)
    assert sum(p.numel() for p in learner.parameters()) == params
