"""``TrainerBase`` -> ``SimpleTrainer`` -> ``TrainerX``: Dassl's trainer hierarchy and hooks.

A trainer subclasses :class:`TrainerX`, registers itself with ``@TRAINER_REGISTRY.register()``,
builds its model(s) in ``build_model`` and calls ``register_model(name, module, optim, sched)``,
and implements ``forward_backward(batch) -> dict`` of floats. Schedulers are stepped by the
trainer (``self.update_lr()``, CoOp calls it on the last batch of each epoch), never by the loop.
"""
from __future__ import annotations

import datetime
import os
import sys
import time
from collections import OrderedDict
from typing import Iterable, Optional

import numpy as np
import torch
import torch.nn as nn

from dassl.config import get_cfg_default
from dassl.data import DataManager
from dassl.evaluation import build_evaluator
from dassl.utils import (
    AverageMeter,
    MetricMeter,
    load_checkpoint,
    save_checkpoint,
    tolist_if_not,
)
from dassl.utils.errors import NonFiniteLossError
from dassl.utils.torchtools import (
    BEST_NAME,
    capture_rng_state,
    epoch_files,
    find_model_file,
    restore_checkpoint,
    unwrap_model,
)

from .config_checks import check_engine_config
from .results import build_results, code_version, count_trainable_params, write_results
from .resume import check_resume_settings, find_resume_point
from .run_guard import run_settings


