"""Decoded-image caches: the images a loader reads, decoded once into one memory-mapped file.

Evaluation decodes every test image again for every seed, method and protocol, with the same
resize + center crop each time; few-shot training decodes the same few images every epoch. A
cache holds, for one list of image files, the images after the *deterministic leading steps* of
the loader's transform (the ``stage``), as uint8 RGB arrays:

* evaluation (``DATALOADER.CACHE_TEST``): resize + center crop, i.e. ``INPUT.SIZE`` images;
* training (``DATALOADER.CACHE_TRAIN``): the decoded image at its own size, or after the leading
  ``Resize`` when the pipeline starts with one (no random crop).

The rest of the transform (random crops, flips, ``ToTensor``, ``Normalize``...) runs on the cached
image, unchanged. The cached pixels are those ``read_image`` + the stage give, and the random steps
see the same image (same size, same pixels) and draw the same random numbers, so a cached loader
returns the same tensors as an uncached one, bit for bit, for the same RNG state
(``tests/test_decoded_images.py`` checks every training transform).

A cache file is keyed by the stage (the ``repr`` of its steps: sizes, interpolation, antialias),
the image list in order with each file's size, modification and status-change times (``ctime``
cannot be set back by ``touch``), and the versions of Pillow, its JPEG library, torchvision and
of the decoding code; a change to any of them is another file. A file is written under a
temporary name and renamed into place once complete (``atomic_write``), so a killed build never
leaves a file that could be read; builders of the same file wait for each other (``flock``) and
the next one removes what a killed one left. Files live under ``DATALOADER.CACHE_DIR`` (default
``$MMLOP_CACHE_DIR/decoded_images``, i.e. ``~/.cache/mmlop/decoded_images``) as
``<dataset>/<split>-<stage>-<key>.dimg``; deleting them is always safe.

A cache that cannot be written (no space: it keeps ``RESERVE_BYTES`` free; a read-only folder;
a quota) is skipped with one log line: the images are then decoded as usual.

File layout: the images' bytes one after the other, an index (JSON: format, key, shapes), then a
footer ``MAGIC, index offset, index length`` (little-endian uint64).
"""
from __future__ import annotations

import fcntl
import glob
import hashlib
import inspect
import json
import os
import shutil
import struct
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, Sequence

import numpy as np
from torchvision.transforms import CenterCrop, Compose, Resize

from dassl.threads import usable_cores
from dassl.utils import tools
from dassl.utils.errors import UserError
from dassl.utils.tools import ImageReadError, atomic_write, mmlop_cache_dir, read_image

FORMAT_VERSION = 1
MAGIC = b"MMLOPDIC"
FOOTER = struct.Struct("<8sQQ")
SUFFIX = ".dimg"
DIR_KEY = "DATALOADER.CACHE_DIR"
RESERVE_BYTES = 2 << 30  # a build stops rather than leave less than this free on the disk
DOC = "docs/DATA_PIPELINE.md"
_DETERMINISTIC_STEPS = (Resize, CenterCrop)


class CacheNotWritten(OSError):
    """A cache could not be written (space, permissions); the loader decodes as usual."""


def default_cache_dir() -> str:
    """``$MMLOP_CACHE_DIR/decoded_images`` (default ``~/.cache/mmlop/decoded_images``)."""
    return os.path.join(mmlop_cache_dir(), "decoded_images")


def leading_deterministic_steps(transform) -> list:
    """The steps at the start of a ``Compose`` that involve no randomness (``Resize``,
    ``CenterCrop``; exact types, a subclass may do anything); ``[]`` for anything else."""
    if not isinstance(transform, Compose):
        return []
    steps = []
    for step in transform.transforms:
        if type(step) not in _DETERMINISTIC_STEPS:
            break
        steps.append(step)
    return steps


def _step_words(steps: Sequence) -> list[tuple[str, str, str]]:
    """``(kind, size, interpolation)`` per step: ``("resize", "224", "bicubic")``, ``("crop", "224x224", "")``."""
    words = []
    for step in steps:
        size = step.size if isinstance(step.size, int) else "x".join(map(str, step.size))
        resize = isinstance(step, Resize)
        words.append(("resize" if resize else "crop", str(size), step.interpolation.value if resize else ""))
    return words


def describe_stage(steps: Sequence) -> str:
    """``"resize 224 (bicubic) + center crop 224x224"``; ``"decoded, full size"`` for no step."""
    return " + ".join(f"resize {size} ({interp})" if kind == "resize" else f"center crop {size}"
                      for kind, size, interp in _step_words(steps)) or "decoded, full size"


def _stage_label(steps: Sequence) -> str:
    """The stage in a file name: ``r224bicubic-c224x224``, ``full`` without steps."""
    return "-".join(f"{kind[0]}{size}{interp}" for kind, size, interp in _step_words(steps)) or "full"


