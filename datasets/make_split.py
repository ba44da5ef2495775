"""Generate a ``split_zhou_<Dataset>.json`` explicitly from a dataset's raw files.

Loaders never do this: they stop when the split file is missing. A generated split is a *different*
random split from CoOp's published one, so numbers obtained with it are not comparable with
published results; the file records how it was made under ``"_generated_by"`` and loaders print a
note when they read it. Listings are sorted and the shuffles use ``random.Random(seed)``, so the
same raw files and seed give the same split on any machine.

    python tools/make_split.py --root DATA --dataset OxfordPets [--seed 1] [--force]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
from collections import defaultdict
from typing import Callable, Optional, Sequence

from dassl.data.datasets.base_dataset import Datum

from .protocol import DatasetNotFoundError, read_and_split_data, require_dir, require_file, save_split, split_trainval

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


def _lines(path: str, anchor: str) -> list[str]:
    with open(require_file(path, anchor, "annotation file"), "r") as f:
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
            items.append(Datum(os.path.join(image_dir, stem + ".jpg"), int(class_id) - 1, classname=pets_classname(stem)))
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
            items.append(Datum(os.path.join(image_dir, relpath), label_of[category], classname=sun397_classname(category)))
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


def make_split(root: str, dataset: str, seed: int = 1, force: bool = False) -> str:
    """Write ``<root>/<dataset folder>/split_zhou_<dataset>.json``; return its path.

    Refuses to overwrite an existing split file unless ``force``.
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
        raise FileExistsError(f"{split_path} exists; pass --force to replace it (keep CoOp's file for comparable numbers)")
    train, val, test = GENERATORS[dataset](dataset_dir, image_dir, random.Random(seed), loader.anchor)
    meta = {"tool": "tools/make_split.py", "dataset": dataset, "seed": seed, "comparable_with_coop": False}
    save_split(train, val, test, split_path, image_dir, meta=meta)
    print(f"{dataset}: {len(train)} train, {len(val)} val, {len(test)} test images")
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
