"""Generate a ``split_zhou_<Dataset>.json`` explicitly from a dataset's raw files.

Loaders never do this: they stop when the split file is missing. A generated split is normally a
*different* random split from CoOp's published one, so numbers obtained with it are not comparable
with published results; the file records how it was made under ``"_generated_by"`` and loaders
print a note when they read it. A split identical to CoOp's (same ``[path, label, classname]``
triples in the same order, compared by ``split_digests`` with ``COOP_SPLIT_SHA256``) is tagged
``"comparable_with_coop": true`` and read without the note. Listings are sorted and the shuffles
use ``random.Random(seed)``, so the same raw files and seed give the same split on any machine.

    python tools/make_split.py --root DATA --dataset OxfordPets [--seed 1] [--force]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
from collections import defaultdict
from typing import Callable, Optional, Sequence

from dassl.data.datasets.base_dataset import Datum

from .protocol import (
    DatasetNotFoundError,
    read_and_split_data,
    require_dir,
    require_file,
    save_split,
    split_entries,
    split_trainval,
)

Splits = tuple[list[Datum], list[Datum], list[Datum]]

CALTECH101_IGNORED = ["BACKGROUND_Google", "Faces_easy"]
CALTECH101_NEW_CNAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}
EUROSAT_NEW_CNAMES = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}


# SHA-256 (``split_digests``) of CoOp's published split files, per split; datasets not listed here
# (Food101, SUN397) have no recorded digest, so their generated splits are never tagged comparable.
COOP_SPLIT_SHA256: dict[str, dict[str, str]] = {
    "Caltech101": {
        "train": "50d5f25ee00e8976a8406a871e2653a57964b9632ca45a7e86b24b32fcfcfea1",
        "val": "b68d53e5db3aae0ecd533084fb01a929a8a088c311f47445f159bf1f783808c8",
        "test": "77e41ed7340f5c19c92a4a84e210f087074d5d278152c62f272e73022785fad7",
    },
    "DescribableTextures": {
        "train": "2dba0c9f193da223d364205f100554eeffb6ac715c694d061ad79a7a4f166d2f",
        "val": "97c08c6a780b627c78843bc9e393d32df3f0426c0e792251d0d92fcd0327431b",
        "test": "22823064a7348c61b49a0421dd59795133b599fdc313b88ab56e0dfc5f0ee39c",
    },
    "EuroSAT": {
        "train": "060ba8533a34ef1ab27324f2d0a717ffb2df42214e0d274f1edf7cb1c0cf504a",
        "val": "23b0c4ba5be5f2ac5e28814247d04c36b01d5dff1f2a0a5397315d402ab59901",
        "test": "fd225e3a54943665f2f6e8a1d14b6af2f65e0a2420ed852e273609f45f9df792",
    },
    "OxfordFlowers": {
        "train": "0c5f0df7c6e035ed1f53a9db2052f867ef4942eb9304d3b0ead44e754a34af28",
        "val": "910623f826ffedbbf153047b00103302ac012d2a9f23757137e6d10be8e74ac4",
        "test": "444f8a890800cc49bbb1b5c7926e5efc2a1957f56b1d11174b3a76fe62ed25cc",
    },
    "OxfordPets": {
        "train": "0b401493a4b1e173fa4283064648ca8047f2cb2f2487d64631cd28549f754257",
        "val": "59ac9b91b419d879696e4dd5c44f94c4ece1003f4c00d19a5ed6216cde033e0d",
        "test": "3a38bf17354ece100231cc5550ed9928b735c6ea0da09f67f9a67d0a3708e118",
    },
    "StanfordCars": {
        "train": "1b06a476ed0d8ca6d58827edd9e470f92cac7404cdacd7aec959db2446e55134",
        "val": "6bac84e5d8da0f7f9b251d2dfe2cd23face3184692439a571633ba85e37a2678",
        "test": "9d9591a5eda8f69e674ae3aeabcce90ddf039117d9d5cfc3bc09fe02f1ecb6bd",
    },
    "UCF101": {
        "train": "c374750c17351384da272b84cf00613f9633588be74373a575b615fbca51a9d0",
        "val": "97ec0db28b6f0ce53562ca6f21fd822eec32984bc306c2b4e338112a25444f52",
        "test": "90cbaf5eecfdf30c56f7c7d1a7517dab9e70745ec59529917419e69dd61e80f5",
    },
}


def split_digests(split: dict) -> dict[str, str]:
    """Per split, SHA-256 over its ``[relpath, label, classname]`` entries in order (one compact
    JSON array per line), so two splits compare equal exactly when their triples and order do."""
    out = {}
    for key in ("train", "val", "test"):
        h = hashlib.sha256()
        for entry in split[key]:
            h.update((json.dumps(list(entry), ensure_ascii=False, separators=(",", ":")) + "\n").encode())
        out[key] = h.hexdigest()
    return out


def comparable_with_coop(dataset: str, split: dict, reference: Optional[dict] = None) -> bool:
    """Whether ``split`` equals CoOp's published split of ``dataset`` (``reference``: other digests)."""
    expected = reference if reference is not None else COOP_SPLIT_SHA256.get(dataset)
    return expected is not None and split_digests(split) == expected