def _fixed_size(steps: Sequence) -> Optional[tuple[int, int]]:
    """(height, width) of every cached image when the stage's last step fixes it, else None."""
    if not steps:
        return None
    size = steps[-1].size
    if isinstance(steps[-1], CenterCrop) or (isinstance(size, (list, tuple)) and len(size) == 2):
        return (int(size[0]), int(size[-1]))
    return None


def _decoder_digest() -> str:
    """Digest of the decoding code (``dassl.utils.tools``: ``read_image`` and its conversions)."""
    return hashlib.sha256(inspect.getsource(tools).encode()).hexdigest()[:16]


def _file_state(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}\tmissing\n"
    return f"{path}\t{st.st_size}\t{st.st_mtime_ns}\t{st.st_ctime_ns}\t{st.st_ino}\n"


def cache_key(paths: Sequence[str], steps: Sequence) -> dict:
    """Everything the cached pixels depend on (see the module docstring)."""
    import PIL
    import torchvision
    from PIL import features

    images = hashlib.sha256()
    for path in paths:
        images.update(_file_state(path).encode())
    return {
        "format": FORMAT_VERSION,
        "stage": [repr(step) for step in steps],
        "images": len(paths),
        "images_sha256": images.hexdigest(),
        "pillow": PIL.__version__,
        "libjpeg": str(features.version("jpg")),
        "torchvision": torchvision.__version__,
        "decoder": _decoder_digest(),
    }


