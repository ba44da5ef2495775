"""Optimizers and the per-epoch LR schedule (Dassl's sequences, resumable state)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from dassl.config import get_cfg_default
from dassl.optim import build_lr_scheduler, build_optimizer


def optim_cfg(**overrides):
    cfg = get_cfg_default().OPTIM
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def coop_cfg(max_epoch: int):
    return optim_cfg(
        NAME="sgd", LR=0.002, LR_SCHEDULER="cosine", MAX_EPOCH=max_epoch,
        WARMUP_EPOCH=1, WARMUP_TYPE="constant", WARMUP_CONS_LR=1e-5, WARMUP_RECOUNT=True,
    )


def lr_sequence(cfg, epochs: int, model: nn.Module | None = None) -> list[float]:
    """The LR in effect during each epoch when the scheduler is stepped once per epoch."""
    model = model or nn.Linear(2, 2)
    optim = build_optimizer(model, cfg)
    sched = build_lr_scheduler(optim, cfg)
    lrs = []
    for _ in range(epochs):
        lrs.append(optim.param_groups[0]["lr"])
        optim.step()
        sched.step()
    return lrs


def test_coop_recipe_t5_matches_dassl():
    assert lr_sequence(coop_cfg(5), 5) == pytest.approx([1e-5, 2.0e-3, 1.809017e-3, 1.309017e-3, 6.909830e-4], rel=1e-6)


def test_coop_recipe_t10_is_shifted_cosine():
    lrs = lr_sequence(coop_cfg(10), 10)
    expected = [1e-5] + [0.002 * (1 + math.cos(math.pi * (e - 1) / 10)) / 2 for e in range(1, 10)]
    assert lrs == pytest.approx(expected, rel=1e-9)
    assert lrs[-1] == pytest.approx(1.909830e-4, rel=1e-6)


def test_cosine_without_recount_counts_the_warmup_epochs():
    cfg = coop_cfg(4)
    cfg.WARMUP_RECOUNT = False
    expected = [1e-5] + [0.002 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(1, 4)]
    assert lr_sequence(cfg, 4) == pytest.approx(expected)


def test_linear_warmup_then_cosine():
    cfg = optim_cfg(NAME="sgd", LR=0.1, LR_SCHEDULER="cosine", MAX_EPOCH=6, WARMUP_EPOCH=3, WARMUP_TYPE="linear",
                    WARMUP_MIN_LR=1e-4)
    lrs = lr_sequence(cfg, 6)
    assert lrs[:3] == pytest.approx([1e-4, 0.1 / 3, 0.2 / 3])
    assert lrs[3:] == pytest.approx([0.1 * (1 + math.cos(math.pi * s / 6)) / 2 for s in range(3)])


def test_single_step_and_multi_step():
    single = optim_cfg(NAME="sgd", LR=1.0, LR_SCHEDULER="single_step", STEPSIZE=(2,), GAMMA=0.5, MAX_EPOCH=6)
    assert lr_sequence(single, 6) == pytest.approx([1, 1, 0.5, 0.5, 0.25, 0.25])
    default_step = optim_cfg(NAME="sgd", LR=1.0, LR_SCHEDULER="single_step", STEPSIZE=(-1,), GAMMA=0.1, MAX_EPOCH=3)
    assert lr_sequence(default_step, 4) == pytest.approx([1, 1, 1, 0.1])
    multi = optim_cfg(NAME="sgd", LR=1.0, LR_SCHEDULER="multi_step", STEPSIZE=(1, 3), GAMMA=0.1, MAX_EPOCH=5)
    assert lr_sequence(multi, 5) == pytest.approx([1, 0.1, 0.1, 0.01, 0.01])
    warm = optim_cfg(NAME="sgd", LR=1.0, LR_SCHEDULER="multi_step", STEPSIZE=(2,), GAMMA=0.1, MAX_EPOCH=5,
                     WARMUP_EPOCH=1, WARMUP_TYPE="constant", WARMUP_CONS_LR=0.01)
    assert lr_sequence(warm, 5) == pytest.approx([0.01, 1, 1, 0.1, 0.1])


def test_scheduler_state_is_plain_and_resumes_the_schedule(tmp_path):
    cfg = coop_cfg(6)
    model = nn.Linear(2, 2)
    optim = build_optimizer(model, cfg)
    sched = build_lr_scheduler(optim, cfg)
    for _ in range(3):
        optim.step()
        sched.step()
    path = tmp_path / "s.pt"
    torch.save({"optimizer": optim.state_dict(), "scheduler": sched.state_dict()}, path)
    state = torch.load(path, weights_only=True)

    model2 = nn.Linear(2, 2)
    optim2 = build_optimizer(model2, cfg)
    sched2 = build_lr_scheduler(optim2, cfg)
    optim2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    resumed = []
    for _ in range(3):
        resumed.append(optim2.param_groups[0]["lr"])
        optim2.step()
        sched2.step()
    assert resumed == pytest.approx(lr_sequence(coop_cfg(6), 6)[3:], rel=1e-12)


def test_optimizer_choices_and_hyperparameters():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    sgd = build_optimizer(model, optim_cfg(NAME="sgd", LR=0.1, MOMENTUM=0.8, WEIGHT_DECAY=1e-3))
    assert isinstance(sgd, torch.optim.SGD)
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"], len(group["params"])) == (0.1, 0.8, 1e-3, 4)
    assert isinstance(build_optimizer(model, optim_cfg(NAME="adamw")), torch.optim.AdamW)
    assert build_optimizer(model, optim_cfg(NAME="amsgrad")).param_groups[0]["amsgrad"] is True
    assert build_optimizer(model, optim_cfg(NAME="rmsprop", RMSPROP_ALPHA=0.9)).param_groups[0]["alpha"] == 0.9
    adam = build_optimizer(model.parameters(), optim_cfg(NAME="adam", ADAM_BETA1=0.5))
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["betas"] == (0.5, 0.999)
    groups = [{"params": model[0].parameters(), "lr": 0.5}, {"params": model[1].parameters()}]
    grouped = build_optimizer(groups, optim_cfg(NAME="sgd", LR=0.1))
    assert [g["lr"] for g in grouped.param_groups] == [0.5, 0.1]
    with pytest.raises(ValueError, match="optim must be one of .* but got lamb"):
        build_optimizer(model, optim_cfg(NAME="lamb"))
    with pytest.raises(ValueError, match="scheduler must be one of .* but got poly"):
        build_lr_scheduler(sgd, optim_cfg(LR_SCHEDULER="poly"))


def test_staged_lr_splits_new_layers():
    model = nn.Sequential()
    model.add_module("backbone", nn.Linear(2, 2))
    model.add_module("head", nn.Linear(2, 3))
    cfg = optim_cfg(NAME="sgd", LR=0.1, STAGED_LR=True, NEW_LAYERS=("head",), BASE_LR_MULT=0.1)
    optim = build_optimizer(model, cfg)
    lrs = sorted(g["lr"] for g in optim.param_groups)
    assert lrs == pytest.approx([0.01, 0.1])
    head_group = [g for g in optim.param_groups if g["lr"] == 0.1][0]
    assert {id(p) for p in head_group["params"]} == {id(p) for p in model.head.parameters()}
    with pytest.raises(ValueError, match="classifier"):
        build_optimizer(model, optim_cfg(NAME="sgd", STAGED_LR=True, NEW_LAYERS=("classifier",)))


def test_legacy_warmup_state_continues_the_configured_schedule(capsys):
    cfg = coop_cfg(5)
    optim = build_optimizer(nn.Linear(2, 2), cfg)
    sched = build_lr_scheduler(optim, cfg)
    sched.load_state_dict({"last_epoch": 3, "successor": object(), "warmup_epoch": 1, "base_lrs": [0.002]})
    assert optim.param_groups[0]["lr"] == pytest.approx(lr_sequence(coop_cfg(5), 5)[3])
    assert "legacy Dassl scheduler state" in capsys.readouterr().out
    with pytest.raises(ValueError, match="last_epoch"):
        sched.load_state_dict({"T_max": 5})