class TrainerBase:
    """Model registry, checkpointing, the epoch loop skeleton and tensorboard helpers."""

    def __init__(self) -> None:
        self._models: OrderedDict[str, nn.Module] = OrderedDict()
        self._optims: OrderedDict[str, Optional[torch.optim.Optimizer]] = OrderedDict()
        self._scheds: OrderedDict[str, object] = OrderedDict()
        self._writer = None

    def register_model(self, name: str = "model", model: Optional[nn.Module] = None, optim=None, sched=None) -> None:
        """Store ``model`` with its optimizer and scheduler under ``name`` (used for saving/loading)."""
        if self.__dict__.get("_models") is None:
            raise AttributeError("Cannot assign model before super().__init__() call")
        if self.__dict__.get("_optims") is None:
            raise AttributeError("Cannot assign optim before super().__init__() call")
        if self.__dict__.get("_scheds") is None:
            raise AttributeError("Cannot assign sched before super().__init__() call")
        if name in self._models:
            raise KeyError(f"Found duplicate model names: {name}")
        self._models[name] = model
        self._optims[name] = optim
        self._scheds[name] = sched

    def get_model_names(self, names=None) -> list[str]:
        """All registered names in registration order, or ``names`` after checking they exist."""
        names_real = list(self._models.keys())
        if names is None:
            return names_real
        names = tolist_if_not(names)
        unknown = [name for name in names if name not in names_real]
        if unknown:
            raise KeyError(f"Unknown model names {unknown}; registered: {names_real}")
        return names

    def save_model(self, epoch: int, directory: str, is_best: bool = False, val_result=None,
                   model_name: str = "") -> None:
        """Save every registered model to ``directory/<name>/`` with ``epoch + 1`` as the epoch.

        Each file is one complete unit for a resume: weights, optimizer, scheduler, RNG state, the
        run's settings and code version, and ``checkpoint_state(name)`` (the best-so-far value, and
        what subclasses add, e.g. GPA's accumulator); the pointer moves only once it is on disk."""
        rng_state = capture_rng_state()
        version = code_version()
        for name in self.get_model_names():
            optim, sched = self._optims[name], self._scheds[name]
            save_checkpoint(
                {
                    "state_dict": self._models[name].state_dict(),
                    "epoch": epoch + 1,
                    "optimizer": optim.state_dict() if optim is not None else None,
                    "scheduler": sched.state_dict() if sched is not None else None,
                    "val_result": None if val_result is None else float(val_result),
                    "rng_state": rng_state,
                    "run_settings": getattr(self, "run_settings", None),
                    "code_version": version,
                    **self.checkpoint_state(name),
                },
                os.path.join(directory, name),
                is_best=is_best,
                model_name=model_name,
            )

    def checkpoint_state(self, name: str) -> dict:
        """Hook: what model ``name``'s checkpoint must hold beyond the weights and the optimizer for
        an exact resume (plain values and tensors). The base stores the best validation result so
        far (``TEST.FINAL_MODEL best_val`` keeps comparing against it after a resume)."""
        best = getattr(self, "best_result", -np.inf)
        return {"best_result": float(best) if np.isfinite(best) else None}

    def checkpoint_problem(self, name: str, path: str, checkpoint: dict) -> Optional[str]:
        """Hook: why ``checkpoint`` of model ``name`` cannot be resumed from (None: it can)."""
        return None

    def restore_checkpoint_state(self, name: str, path: str, checkpoint: dict) -> None:
        """Hook: the inverse of ``checkpoint_state`` on resume. Checkpoints written before the
        best-so-far value was stored take it from ``model-best.pth.tar`` beside them."""
        if "best_result" in checkpoint:
            best = checkpoint["best_result"]
        else:
            best_path = os.path.join(os.path.dirname(path), BEST_NAME)
            best = load_checkpoint(best_path).get("val_result") if os.path.isfile(best_path) else None
        if best is not None:
            self.best_result = max(getattr(self, "best_result", -np.inf), float(best))

    def default_cfg(self):
        """The config every key of this trainer's ``cfg`` has by default (compared on resume: a key
        that a checkpoint lacks is no difference when it holds its default)."""
        return get_cfg_default()

    def resume_model_if_exist(self, directory: str) -> int:
        """Resume every registered model from ``directory/<name>/``; return the start epoch.

        The newest checkpoint every model has, readable and complete, is used
        (``dassl.engine.resume``); newer ones are named and skipped. When there is none at all,
        prints ``No checkpoint found, train from scratch`` and returns 0. Optimizer, scheduler and
        RNG states are restored, so training continues exactly.
        """
        names = self.get_model_names()
        point = find_resume_point(directory, names, self.checkpoint_problem) if names else None
        if point is None:
            print("No checkpoint found, train from scratch")
            return 0
        print(f'Found checkpoint at "{directory}" (will resume training)')
        for line in point.skipped:
            print(f"Skipped: {line}")
        first = names[0]
        self.check_resume_settings(point.paths[first], point.checkpoints[first])
        start_epoch = 0
        for name in names:
            path, checkpoint = point.paths[name], point.checkpoints[name]
            print(f'Loading checkpoint from "{path}"')
            start_epoch = restore_checkpoint(checkpoint, path, self._models[name], self._optims[name],
                                             self._scheds[name])
            self.restore_checkpoint_state(name, path, checkpoint)
        if point.skipped:
            print(f"Resuming from epoch {start_epoch}, the newest usable checkpoint")
        return start_epoch

    def check_resume_settings(self, path: str, checkpoint: Optional[dict] = None) -> None:
        """Refuse to resume from ``path`` when it was written with other settings (the keys that can
        change a result, ``run_guard.run_settings``); checkpoints without settings are accepted,
        and keys added to the code since, holding their defaults, are accepted with a note."""
        if checkpoint is None:
            checkpoint = load_checkpoint(path)
        for line in check_resume_settings(path, checkpoint, getattr(self, "run_settings", None),
                                          run_settings(self.default_cfg())):
            print(line)

    def load_model(self, directory: str, epoch: Optional[int] = None) -> None:
        """Load ``model-best.pth.tar`` (or ``model.pth.tar-<epoch>``) of every registered model."""
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given "
                  "(ignore this if it's done on purpose)")
            return
        model_file = BEST_NAME if epoch is None else f"model.pth.tar-{epoch}"
        for name in self.get_model_names():
            model_path = find_model_file(directory, name, model_file)
            checkpoint = load_checkpoint(model_path)
            stored_epoch = checkpoint.get("epoch")
            val_result = checkpoint.get("val_result")
            note = f"epoch = {stored_epoch}"
            if val_result is not None:
                note += f", val_result = {val_result:.1f}"
            print(f'Loading weights to {name} from "{model_path}" ({note})')
            unwrap_model(self._models[name]).load_state_dict(checkpoint["state_dict"])
            self.eval_epoch = stored_epoch

    def set_model_mode(self, mode: str = "train", names=None) -> None:
        """``train()`` or ``eval()`` ("test"/"eval") on the registered models only."""
        for name in self.get_model_names(names):
            if mode == "train":
                self._models[name].train()
            elif mode in ("test", "eval"):
                self._models[name].eval()
            else:
                raise KeyError(f"Unknown model mode {mode!r}; use 'train', 'eval' or 'test'")

    def update_lr(self, names=None) -> None:
        """Step each registered scheduler once (one epoch)."""
        for name in self.get_model_names(names):
            if self._scheds[name] is not None:
                self._scheds[name].step()

    def detect_anomaly(self, loss: torch.Tensor, parts: Optional[dict] = None) -> None:
        """``NonFiniteLossError`` naming the epoch, the batch and the non-finite loss parts."""
        if torch.isfinite(loss).all():
            return
        bad = {k: v for k, v in (parts or {}).items() if not np.isfinite(v)}
        where = f"epoch {getattr(self, 'epoch', 0) + 1}, batch {getattr(self, 'batch_idx', 0) + 1}"
        what = ", ".join(f"{k} = {v}" for k, v in bad.items()) or f"loss = {loss.item()}"
        raise NonFiniteLossError(
            f"Loss is infinite or NaN! ({what} at {where}). Usual causes: a learning rate too high "
            "for this batch size (lower OPTIM.LR), or fp16 overflow (set the trainer's PREC to fp32 or amp)")

    def init_writer(self, log_dir: str) -> None:
        """Create a tensorboard ``SummaryWriter`` if the tensorboard package is installed."""
        if self.__dict__.get("_writer") is not None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("Tensorboard is not installed: skipping tensorboard logging")
            return
        os.makedirs(log_dir, exist_ok=True)
        print(f"Initialize tensorboard (log_dir={log_dir})")
        self._writer = SummaryWriter(log_dir=log_dir)

    def close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def write_scalar(self, tag: str, scalar_value: float, global_step: Optional[int] = None) -> None:
        """Log a scalar to tensorboard; a no-op while no writer exists (e.g. evaluation only)."""
        if self._writer is not None:
            self._writer.add_scalar(tag, scalar_value, global_step)

    def train(self, start_epoch: int, max_epoch: int) -> None:
        """``before_train``; for each epoch ``before_epoch``, ``run_epoch``, ``after_epoch``; ``after_train``."""
        self.start_epoch = start_epoch
        self.max_epoch = max_epoch
        self.before_train()
        for self.epoch in range(self.start_epoch, self.max_epoch):  # noqa: B020 (Dassl's attributes)
            self.before_epoch()
            self.run_epoch()
            self.after_epoch()
        self.after_train()

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_epoch(self) -> None:
        pass

    def after_epoch(self) -> None:
        pass

    def run_epoch(self) -> None:
        raise NotImplementedError

    def test(self, split: Optional[str] = None):
        raise NotImplementedError

    def parse_batch_train(self, batch):
        raise NotImplementedError

    def parse_batch_test(self, batch):
        raise NotImplementedError

    def forward_backward(self, batch) -> dict:
        raise NotImplementedError

    def model_inference(self, input):
        raise NotImplementedError

    def model_zero_grad(self, names=None) -> None:
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].zero_grad()

    def model_backward(self, loss: torch.Tensor) -> None:
        self.detect_anomaly(loss)
        loss.backward()

    def model_update(self, names=None) -> None:
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].step()

    def model_backward_and_update(self, loss: torch.Tensor, names=None) -> None:
        """Zero the gradients, check and back-propagate ``loss``, step the optimizers."""
        self.model_zero_grad(names)
        self.model_backward(loss)
        self.model_update(names)


