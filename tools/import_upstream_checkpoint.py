"""Import a checkpoint written by upstream CoOp, CoCoOp, IVLP, MaPLe or PromptSRC code.

    python tools/import_upstream_checkpoint.py UPSTREAM OUT --trust-pickle [--trainer NAME]
        [--epoch E] [--ctx-init TEXT] [--as-stored] [--overwrite] [--allow-global MODULE.NAME ...]

``UPSTREAM`` is the output folder of an upstream run (holding ``prompt_learner/`` for CoOp and
CoCoOp, ``VLPromptLearner/`` for IVLP and PromptSRC, ``MultiModalPromptLearner/`` for MaPLe, each
with ``model.pth.tar-<E>`` and the ``checkpoint`` pointer), that inner folder, or one checkpoint
file. The epoch is ``--epoch``, else the one the ``checkpoint`` pointer names, else the last one.

What it does:

1. **Reads the file, only if you say you trust it.** Upstream Dassl pickles the LR-scheduler
   object into every checkpoint, so these files do not load with ``torch.load(weights_only=True)``,
   and unpickling a file can run code named in it. Without ``--trust-pickle`` the tool stops and
   says so. With it, the file is unpickled by a restricted unpickler that builds only containers,
   tensors and torch's optimizer / LR-scheduler classes (what Dassl writes) and refuses any other
   Python object, naming it; ``--allow-global module.Name`` admits one more (only for a file you
   trust). What runs code or touches the system (``os``, ``posix``, ``subprocess``, ``sys``,
   ``builtins.eval``/``exec``/``getattr``/``__import__`` ..., ``forbidden``) is refused whatever the
   flags, never suggested, and a file naming one is reported as not a checkpoint before any
   unpickling; a corrupt file is reported as corrupt, not as needing trust.
2. **Keeps the prompt parameters only**, renamed to this project's names (the parameters of the
   trainer's ``prompt_learner``; checked by loading them, strictly, into a freshly built prompt
   learner of that trainer):

   * CoOp: ``ctx`` -> ``ctx``; CoCoOp: ``ctx`` and ``meta_net.linear{1,2}.{weight,bias}``, same
     names;
   * IVLP and PromptSRC: ``prompt_learner.ctx`` -> ``ctx_text.0``,
     ``text_encoder.transformer.resblocks.<i>.VPT_shallow`` -> ``ctx_text.<i>``,
     ``image_encoder.VPT`` -> ``ctx_vision.0``,
     ``image_encoder.transformer.resblocks.<i>.VPT_shallow`` -> ``ctx_vision.<i>``;
   * MaPLe: ``prompt_learner.<name>`` -> ``<name>`` for ``ctx``, ``proj.{weight,bias}``,
     ``compound_prompts_text.<k>`` and ``compound_prompt_projections.<k>.{weight,bias}``.

   Dropped: the frozen CLIP weights the deep methods save with the prompts (evaluation uses
   ``MODEL.BACKBONE.NAME``), PromptSRC's frozen zero-shot image encoder, the class-dependent
   ``token_prefix``/``token_suffix`` buffers (rebuilt for whatever classes are evaluated), the
   optimizer and scheduler states. Prompts are stored in fp32 (upstream fp16 values convert
   exactly).

   **Values upstream computes with.** The modified ``clip/model.py`` of the MaPLe and PromptSRC
   repositories casts every prompt it inserts inside the towers to fp16 (a hard-coded ``.half()``,
   whatever ``PREC`` says): IVLP's and PromptSRC's deep text prompts and all their vision prompts,
   MaPLe's deep text prompts. Upstream never computes with the stored fp32 values of those, only
   with their fp16 rounding, so by default they are stored rounded (exactly representable fp32),
   which makes an fp32 evaluation here give upstream's logits (an fp32 upstream IVLP run: within
   float rounding). ``--as-stored`` keeps the stored values. The layer-0 text prompt
   (``prompt_learner.ctx``) is not cast upstream and is never rounded; MaPLe's vision prompts are
   computed (``proj(ctx)``...), so their cast cannot be reproduced through the stored parameters.
   Our ``PREC fp16`` casts inserted prompts to fp16 anyway. A checkpoint from upstream code run
   with that cast disabled needs ``--as-stored``.
3. **Writes** ``OUT/prompt_learner/model.pth.tar-<E>`` and the ``checkpoint`` pointer, the layout
   and dict our engine writes (``state_dict``, ``epoch``, ``optimizer``/``scheduler`` None,
   ``val_result``, plus ``imported_from``: source file, SHA-256, upstream trainer), loadable with
   ``torch.load(weights_only=True)``, and prints what was kept, renamed and dropped and the
   ``train.py --eval-only --model-dir OUT --load-epoch E`` command with the ``TRAINER.*`` values
   the checkpoint needs (token counts and depths, read from the tensors; ``CTX_INIT`` where the
   upstream prompts kept fixed words after the learned ones).

The method is inferred from the folder name and the parameter names; ``--trainer`` overrides it
where the parameters fit (IVLP and PromptSRC checkpoints are interchangeable). Exit status 1 with
one message for anything that is not an importable upstream checkpoint.
"""
from __future__ import annotations