def _lines(path: str, anchor: str) -> list[str]:
    with open(require_file(path, anchor, "annotation file")) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


def _loadmat(path: str, anchor: str) -> dict:
    from scipy.io import loadmat

    return loadmat(require_file(path, anchor, "annotation file"))


def pets_classname(stem: str) -> str:
    """``american_bulldog_12`` -> ``american_bulldog`` (drop the last ``_`` token, lower-case)."""
    return "_".join(stem.split("_")[:-1]).lower()


def cars_classname(meta_name: str) -> str:
    """``AM General Hummer SUV 2000`` -> ``2000 AM General Hummer SUV`` (year moved to the front)."""
    words = meta_name.split(" ")
    return " ".join([words[-1]] + words[:-1])


def sun397_classname(category: str) -> str:
    """``a/apartment_building/outdoor`` -> ``outdoor apartment_building`` (drop letter dir, reverse)."""
    return " ".join(reversed(category.strip("/").split("/")[1:]))


def ucf101_classname(action: str) -> str:
    """``ApplyEyeMakeup`` -> ``Apply_Eye_Makeup``, ``YoYo`` -> ``Yo_Yo``."""
    return "_".join(re.findall(r"[A-Z][^A-Z]*", action))


def _split_per_label(items: Sequence[Datum], rng: random.Random, p_trn: float = 0.5, p_val: float = 0.2) -> Splits:
    by_label: dict[int, list[Datum]] = defaultdict(list)
    for item in items:
        by_label[item.label].append(item)
    train, val, test = [], [], []
    for label, group in by_label.items():
        rng.shuffle(group)
        n_train, n_val = round(len(group) * p_trn), round(len(group) * p_val)
        if min(n_train, n_val, len(group) - n_train - n_val) <= 0:
            raise ValueError(f"Label {label} has too few images ({len(group)}) to split 50/20/30")
        train += group[:n_train]
        val += group[n_train:n_train + n_val]
        test += group[n_train + n_val:]
    return train, val, test


def folder_split(ignored: Sequence[str] = (), new_cnames: Optional[dict] = None):
    """Generator for ``<image_dir>/<class>/<image>`` datasets (50/20/30 per class)."""

    def generate(dataset_dir: str, image_dir: str, rng: random.Random, anchor: str) -> Splits:
        require_dir(image_dir, anchor, "image folder")
        return read_and_split_data(image_dir, ignored=ignored, new_cnames=new_cnames, rng=rng)

    return generate


def oxford_pets(dataset_dir: str, image_dir: str, rng: random.Random, anchor: str) -> Splits:
    """``annotations/{trainval,test}.txt``; trainval split 80/20 per class."""

    def read(name: str) -> list[Datum]:
        items = []
        for line in _lines(os.path.join(dataset_dir, "annotations", name), anchor):
            stem, class_id = line.split()[:2]
            items.append(Datum(os.path.join(image_dir, stem + ".jpg"), int(class_id) - 1,
                               classname=pets_classname(stem)))
        return items

    train, val = split_trainval(read("trainval.txt"), p_val=0.2, rng=rng)
    return train, val, read("test.txt")


def oxford_flowers(dataset_dir: str, image_dir: str, rng: random.Random, anchor: str) -> Splits:
    """``imagelabels.mat`` + ``cat_to_name.json``; 50/20/30 per class."""
    labels = _loadmat(os.path.join(dataset_dir, "imagelabels.mat"), anchor)["labels"].ravel()
    with open(require_file(os.path.join(dataset_dir, "cat_to_name.json"), anchor, "class-name file")) as f:
        cat_to_name = json.load(f)
    items = [
        Datum(os.path.join(image_dir, f"image_{i + 1:05d}.jpg"), int(label) - 1, classname=cat_to_name[str(int(label))])
        for i, label in enumerate(labels)
    ]
    return _split_per_label(items, rng)


def stanford_cars(dataset_dir: str, image_dir: str, rng: random.Random, anchor: str) -> Splits:
    """``devkit/cars_meta.mat``, ``devkit/cars_train_annos.mat``, ``cars_test_annos_withlabels.mat``."""
    meta = _loadmat(os.path.join(dataset_dir, "devkit", "cars_meta.mat"), anchor)["class_names"].ravel()
    names = [cars_classname(str(n.ravel()[0])) for n in meta]

    def read(mat_path: str, folder: str) -> list[Datum]:
        annos = _loadmat(mat_path, anchor)["annotations"].ravel()
        out = []
        for anno in annos:
            fname, label = str(anno["fname"].ravel()[0]), int(anno["class"].ravel()[0]) - 1
            out.append(Datum(os.path.join(image_dir, folder, fname), label, classname=names[label]))
        return out

    trainval = read(os.path.join(dataset_dir, "devkit", "cars_train_annos.mat"), "cars_train")
    train, val = split_trainval(trainval, p_val=0.2, rng=rng)
    return train, val, read(os.path.join(dataset_dir, "cars_test_annos_withlabels.mat"), "cars_test")


