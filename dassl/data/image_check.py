"""Pre-flight image check: every image a run will read is checked before the model is built.

A missing or corrupt file otherwise surfaces in the middle of an epoch (or of the final test),
after the time spent on training. ``DataManager`` calls ``check_dataset_images(cfg, dataset)``
right after building the dataset, i.e. on the lists the run really reads: the few-shot train and
val subsets and the test set, after base/new subsampling.

``DATASET.CHECK_IMAGES`` (read with a default, since the key may be absent from a config):

* ``"header"`` (default): the file exists and PIL identifies it from its header (format, size,
  mode; PNG chunks are CRC-checked by ``verify``). A truncated JPEG body is not detected.
* ``"full"``: every image is decoded and converted to RGB, exactly as ``read_image`` does.
* ``"off"``: no check.

Every bad file is listed in one ``ImageCheckError`` with the entries it came from. A passed
check is cached in ``<dataset>/split_fewshot/image_check-<level>-<digest>.json`` keyed by the
level, the checked paths, the split file's bytes and the modification times of the image
folders, so the next run with the same data skips it.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Optional, Sequence

from dassl.threads import usable_cores
from dassl.utils.tools import ImageReadError, read_image, write_json

KEY = "DATASET.CHECK_IMAGES"
LEVELS = ("header", "full", "off")
DEFAULT_LEVEL = "header"
SCHEMA = "mmlop-image-check"
SCHEMA_VERSION = 1
DOC = "DATASETS.md#checks-before-training"
_CHUNK = 256  # paths per thread-pool task


class ImageCheckError(ImageReadError):
    """Images a run would read are missing or cannot be decoded; the message lists every one."""


def check_level(cfg) -> str:
    """``cfg.DATASET.CHECK_IMAGES`` (default ``"header"``); another value is a ``ValueError``."""
    level = getattr(cfg.DATASET, "CHECK_IMAGES", DEFAULT_LEVEL)
    if level not in LEVELS:
        raise ValueError(f"{KEY} must be one of {', '.join(map(repr, LEVELS))}, got {level!r}")
    return level


def check_header(path: str) -> Optional[str]:
    """``None`` if ``path`` exists and PIL identifies it without decoding pixels, else the problem."""
    from PIL import Image

    if not os.path.isfile(path):
        return "missing"
    try:
        with Image.open(path) as img:
            if min(img.size) <= 0:
                return f"cannot decode: empty image size {img.size}"
            img.verify()
    except Exception as exc:  # PIL raises many types (SyntaxError, struct.error...) on bad headers
        return f"cannot decode: {type(exc).__name__}: {exc}"
    return None


def check_full(path: str) -> Optional[str]:
    """``None`` if ``read_image(path)`` succeeds, else the problem."""
    if not os.path.isfile(path):
        return "missing"
    try:
        read_image(path)
    except ImageReadError as exc:
        return f"cannot decode: {exc.__cause__ or exc}"
    except Exception as exc:  # a decoder bug must not hide behind a vague traceback later
        return f"cannot decode: {type(exc).__name__}: {exc}"
    return None


def check_paths(paths: Sequence[str], level: str, workers: Optional[int] = None) -> dict[str, str]:
    """``{path: problem}`` for the bad ones among ``paths``, checked by a thread pool.

    PIL releases the GIL while reading and decoding, so threads overlap file I/O and, for
    ``"full"``, decoding on several cores: by default twice the usable cores (at most 16) for the
    header check, which mostly waits for the disk, and the usable cores for ``"full"``
    (``dassl.threads.usable_cores``).
    """
    check = check_full if level == "full" else check_header

    def run(chunk: Sequence[str]) -> list[tuple[str, str]]:
        return [(p, problem) for p in chunk if (problem := check(p)) is not None]

    chunks = [paths[i:i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    cores = usable_cores().cores
    workers = workers or (cores if level == "full" else min(16, 2 * cores))
    if workers <= 1 or len(chunks) <= 1:
        results: Iterable = map(run, chunks)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(run, chunks))
    return {p: problem for found in results for p, problem in found}


def planned_images(dataset) -> list[tuple[str, int, str]]:
    """``(split, index, path)`` of every item the run reads: train_x, train_u, val and test."""
    out = []
    for split in ("train_x", "train_u", "val", "test"):
        for i, item in enumerate(getattr(dataset, split, None) or []):
            out.append((split, i, item.impath))
    return out


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_key(level: str, paths: Sequence[str], split_file: Optional[str]) -> dict:
    """What a passed check depends on: level, checked paths, split-file bytes, image-folder mtimes."""
    folders = sorted({os.path.dirname(p) for p in paths})
    h = hashlib.sha256()
    for folder in folders:
        try:
            h.update(f"{folder}\t{os.stat(folder).st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{folder}\tmissing\n".encode())
    listed = hashlib.sha256("".join(p + "\n" for p in paths).encode()).hexdigest()
    has_split = bool(split_file) and os.path.isfile(split_file)
    return {
        "level": level,
        "images": len(paths),
        "images_sha256": listed,
        "split_file": split_file if has_split else None,
        "split_file_sha256": _sha256_file(split_file) if has_split else None,
        "folders_sha256": h.hexdigest(),
    }


def cache_path(cache_dir: str, key: dict) -> str:
    """``<cache_dir>/image_check-<level>-<first 16 hex digits of the checked-paths digest>.json``."""
    return os.path.join(cache_dir, f"image_check-{key['level']}-{key['images_sha256'][:16]}.json")


def _cached(path: str, key: dict) -> bool:
    try:
        with open(path) as f:
            cache = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(cache, dict) and cache.get("schema") == SCHEMA and cache.get("version") == SCHEMA_VERSION \
        and cache.get("key") == key


def _split_file_refs(split_file: Optional[str], image_dir: Optional[str]) -> dict[str, str]:
    """``{image path: "<split file> <key>[<index>]"}`` for the entries of the dataset's split file."""
    if not split_file or not image_dir or not os.path.isfile(split_file):
        return {}
    try:
        with open(split_file) as f:
            split = json.load(f)
        return {
            os.path.join(image_dir, entry[0]): f"{split_file} {key}[{i}]"
            for key in ("train", "val", "test")
            for i, entry in enumerate(split.get(key, []))
        }
    except (OSError, ValueError, TypeError, IndexError, AttributeError):
        return {}