def _progress(iterable: Iterable, desc: str) -> Iterable:
    """``tqdm`` over ``iterable`` when stderr is an interactive terminal, else ``iterable`` itself."""
    isatty = getattr(sys.stderr, "isatty", None)
    if isatty is not None and isatty():
        from tqdm import tqdm

        return tqdm(iterable, desc=desc, leave=False)
    return iterable


class SimpleTrainer(TrainerBase):
    """Builds data, model and evaluator from ``cfg``; owns evaluation, checkpoint timing and results."""

    def __init__(self, cfg) -> None:
        super().__init__()
        check_engine_config(cfg)
        self.check_cfg(cfg)
        if torch.cuda.is_available() and cfg.USE_CUDA:
            self.device = torch.device("cuda")
        else:
            self.device = torch.device("cpu")
        self.start_epoch = self.epoch = 0
        self.max_epoch = cfg.OPTIM.MAX_EPOCH
        self.output_dir = cfg.OUTPUT_DIR
        self.cfg = cfg
        self.run_settings = run_settings(cfg)
        self.eval_epoch: Optional[int] = None
        # The run's command line for results.json (train.py sets it; None otherwise).
        self.command_line: str | None = None
        self.build_data_loader()
        self.build_model()
        self.evaluator = build_evaluator(cfg, lab2cname=self.lab2cname)
        self.best_result = -np.inf

    def check_cfg(self, cfg) -> None:
        """Hook: validate trainer-specific config keys (raise with a clear message)."""

    def build_data_loader(self) -> None:
        """Create ``self.dm`` (a :class:`DataManager`) and copy its loaders and class info to ``self``."""
        dm = DataManager(self.cfg)
        self.train_loader_x = dm.train_loader_x
        self.train_loader_u = dm.train_loader_u
        self.val_loader = dm.val_loader
        self.test_loader = dm.test_loader
        self.num_classes = dm.num_classes
        self.num_source_domains = dm.num_source_domains
        self.lab2cname = dm.lab2cname
        self.dm = dm

    def build_model(self) -> None:
        """Hook: build modules, optimizers and schedulers and ``register_model`` them."""
        raise NotImplementedError(
            f"{type(self).__name__} must override build_model(): build the network, then call "
            "self.register_model(name, model, optim, sched)"
        )

    def train(self) -> None:
        super().train(self.start_epoch, self.max_epoch)

    def before_train(self) -> None:
        directory = self.cfg.RESUME or self.output_dir
        self.start_epoch = self.resume_model_if_exist(directory)
        self.init_writer(os.path.join(self.output_dir, "tensorboard"))
        self.time_start = time.time()

    def after_train(self) -> None:
        print("Finish training")
        if not self.cfg.TEST.NO_TEST:
            if self.cfg.TEST.FINAL_MODEL == "best_val":
                print("Deploy the model with the best val performance")
                self.load_model(self.output_dir)
            else:
                print("Deploy the last-epoch model")
                self.eval_epoch = self.max_epoch
            self.test()
        elapsed = round(time.time() - self.time_start)
        print(f"Elapsed: {datetime.timedelta(seconds=elapsed)}")
        self.close_writer()

    def after_epoch(self) -> None:
        last_epoch = (self.epoch + 1) == self.max_epoch
        freq = self.cfg.TRAIN.CHECKPOINT_FREQ
        meet_checkpoint_freq = freq > 0 and (self.epoch + 1) % freq == 0
        if not self.cfg.TEST.NO_TEST and self.cfg.TEST.FINAL_MODEL == "best_val":
            curr_result = self.test(split="val")
            if curr_result > self.best_result:
                self.best_result = curr_result
                self.save_model(self.epoch, self.output_dir, val_result=curr_result, model_name=BEST_NAME)
        kept = meet_checkpoint_freq or last_epoch
        if kept or self.cfg.TRAIN.SAVE_EVERY_EPOCH:
            self.save_model(self.epoch, self.output_dir)
            if not self.cfg.TRAIN.KEEP_ALL_CHECKPOINTS:
                self.prune_checkpoints(self.epoch + 1)

    def prune_checkpoints(self, latest: int) -> None:
        """Delete the epoch files (``*.pth.tar-<e>``) older than ``latest`` that only served to
        resume: those of epochs that are neither a ``CHECKPOINT_FREQ`` multiple nor the last."""
        freq = self.cfg.TRAIN.CHECKPOINT_FREQ
        for name in self.get_model_names():
            for epoch, files in epoch_files(os.path.join(self.output_dir, name)).items():
                if epoch < latest and not (freq > 0 and epoch % freq == 0) and epoch != self.max_epoch:
                    for path in files:
                        os.remove(path)

    @torch.no_grad()
    def test(self, split: Optional[str] = None) -> float:
        """Evaluate on ``split`` (default ``TEST.SPLIT``); print the result block; return the accuracy.

        Order: ``set_model_mode("eval")``, ``evaluator.reset()``, then ``parse_batch_test`` ->
        ``model_inference`` -> ``evaluator.process`` per batch. The final evaluation (``split`` not
        given: after training and in --eval-only) also writes ``OUTPUT_DIR/results.json``
        (schema: :mod:`dassl.engine.results`).
        """
        self.set_model_mode("eval")
        self.evaluator.reset()
        final = split is None
        if split is None:
            split = self.cfg.TEST.SPLIT
        if split == "val" and self.val_loader is not None:
            data_loader = self.val_loader
        else:
            split = "test"
            data_loader = self.test_loader
        print(f"Evaluate on the *{split}* set")
        for batch in _progress(data_loader, desc=split):
            input, label = self.parse_batch_test(batch)
            output = self.model_inference(input)
            self.evaluator.process(output, label)
        results = self.evaluator.evaluate()
        for key, value in results.items():
            self.write_scalar(f"{split}/{key}", value, self.epoch)
        if final:
            self.write_results(split, results)
        return list(results.values())[0]

    def write_results(self, split: str, results: dict) -> str:
        """Write ``results.json`` for ``split``; returns its path."""
        record = build_results(
            self.cfg,
            split,
            results,
            total=getattr(self.evaluator, "total", None),
            correct=getattr(self.evaluator, "correct", None),
            num_classes=self.num_classes,
            epoch=self.eval_epoch,
            num_trainable_params=count_trainable_params(m for m in self._models.values() if m is not None),
            command=getattr(self, "command_line", None),
        )
        return write_results(record, self.output_dir)

    def model_inference(self, input):
        return self.model(input)

    def parse_batch_test(self, batch):
        input = batch["img"].to(self.device)
        label = batch["label"].to(self.device)
        return input, label

    def get_current_lr(self, names=None) -> float:
        """The LR of the first param group of the first registered optimizer."""
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                return self._optims[name].param_groups[0]["lr"]
        raise RuntimeError("No optimizer is registered: call register_model(name, model, optim, sched) in build_model")