def _key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def format_bytes(n: int) -> str:
    """``1.2 GB``, ``254.4 MB``, ``12.0 kB`` (decimal units)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def folder_bytes(root: str) -> int:
    """Bytes of the cache files (``*.dimg``) below ``root``."""
    total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            if name.endswith(SUFFIX):
                try:
                    total += os.path.getsize(os.path.join(folder, name))
                except OSError:
                    pass
    return total


class DecodedImages:
    """Read side of one cache file: ``array(i)`` (uint8 [H, W, 3], a read-only view of the
    memory map) and ``image(i)`` (a PIL RGB image). The map is opened lazily in each process and
    not pickled, so data-loader workers (fork or spawn) each map the file themselves."""

    def __init__(self, path: str, shapes: np.ndarray) -> None:
        self.path = path
        self.shapes = shapes
        sizes = shapes[:, 0].astype(np.int64) * shapes[:, 1] * 3
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        self._data: Optional[np.memmap] = None

    @classmethod
    def open(cls, path: str, key: dict) -> Optional[DecodedImages]:
        """The cache at ``path`` if it is complete and was built for ``key``, else None."""
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                end = f.tell()
                if end < FOOTER.size:
                    return None
                f.seek(end - FOOTER.size)
                magic, index_offset, index_length = FOOTER.unpack(f.read(FOOTER.size))
                if magic != MAGIC or index_offset + index_length + FOOTER.size != end:
                    return None
                f.seek(index_offset)
                index = json.loads(f.read(index_length))
        except (OSError, ValueError, struct.error):
            return None
        if not isinstance(index, dict) or index.get("format") != FORMAT_VERSION or index.get("key") != key:
            return None
        shapes = np.asarray(index.get("shapes", []), dtype=np.int64).reshape(-1, 2)
        images = cls(path, shapes)
        if len(shapes) != key["images"] or images.offsets[-1] != index_offset:
            return None
        return images

    def __len__(self) -> int:
        return len(self.shapes)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_data"] = None
        return state

    @property
    def nbytes(self) -> int:
        return os.path.getsize(self.path)

    def array(self, i: int) -> np.ndarray:
        if self._data is None:
            self._data = np.memmap(self.path, dtype=np.uint8, mode="r", shape=(int(self.offsets[-1]),))
        h, w = self.shapes[i]
        return self._data[self.offsets[i]:self.offsets[i + 1]].reshape(h, w, 3)

    def image(self, i: int):
        from PIL import Image

        return Image.fromarray(self.array(i))


def _load(path: str, steps: Sequence) -> np.ndarray:
    img = read_image(path)
    for step in steps:
        img = step(img)
    array = np.asarray(img, dtype=np.uint8)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"{path}: the cache stage returned an array of shape {array.shape}, not [H, W, 3]")
    return array


def _check_space(folder: str, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free - needed < RESERVE_BYTES:
        raise CacheNotWritten(
            f"{format_bytes(needed)} more would leave {format_bytes(max(0, free - needed))} free on the disk of "
            f"{folder} (the cache keeps {format_bytes(RESERVE_BYTES)} free)")


def write_cache(path: str, key: dict, paths: Sequence[str], steps: Sequence, threads: int = 1) -> DecodedImages:
    """Decode ``paths`` through ``steps`` with ``threads`` threads (PIL releases the GIL while it
    decodes and resizes) and write the cache file ``path`` atomically."""
    folder = os.path.dirname(os.path.abspath(path))
    fixed = _fixed_size(steps)
    if fixed is not None:
        _check_space(folder, fixed[0] * fixed[1] * 3 * len(paths))
    chunk = max(16, 8 * threads)
    shapes: list[tuple[int, int]] = []

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f, ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for start in range(0, len(paths), chunk):
                arrays = list(pool.map(lambda p: _load(p, steps), paths[start:start + chunk]))
                _check_space(folder, sum(a.nbytes for a in arrays))
                for array in arrays:
                    f.write(np.ascontiguousarray(array).tobytes())
                    shapes.append(array.shape[:2])
            index_offset = f.tell()
            index = json.dumps({"format": FORMAT_VERSION, "key": key, "shapes": [list(s) for s in shapes]}).encode()
            f.write(index)
            f.write(FOOTER.pack(MAGIC, index_offset, len(index)))
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)
    images = DecodedImages.open(path, key)
    if images is None:  # the file just written must read back; anything else is a bug
        raise RuntimeError(f"the decoded-image cache {path} does not read back after writing")
    return images


def remove_stale_temp_files(path: str) -> list[str]:
    """Remove the temporary files that killed builds of ``path`` left (call with its lock held)."""
    pattern = os.path.join(os.path.dirname(path), f".{glob.escape(os.path.basename(path))}.*.tmp")
    removed = []
    for tmp in glob.glob(pattern):
        try:
            os.remove(tmp)
            removed.append(tmp)
        except FileNotFoundError:
            pass
    return removed


class _BuildLock:
    """``flock`` on ``.<name>.lock`` beside the cache file: one builder at a time; the kernel
    drops it when its holder dies."""

    def __init__(self, path: str, log: Callable[[str], None]) -> None:
        self.lock_path = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.lock")
        self.log = log
        self.fd: Optional[int] = None

    def __enter__(self) -> _BuildLock:
        self.fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.log(f"Waiting for another process that builds the same cache ({self.lock_path})")
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class DecodedImageCache:
    """The cache one loader would use: ``prepare()`` opens it, or builds it first.

    ``root``: the cache folder; ``dataset`` and ``split`` name the file (``<root>/<dataset>/
    <split>-<stage>-<key>.dimg``); ``paths`` the images in loader order; ``steps`` the stage.
    """

    def __init__(self, root: str, dataset: str, split: str, paths: Sequence[str], steps: Sequence) -> None:
        self.root = root
        self.dataset = dataset
        self.split = split
        self.paths = list(paths)
        self.steps = list(steps)

    def file_path(self, key: dict) -> str:
        name = f"{self.split}-{_stage_label(self.steps)}-{_key_digest(key)[:16]}{SUFFIX}"
        return os.path.join(self.root, self.dataset.lower() or "dataset", name)

    def prepare(self, log: Callable[[str], None] = print) -> Optional[DecodedImages]:
        """The cached images (reused or built now), or None when the cache cannot be written
        (the reason is logged; the loader then decodes as usual)."""
        what = f"Decoded-image cache ({self.split}, {describe_stage(self.steps)})"
        key = cache_key(self.paths, self.steps)
        path = self.file_path(key)
        images = DecodedImages.open(path, key)
        if images is not None:
            log(f"{what}: {len(images):,} images read from {path} ({self._sizes(images)})")
            return images
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with _BuildLock(path, log):
                images = DecodedImages.open(path, key)  # built by the process we waited for
                if images is None:
                    for tmp in remove_stale_temp_files(path):
                        log(f"Removed a temporary file left by an interrupted cache build: {tmp}")
                    log(f"{what}: building {path} from {len(self.paths):,} images ...")
                    start = time.perf_counter()
                    images = write_cache(path, key, self.paths, self.steps, threads=usable_cores().cores)
                    log(f"{what}: built in {time.perf_counter() - start:.1f}s ({self._sizes(images)})")
                    return images
        except ImageReadError:
            raise
        except OSError as exc:
            log(f"{what} not used: {exc.strerror or exc}{'' if exc.strerror is None else f' ({exc.filename})'}; "
                f"the images are decoded as usual. Set {DIR_KEY} to a folder with space (see {DOC}), "
                "or turn the cache off (DATALOADER.CACHE_TEST / DATALOADER.CACHE_TRAIN False)")
            return None
        log(f"{what}: {len(images):,} images read from {path} ({self._sizes(images)})")
        return images

    def _sizes(self, images: DecodedImages) -> str:
        return f"{format_bytes(images.nbytes)} on disk; the cache folder {self.root} holds " \
               f"{format_bytes(folder_bytes(self.root))}"


def cache_root(cfg) -> str:
    """``DATALOADER.CACHE_DIR`` (expanded), else ``default_cache_dir()``. An explicit folder that
    cannot be created or written is a ``UserError`` naming the key (before any work is spent)."""
    explicit = getattr(cfg.DATALOADER, "CACHE_DIR", "")
    if not explicit:
        return default_cache_dir()
    root = os.path.abspath(os.path.expanduser(explicit))
    try:
        os.makedirs(root, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as exc:
        raise UserError(f"{DIR_KEY} = {explicit!r} cannot be used: {exc.strerror or exc}. Set it to a writable "
                        f"folder with space for the decoded images (see {DOC}), or to '' for the default "
                        f"{default_cache_dir()}") from None
    return root
