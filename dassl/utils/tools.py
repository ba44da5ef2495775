"""Small file-system and JSON helpers with Dassl's names and behaviour."""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import warnings
from typing import Any, Callable

from .errors import UserError


def mkdir_if_missing(dirname: str) -> None:
    """Create ``dirname`` and its parents unless it already exists."""
    if not dirname:
        return
    try:
        os.makedirs(dirname, exist_ok=True)
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            raise


# Fault injection for the tests (tests/test_fault_injection.py): with MMLOP_FAULT_AT=N the process
# kills itself (SIGKILL) at the N-th write or rename point of atomic_write; MMLOP_FAULT_LOG=<file>
# gets one line per point ("<n> write|rename <path>"), so a test can list a run's points.
FAULT_AT_ENV = "MMLOP_FAULT_AT"
FAULT_LOG_ENV = "MMLOP_FAULT_LOG"
_fault_points = 0


def _fault_point(what: str, fpath: str) -> None:
    global _fault_points
    target, log = os.environ.get(FAULT_AT_ENV), os.environ.get(FAULT_LOG_ENV)
    if not target and not log:
        return
    _fault_points += 1
    if log:
        with open(log, "a") as f:
            f.write(f"{_fault_points} {what} {fpath}\n")
    if target and int(target) == _fault_points:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def atomic_write(fpath: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a hidden temporary file beside ``fpath``
    (``.<name>.XXXX.tmp``), then rename it to ``fpath``, so that an interrupted write never leaves
    a truncated ``fpath`` behind (the folder must exist)."""
    dirname = os.path.dirname(os.path.abspath(fpath))
    fd, tmp_path = tempfile.mkstemp(prefix=f".{os.path.basename(fpath)}.", suffix=".tmp", dir=dirname)
    os.close(fd)
    try:
        # mkstemp creates the file private (0600); give it the permissions open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        write(tmp_path)
        _fault_point("write", fpath)
        os.replace(tmp_path, fpath)
        _fault_point("rename", fpath)
    except BaseException as exc:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        if _disk_full(exc, dirname):
            free = shutil.disk_usage(dirname).free / 2**20
            raise DiskFullError(f"No space left to write {fpath} ({free:.0f} MB free on its file system): "
                                "free some space and rerun the same command (what was saved before is "
                                "intact; the run resumes from it)") from None
        raise


class DiskFullError(UserError, OSError):
    """A write failed because the file system is full; the message names the file."""


def _disk_full(exc: BaseException, dirname: str) -> bool:
    """``ENOSPC``/``EDQUOT``, or torch.save's ``unexpected pos`` / ``file write failed`` on a file
    system with (almost) no free space left."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, RuntimeError) and ("unexpected pos" in str(exc) or "file write failed" in str(exc)):
        return shutil.disk_usage(dirname).free < 64 * 2**20
    return False


CACHE_DIR_ENV = "MMLOP_CACHE_DIR"


def mmlop_cache_dir() -> str:
    """The project's cache folder: ``$MMLOP_CACHE_DIR``, else ``~/.cache/mmlop`` (the proxy's tiny
    CLIP and the decoded-image caches live below it)."""
    return os.path.expanduser(os.environ.get(CACHE_DIR_ENV) or os.path.join("~", ".cache", "mmlop"))


def dump_json(obj: Any, fpath: str, **kwargs) -> None:
    """``json.dump(obj, f, **kwargs)`` into the file ``fpath`` (not atomic; see ``atomic_write``)."""
    with open(fpath, "w") as f:
        json.dump(obj, f, **kwargs)


def check_isfile(fpath: str) -> bool:
    """Return whether ``fpath`` is a file; warn (like Dassl) when it is not."""
    isfile = os.path.isfile(fpath)
    if not isfile:
        warnings.warn(f'No file found at "{fpath}"', stacklevel=2)
    return isfile


def read_json(fpath: str) -> Any:
    """Read a JSON file."""
    with open(fpath) as f:
        return json.load(f)


def write_json(obj: Any, fpath: str) -> None:
    """Write ``obj`` as indented JSON, atomically (temporary file in the same folder, then rename)."""
    mkdir_if_missing(os.path.dirname(os.path.abspath(fpath)))
    atomic_write(fpath, lambda tmp: dump_json(obj, tmp, indent=4, separators=(",", ": ")))


def listdir_nohidden(path: str, sort: bool = False) -> list[str]:
    """List the entries of ``path`` that do not start with a dot (sorted if ``sort``)."""
    items = [name for name in os.listdir(path) if not name.startswith(".")]
    if sort:
        items.sort()
    return items


def tolist_if_not(x: Any) -> list:
    """Wrap ``x`` in a list unless it already is one."""
    return x if isinstance(x, list) else [x]


def set_random_seed(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (CPU and every CUDA device) with ``seed``."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


class ImageReadError(UserError, OSError):
    """An image file is missing or cannot be decoded; the message names the file."""


def _rescale_to_uint8(values, lo: float, hi: float):
    """Map ``lo..hi`` linearly onto ``0..255`` (rounded, clipped); a constant image maps to 0."""
    import numpy as np

    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values.astype(np.float64) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def high_depth_to_l(img):
    """An 8-bit ``L`` image from a 16-bit, 32-bit integer or float grey image (other modes: ``None``).

    PIL's own ``convert`` clips these values at 255 (16-bit photos turn all white) or truncates
    floats in 0..1 to 0 (all black), so the value range is rescaled instead:

    * ``I;16`` / ``I;16B`` / ``I;16L`` / ``I;16N``: the type's range, 0..65535 -> 0..255.
    * ``I`` (32-bit, e.g. TIFF or old Pillow's 16-bit PNG): values within 0..65535 are taken as
      16-bit data (0..65535 -> 0..255); otherwise the image's own min..max -> 0..255.
    * ``F``: values within 0..1 -> 0..255; else within 0..255 kept as they are; else the image's
      own min..max -> 0..255. NaN and infinities become 0.
    """
    import numpy as np
    from PIL import Image

    mode = img.mode
    if not (mode == "I" or mode == "F" or mode.startswith("I;16")):
        return None
    values = np.asarray(img)
    if mode.startswith("I;16") and values.dtype.kind == "u":
        out = _rescale_to_uint8(values, 0, 65535)
    elif values.dtype.kind in "iu":
        lo, hi = int(values.min()), int(values.max())
        out = _rescale_to_uint8(values, 0, 65535) if lo >= 0 and hi <= 65535 else _rescale_to_uint8(values, lo, hi)
    else:
        finite = np.isfinite(values)
        vals = values[finite]
        lo, hi = (float(vals.min()), float(vals.max())) if vals.size else (0.0, 0.0)
        if lo >= 0 and hi <= 1:
            lo, hi = 0.0, 1.0
        elif lo >= 0 and hi <= 255:
            lo, hi = 0.0, 255.0
        out = _rescale_to_uint8(np.where(finite, values, lo), lo, hi)
    return Image.fromarray(np.ascontiguousarray(out), mode="L")


def to_rgb(img):
    """``img`` as an RGB ``PIL.Image``: high-depth grey images rescaled (``high_depth_to_l``), other
    modes (``P``, ``LA``, ``RGBA``, ``CMYK``, ``L``, ``1``...) through PIL's ``convert("RGB")``."""
    grey = high_depth_to_l(img)
    return (grey if grey is not None else img).convert("RGB")


def read_image(path: str):
    """Open ``path`` as an RGB ``PIL.Image`` (``to_rgb``); raise :class:`ImageReadError` naming the file otherwise."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise ImageReadError(f'Image file not found: "{path}" (check DATASET.ROOT and the dataset layout)')
    try:
        with Image.open(path) as img:
            return to_rgb(img)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageReadError(f'Cannot decode image "{path}": {exc}') from exc
