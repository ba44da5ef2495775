"""The CoOp data protocol shared by every dataset loader.

Stable public names (other loaders, the synthetic dataset and users' dataset files import them):

* ``DatasetNotFoundError`` -- raised for a missing dataset folder, split file, image or class list.
* ``SplitFileError`` -- a ``ValueError`` for a malformed or inconsistent split file (``split_checks``).
* ``read_split(filepath, path_prefix, canonical=None)`` / ``save_split(train, val, test, filepath, path_prefix)``
  -- CoOp's ``split_zhou_*.json`` format: ``{"train"|"val"|"test": [[relpath, label, classname]]}``;
  reading checks labels and names (``datasets.split_checks``, ``SplitFileError``).
* ``check_num_shots(value)`` -- the allowed ``DATASET.NUM_SHOTS`` values.
* ``split_trainval(trainval, p_val=0.2)`` and
  ``read_and_split_data(image_dir, p_trn=0.5, p_val=0.2, ignored=[], new_cnames=None)`` -- split
  generation (used only by the explicit ``tools/make_split.py`` command, never by a loader).
* ``subsample_classes(*datasets, subsample="all")`` -- the base/new rule.
* ``generate_fewshot_cached(...)`` -- K-shot train / min(K, 4)-shot val, cached as JSON.
* ``finalize_splits(cfg, dataset_dir, image_dir, train, val, test, anchor=...)`` -- what every
  loader calls after reading its lists: few-shot (+ cache), image spot-check, base/new.

Few-shot randomness: the draw uses a generator local to the draw, ``random.Random(cfg.SEED)``;
train is drawn first, then val, from the same generator. This is the same stream as upstream's
``random.seed(SEED)`` followed by the draw, so with the same split file and seed the subsets equal
CoOp's, and no other consumer of Python's global ``random`` can change them.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
from collections import defaultdict
from typing import Iterable, Optional, Sequence

from dassl.data.datasets.base_dataset import Datum
from dassl.utils.errors import UserError
from dassl.utils.tools import atomic_write, dump_json, listdir_nohidden, write_json

from .split_checks import CanonicalNames, SplitFileError, check_split

DATASETS_DOC = "DATASETS.md"
FEWSHOT_SCHEMA = "mmlop-fewshot-cache"
FEWSHOT_SCHEMA_VERSION = 1
SAMPLER_VERSION = "python-random.Random(seed).sample/label-first-appearance/v1"
SUBSAMPLE_CHOICES = ("all", "base", "new")


class DatasetNotFoundError(UserError, FileNotFoundError):
    """A dataset folder, split file, class list or listed image is missing (message says how to fix)."""


def doc_ref(anchor: str) -> str:
    """``"see DATASETS.md#<anchor>"``."""
    return f"see {DATASETS_DOC}#{anchor}"


def require_dir(path: str, anchor: str, what: str = "dataset folder") -> str:
    """Return ``path`` if it is a directory, else raise ``DatasetNotFoundError`` naming it."""
    if not os.path.isdir(path):
        raise DatasetNotFoundError(f"Missing {what}: {path} ({doc_ref(anchor)})")
    return path


def require_file(path: str, anchor: str, what: str = "file") -> str:
    """Return ``path`` if it is a file, else raise ``DatasetNotFoundError`` naming it."""
    if not os.path.isfile(path):
        raise DatasetNotFoundError(f"Missing {what}: {path} ({doc_ref(anchor)})")
    return path


def dataset_root(cfg) -> str:
    """``abspath(expanduser(cfg.DATASET.ROOT))``."""
    return os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))


def locate_dataset(dataset, cfg, image_subdir: str, anchor: str) -> str:
    """Set a loader's upstream path attributes and return the data root (``dataset_root``).

    ``dataset.dataset_dir`` (the folder name, a class attribute) becomes ``<root>/<dataset_dir>``,
    ``image_dir`` is ``<dataset_dir>/<image_subdir>`` ("" = the dataset folder itself),
    ``split_fewshot_dir`` is ``<dataset_dir>/split_fewshot``. The dataset folder, then the image
    folder, must exist (``DatasetNotFoundError`` naming the path and ``DATASETS.md#<anchor>``).
    """
    root = dataset_root(cfg)
    dataset.dataset_dir = require_dir(os.path.join(root, dataset.dataset_dir), anchor)
    dataset.image_dir = os.path.join(dataset.dataset_dir, image_subdir) if image_subdir else dataset.dataset_dir
    dataset.split_fewshot_dir = os.path.join(dataset.dataset_dir, "split_fewshot")
    require_dir(dataset.image_dir, anchor, "image folder")
    return root


def write_json_compact(obj, fpath: str) -> None:
    """Write ``obj`` as compact JSON, atomically (temporary file in the same folder, then rename)."""
    atomic_write(fpath, lambda tmp: dump_json(obj, tmp, separators=(",", ":")))


# --------------------------------------------------------------------------- split files


def _relpath(impath: str, path_prefix: str) -> str:
    """``impath`` relative to ``path_prefix`` (fast string strip; falls back to os.path.relpath)."""
    prefix = path_prefix.rstrip("/\\") + os.sep
    if impath.startswith(prefix):
        return impath[len(prefix):]
    return os.path.relpath(impath, path_prefix)


def _datums(entries: Iterable, path_prefix: str) -> list[Datum]:
    return [Datum(impath=os.path.join(path_prefix, rel), label=label, classname=name) for rel, label, name in entries]


def read_split(
    filepath: str, path_prefix: str, canonical: Optional[CanonicalNames] = None
) -> tuple[list[Datum], list[Datum], list[Datum]]:
    """Read a ``split_zhou_*.json`` file; image paths become ``join(path_prefix, relpath)``.

    Prints ``Reading split from <filepath>``. Raises ``SplitFileError`` (a ``ValueError``) naming
    the file on bad JSON, a missing ``train``/``val``/``test`` key, or entries whose labels and
    class names disagree with each other or with ``canonical`` (``datasets.split_checks``).
    A locally generated split gets a "not comparable" note unless make_split found it identical
    to CoOp's (``"comparable_with_coop": true``).
    """
    print(f"Reading split from {filepath}")
    try:
        with open(filepath) as f:
            split = json.load(f)
    except json.JSONDecodeError as exc:
        raise SplitFileError(f"Split file {filepath} is not valid JSON ({exc}); replace it with the original") from None
    if not isinstance(split, dict) or not all(k in split for k in ("train", "val", "test")):
        raise SplitFileError(f"Split file {filepath} must be a JSON object with keys 'train', 'val' and 'test'")
    check_split(filepath, split, canonical)
    meta = split.get("_generated_by")
    if meta is not None and not (isinstance(meta, dict) and meta.get("comparable_with_coop") is True):
        print(
            f"Note: {filepath} was generated locally by tools/make_split.py, not CoOp's published split: "
            "results are not comparable with published numbers"
        )
    return tuple(_datums(split[k], path_prefix) for k in ("train", "val", "test"))


def _to_entries(items: Sequence[Datum], path_prefix: str) -> list[list]:
    return [[_relpath(item.impath, path_prefix).lstrip("/"), item.label, item.classname] for item in items]


def split_entries(train, val, test, path_prefix: str) -> dict[str, list[list]]:
    """``{"train"|"val"|"test": [[relpath, label, classname], ...]}`` as a split file stores them."""
    return {k: _to_entries(v, path_prefix) for k, v in (("train", train), ("val", val), ("test", test))}


def save_split(train, val, test, filepath: str, path_prefix: str, meta: Optional[dict] = None) -> None:
    """Write ``train``/``val``/``test`` as a split file with paths relative to ``path_prefix``.

    ``meta`` (optional) is stored under ``"_generated_by"``; readers only look at its
    ``comparable_with_coop``. Atomic write; prints ``Saved split to <filepath>``.
    """
    split = split_entries(train, val, test, path_prefix)
    if meta is not None:
        split["_generated_by"] = meta
    write_json(split, filepath)
    print(f"Saved split to {filepath}")


def split_trainval(trainval: Sequence[Datum], p_val: float = 0.2, rng: Optional[random.Random] = None):
    """Split ``trainval`` per label into train and val (``round(n * p_val)`` val items per label).

    Labels are visited in first-appearance order; each label's indices are shuffled with ``rng``
    (default: Python's global ``random``). Returns ``(train, val)``.
    """
    rng = rng if rng is not None else random
    p_trn = 1 - p_val
    print(f"Splitting trainval into {p_trn:.0%} train and {p_val:.0%} val")
    by_label: dict[int, list[int]] = defaultdict(list)
    for idx, item in enumerate(trainval):
        by_label[item.label].append(idx)
    train, val = [], []
    for label, idxs in by_label.items():
        n_val = round(len(idxs) * p_val)
        if n_val <= 0:
            raise ValueError(f"Label {label} has {len(idxs)} items: too few to hold out {p_val:.0%} for val")
        rng.shuffle(idxs)
        for n, idx in enumerate(idxs):
            (val if n < n_val else train).append(trainval[idx])
    return train, val


def read_and_split_data(
    image_dir: str,
    p_trn: float = 0.5,
    p_val: float = 0.2,
    ignored: Sequence[str] = (),
    new_cnames: Optional[dict] = None,
    rng: Optional[random.Random] = None,
):
    """Split a ``<image_dir>/<class>/<image>`` tree per class into train/val/test.

    Class folders are sorted (label = index); image names are sorted before shuffling with ``rng``
    (default: global ``random``), so a seeded call gives the same split on any file system.
    Returns ``(train, val, test)`` lists of ``Datum``.
    """
    rng = rng if rng is not None else random
    categories = [c for c in listdir_nohidden(image_dir, sort=True) if c not in set(ignored)]
    p_tst = 1 - p_trn - p_val
    print(f"Splitting into {p_trn:.0%} train, {p_val:.0%} val, and {p_tst:.0%} test")
    train, val, test = [], [], []
    for label, category in enumerate(categories):
        names = listdir_nohidden(os.path.join(image_dir, category), sort=True)
        rng.shuffle(names)
        n_total = len(names)
        n_train, n_val = round(n_total * p_trn), round(n_total * p_val)
        n_test = n_total - n_train - n_val
        if min(n_train, n_val, n_test) <= 0:
            raise ValueError(f"Class folder {os.path.join(image_dir, category)} has too few images ({n_total}) "
                             "to split")
        classname = new_cnames.get(category, category) if new_cnames else category
        items = [Datum(os.path.join(image_dir, category, n), label, classname=classname) for n in names]
        train += items[:n_train]
        val += items[n_train:n_train + n_val]
        test += items[n_train + n_val:]
    return train, val, test


# --------------------------------------------------------------------------- base / new


def check_subsample(subsample: str) -> str:
    """Return ``subsample`` if valid, else raise ``ValueError`` naming ``DATASET.SUBSAMPLE_CLASSES``."""
    if subsample not in SUBSAMPLE_CHOICES:
        raise ValueError(
            f"DATASET.SUBSAMPLE_CLASSES must be one of {', '.join(map(repr, SUBSAMPLE_CHOICES))}, got {subsample!r}"
        )
    return subsample


def subsample_classes(*datasets, subsample: str = "all") -> list:
    """Keep the base (first ``ceil(n/2)`` of the sorted labels of all ``datasets`` together: the
    dataset's full class list, never only what the train split holds) or new (the rest) classes.

    Every list is filtered and relabelled to ``0..m-1`` in sorted-label order (order of items kept);
    ``"all"`` returns the inputs unchanged. Returns a list with one entry per input.
    """
    check_subsample(subsample)
    if subsample == "all":
        return list(datasets)
    labels = sorted({item.label for dataset in datasets for item in dataset})
    m = math.ceil(len(labels) / 2)
    print(f"SUBSAMPLE {subsample.upper()} CLASSES!")
    selected = labels[:m] if subsample == "base" else labels[m:]
    relabeler = {label: new for new, label in enumerate(selected)}
    output = []
    for dataset in datasets:
        output.append(
            [
                Datum(impath=item.impath, label=relabeler[item.label], classname=item.classname)
                for item in dataset
                if item.label in relabeler
            ]
        )
    return output


# --------------------------------------------------------------------------- image checks


def spot_check_sample(items: Sequence[Datum]) -> list[Datum]:
    """The items whose files are checked: the first and the last item of every label."""
    first: dict[int, Datum] = {}
    last: dict[int, Datum] = {}
    for item in items:
        first.setdefault(item.label, item)
        last[item.label] = item
    out = list(first.values())
    out += [item for label, item in last.items() if item is not first[label]]
    return out


def check_listed_images(lists: dict, anchor: str, source: str, exhaustive: Sequence[str] = ()) -> None:
    """Raise one ``DatasetNotFoundError`` listing every missing image of ``lists`` (name -> items).

    Only a sample is stat'ed first (every item of the lists named in ``exhaustive``, e.g. few-shot
    subsets; the first/last item of every label otherwise), so a complete dataset costs a few
    hundred ``stat`` calls; when the sample finds a missing file, every item is checked so that the
    message lists them all (with ``<list>[<index>]``). Decoding is checked later, before training
    (``dassl.data.image_check``).
    """
    sample = (
        item
        for name, items in lists.items()
        if items
        for item in (items if name in exhaustive else spot_check_sample(items))
    )
    first = next((item for item in sample if not os.path.isfile(item.impath)), None)
    if first is None:
        return
    missing = [
        f"  {item.impath} ({name}[{i}])"
        for name, items in lists.items()
        if items
        for i, item in enumerate(items)
        if not os.path.isfile(item.impath)
    ]
    raise DatasetNotFoundError(
        f"Image listed in {source} is missing: {first.impath}; all {len(missing)} missing images:\n"
        + "\n".join(missing)
        + f"\nRestore them from the dataset's archive or check DATASET.ROOT ({doc_ref(anchor)})"
    )


def check_images(items: Sequence[Datum], anchor: str, source: str, exhaustive: bool = False) -> None:
    """``check_listed_images`` for one list: every item if ``exhaustive``, else ``spot_check_sample``."""
    check_listed_images({"images": items}, anchor, source, exhaustive=("images",) if exhaustive else ())


# --------------------------------------------------------------------------- few-shot


def check_num_shots(value) -> int:
    """Return ``DATASET.NUM_SHOTS`` if allowed: ``-1`` or ``0`` (all images, as upstream's
    ``num_shots >= 1`` test) or ``K >= 1``; anything else (e.g. -3, 2.5, "16") is a ``ValueError``
    naming the key, so a typo never trains silently on the full set."""
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        raise ValueError(
            f"DATASET.NUM_SHOTS must be -1 or 0 (use all images) or a positive number of images per class, "
            f"got {value!r}"
        )
    return value



def sample_fewshot(items: Sequence[Datum], num_shots: int, rng: random.Random) -> list[Datum]:
    """``num_shots`` items per label (all if fewer), labels in first-appearance order, via ``rng.sample``."""
    by_label: dict[int, list[Datum]] = defaultdict(list)
    for item in items:
        by_label[item.label].append(item)
    out: list[Datum] = []
    for group in by_label.values():
        out.extend(rng.sample(group, num_shots) if len(group) >= num_shots else group)
    return out


def split_digest(image_dir: str, **splits: Optional[Sequence[Datum]]) -> str:
    """SHA-256 over the relative paths and labels of each named split (``None`` splits skipped)."""
    h = hashlib.sha256()
    for name in sorted(splits):
        items = splits[name]
        if items is None:
            continue
        h.update(f"[{name}:{len(items)}]".encode())
        h.update("".join(f"{_relpath(item.impath, image_dir)}\t{item.label}\n" for item in items).encode())
    return h.hexdigest()


def fewshot_cache_path(dataset_dir: str, num_shots: int, seed: int) -> str:
    """``<dataset_dir>/split_fewshot/shot_<K>-seed_<S>.json``."""
    return os.path.join(dataset_dir, "split_fewshot", f"shot_{num_shots}-seed_{seed}.json")


def _read_cache(path: str, key: dict, image_dir: str, sources: dict) -> Optional[dict]:
    """The cached subsets, or ``None`` (after one printed line) when the cache is corrupt or stale."""
    try:
        with open(path) as f:
            cache = json.load(f)
        if not isinstance(cache, dict) or cache.get("schema") != FEWSHOT_SCHEMA:
            raise ValueError("not a few-shot cache")
        if cache.get("version") != FEWSHOT_SCHEMA_VERSION:
            raise ValueError(f"schema version {cache.get('version')!r}, expected {FEWSHOT_SCHEMA_VERSION}")
        cached_key, subsets = cache["key"], cache["subsets"]
        if not isinstance(cached_key, dict) or not isinstance(subsets, dict):
            raise ValueError("'key' and 'subsets' must be objects")
    except (OSError, ValueError, KeyError) as exc:
        print(f"Few-shot cache {path} is corrupt ({exc}); rebuilding it")
        return None
    if cached_key != key:
        changed = sorted(k for k in set(key) | set(cached_key) if key.get(k) != cached_key.get(k))
        print(f"Few-shot cache {path} is stale ({', '.join(changed)} changed); rebuilding it")
        return None
    out = {}
    for name, items in sources.items():
        by_rel = {_relpath(item.impath, image_dir): item for item in items}
        entries = subsets.get(name)
        if not isinstance(entries, list) or not all(isinstance(e, str) and e in by_rel for e in entries):
            print(f"Few-shot cache {path} is corrupt ('{name}' does not list images of the split); rebuilding it")
            return None
        out[name] = [by_rel[e] for e in entries]
    return out


def generate_fewshot_cached(
    train: Sequence[Datum],
    val: Optional[Sequence[Datum]],
    num_shots: int,
    seed: int,
    dataset_dir: str,
    image_dir: str,
) -> tuple[list[Datum], Optional[list[Datum]]]:
    """K-shot ``train`` and min(K, 4)-shot ``val`` (``val=None``: only train is sampled).

    Draw: ``random.Random(seed)``, train then val (see module docstring). With ``seed >= 0`` the
    subsets are cached as JSON at ``fewshot_cache_path(dataset_dir, K, seed)``, storing paths
    relative to ``image_dir`` and keyed by K, seed, the sampler version and a digest of the source
    lists; a stale or corrupt cache is reported and rebuilt. A negative seed draws from an
    unseeded generator and caches nothing. ``split_fewshot/`` is created only when writing.
    """
    sources = {"train": train} if val is None else {"train": train, "val": val}
    key = {
        "num_shots": num_shots,
        "seed": seed,
        "sampler": SAMPLER_VERSION,
        "source_sha256": split_digest(image_dir, **sources),
    }
    path = fewshot_cache_path(dataset_dir, num_shots, seed)
    if seed >= 0 and os.path.exists(path):
        cached = _read_cache(path, key, image_dir, sources)
        if cached is not None:
            print(f"Loading preprocessed few-shot data from {path}")
            return cached["train"], cached.get("val")

    rng = random.Random(seed) if seed >= 0 else random.Random()
    print(f"Creating a {num_shots}-shot dataset")
    subsets = {"train": sample_fewshot(train, num_shots, rng)}
    if val is not None:
        subsets["val"] = sample_fewshot(val, min(num_shots, 4), rng)
    if seed < 0:
        print("No fixed seed (SEED < 0): the few-shot subset is random and not cached")
        return subsets["train"], subsets.get("val")

    cache = {
        "schema": FEWSHOT_SCHEMA,
        "version": FEWSHOT_SCHEMA_VERSION,
        "key": key,
        "subsets": {name: [_relpath(item.impath, image_dir) for item in items] for name, items in subsets.items()},
    }
    try:
        write_json(cache, path)
    except OSError as exc:
        print(f"Could not write few-shot cache {path} ({exc}); continuing without it")
    else:
        print(f"Saving preprocessed few-shot data to {path}")
    return subsets["train"], subsets.get("val")


# --------------------------------------------------------------------------- the shared tail


def finalize_splits(
    cfg,
    dataset_dir: str,
    image_dir: str,
    train: list[Datum],
    val: Optional[list[Datum]],
    test: list[Datum],
    anchor: str,
    source: str = "the split file",
) -> tuple[list[Datum], Optional[list[Datum]], list[Datum]]:
    """Few-shot (``cfg.DATASET.NUM_SHOTS`` >= 1, cached), image check, then base/new subsampling.

    ``val=None`` (ImageNet) samples and returns only train and test (``val`` stays ``None``).
    Checks that every few-shot image and the first/last image of each label otherwise exists
    (``check_listed_images``; all missing images are listed when one is),
    then applies ``subsample_classes(train, val, test, subsample=cfg.DATASET.SUBSAMPLE_CLASSES)``.
    """
    subsample = check_subsample(cfg.DATASET.SUBSAMPLE_CLASSES)
    num_shots = check_num_shots(cfg.DATASET.NUM_SHOTS)
    fewshot = num_shots >= 1
    if fewshot:
        train, val = generate_fewshot_cached(train, val, num_shots, cfg.SEED, dataset_dir, image_dir)
    check_listed_images({"train": train, "val": val, "test": test}, anchor, source,
                        exhaustive=("train", "val") if fewshot else ())
    if val is None:
        train, test = subsample_classes(train, test, subsample=subsample)
    else:
        train, val, test = subsample_classes(train, val, test, subsample=subsample)
    return train, val, test