import _compat_pickle
import argparse
import contextlib
import hashlib
import io
import os
import pickle
import re
import shlex
import sys
import types
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from dassl.utils.errors import UserError
from dassl.utils.torchtools import (
    POINTER_FILE,
    epoch_files,
    forbidden,
    pickled_globals,
    save_checkpoint,
)

TRAINERS = ("CoOp", "CoCoOp", "IVLP", "MaPLe", "PromptSRC")
# Registered model name (the checkpoint's folder) -> upstream trainers that use it.
UPSTREAM_FOLDERS = {"prompt_learner": ("CoOp", "CoCoOp"), "VLPromptLearner": ("IVLP", "PromptSRC"),
                    "MultiModalPromptLearner": ("MaPLe",)}
# Trainers whose parameters have the same names and meaning, so either can evaluate the other's.
COMPATIBLE = {"IVLP": {"IVLP", "PromptSRC"}, "PromptSRC": {"IVLP", "PromptSRC"}}
CONFIG_NODES = {"CoOp": "COOP", "CoCoOp": "COCOOP", "IVLP": "IVLP", "MaPLe": "MAPLE",
                "PromptSRC": "PROMPTSRC"}
CLASS_DEPENDENT = ("token_prefix", "token_suffix", "tokenized_prompts")
OUR_FOLDER = "prompt_learner"
STATES = "optimizer and LR-scheduler states"
UPSTREAM_DEFAULT_CTX_INIT = "a photo of a"

# What upstream Dassl checkpoints pickle (torch >= 1.x): containers, tensor rebuilders, the
# optimizer and LR scheduler objects (the scheduler's ``successor``), numpy scalars.
SAFE_GLOBALS = frozenset({
    "builtins.dict", "builtins.list", "builtins.tuple", "builtins.set", "builtins.frozenset",
    "builtins.int", "builtins.float", "builtins.bool", "builtins.str", "builtins.bytes",
    "builtins.complex", "builtins.slice", "builtins.range",
    "collections.OrderedDict", "collections.defaultdict", "collections.Counter",
    "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
    "torch.Size", "torch.device",
    "torch.optim.sgd.SGD", "torch.optim.adam.Adam", "torch.optim.adamw.AdamW",
    "torch.optim.rmsprop.RMSprop",
    "torch.optim.lr_scheduler.CosineAnnealingLR", "torch.optim.lr_scheduler.StepLR",
    "torch.optim.lr_scheduler.MultiStepLR", "torch.optim.lr_scheduler.ExponentialLR",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.dtype",
})


class UpstreamImportError(UserError, ValueError):
    """The input is not an importable upstream checkpoint (the message says why and what to do)."""


# ----------------------------------------------------------------------------- reading


def _restricted_pickle_module(allowed: frozenset[str]) -> types.ModuleType:
    """A ``pickle``-like module for ``torch.load(pickle_module=...)`` whose unpickler resolves
    only the globals in ``allowed`` (``module.Name``; torch dtypes too) and refuses the rest."""

    class RestrictedUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            if (module, name) in _compat_pickle.NAME_MAPPING:          # protocol-2 files
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
            qualified = f"{module}.{name}"
            if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
                return getattr(torch, name)
            if forbidden(qualified):
                raise pickle.UnpicklingError(f"refused to unpickle {qualified}, which runs code or touches the "
                                             "system (never allowed)")
            if qualified not in allowed:
                raise pickle.UnpicklingError(f"refused to unpickle the Python object {qualified}")
            return super().find_class(module, name)

    module = types.ModuleType("restricted_pickle")
    module.Unpickler = RestrictedUnpickler
    module.load = lambda f, **kwargs: RestrictedUnpickler(f, **kwargs).load()
    module.UnpicklingError = pickle.UnpicklingError
    return module


