"""``PromptTrainer``: what every CLIP prompt-learning trainer shares, on Dassl's ``TrainerX``.

**Method facts** (class attributes, read by ``trainers.core.methods``, the run scripts, the demo
and the tests, so a new registered trainer appears everywhere with no other edit):
``description`` (one line), ``label`` (table label; default the registered name), ``trains``
(False: evaluated only, e.g. ``ZeroshotCLIP``), ``config_node`` (``"MMLOP"`` for
``TRAINER.MMLOP``), ``default_configs`` (protocol -> config stem under ``config_dir``),
``tiny_config`` (the stem for the tiny offline CLIP), ``table_order`` (row order in tables),
``config_dir`` (default ``configs/trainers/<name>``), ``upstream_fp16_prompts`` (the prompt
learner's parameters, or sub-modules, that upstream trains as fp16 parameters under ``PREC fp16``:
what ``PROMPT_PREC upstream`` makes fp16, ``core/precision.py``), ``ablation_rows`` (the rows of
the method's ablation table, ``methods.AblationRow``: label and config, in order).

**Config**: ``add_config(cfg)`` (class method) adds the ``TRAINER.<config_node>`` keys: the
method's own, then the shared ones it reads (``shared_keys.add_shared_keys``: precision and the
exact speed-ups, declared once with their defaults); ``check_config(cfg, node, prefix)`` (class
method) validates them with ``trainers.core.checks`` (the base checks the shared keys).
Dassl calls ``check_cfg`` before loading the dataset or the backbone, so bad values fail fast.

**Building**:

* ``load_backbone()``: loads ``MODEL.BACKBONE.NAME`` (OpenAI name or file path) to CPU in fp32,
  checks ``INPUT.SIZE`` against CLIP's input resolution, moves it to ``self.device`` and resolves
  the precision (``self.precision``) from ``TRAINER.<config_node>.PREC``.
* ``register_prompt_learner(module)``: optimizer + scheduler over the prompt learner, registered
  as ``prompt_learner`` (checkpoints ``<dir>/prompt_learner/model.pth.tar-<epoch>`` hold only its
  parameters), the ``Number of trainable parameters: N`` log line, optional ``MODEL.INIT_WEIGHTS``,
  the prompt dtypes of ``TRAINER.<config_node>.PROMPT_PREC`` (``core/precision.py``; fp32 when
  the node has no such key) and a gradient scaler when the precision needs one.

**Training**: ``backward_and_update(loss)`` (plain or scaled update); ``finish_step(loss, logits,
label, parts)`` ends ``forward_backward``: the update, the batch summary, and after the last batch
of an epoch the LR-scheduler step and the ``epoch_trained(epoch)`` hook (GPA uses it).
``CrossEntropyPromptTrainer``: a trainer whose model maps images to logits, trained with CE.

**Evaluation**: ``load_model(directory, epoch)`` loads only the prompt parameters (class-dependent
entries of upstream checkpoints, ``token_prefix``/``token_suffix``, are dropped, so prompts trained
on one class set are evaluated on another); a checkpoint missing a parameter is an error naming
it. ``test()`` clears the model's per-evaluation text-feature cache before and after evaluating.
"""
from __future__ import annotations

from typing import ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode

from dassl.engine import TrainerX
from dassl.metrics import compute_accuracy
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import CheckpointMismatchError, load_checkpoint, load_pretrained_weights
from dassl.utils.torchtools import find_model_file

from .backbone import load_clip_to_cpu
from .precision import cast_prompt_parameters, resolve_precision, scales_gradients
from .shared_keys import check_shared_keys

CLASS_DEPENDENT_KEYS = ("token_prefix", "token_suffix", "tokenized_prompts")


def drop_class_dependent(state_dict: dict) -> dict:
    """``state_dict`` without the class-dependent buffers of upstream checkpoints."""
    return {k: v for k, v in state_dict.items() if k.split(".")[-1] not in CLASS_DEPENDENT_KEYS}


