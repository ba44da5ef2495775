"""Checkpoint helpers with Dassl's names and layout, readable with ``torch.load(weights_only=True)``.

Layout written by :func:`save_checkpoint` into ``save_dir`` (one folder per registered model)::

    model.pth.tar-<epoch>   a dict: state_dict, epoch, optimizer, scheduler, val_result, rng_state
    model-best.pth.tar      the same, for the best validation result
    checkpoint              one line: the basename of the latest ``model.pth.tar-<epoch>``

Every value is a tensor or a plain Python value. Files are written to a temporary file in the same
folder and renamed, so an interrupted save never leaves a truncated checkpoint behind.
"""
from __future__ import annotations

import io
import os
import pickle
import pickletools
import random
import shutil
import zipfile
from collections import OrderedDict
from typing import Any, Iterable, Optional

import numpy as np
import torch
import torch.nn as nn

from .errors import CheckpointMismatchError, ModelNotFoundError, UserError
from .tools import atomic_write, mkdir_if_missing

TRUSTED_ENV = "DASSL_TRUSTED_CHECKPOINTS"
POINTER_FILE = "checkpoint"
BEST_NAME = "model-best.pth.tar"


class LegacyCheckpointError(UserError, RuntimeError):
    """A checkpoint holds pickled Python objects and was not declared trusted."""


class CheckpointReadError(UserError, OSError):
    """A checkpoint file is empty, truncated or corrupt: no safety setting would make it readable."""


# Modules and callables that run code or touch the system: never unpickled, whatever the flags
# (``--allow-global`` cannot admit them, and no message ever suggests it). A pickle that names one
# is an attack or not a checkpoint.
FORBIDDEN_MODULES = ("os", "posix", "nt", "subprocess", "sys", "shutil", "socket", "pty", "runpy", "code",
                     "codeop", "importlib", "ctypes", "multiprocessing", "pickle", "marshal", "types",
                     "operator", "functools", "webbrowser", "signal", "tempfile", "pathlib", "io")
FORBIDDEN_BUILTINS = ("eval", "exec", "compile", "__import__", "getattr", "setattr", "delattr", "open",
                      "globals", "locals", "vars", "input", "breakpoint", "memoryview", "type", "object",
                      "super", "classmethod", "staticmethod", "property", "help", "exit", "quit")


def forbidden(qualified: str) -> bool:
    """Whether ``module.Name`` runs code or touches the system (see ``FORBIDDEN_MODULES``)."""
    module, _, name = qualified.rpartition(".")
    if module in ("builtins", "__builtin__"):
        return name in FORBIDDEN_BUILTINS or name.startswith("_")
    return module.split(".")[0] in FORBIDDEN_MODULES


def unwrap_model(model: nn.Module) -> nn.Module:
    """The wrapped module of ``nn.DataParallel``/``DistributedDataParallel``, else ``model``."""
    return model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model


def _strip_module_prefix(state_dict: dict) -> OrderedDict[str, Any]:
    return OrderedDict((k[7:] if k.startswith("module.") else k, v) for k, v in state_dict.items())