def read_checkpoint(path: str, trust_pickle: bool = False,
                    allow_globals: Sequence[str] = ()) -> dict:
    """The checkpoint dict of ``path``: with ``weights_only=True`` when it allows, else (only
    with ``trust_pickle``) through the restricted unpickler."""
    refused = [g for g in allow_globals if forbidden(g)]
    if refused:
        raise UpstreamImportError(f"--allow-global {refused[0]}: it runs code or touches the system, so it is "
                                  "never unpickled; no Dassl or PyTorch checkpoint needs it")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass
    except Exception as exc:  # noqa: BLE001  (truncated, not a torch file, ...)
        raise UpstreamImportError(f"{path} is not a readable PyTorch checkpoint: "
                                  f"{type(exc).__name__}: {exc}") from None
    names = pickled_globals(path)
    if names is None:
        raise UpstreamImportError(f"{path} is not a readable PyTorch checkpoint: it is corrupt (no pickle "
                                  "stream in it); get an intact copy of the file")
    dangerous = sorted({g for g in names if forbidden(g)})
    if dangerous:
        raise UpstreamImportError(f"{path} names {', '.join(dangerous)}, which runs code or touches the system: "
                                  "it is not a Dassl checkpoint and was not read (do not unpickle it elsewhere)")
    if not trust_pickle:
        raise UpstreamImportError(
            f"{path} holds pickled Python objects (upstream Dassl saves the LR-scheduler object in "
            "every checkpoint), so it cannot be read as plain tensors, and unpickling a file can "
            "run code named in it. If you trust this file (you trained it, or it comes from a "
            "source you trust), rerun with --trust-pickle: it is then read by a restricted "
            "unpickler that builds only containers, tensors and torch optimizer/scheduler "
            "objects. The converted checkpoint holds tensors only, so this is needed once")
    allowed = SAFE_GLOBALS | frozenset(allow_globals)
    try:
        return torch.load(path, map_location="cpu", weights_only=False,
                          pickle_module=_restricted_pickle_module(allowed))
    except pickle.UnpicklingError as exc:
        message = str(exc).strip().splitlines()[0]
        match = re.search(r"Python object (\S+)", message)
        hint = (f" If you trust the file and know what {match.group(1)} is, add --allow-global "
                f"{match.group(1)}." if match and not forbidden(match.group(1)) else "")
        raise UpstreamImportError(f"{path}: {message}, which Dassl checkpoints do not need, so the "
                                  f"file was not read.{hint}") from None


def find_checkpoint(source: str, epoch: Optional[int] = None) -> tuple[str, str]:
    """``(checkpoint file, registered-model folder name)`` for an upstream run folder, its
    registered-model folder or a checkpoint file (see the module docstring)."""
    source = os.path.abspath(os.path.expanduser(source))
    if os.path.isfile(source):
        return source, os.path.basename(os.path.dirname(source))
    if not os.path.isdir(source):
        raise UpstreamImportError(f"{source} does not exist")
    expected = ", ".join(f"{f}/" for f in UPSTREAM_FOLDERS)
    if os.path.basename(source) in UPSTREAM_FOLDERS:
        folder = source
    else:
        found = [f for f in UPSTREAM_FOLDERS if os.path.isdir(os.path.join(source, f))]
        if not found:
            listing = sorted(os.listdir(source))
            shown = ", ".join(listing[:12]) + (", ..." if len(listing) > 12 else "")
            raise UpstreamImportError(
                f"{source} is not an upstream checkpoint folder: an upstream run folder holds one "
                f"of {expected} (the registered model: CoOp/CoCoOp, IVLP/PromptSRC, MaPLe), each "
                f"with model.pth.tar-<epoch> and a 'checkpoint' file; this one holds: "
                f"{shown or 'nothing'}. Give the run folder, that inner folder, or a checkpoint file")
        if len(found) > 1:
            raise UpstreamImportError(f"{source} holds several registered models ({', '.join(found)}); "
                                      "give the one to import")
        folder = os.path.join(source, found[0])
    epochs = sorted(e for e, files in epoch_files(folder).items()
                    if any(os.path.basename(f).startswith("model.pth.tar-") for f in files))
    if epoch is not None:
        path = os.path.join(folder, f"model.pth.tar-{epoch}")
        if not os.path.isfile(path):
            have = ", ".join(map(str, epochs)) or "none"
            raise UpstreamImportError(f"{path} does not exist (epochs in {folder}: {have})")
        return path, os.path.basename(folder)
    pointer = os.path.join(folder, POINTER_FILE)
    if os.path.isfile(pointer):
        with open(pointer) as f:
            name = f.readline().strip()
        if name and os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name), os.path.basename(folder)
    if epochs:
        return os.path.join(folder, f"model.pth.tar-{epochs[-1]}"), os.path.basename(folder)
    if os.path.isfile(os.path.join(folder, "model-best.pth.tar")):
        return os.path.join(folder, "model-best.pth.tar"), os.path.basename(folder)
    raise UpstreamImportError(f"{folder} holds no model.pth.tar-<epoch> file (nor model-best.pth.tar)")


