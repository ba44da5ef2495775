"""Checkpoint helpers: Dassl layout, weights_only loading, atomic writes, legacy files."""
from __future__ import annotations

import os
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn

from dassl.config import get_cfg_default
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import (
    LegacyCheckpointError,
    count_num_param,
    load_checkpoint,
    load_pretrained_weights,
    resume_from_checkpoint,
    save_checkpoint,
)


def make_state(epoch: int, fill: float = 0.0) -> dict:
    model = nn.Linear(3, 2)
    nn.init.constant_(model.weight, fill)
    cfg = get_cfg_default().OPTIM
    cfg.NAME, cfg.LR_SCHEDULER, cfg.WARMUP_EPOCH, cfg.WARMUP_TYPE = "sgd", "cosine", 1, "constant"
    optim = build_optimizer(model, cfg)
    sched = build_lr_scheduler(optim, cfg)
    model(torch.ones(1, 3)).sum().backward()
    optim.step()
    sched.step()
    return {
        "state_dict": model.state_dict(),
        "epoch": epoch,
        "optimizer": optim.state_dict(),
        "scheduler": sched.state_dict(),
        "val_result": None,
    }


def test_layout_pointer_and_weights_only(tmp_path, capsys):
    save_dir = str(tmp_path / "prompt_learner")
    path = save_checkpoint(make_state(1), save_dir)
    save_checkpoint(make_state(2), save_dir, is_best=True)
    out = capsys.readouterr().out
    assert f"Checkpoint saved to {os.path.join(save_dir, 'model.pth.tar-1')}" in out
    assert f'Best checkpoint saved to "{os.path.join(save_dir, "model-best.pth.tar")}"' in out
    assert path == os.path.join(save_dir, "model.pth.tar-1")
    assert sorted(os.listdir(save_dir)) == ["checkpoint", "model-best.pth.tar", "model.pth.tar-1", "model.pth.tar-2"]
    assert open(os.path.join(save_dir, "checkpoint")).read() == "model.pth.tar-2\n"
    for name in ("model.pth.tar-2", "model-best.pth.tar"):
        ckpt = torch.load(os.path.join(save_dir, name), weights_only=True)
        assert ckpt["epoch"] == 2 and isinstance(ckpt["scheduler"]["last_epoch"], int)
    assert load_checkpoint(path)["epoch"] == 1


def test_module_prefix_is_stripped(tmp_path):
    state = make_state(1)
    state["state_dict"] = OrderedDict(("module." + k, v) for k, v in state["state_dict"].items())
    path = save_checkpoint(state, str(tmp_path))
    assert set(load_checkpoint(path)["state_dict"]) == {"weight", "bias"}


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    save_dir = str(tmp_path / "model")
    first = make_state(1, fill=1.0)
    save_checkpoint(first, save_dir, model_name="model.pth.tar-1")
    before = sorted(os.listdir(save_dir))
    real_save = torch.save

    def broken_save(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(make_state(1, fill=2.0), save_dir)
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(os.listdir(save_dir)) == before
    assert open(os.path.join(save_dir, "checkpoint")).read() == "model.pth.tar-1\n"
    weight = load_checkpoint(os.path.join(save_dir, "model.pth.tar-1"))["state_dict"]["weight"]
    assert torch.equal(weight, first["state_dict"]["weight"])


def test_legacy_pickled_checkpoint_needs_explicit_trust(tmp_path, monkeypatch):
    model = nn.Linear(3, 2)
    optim = torch.optim.SGD(model.parameters(), lr=0.1)
    legacy = {
        "state_dict": model.state_dict(),
        "epoch": 5,
        "scheduler": {"successor": torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=5)},
    }
    path = str(tmp_path / "model.pth.tar-5")
    torch.save(legacy, path)
    monkeypatch.delenv("DASSL_TRUSTED_CHECKPOINTS", raising=False)
    with pytest.raises(LegacyCheckpointError, match="trusted=True") as info:
        load_checkpoint(path)
    assert path in str(info.value) and "DASSL_TRUSTED_CHECKPOINTS" in str(info.value)
    assert load_checkpoint(path, trusted=True)["epoch"] == 5
    monkeypatch.setenv("DASSL_TRUSTED_CHECKPOINTS", "1")
    assert load_checkpoint(path)["epoch"] == 5


def test_missing_checkpoint_names_the_path(tmp_path):
    missing = str(tmp_path / "nope.pth.tar")
    with pytest.raises(FileNotFoundError, match="nope.pth.tar"):
        load_checkpoint(missing)


def test_resume_restores_model_optimizer_scheduler(tmp_path, capsys):
    state = make_state(3, fill=0.5)
    save_checkpoint(state, str(tmp_path))
    model = nn.Linear(3, 2)
    cfg = get_cfg_default().OPTIM
    cfg.NAME, cfg.LR_SCHEDULER, cfg.WARMUP_EPOCH, cfg.WARMUP_TYPE = "sgd", "cosine", 1, "constant"
    optim = build_optimizer(model, cfg)
    sched = build_lr_scheduler(optim, cfg)
    assert resume_from_checkpoint(str(tmp_path), model, optim, sched) == 3
    out = capsys.readouterr().out
    for line in ("Loaded model weights", "Loaded optimizer", "Loaded scheduler", "Previous epoch: 3"):
        assert line in out
    assert torch.equal(model.weight, state["state_dict"]["weight"])
    assert sched.last_epoch == 1 and optim.param_groups[0]["lr"] == pytest.approx(cfg.LR)
    assert len(optim.state_dict()["state"]) == 2


def test_load_pretrained_weights_keeps_matching_shapes(tmp_path, capsys):
    src = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 5))
    path = str(tmp_path / "w.pth")
    torch.save({"state_dict": src.state_dict()}, path)
    dst = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    load_pretrained_weights(dst, path)
    assert torch.equal(dst[0].weight, src[0].weight)
    assert not torch.equal(dst[1].bias[:2], src[1].bias[:2])
    out = capsys.readouterr().out
    assert f"Successfully loaded pretrained weights from {path}" in out
    assert "Layers discarded due to unmatched keys or size: ['1.weight', '1.bias']" in out


def test_count_num_param_counts_all_parameters():
    model = nn.Linear(3, 2)
    model.bias.requires_grad_(False)
    assert count_num_param(model) == 8
    assert count_num_param(params=[model.weight]) == 6


def test_data_parallel_checkpoint_round_trip(tmp_path):
    wrapped = nn.DataParallel(nn.Linear(3, 2))
    save_checkpoint({"state_dict": wrapped.state_dict(), "epoch": 1}, str(tmp_path))
    fresh = nn.DataParallel(nn.Linear(3, 2))
    assert resume_from_checkpoint(str(tmp_path), fresh) == 1
    assert torch.equal(fresh.module.weight, wrapped.module.weight)
