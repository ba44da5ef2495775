"""TrainerBase bookkeeping: registration, modes, update steps, anomaly detection, build_trainer."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from dassl.config import get_cfg_default
from dassl.engine import TRAINER_REGISTRY, TrainerBase, build_trainer
from dassl.engine.results import count_trainable_params


class Bare(TrainerBase):
    pass


def test_register_model_rules():
    class Early(TrainerBase):
        def __init__(self):
            self.register_model("m", nn.Linear(1, 1))

    with pytest.raises(AttributeError, match="before super"):
        Early()
    trainer = Bare()
    trainer.register_model("a", nn.Linear(1, 1))
    trainer.register_model("b", nn.Linear(1, 1))
    assert trainer.get_model_names() == ["a", "b"] and trainer.get_model_names("b") == ["b"]
    with pytest.raises(KeyError, match="duplicate"):
        trainer.register_model("a", nn.Linear(1, 1))
    with pytest.raises(KeyError, match="c"):
        trainer.get_model_names(["c"])


def test_modes_only_touch_registered_models():
    trainer = Bare()
    registered, other = nn.Dropout(), nn.Dropout()
    other.eval()
    trainer.register_model("m", registered)
    trainer.set_model_mode("eval")
    assert not registered.training
    trainer.set_model_mode("train")
    assert registered.training and not other.training
    with pytest.raises(KeyError, match="infer"):
        trainer.set_model_mode("infer")


def test_backward_and_update_steps_each_optimizer_once_and_checks_loss():
    trainer = Bare()
    model = nn.Linear(2, 1, bias=False)
    nn.init.ones_(model.weight)
    optim = torch.optim.SGD(model.parameters(), lr=0.5)
    sched = torch.optim.lr_scheduler.StepLR(optim, step_size=1, gamma=0.1)
    trainer.register_model("m", model, optim, sched)
    loss = model(torch.tensor([[1.0, 2.0]])).sum()
    trainer.model_backward_and_update(loss)
    assert torch.allclose(model.weight, torch.tensor([[0.5, 0.0]]))
    trainer.update_lr()
    assert optim.param_groups[0]["lr"] == pytest.approx(0.05)
    with pytest.raises(FloatingPointError, match="Loss is infinite or NaN!"):
        trainer.model_backward_and_update(model(torch.tensor([[float("nan"), 0.0]])).sum())


def test_trainable_param_count_ignores_frozen_and_shared():
    shared = nn.Linear(3, 3)
    frozen = nn.Linear(3, 2)
    frozen.requires_grad_(False)
    assert count_trainable_params([nn.Sequential(shared, frozen), shared]) == 12


def test_build_trainer_did_you_mean():
    @TRAINER_REGISTRY.register()
    class EngineTestTrainer(TrainerBase):
        def __init__(self, cfg):
            super().__init__()
            self.cfg = cfg

    cfg = get_cfg_default()
    cfg.TRAINER.NAME = "EngineTestTrainer"
    assert isinstance(build_trainer(cfg), EngineTestTrainer)
    cfg.TRAINER.NAME = "EngineTestTrainr"
    with pytest.raises(ValueError, match=r"but got \[EngineTestTrainr\] \(do you mean \[EngineTestTrainer\]\?\)"):
        build_trainer(cfg)


def test_progress_bar_only_on_an_interactive_stderr(monkeypatch):
    import io

    from tqdm import tqdm

    from dassl.engine.trainer import _progress

    class FakeTTY(io.StringIO):
        def isatty(self) -> bool:
            return True

    items = [1, 2, 3]
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert _progress(items, "test") is items
    monkeypatch.setattr("sys.stderr", FakeTTY())
    bar = _progress(items, "test")
    assert isinstance(bar, tqdm) and list(bar) == items