class TrainerX(SimpleTrainer):
    """Trainer for labelled data: one pass over ``train_loader_x`` per epoch, Dassl's log line."""

    def run_epoch(self) -> None:
        self.set_model_mode("train")
        losses = MetricMeter()
        batch_time = AverageMeter()
        data_time = AverageMeter()
        self.num_batches = len(self.train_loader_x)
        print_freq = self.cfg.TRAIN.PRINT_FREQ
        end = time.time()
        for self.batch_idx, batch in enumerate(self.train_loader_x):  # noqa: B020 (Dassl's attributes)
            data_time.update(time.time() - end)
            loss_summary = self.forward_backward(batch)
            batch_time.update(time.time() - end)
            losses.update(loss_summary)

            meet_freq = print_freq > 0 and (self.batch_idx + 1) % print_freq == 0
            only_few_batches = self.num_batches < print_freq
            if meet_freq or only_few_batches:
                nb_remain = self.num_batches - self.batch_idx - 1
                nb_remain += (self.max_epoch - self.epoch - 1) * self.num_batches
                eta = str(datetime.timedelta(seconds=int(batch_time.avg * nb_remain)))
                info = [
                    f"epoch [{self.epoch + 1}/{self.max_epoch}]",
                    f"batch [{self.batch_idx + 1}/{self.num_batches}]",
                    f"time {batch_time.val:.3f} ({batch_time.avg:.3f})",
                    f"data {data_time.val:.3f} ({data_time.avg:.3f})",
                    f"{losses}",
                    f"lr {self.get_current_lr():.4e}",
                    f"eta {eta}",
                ]
                print(" ".join(info))

            n_iter = self.epoch * self.num_batches + self.batch_idx
            for name, meter in losses.meters.items():
                self.write_scalar("train/" + name, meter.avg, n_iter)
            self.write_scalar("train/lr", self.get_current_lr(), n_iter)
            end = time.time()

    def parse_batch_train(self, batch):
        input = batch["img"].to(self.device)
        label = batch["label"].to(self.device)
        domain = batch["domain"].to(self.device)
        return input, label, domain
