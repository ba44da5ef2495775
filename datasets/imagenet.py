"""ImageNet-1k: `<root>/imagenet/` with `classnames.txt` and `images/{train,val}/<wnid>/*`.

Also the helpers the four ImageNet variants share: ``read_classnames`` and ``class_folders``.
Listing 1.28M files is cached as JSON in ``imagenet/image_listing.json``, keyed by the
modification times of the class folders (adding or removing an image changes its folder's
mtime), so later runs read one file instead of scanning the tree. Images are not stat'ed one by
one: ``finalize_splits`` spot-checks them and ``read_image`` names any other missing file.
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict

from dassl.data.datasets.base_dataset import DatasetBase, Datum
from dassl.data.datasets.build import DATASET_REGISTRY

from .protocol import (
    DatasetNotFoundError,
    check_images,
    doc_ref,
    finalize_splits,
    locate_dataset,
    require_dir,
    write_json_compact,
)

ANCHOR = "imagenet"
LISTING_FILE = "image_listing.json"
LISTING_SCHEMA = "mmlop-imagenet-listing"
LISTING_VERSION = 1


def read_classnames(dataset_dir: str, root: str, anchor: str) -> OrderedDict[str, str]:
    """``wnid -> class name`` from ``classnames.txt`` (lines ``<wnid> <name with spaces>``, file order).

    Looks in ``dataset_dir`` first, then in ``<root>/imagenet/``; raises ``DatasetNotFoundError``
    naming both places when neither has it.
    """
    candidates = [os.path.join(dataset_dir, "classnames.txt")]
    shared = os.path.join(root, "imagenet", "classnames.txt")
    if shared != candidates[0]:
        candidates.append(shared)
    path = next((p for p in candidates if os.path.isfile(p)), None)
    if path is None:
        raise DatasetNotFoundError(
            "Missing classnames.txt: copy the ImageNet class-name file this repository ships "
            f"(datasets/data/imagenet/classnames.txt, lines '<wnid> <class name>'; CoOp's DATASETS.md links the "
            f"same kind of file) to {' or '.join(candidates)} ({doc_ref(anchor)})"
        )
    classnames: OrderedDict[str, str] = OrderedDict()
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            wnid, _, name = line.partition(" ")
            if not name.strip():
                raise ValueError(f"{path}, line {lineno}: expected '<wnid> <class name>', got {line!r}")
            classnames[wnid] = name.strip()
    return classnames


def class_folders(path: str, anchor: str) -> list[os.DirEntry]:
    """Non-hidden sub-directories of ``path``, sorted by name (plain files such as README.txt are ignored)."""
    require_dir(path, anchor, "image folder")
    with os.scandir(path) as it:
        folders = sorted((e for e in it if e.is_dir() and not e.name.startswith(".")), key=lambda e: e.name)
    if not folders:
        raise DatasetNotFoundError(f"No class folders in {path} ({doc_ref(anchor)})")
    return folders


def list_images(folder: str) -> list[str]:
    """Sorted names of the non-hidden files in ``folder``."""
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if not e.name.startswith(".") and e.is_file())


def check_known_wnids(wnids, classnames: dict, where: str, anchor: str) -> None:
    """Every folder name must have an entry in classnames.txt."""
    unknown = [w for w in wnids if w not in classnames]
    if unknown:
        raise ValueError(
            f"Class folders {unknown[:5]} in {where} have no entry in classnames.txt ({doc_ref(anchor)})"
        )


@DATASET_REGISTRY.register()
class ImageNet(DatasetBase):
    """ImageNet-1k: train from ``images/train``, val = test = ``images/val`` (DATASETS.md#imagenet)."""

    dataset_dir = "imagenet"
    anchor = ANCHOR

    def __init__(self, cfg) -> None:
        root = locate_dataset(self, cfg, "images", ANCHOR)
        self.listing_path = os.path.join(self.dataset_dir, LISTING_FILE)
        classnames = read_classnames(self.dataset_dir, root, ANCHOR)

        folders = {split: self.split_folders(split) for split in ("train", "val")}
        wnids = [e.name for e in folders["train"]]
        check_known_wnids(wnids, classnames, os.path.join(self.image_dir, "train"), ANCHOR)
        val_wnids = [e.name for e in folders["val"]]
        if val_wnids != wnids:
            missing = sorted(set(wnids) - set(val_wnids)) or sorted(set(val_wnids) - set(wnids))
            raise DatasetNotFoundError(
                f"images/val and images/train must hold the same class folders; differing: "
                f"{os.path.join(self.image_dir, 'val', missing[0])} ({len(missing)} in all; {doc_ref(ANCHOR)})"
            )
        listing = self.read_listing(folders)
        label_of = {wnid: label for label, wnid in enumerate(wnids)}

        def items(split: str) -> list[Datum]:
            base = os.path.join(self.image_dir, split)
            return [
                Datum(os.path.join(base, wnid, name), label_of[wnid], classname=classnames[wnid])
                for wnid in wnids
                for name in listing[split][wnid]
            ]

        train, test = items("train"), items("val")
        train, _, test = finalize_splits(
            cfg, self.dataset_dir, self.image_dir, train, None, test, anchor=ANCHOR, source=self.image_dir
        )
        super().__init__(train_x=train, val=test, test=test)

    def split_folders(self, split: str) -> list[os.DirEntry]:
        """Class folders of ``images/<split>``; a flat val folder is an error."""
        path = os.path.join(self.image_dir, split)
        try:
            return class_folders(path, ANCHOR)
        except DatasetNotFoundError:
            if os.path.isdir(path):
                raise DatasetNotFoundError(
                    f"{path} has no class folders: images must be in {path}/<wnid>/ "
                    f"(reorganize the flat val set; {doc_ref(ANCHOR)})"
                ) from None
            raise

    def read_listing(self, folders: dict[str, list[os.DirEntry]]) -> dict[str, dict[str, list[str]]]:
        """``{split: {wnid: sorted image names}}``, from the JSON cache when its key still matches."""
        key = {split: [[e.name, e.stat().st_mtime_ns] for e in entries] for split, entries in folders.items()}
        if os.path.isfile(self.listing_path):
            try:
                with open(self.listing_path) as f:
                    cache = json.load(f)
                if cache.get("schema") == LISTING_SCHEMA and cache.get("version") == LISTING_VERSION:
                    if cache.get("key") == key and self._listing_matches(cache.get("listing"), key):
                        return cache["listing"]
                    print(f"Image listing {self.listing_path} is stale (class folders changed); rebuilding it")
                else:
                    print(f"Image listing {self.listing_path} has an unknown format; rebuilding it")
            except (OSError, ValueError, AttributeError) as exc:
                print(f"Image listing {self.listing_path} is corrupt ({exc}); rebuilding it")
        listing = {split: {e.name: list_images(e.path) for e in entries} for split, entries in folders.items()}
        cache = {"schema": LISTING_SCHEMA, "version": LISTING_VERSION, "key": key, "listing": listing}
        try:
            write_json_compact(cache, self.listing_path)
            print(f"Saved image listing to {self.listing_path}")
        except OSError as exc:
            print(f"Could not write image listing {self.listing_path} ({exc}); continuing without it")
        return listing

    @staticmethod
    def _listing_matches(listing, key: dict) -> bool:
        """The cached listing has a list of names for exactly the class folders of the key."""
        return isinstance(listing, dict) and all(
            isinstance(listing.get(split), dict)
            and list(listing[split]) == [wnid for wnid, _ in entries]
            and all(isinstance(names, list) for names in listing[split].values())
            for split, entries in key.items()
        )


class ImageNetVariant(DatasetBase):
    """A test-only ImageNet variant: ``<root>/<dataset_dir>/<image_subdir>/<wnid>/*`` + classnames.txt.

    Folders are sorted, label = index, class name from classnames.txt. ``train_x = test`` (so a
    DataManager can be built, as upstream), no val; ``NUM_SHOTS`` and ``SUBSAMPLE_CLASSES`` are
    ignored. Subclasses set ``dataset_dir``, ``image_subdir`` and ``anchor``.
    """

    dataset_dir = ""
    image_subdir = ""
    anchor = ""

    def __init__(self, cfg) -> None:
        root = locate_dataset(self, cfg, self.image_subdir, self.anchor)
        classnames = read_classnames(self.dataset_dir, root, self.anchor)
        data = self.read_data(classnames)
        check_images(data, self.anchor, self.image_dir)
        super().__init__(train_x=data, test=data)

    def read_data(self, classnames: OrderedDict[str, str]) -> list[Datum]:
        """All images of the sorted wnid folders of ``image_dir``, labelled by folder index."""
        folders = class_folders(self.image_dir, self.anchor)
        check_known_wnids([e.name for e in folders], classnames, self.image_dir, self.anchor)
        return [
            Datum(os.path.join(e.path, name), label, classname=classnames[e.name])
            for label, e in enumerate(folders)
            for name in list_images(e.path)
        ]