# ----------------------------------------------------------------------------- mapping


def infer_trainer(folder: str, state_dict: dict) -> str:
    """The upstream method that wrote ``state_dict`` (see the module docstring)."""
    keys = list(state_dict)
    if any(k.startswith("ctx_text.") or k.startswith("ctx_vision.") for k in keys):
        raise UpstreamImportError("this is already a checkpoint of this project (parameters "
                                  "ctx_text.*/ctx_vision.*): use its folder as --model-dir directly")
    if any(k.startswith("prompt_learner.ZS_image_encoder.") for k in keys):
        return "PromptSRC"
    if any(k.startswith("prompt_learner.compound_prompt") or k == "prompt_learner.proj.weight"
           for k in keys):
        return "MaPLe"
    if any(k == "image_encoder.VPT" or k.endswith(".VPT_shallow") for k in keys):
        if "prompt_learner.ctx" not in state_dict:
            raise UpstreamImportError(
                "this looks like a VPT checkpoint (vision prompts only, the text side fixed), a "
                "method this project does not have; IVLP with learned text prompts is the closest")
        return "IVLP"
    if "meta_net.linear1.weight" in state_dict:
        return "CoCoOp"
    if "ctx" in state_dict:
        return "CoOp"
    shown = ", ".join(keys[:10]) + (", ..." if len(keys) > 10 else "")
    raise UpstreamImportError(f"no prompt parameters of CoOp, CoCoOp, IVLP, MaPLe or PromptSRC were "
                              f"found (the state dict holds: {shown or 'nothing'})")


def _rename(trainer: str, key: str) -> Optional[str]:
    """Our name of the upstream prompt parameter ``key`` of ``trainer`` (None: not a prompt)."""
    if trainer in ("CoOp", "CoCoOp"):
        if key == "ctx" or (trainer == "CoCoOp" and re.fullmatch(r"meta_net\.linear[12]\.(weight|bias)", key)):
            return key
        return None
    if trainer in ("IVLP", "PromptSRC"):
        if key == "prompt_learner.ctx":
            return "ctx_text.0"
        if key == "image_encoder.VPT":
            return "ctx_vision.0"
        m = re.fullmatch(r"(text|image)_encoder\.transformer\.resblocks\.(\d+)\.VPT_shallow", key)
        if m:
            return f"ctx_{'text' if m.group(1) == 'text' else 'vision'}.{int(m.group(2))}"
        return None
    if trainer == "MaPLe":
        m = re.fullmatch(r"prompt_learner\.(ctx|proj\.(weight|bias)|compound_prompts_text\.\d+|"
                         r"compound_prompt_projections\.\d+\.(weight|bias))", key)
        return m.group(1) if m else None
    raise ValueError(trainer)


def _drop_reason(key: str) -> str:
    if key.split(".")[-1] in CLASS_DEPENDENT:
        return "class-dependent buffers (rebuilt for the evaluated classes)"
    if key.startswith("prompt_learner.ZS_image_encoder."):
        return "PromptSRC's frozen zero-shot image encoder"
    if key.startswith(("image_encoder.", "text_encoder.")) or key == "logit_scale":
        return "frozen CLIP weights (evaluation uses MODEL.BACKBONE.NAME)"
    return "not a parameter of this project's model"


def _layers(params: dict, prefix: str) -> int:
    """Depth of ``<prefix>.<l>`` parameters, which must be numbered 0..depth-1."""
    found = sorted(int(k.split(".")[1]) for k in params if k.startswith(prefix + "."))
    if found != list(range(len(found))):
        raise UpstreamImportError(f"the prompts {prefix}.* cover the layers {found}; upstream deep "
                                  "prompts cover 0..depth-1 without gaps, so this file is incomplete")
    return len(found)