def save_checkpoint(
    state: dict,
    save_dir: str,
    is_best: bool = False,
    remove_module_from_keys: bool = True,
    model_name: str = "",
) -> str:
    """Save ``state`` as ``save_dir/<model_name or model.pth.tar-<state['epoch']>>``; return the path.

    Prints ``Checkpoint saved to <path>``. A regular (epoch) checkpoint also rewrites the
    ``checkpoint`` pointer file; ``is_best`` additionally copies it to ``model-best.pth.tar``.
    """
    mkdir_if_missing(save_dir)
    state = dict(state)
    if remove_module_from_keys and "state_dict" in state:
        state["state_dict"] = _strip_module_prefix(state["state_dict"])
    fname = model_name or f"model.pth.tar-{state['epoch']}"
    fpath = os.path.join(save_dir, fname)
    atomic_write(fpath, lambda tmp: torch.save(state, tmp))
    print(f"Checkpoint saved to {fpath}")
    if fname != BEST_NAME:
        atomic_write(os.path.join(save_dir, POINTER_FILE), lambda tmp: _write_text(tmp, fname + "\n"))
    if is_best and fname != BEST_NAME:
        best_path = os.path.join(save_dir, BEST_NAME)
        atomic_write(best_path, lambda tmp: shutil.copyfile(fpath, tmp))
        print(f'Best checkpoint saved to "{best_path}"')
    return fpath


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def load_checkpoint(fpath: str, trusted: Optional[bool] = None) -> dict:
    """Load a checkpoint on the CPU with ``weights_only=True``.

    Checkpoints written by upstream Dassl pickle the scheduler object and cannot be read that way;
    they raise :class:`LegacyCheckpointError` unless ``trusted=True`` (or the environment variable
    ``DASSL_TRUSTED_CHECKPOINTS=1``), which unpickles them with ``weights_only=False`` — only do that
    for files from a source you trust, since unpickling can run arbitrary code. A file that is
    empty, truncated or not a checkpoint at all raises :class:`CheckpointReadError` naming it and
    the cause, never advice to lower the safety: no setting would make it readable.
    """
    if fpath is None:
        raise ValueError("File path is None")
    if not os.path.exists(fpath):
        raise FileNotFoundError(f'File is not found at "{fpath}"')
    if trusted is None:
        trusted = os.environ.get(TRUSTED_ENV, "") not in ("", "0")
    problem = unreadable_reason(fpath)
    if problem is not None:
        raise CheckpointReadError(f'Checkpoint "{fpath}" cannot be read: {problem}')
    try:
        return torch.load(fpath, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        names = pickled_globals(fpath)
        if names is None:
            raise CheckpointReadError(f'Checkpoint "{fpath}" cannot be read: it is corrupt (not a '
                                      "checkpoint written by torch.save)") from None
        dangerous = sorted({name for name in names if forbidden(name)})
        if dangerous:
            raise LegacyCheckpointError(
                f'Checkpoint "{fpath}" names {", ".join(dangerous)}, which runs code or touches the system: '
                "it is not a checkpoint of Dassl or of this project and was not read. Never load it "
                f"with {TRUSTED_ENV}=1 or trusted=True") from None
        if not trusted:
            raise LegacyCheckpointError(
                f'Checkpoint "{fpath}" contains pickled Python objects (for example an LR scheduler saved '
                "by upstream Dassl), so it cannot be loaded safely with weights_only=True. If you trust "
                f"this file, load it with load_checkpoint(path, trusted=True) or set {TRUSTED_ENV}=1. "
                f"Original error: {str(exc).splitlines()[0]}"
            ) from exc
    except Exception as exc:  # noqa: BLE001 (any other failure of the reader: the bytes are damaged)
        detail = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        cause = ("it is corrupt (not a checkpoint written by torch.save)" if pickled_globals(fpath) is None
                 else f"it is truncated or corrupt ({detail})")
        raise CheckpointReadError(f'Checkpoint "{fpath}" cannot be read: {cause}') from None
    print(f'Loading trusted legacy checkpoint "{fpath}" with weights_only=False')
    return torch.load(fpath, map_location="cpu", weights_only=False)


def unreadable_reason(fpath: str) -> Optional[str]:
    """Why ``fpath`` cannot be a checkpoint, judged from its bytes alone (None: it may be one).

    A zero-byte file and a zip archive (``torch.save``'s format) without its central directory are
    what an interrupted copy or a full disk leave behind; they are told apart from a corrupt file
    so that the message says what happened."""
    size = os.path.getsize(fpath)
    if size == 0:
        return "it is empty (0 bytes; the save or a copy of it was interrupted)"
    with open(fpath, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04" and not zipfile.is_zipfile(fpath):
        return f"it is truncated ({size} bytes, the end of the archive is missing)"
    return None


def pickled_globals(fpath: str) -> Optional[list[str]]:
    """The Python names (``module.name``) that the checkpoint's pickle would import, or None when
    the file holds no well-formed pickle at all (random bytes, a damaged archive).

    Read with ``pickletools`` (nothing is executed), so a file can be diagnosed as *holding pickled
    objects* (needs trust) rather than *corrupt* (needs a good copy)."""
    try:
        if zipfile.is_zipfile(fpath):
            with zipfile.ZipFile(fpath) as archive:
                inner = [n for n in archive.namelist() if n.endswith("data.pkl")]
                if not inner:
                    return None
                stream = io.BytesIO(archive.read(inner[0]))
        else:
            with open(fpath, "rb") as f:
                stream = io.BytesIO(f.read())
    except (OSError, zipfile.BadZipFile):
        return None
    found: list[str] = []
    strings: list[str] = []
    parsed = 0
    # torch's legacy format is several pickles in a row followed by raw storage bytes: read the
    # pickles until the first one that does not parse.
    while stream.tell() < len(stream.getbuffer()):
        try:
            for opcode, arg, _pos in pickletools.genops(stream):
                if opcode.name == "GLOBAL":
                    found.append(str(arg).replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
        except Exception:  # noqa: BLE001 (any parse failure means: not a pickle from here on)
            break
        parsed += 1
    return found if parsed else None


def capture_rng_state() -> dict:
    """The Python, NumPy and torch RNG states as tensors and plain values (weights_only-safe)."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    state = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss),
                  float(np_cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_cached = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def epoch_files(fdir: str) -> dict[int, list[str]]:
    """``{epoch: [paths]}`` of the files ``*.pth.tar-<epoch>`` in ``fdir`` (checkpoints and what
    trainers keep beside them, e.g. GPA state)."""
    found: dict[int, list[str]] = {}
    if os.path.isdir(fdir):
        for name in os.listdir(fdir):
            stem, sep, epoch = name.rpartition(".pth.tar-")
            if sep and stem and epoch.isdigit():
                found.setdefault(int(epoch), []).append(os.path.join(fdir, name))
    return found


def find_model_file(directory: str, name: str, model_file: str) -> str:
    """``directory/name/model_file``; ``ModelNotFoundError`` saying what exists there otherwise."""
    path = os.path.join(directory, name, model_file)
    if os.path.isfile(path):
        return path
    if not os.path.isdir(directory):
        raise ModelNotFoundError(f'Model not found at "{path}": the model directory {directory} does not exist '
                                 "(--model-dir must be the output folder of the training run)")
    epochs = sorted(e for e, files in epoch_files(os.path.join(directory, name)).items()
                    if any(os.path.basename(f).startswith("model.pth.tar-") for f in files))
    have = (f"it holds the epochs {', '.join(map(str, epochs))}: pass --load-epoch {epochs[-1]}" if epochs
            else f"it holds no checkpoint of '{name}' (was the training run finished?)")
    raise ModelNotFoundError(f'Model not found at "{path}"; {have}')


def checkpoint_in_use(fdir: str) -> Optional[str]:
    """Path of the checkpoint named by ``fdir/checkpoint`` (None when there is no pointer)."""
    pointer = os.path.join(fdir, POINTER_FILE)
    if not os.path.isfile(pointer):
        return None
    with open(pointer) as f:
        return os.path.join(fdir, f.readline().strip("\n"))


def resume_from_checkpoint(fdir: str, model: nn.Module, optimizer=None, scheduler=None) -> int:
    """Resume ``model`` (and optimizer, scheduler, RNG state) from the file named in ``fdir/checkpoint``.

    Returns the number of completed epochs stored in the checkpoint.
    """
    fpath = checkpoint_in_use(fdir)
    print(f'Loading checkpoint from "{fpath}"')
    return restore_checkpoint(load_checkpoint(fpath), fpath, model, optimizer, scheduler)


def restore_checkpoint(checkpoint: dict, fpath: str, model: nn.Module, optimizer=None, scheduler=None) -> int:
    """Copy a loaded checkpoint (read from ``fpath``) into ``model``, ``optimizer``, ``scheduler``
    and the RNGs; return its epoch. Weights of other shapes raise ``CheckpointMismatchError``
    naming the file and the first differing entries (before anything is changed)."""
    mismatched = shape_differences(unwrap_model(model).state_dict(), checkpoint["state_dict"])
    if mismatched:
        raise CheckpointMismatchError(
            f'Checkpoint "{fpath}" holds weights of other shapes than this model ({"; ".join(mismatched[:3])}): '
            "it was written by a run with another model. Use another --output-dir for this run")
    unwrap_model(model).load_state_dict(checkpoint["state_dict"])
    print("Loaded model weights")
    if optimizer is not None and checkpoint.get("optimizer") is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        print("Loaded optimizer")
    if scheduler is not None and checkpoint.get("scheduler") is not None:
        scheduler.load_state_dict(checkpoint["scheduler"])
        print("Loaded scheduler")
    if checkpoint.get("rng_state") is not None:
        restore_rng_state(checkpoint["rng_state"])
    start_epoch = int(checkpoint["epoch"])
    print(f"Previous epoch: {start_epoch}")
    return start_epoch


def shape_differences(expected: dict, stored: dict) -> list[str]:
    """``"name: [stored shape] in the file, [expected shape] here"`` for the tensors whose shapes differ."""
    stored = _strip_module_prefix(stored)
    return [f"{k}: {list(stored[k].shape)} in the file, {list(v.shape)} here" for k, v in expected.items()
            if k in stored and hasattr(stored[k], "shape") and tuple(stored[k].shape) != tuple(v.shape)]


def load_pretrained_weights(model: nn.Module, weight_path: str) -> None:
    """Copy the entries of a checkpoint whose names and shapes match ``model``'s; report the rest."""
    checkpoint = load_checkpoint(weight_path)
    state_dict = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    model_dict = model.state_dict()
    matched, discarded = OrderedDict(), []
    for key, value in _strip_module_prefix(state_dict).items():
        if key in model_dict and model_dict[key].size() == value.size():
            matched[key] = value
        else:
            discarded.append(key)
    model_dict.update(matched)
    model.load_state_dict(model_dict)
    if not matched:
        import warnings

        warnings.warn(f"Cannot load {weight_path} (check the key names manually)", stacklevel=2)
        return
    print(f"Successfully loaded pretrained weights from {weight_path}")
    if discarded:
        print(f"Layers discarded due to unmatched keys or size: {discarded}")


def count_num_param(model: Optional[nn.Module] = None, params: Optional[Iterable[torch.Tensor]] = None) -> int:
    """Total number of elements of ``model``'s parameters (trainable or not) or of ``params``."""
    if model is not None:
        return sum(p.numel() for p in model.parameters())
    if params is not None:
        return sum(p.numel() for p in params)
    raise ValueError("model and params must not both be None")
