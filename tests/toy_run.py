"""A toy dataset and trainer written only against the Dassl API, with the fixtures and argv that
run them through ``train.py`` (shared by test_train_cli.py and test_reliability.py; importing
this module registers them once)."""
from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

import train
from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum
from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.metrics import compute_accuracy
from dassl.optim import build_lr_scheduler, build_optimizer

CLASSNAMES = ["red", "green", "blue"]
COLORS = [(140, 110, 110), (110, 140, 110), (110, 110, 140)]
CRASH_AFTER_EPOCH: list[int] = []  # set by a test to simulate a run killed after that epoch


@DATASET_REGISTRY.register()
class ToyColorsTrainCli(DatasetBase):
    """Three colour classes of 8x8 PNGs under ``DATASET.ROOT/<split>/<class>/``."""

    def __init__(self, cfg) -> None:
        root = cfg.DATASET.ROOT
        splits = {}
        for split in ("train", "val", "test"):
            items = []
            for label, cname in enumerate(CLASSNAMES):
                folder = os.path.join(root, split, cname)
                for fname in sorted(os.listdir(folder)):
                    items.append(Datum(impath=os.path.join(folder, fname), label=label, classname=cname))
            splits[split] = items
        train_x = self.generate_fewshot_dataset(splits["train"], num_shots=cfg.DATASET.NUM_SHOTS)
        super().__init__(train_x=train_x, val=splits["val"], test=splits["test"])


class TinyNet(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3 * 8 * 8, 16)
        self.fc2 = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


@TRAINER_REGISTRY.register()
class ToyDasslTrainer(TrainerX):
    """Written as CoOp's trainer is: register_model, update_lr on the last batch, (img, label)."""

    def build_model(self) -> None:
        self.model = TinyNet(len(self.dm.dataset.classnames)).to(self.device)
        self.optim = build_optimizer(self.model, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("model", self.model, self.optim, self.sched)

    def forward_backward(self, batch) -> dict:
        image, label = self.parse_batch_train(batch)
        output = self.model(image)
        loss = F.cross_entropy(output, label)
        self.model_backward_and_update(loss)
        summary = {"loss": loss.item(), "acc": compute_accuracy(output, label)[0].item()}
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return summary

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def after_epoch(self) -> None:
        super().after_epoch()
        if CRASH_AFTER_EPOCH and self.epoch + 1 == CRASH_AFTER_EPOCH[0]:
            raise KeyboardInterrupt(f"simulated kill after epoch {self.epoch + 1}")


def run(argv: list[str]):
    return train.main(train.build_parser().parse_args(argv))


def base_argv(data_root: str, yaml_path: str, out: str, *extra: str) -> list[str]:
    return [
        "--root", data_root, "--trainer", "ToyDasslTrainer", "--config-file", yaml_path,
        "--output-dir", out, "--seed", "1", *extra,
        "DATASET.NAME", "ToyColorsTrainCli", "USE_CUDA", "False",
    ]