def _fixed_words(state_dict: dict, prefix: str = "") -> Optional[int]:
    """How many token rows right after the learned ones are the same for every class in the
    upstream ``token_suffix`` buffer (prompt words kept fixed, e.g. "of a" after 2 learned
    tokens of "a photo of a"); None when it cannot be told (no buffer, one class)."""
    suffix = state_dict.get(prefix + "token_suffix")
    if not isinstance(suffix, torch.Tensor) or suffix.dim() != 3 or suffix.shape[0] < 2:
        return None
    same = (suffix == suffix[:1]).all(dim=-1).all(dim=0)
    return int(same.long().cumprod(0).sum())


@dataclass
class ImportResult:
    """What ``import_checkpoint`` did: the file read and written, the method, the renamed
    parameters, the dropped entries (reason -> keys), the ``TRAINER.*`` settings and notes."""

    source: str
    output: str
    trainer: str
    upstream_trainer: str
    epoch: int
    state_dict: OrderedDict[str, torch.Tensor]
    renamed: list[tuple[str, str]]
    dropped: dict[str, list[str]]
    settings: dict[str, object]
    notes: list[str] = field(default_factory=list)

    def command(self, model_dir: Optional[str] = None) -> str:
        opts = [x for k, v in self.settings.items() for x in (k, str(v))]
        return shlex.join(["python", "train.py", "--trainer", self.trainer, "--eval-only",
                           "--model-dir", model_dir or self.output, "--load-epoch", str(self.epoch),
                           *opts])


def _ctx_init_setting(trainer: str, n_ctx: int, fixed: Optional[int], ctx_init: Optional[str],
                      notes: list[str]) -> Optional[str]:
    """The ``CTX_INIT`` value to evaluate with (None: leave the config's)."""
    if ctx_init is not None:
        from trainers.core.text_inputs import count_tokens

        n = count_tokens(ctx_init) if ctx_init.strip() else 0
        if fixed is not None and ctx_init.strip() and n != n_ctx + fixed:
            raise UpstreamImportError(
                f"--ctx-init {ctx_init!r} is {n} BPE tokens, but the upstream prompts were "
                f"{n_ctx} learned + {fixed} fixed tokens ({n_ctx + fixed} in all)")
        if trainer in ("CoOp", "CoCoOp") and ctx_init.strip() and n != n_ctx:
            raise UpstreamImportError(
                f"--ctx-init {ctx_init!r} is {n} BPE tokens; {trainer} here takes its number of "
                f"context tokens from CTX_INIT, and the checkpoint has {n_ctx}: use --ctx-init ''")
        return ctx_init
    if fixed == 0:
        # Every word of the prompt prefix is replaced by a learned row: any text of n_ctx tokens
        # (or '', "X X .. X") gives the same prompts.
        return ""
    if fixed is None:
        notes.append(f"CTX_INIT: could not be read from the checkpoint (no per-class buffer to "
                     f"compare); give the training config's value (it must have at least {n_ctx} "
                     "BPE tokens, or be '')")
        return None
    if trainer in ("CoOp", "CoCoOp"):
        notes.append(f"the upstream prompts kept {fixed} fixed token(s) after the {n_ctx} learned "
                     f"ones (upstream counted CTX_INIT in words, not BPE tokens); {trainer} here "
                     "counts tokens, so its prompts differ from upstream's by those tokens")
        return None
    if n_ctx + fixed == 4:
        notes.append(f"CTX_INIT: the upstream prompts kept {fixed} fixed token(s) after the "
                     f"{n_ctx} learned ones, as upstream's default \"{UPSTREAM_DEFAULT_CTX_INIT}\" "
                     "does; if your training config had another 4-token CTX_INIT, use it instead "
                     "(or pass --ctx-init)")
        return UPSTREAM_DEFAULT_CTX_INIT
    notes.append(f"CTX_INIT: the upstream prompts kept {fixed} fixed token(s) after the {n_ctx} "
                 f"learned ones: set CTX_INIT to your training config's value ({n_ctx + fixed} "
                 "BPE tokens; --ctx-init checks it)")
    return None


def injected_in_fp16(trainer: str, name: str) -> bool:
    """Whether upstream's ``clip/model.py`` casts our parameter ``name`` of ``trainer`` to fp16
    where it inserts it (see the module docstring)."""
    if trainer in ("IVLP", "PromptSRC"):
        return name != "ctx_text.0"
    if trainer == "MaPLe":
        return name.startswith("compound_prompts_text.")
    return False