def sun397(dataset_dir: str, image_dir: str, rng: random.Random, anchor: str) -> Splits:
    """``ClassName.txt``, ``Training_01.txt``, ``Testing_01.txt``; training split 80/20 per class."""
    categories = [line.lstrip("/") for line in _lines(os.path.join(dataset_dir, "ClassName.txt"), anchor)]
    label_of = {c: i for i, c in enumerate(categories)}

    def read(name: str) -> list[Datum]:
        items = []
        for line in _lines(os.path.join(dataset_dir, name), anchor):
            relpath = line.lstrip("/")
            category = os.path.dirname(relpath)
            if category not in label_of:
                raise ValueError(f"{name}: {relpath} is in no class of ClassName.txt")
            items.append(Datum(os.path.join(image_dir, relpath), label_of[category],
                               classname=sun397_classname(category)))
        return items

    train, val = split_trainval(read("Training_01.txt"), p_val=0.2, rng=rng)
    return train, val, read("Testing_01.txt")


def ucf101(dataset_dir: str, image_dir: str, rng: random.Random, anchor: str) -> Splits:
    """``ucfTrainTestlist/{classInd,trainlist01,testlist01}.txt``; middle frames as ``.jpg``."""
    lists = os.path.join(dataset_dir, "ucfTrainTestlist")
    label_of = {}
    for line in _lines(os.path.join(lists, "classInd.txt"), anchor):
        class_id, action = line.split()
        label_of[action] = int(class_id) - 1

    def read(name: str) -> list[Datum]:
        items = []
        for line in _lines(os.path.join(lists, name), anchor):
            action, video = line.split()[0].split("/")
            classname = ucf101_classname(action)
            path = os.path.join(image_dir, classname, os.path.splitext(video)[0] + ".jpg")
            items.append(Datum(path, label_of[action], classname=classname))
        return items

    train, val = split_trainval(read("trainlist01.txt"), p_val=0.2, rng=rng)
    return train, val, read("testlist01.txt")


GENERATORS: dict[str, Callable] = {
    "Caltech101": folder_split(CALTECH101_IGNORED, CALTECH101_NEW_CNAMES),
    "DescribableTextures": folder_split(),
    "EuroSAT": folder_split(new_cnames=EUROSAT_NEW_CNAMES),
    "Food101": folder_split(),
    "OxfordFlowers": oxford_flowers,
    "OxfordPets": oxford_pets,
    "StanfordCars": stanford_cars,
    "SUN397": sun397,
    "UCF101": ucf101,
}


def make_split(root: str, dataset: str, seed: int = 1, force: bool = False, reference: Optional[dict] = None) -> str:
    """Write ``<root>/<dataset folder>/split_zhou_<dataset>.json``; return its path.

    Refuses to overwrite an existing split file unless ``force``. ``"_generated_by"`` records the
    tool, seed, ``split_digests`` and ``comparable_with_coop`` (against ``reference`` digests if
    given, else ``COOP_SPLIT_SHA256``).
    """
    from dassl.data.datasets.build import DATASET_REGISTRY

    if dataset not in GENERATORS:
        raise ValueError(f"No split generator for {dataset!r}; choose one of {', '.join(sorted(GENERATORS))}")
    loader = DATASET_REGISTRY.get(dataset)
    root = os.path.abspath(os.path.expanduser(root))
    dataset_dir = require_dir(os.path.join(root, loader.dataset_dir), loader.anchor)
    image_dir = os.path.join(dataset_dir, loader.image_subdir) if loader.image_subdir else dataset_dir
    split_path = os.path.join(dataset_dir, loader.split_file)
    if os.path.exists(split_path) and not force:
        raise FileExistsError(f"{split_path} exists; pass --force to replace it (keep CoOp's file for comparable "
                              "numbers)")
    train, val, test = GENERATORS[dataset](dataset_dir, image_dir, random.Random(seed), loader.anchor)
    entries = split_entries(train, val, test, image_dir)
    comparable = comparable_with_coop(dataset, entries, reference)
    meta = {
        "tool": "tools/make_split.py",
        "dataset": dataset,
        "seed": seed,
        "comparable_with_coop": comparable,
        "sha256": split_digests(entries),
    }
    save_split(train, val, test, split_path, image_dir, meta=meta)
    print(f"{dataset}: {len(train)} train, {len(val)} val, {len(test)} test images")
    if comparable:
        print("The split is identical to CoOp's published split: results are comparable with published numbers")
    else:
        print("The split differs from CoOp's published split (or none is known): results are not comparable")
    return split_path


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="data root (the DATA folder holding the dataset folders)")
    parser.add_argument("--dataset", required=True, choices=sorted(GENERATORS))
    parser.add_argument("--seed", type=int, default=1, help="seed of the shuffles (default 1)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing split file")
    args = parser.parse_args(argv)
    try:
        make_split(args.root, args.dataset, seed=args.seed, force=args.force)
    except (DatasetNotFoundError, FileExistsError, ValueError) as exc:
        parser.exit(1, f"error: {exc}\n")