class PromptTrainer(TrainerX):
    """Base class of the prompt trainers (see the module docstring); not registered itself."""

    description: ClassVar[str] = ""
    label: ClassVar[str] = ""
    trains: ClassVar[bool] = True
    config_node: ClassVar[str] = ""
    default_configs: ClassVar[dict[str, str]] = {}
    tiny_config: ClassVar[Optional[str]] = None
    table_order: ClassVar[int] = 100
    config_dir: ClassVar[str] = ""
    upstream_fp16_prompts: ClassVar[tuple[str, ...]] = ()
    ablation_rows: ClassVar[tuple] = ()

    model: nn.Module
    scaler = None

    @classmethod
    def add_config(cls, cfg) -> None:
        """Add the ``TRAINER.<config_node>`` keys with their defaults."""

    @classmethod
    def check_config(cls, cfg, node, prefix: str) -> None:
        """Validate ``node`` (``cfg.TRAINER.<config_node>``, full key ``prefix``): raise
        ``ConfigError`` naming the key, the value and what is allowed. The default checks the
        shared keys (``PREC``, ``PROMPT_PREC``: ``shared_keys.check_shared_keys``); override and
        call ``super()`` to add the method's own checks."""
        check_shared_keys(node, prefix)

    def check_cfg(self, cfg) -> None:
        if self.config_node:
            self.complete_config(cfg)
            node = cfg.TRAINER[self.config_node]
            self.check_config(cfg, node, f"TRAINER.{self.config_node}")

    @classmethod
    def complete_config(cls, cfg) -> None:
        """Add the ``TRAINER.<config_node>`` keys that ``cfg`` lacks, with their defaults: a config
        built by an upstream ``train.py`` (whose ``extend_cfg`` knows only upstream's keys) then
        runs this trainer unchanged."""
        fresh = CfgNode()
        fresh.TRAINER = CfgNode()
        cls.add_config(fresh)
        defaults = fresh.TRAINER[cls.config_node]
        node = cfg.TRAINER.get(cls.config_node)
        missing = [k for k in defaults if node is None or k not in node]
        if not missing:
            return
        frozen = cfg.is_frozen()
        cfg.defrost()
        if node is None:
            cfg.TRAINER[cls.config_node] = defaults
        else:
            for key in missing:
                node[key] = defaults[key]
        if frozen:
            cfg.freeze()
        print(f"Note: the config has no TRAINER.{cls.config_node}.{{{', '.join(missing)}}}: using the defaults "
              f"({', '.join(f'{k}={defaults[k]!r}' for k in missing)})")

    def default_cfg(self):
        """Dassl's defaults plus every registered trainer's keys, as ``train.py`` builds the
        config (the reference for keys a checkpoint of an older version lacks)."""
        import trainers

        cfg = super().default_cfg()
        trainers.extend_cfg(cfg)
        return cfg

    @property
    def node(self):
        """``cfg.TRAINER.<config_node>``: this method's config keys."""
        return self.cfg.TRAINER[self.config_node]

    def load_backbone(self) -> nn.Module:
        """fp32 CLIP on ``self.device``; sets ``self.precision`` from ``TRAINER.<node>.PREC``.

        ``MODEL.BACKBONE.NAME``: an OpenAI name, a file, or ``open_clip:<model>:<tag or file>``
        (``backbone.load_clip_to_cpu``). ``INPUT.SIZE`` must equal the model's resolution and, for
        open_clip models, ``INPUT.PIXEL_MEAN/STD`` its normalization (``check_input_config``:
        one error naming the keys and values to set; the config is not silently changed, since the
        transforms and ``config.yaml`` are made before the backbone is loaded)."""
        from .backbone import check_input_config

        cfg = self.cfg
        name = cfg.MODEL.BACKBONE.NAME
        print(f"Loading CLIP (backbone: {name})")
        clip_model = load_clip_to_cpu(name)
        check_input_config(cfg, clip_model)
        self.precision = resolve_precision(self.node.PREC, self.device,
                                           key=f"TRAINER.{self.config_node}.PREC")
        return clip_model.to(self.device)

    @property
    def prompt_prec(self) -> str:
        """``TRAINER.<config_node>.PROMPT_PREC`` (``fp32`` for a node without the key)."""
        if not self.config_node:
            return "fp32"
        return self.node.get("PROMPT_PREC", "fp32")

    def register_prompt_learner(self, module: nn.Module) -> None:
        """Prompt dtypes, optimizer, scheduler, registration, parameter log lines, optional init
        weights, gradient scaler."""
        prompt_prec = self.prompt_prec
        changed = cast_prompt_parameters(module, self.precision, prompt_prec,
                                         self.upstream_fp16_prompts)
        print("Turning off gradients in both the image and the text encoder")
        names = sorted(n for n, p in module.named_parameters() if p.requires_grad)
        n_params = sum(p.numel() for p in module.parameters() if p.requires_grad)
        print(f"Parameters to be updated: {names}")
        print(f"Number of trainable parameters: {n_params:,}")
        if prompt_prec == "upstream":
            key = f"TRAINER.{self.config_node}.PROMPT_PREC"
            print(f"{key} upstream: fp16 parameters {changed}, trained without gradient scaling"
                  if changed else f"{key} upstream: every prompt parameter is fp32 under PREC "
                  f"{self.precision.name}, as upstream")
        if self.cfg.MODEL.INIT_WEIGHTS:
            load_pretrained_weights(module, self.cfg.MODEL.INIT_WEIGHTS)
        self.optim = build_optimizer(module, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("prompt_learner", module, self.optim, self.sched)
        self.scaler = (torch.amp.GradScaler("cuda") if scales_gradients(self.precision, prompt_prec)
                       else None)

    def backward_and_update(self, loss: torch.Tensor) -> None:
        """One optimizer step on ``loss`` (with gradient scaling when enabled)."""
        if self.scaler is None:
            self.model_backward_and_update(loss)
            return
        self.detect_anomaly(loss)
        self.optim.zero_grad()
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optim)
        self.scaler.update()

    def finish_step(self, loss: torch.Tensor, logits: torch.Tensor, label: torch.Tensor,
                    parts: Optional[dict] = None) -> dict:
        """``backward_and_update(loss)``; returns ``{"loss", "acc"}`` (accuracy of ``logits``)
        plus ``parts``. After the last batch of an epoch: ``update_lr()``, then
        ``epoch_trained(epoch)`` with the 1-based epoch."""
        self.detect_anomaly(loss, parts)
        self.backward_and_update(loss)
        summary = {"loss": loss.item(), "acc": compute_accuracy(logits, label)[0].item()}
        summary.update(parts or {})
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
            self.epoch_trained(self.epoch + 1)
        return summary

    def epoch_trained(self, epoch: int) -> None:
        """Hook after the optimizer and LR-scheduler steps of epoch ``epoch`` (1-based)."""

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def load_model(self, directory: str, epoch: Optional[int] = None) -> None:
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given")
            return
        model_file = "model-best.pth.tar" if epoch is None else f"model.pth.tar-{epoch}"
        for name in self.get_model_names():
            model_path = find_model_file(directory, name, model_file)
            checkpoint = load_checkpoint(model_path)
            state_dict = drop_class_dependent(checkpoint["state_dict"])
            stored_epoch = checkpoint.get("epoch")
            print(f'Loading weights to {name} from "{model_path}" (epoch = {stored_epoch})')
            module = self._models[name]
            try:
                missing, unexpected = module.load_state_dict(state_dict, strict=False)
            except RuntimeError as e:
                raise CheckpointMismatchError(
                    f"{model_path} does not fit this {self.cfg.TRAINER.NAME} model (check the TRAINER.* "
                    f"keys it was trained with, in {directory}/config.yaml): {e}") from None
            if missing:
                raise CheckpointMismatchError(
                    f"{model_path} lacks the prompt parameters {missing}; it was not saved by a "
                    f"{self.cfg.TRAINER.NAME} run with this config (check the TRAINER.* keys it was "
                    f"trained with, in {directory}/config.yaml)")
            if unexpected:
                print(f"Ignored entries not used by this model: {sorted(unexpected)}")
            self.eval_epoch = stored_epoch

    def clear_text_cache(self) -> None:
        cache = getattr(getattr(self, "model", None), "text_cache", None)
        if cache is not None:
            cache.clear()

    def test(self, split: Optional[str] = None) -> float:
        self.clear_text_cache()
        try:
            return super().test(split)
        finally:
            self.clear_text_cache()


class CrossEntropyPromptTrainer(PromptTrainer):
    """A prompt trainer whose model maps images to logits and whose loss is cross-entropy."""

    def forward_backward(self, batch) -> dict:
        image, label = self.parse_batch_train(batch)
        output = self.model(image)
        return self.finish_step(F.cross_entropy(output, label), output, label)