def convert_state_dict(trainer: str, state_dict: dict, ctx_init: Optional[str] = None,
                       as_stored: bool = False
                       ) -> tuple[OrderedDict, list[tuple[str, str]], dict, dict, list[str]]:
    """``(ours, renamed, dropped, settings, notes)`` for an upstream ``state_dict`` of
    ``trainer``: our prompt parameters (fp32; those upstream inserts in fp16 rounded to fp16
    values unless ``as_stored``), the ``(upstream, ours)`` renames, the dropped keys by reason,
    the ``TRAINER.<NODE>.*`` values the parameters need, and notes."""
    ours: OrderedDict[str, torch.Tensor] = OrderedDict()
    renamed, dropped, notes = [], {}, []
    for key, value in state_dict.items():
        new = _rename(trainer, key)
        if new is None or not isinstance(value, torch.Tensor):
            dropped.setdefault(_drop_reason(key), []).append(key)
            continue
        ours[new] = value.detach().to(torch.float32, copy=True).contiguous()
        renamed.append((key, new))
    if not ours:
        raise UpstreamImportError(f"the checkpoint holds no {trainer} prompt parameters")
    half = sorted({str(state_dict[k].dtype).replace("torch.", "") for k, _ in renamed} - {"float32"})
    if half:
        notes.append(f"prompts stored as {', '.join(half)} upstream; converted to float32 (exact)")
    rounded = [name for name in ours if injected_in_fp16(trainer, name)]
    if rounded and not as_stored:
        changed = 0
        for name in rounded:
            value = ours[name].half().float()
            changed += int(not torch.equal(value, ours[name]))
            ours[name] = value
        notes.append(f"{len(rounded)} prompt tensor(s) ({', '.join(rounded)}) hold the fp16 rounding "
                     f"of their stored values ({changed} changed), which is what upstream computes "
                     "with (its clip/model.py inserts them with .half()); --as-stored keeps them")
    node = f"TRAINER.{CONFIG_NODES[trainer]}"
    settings: dict[str, object] = {}
    if trainer in ("CoOp", "CoCoOp"):
        ctx = ours["ctx"]
        n_ctx = int(ctx.shape[-2])
        settings[f"{node}.N_CTX"] = n_ctx
        if trainer == "CoOp":
            settings[f"{node}.CSC"] = ctx.dim() == 3
            if ctx.dim() == 3:
                notes.append(f"class-specific contexts (CSC) for {ctx.shape[0]} classes: they "
                             "evaluate only on a class list of that length, in the same order")
            notes.append("CLASS_TOKEN_POSITION cannot be read from the checkpoint: use the "
                         "training config's (upstream's default: end)")
        fixed = _fixed_words(state_dict)
    elif trainer in ("IVLP", "PromptSRC"):
        depth_text, depth_vision = _layers(ours, "ctx_text"), _layers(ours, "ctx_vision")
        settings[f"{node}.N_CTX_TEXT"] = int(ours["ctx_text.0"].shape[0])
        if depth_vision:
            settings[f"{node}.N_CTX_VISION"] = int(ours["ctx_vision.0"].shape[0])
        settings[f"{node}.PROMPT_DEPTH_TEXT"] = depth_text
        settings[f"{node}.PROMPT_DEPTH_VISION"] = depth_vision
        n_ctx = settings[f"{node}.N_CTX_TEXT"]
        fixed = _fixed_words(state_dict, "prompt_learner.")
    else:  # MaPLe
        n_ctx = int(ours["ctx"].shape[0])
        settings[f"{node}.N_CTX"] = n_ctx
        settings[f"{node}.PROMPT_DEPTH"] = 1 + _layers(ours, "compound_prompts_text")
        fixed = _fixed_words(state_dict, "prompt_learner.")
    value = _ctx_init_setting(trainer, n_ctx, fixed, ctx_init, notes)
    if value is not None:
        settings[f"{node}.CTX_INIT"] = value
    return ours, renamed, dropped, settings, notes