def failure_report(problems: dict[str, str], planned: list[tuple[str, int, str]], level: str,
                   split_file: Optional[str] = None, image_dir: Optional[str] = None) -> str:
    """The error message: a summary, the fix, then every bad file with the entries that list it."""
    refs = _split_file_refs(split_file, image_dir)
    used: dict[str, list[str]] = {}
    for split, i, path in planned:
        if path in problems:
            used.setdefault(path, []).append(f"{split}[{i}]")
    n_missing = sum(1 for p in problems.values() if p == "missing")
    lines = [
        f"{len(problems)} of {len({p for _, _, p in planned})} images this run would read are bad "
        f"({n_missing} missing, {len(problems) - n_missing} cannot be decoded; {KEY}={level!r}); nothing was trained. "
        "Fix: restore the files from the dataset's original archive, check DATASET.ROOT, or use the split file "
        f"that matches your copy of the dataset (see {DOC}). Bad files:"
    ]
    for path, problem in problems.items():
        where = ", ".join(used.get(path, []))
        if path in refs:
            where += f"; {refs[path]}"
        lines.append(f"  {path}: {problem} (run lists: {where})")
    return "\n".join(lines)


def check_dataset_images(cfg, dataset) -> None:
    """Check every image ``dataset`` lists (``DATASET.CHECK_IMAGES``); raise ``ImageCheckError``.

    Uses the dataset's ``split_fewshot_dir`` as the cache folder and ``split_path`` /
    ``image_dir`` (when present) to name the split-file entry of each bad image.
    """
    level = check_level(cfg)
    if level == "off":
        print(f"Image check skipped ({KEY}='off')")
        return
    planned = planned_images(dataset)
    paths = list(dict.fromkeys(p for _, _, p in planned))
    split_file = getattr(dataset, "split_path", None)
    cache_dir = getattr(dataset, "split_fewshot_dir", None)
    key = cache_key(level, paths, split_file)
    path = cache_path(cache_dir, key) if cache_dir else None
    if path and _cached(path, key):
        print(f"Image check ({level}): {len(paths)} images passed before (cached in {path})")
        return
    start = time.perf_counter()
    problems = check_paths(paths, level)
    seconds = time.perf_counter() - start
    if problems:
        ordered = {p: problems[p] for p in paths if p in problems}
        raise ImageCheckError(failure_report(ordered, planned, level, split_file, getattr(dataset, "image_dir", None)))
    print(f"Image check ({level}): {len(paths)} images OK in {seconds:.1f}s")
    if path:
        try:
            write_json({"schema": SCHEMA, "version": SCHEMA_VERSION, "key": key, "seconds": round(seconds, 3)}, path)
        except OSError as exc:
            print(f"Could not write image-check cache {path} ({exc}); the check will run again next time")