def verify_parameters(trainer: str, ours: dict, settings: dict) -> None:
    """Load ``ours`` strictly into a freshly built prompt learner of our ``trainer`` with these
    settings (names and shapes must match exactly); the global RNG is left untouched."""
    node = f"TRAINER.{CONFIG_NODES[trainer]}."
    s = {k[len(node):]: v for k, v in settings.items() if k.startswith(node)}
    with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(io.StringIO()):
        if trainer == "CoOp":
            from trainers.coop import CoOpPromptLearner
            ctx = ours["ctx"]
            learner = CoOpPromptLearner(s["N_CTX"], int(ctx.shape[-1]), int(ctx.shape[0]),
                                        bool(s["CSC"]), "end")
        elif trainer == "CoCoOp":
            from trainers.cocoop import CoCoOpPromptLearner
            learner = CoCoOpPromptLearner(s["N_CTX"], int(ours["ctx"].shape[-1]),
                                          int(ours["meta_net.linear1.weight"].shape[1]))
        elif trainer in ("IVLP", "PromptSRC"):
            from trainers.ivlp import IVLPPromptLearner, IVLPSettings
            vision_dim = int(ours["ctx_vision.0"].shape[-1]) if "ctx_vision.0" in ours else 1
            learner = IVLPPromptLearner(
                IVLPSettings(n_ctx_text=s["N_CTX_TEXT"], n_ctx_vision=s.get("N_CTX_VISION", 1),
                             depth_text=s["PROMPT_DEPTH_TEXT"], depth_vision=s["PROMPT_DEPTH_VISION"]),
                int(ours["ctx_text.0"].shape[-1]), vision_dim)
        else:
            from trainers.maple import MaPLePromptLearner
            weight = ours["proj.weight"]
            learner = MaPLePromptLearner(s["N_CTX"], s["PROMPT_DEPTH"], int(weight.shape[1]),
                                         int(weight.shape[0]))
    expected = {k: tuple(v.shape) for k, v in learner.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ours.items()}
    if expected != got:
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        shapes = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
        raise UpstreamImportError(
            f"the converted parameters do not fit this project's {trainer} prompt learner "
            f"(missing {missing}, unexpected {extra}, other shapes {shapes}); the upstream file "
            "may come from a modified trainer")
    learner.load_state_dict(ours, strict=True)


# ----------------------------------------------------------------------------- the command


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def import_checkpoint(source: str, output: str, trust_pickle: bool = False,
                      trainer: Optional[str] = None, epoch: Optional[int] = None,
                      ctx_init: Optional[str] = None, overwrite: bool = False,
                      allow_globals: Sequence[str] = (), write: bool = True,
                      as_stored: bool = False) -> ImportResult:
    """Convert the upstream checkpoint ``source`` into ``output`` (see the module docstring)."""
    path, folder = find_checkpoint(source, epoch)
    checkpoint = read_checkpoint(path, trust_pickle, allow_globals)
    state_dict = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state_dict, dict):
        raise UpstreamImportError(f"{path} is not a Dassl checkpoint (a dict with 'state_dict')")
    state_dict = OrderedDict((k[7:] if k.startswith("module.") else k, v)
                             for k, v in state_dict.items())
    upstream = infer_trainer(folder, state_dict)
    if folder in UPSTREAM_FOLDERS and upstream not in UPSTREAM_FOLDERS[folder]:
        raise UpstreamImportError(f"{path}: the folder {folder}/ is where upstream "
                                  f"{'/'.join(UPSTREAM_FOLDERS[folder])} save, but the parameters "
                                  f"are {upstream}'s")
    chosen = trainer or upstream
    if chosen not in TRAINERS:
        raise UpstreamImportError(f"--trainer {chosen}: one of {', '.join(TRAINERS)}")
    if chosen != upstream and chosen not in COMPATIBLE.get(upstream, ()):
        raise UpstreamImportError(f"{path} holds {upstream} prompts, which {chosen} cannot "
                                  f"evaluate (--trainer {upstream} fits)")
    ours, renamed, dropped, settings, notes = convert_state_dict(chosen, state_dict, ctx_init,
                                                                 as_stored)
    verify_parameters(chosen, ours, settings)
    stored_epoch = checkpoint.get("epoch")
    match = re.search(r"model\.pth\.tar-(\d+)$", path)
    epoch_out = (int(stored_epoch) if isinstance(stored_epoch, int)
                 else int(match.group(1)) if match else 1)
    for part in ("optimizer", "scheduler"):
        if checkpoint.get(part) is not None:
            dropped.setdefault(STATES, []).append(part)
    val = checkpoint.get("val_result", checkpoint.get("result"))
    output = os.path.abspath(os.path.expanduser(output))
    result = ImportResult(path, output, chosen, upstream, epoch_out, ours, renamed, dropped,
                          settings, notes)
    if write:
        target = os.path.join(output, OUR_FOLDER, f"model.pth.tar-{epoch_out}")
        if os.path.exists(target) and not overwrite:
            raise UpstreamImportError(f"{target} exists; choose another output folder or pass "
                                      "--overwrite")
        if os.path.commonpath([output, os.path.dirname(path)]) == os.path.dirname(path):
            raise UpstreamImportError(f"the output folder {output} lies inside the upstream "
                                      "checkpoint's folder; choose another")
        state = {"state_dict": ours, "epoch": epoch_out, "optimizer": None, "scheduler": None,
                 "val_result": float(val) if isinstance(val, (int, float)) else None,
                 "imported_from": {"file": path, "sha256": _sha256(path),
                                   "upstream_trainer": upstream, "trainer": chosen,
                                   "upstream_epoch": stored_epoch if isinstance(stored_epoch, int)
                                   else None,
                                   "injected_prompts": "as stored" if as_stored else
                                   "fp16-rounded where upstream inserts them with .half()"}}
        with contextlib.redirect_stdout(io.StringIO()):
            save_checkpoint(state, os.path.join(output, OUR_FOLDER))
    return result


def format_report(result: ImportResult) -> str:
    """The printed summary: what was kept, renamed and dropped, and how to evaluate it."""
    lines = [f"Read {result.source} (upstream {result.upstream_trainer}, epoch {result.epoch})"]
    width = max(len(a) for a, _ in result.renamed)
    width_new = max(len(b) for _, b in result.renamed)
    lines.append(f"Kept {len(result.renamed)} prompt parameter(s), as {result.trainer}'s "
                 "(upstream name -> ours, shape):")
    for old, new in result.renamed:
        shape = list(result.state_dict[new].shape)
        lines.append(f"  {old:<{width}}  -> {new:<{width_new}}  {shape}")
    entries = {r: k for r, k in result.dropped.items() if r != STATES}
    lines.append(f"Dropped {sum(len(v) for v in entries.values())} state-dict entries:")
    for reason, keys in entries.items():
        shown = ", ".join(keys[:4]) + (f", ... ({len(keys) - 4} more)" if len(keys) > 4 else "")
        lines.append(f"  {reason}: {shown}")
    if STATES in result.dropped:
        lines.append(f"Not carried over: the {' and '.join(result.dropped[STATES])} states "
                     "(needed only to resume the upstream run)")
    lines.append(f"Wrote {os.path.join(result.output, OUR_FOLDER, f'model.pth.tar-{result.epoch}')}"
                 " (tensors only: loads with torch.load(weights_only=True))")
    lines.append("TRAINER settings the checkpoint needs:")
    lines += [f"  {k} {v!r}" for k, v in result.settings.items()]
    for note in result.notes:
        lines.append(f"Note: {note}")
    lines.append("Evaluate it with your usual --root/--dataset-config-file/--config-file/"
                 "--output-dir and the training run's MODEL.BACKBONE.NAME, plus:")
    lines.append(f"  {result.command()}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="See the module docstring for the name mapping.")
    parser.add_argument("source", help="upstream run folder, its prompt_learner/, VLPromptLearner/ "
                                       "or MultiModalPromptLearner/ folder, or a checkpoint file")
    parser.add_argument("output", help="folder to write <output>/prompt_learner/model.pth.tar-<E> into")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="read the file although it holds pickled objects (upstream Dassl "
                             "checkpoints all do); only for files you trust")
    parser.add_argument("--trainer", choices=TRAINERS, help="the method (default: inferred)")
    parser.add_argument("--epoch", type=int, help="the epoch to import (default: the 'checkpoint' "
                                                  "pointer's, else the last)")
    parser.add_argument("--ctx-init", help="the CTX_INIT the upstream run used (checked against "
                                           "the checkpoint and put in the printed command)")
    parser.add_argument("--as-stored", action="store_true",
                        help="keep the stored values of the prompts upstream inserts in fp16 "
                             "(default: their fp16 rounding, what upstream computes with)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")
    parser.add_argument("--allow-global", action="append", default=[], metavar="MODULE.NAME",
                        help="with --trust-pickle: also unpickle this Python object")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = import_checkpoint(args.source, args.output, args.trust_pickle, args.trainer,
                                   args.epoch, args.ctx_init, args.overwrite, args.allow_global,
                                   as_stored=args.as_stored)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
