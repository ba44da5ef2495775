"""The loaders on CoOp's real split files and on a slice of real DTD / Flowers images.

Needs ``../shared/data`` (skipped when absent). Image trees are generated in a temporary root
(empty files at the listed paths); nothing is written into ``../shared``.
"""
import json
import os
import re
import shutil

import pytest

import datasets  # noqa: F401  (registers the loaders)
from dassl.data.datasets.build import build_dataset
from tests.helpers import SHARED_DATA, make_cfg, skip_unless_dir

SPLITS = SHARED_DATA / "coop_splits"
REAL = SHARED_DATA / "real"


# name: (dataset folder, image folder, classes, train, val, test, base, new, {label: classname})
UPSTREAM = {
    "Caltech101": ("caltech-101", "101_ObjectCategories", 100, 4128, 1649, 2465, 50, 50,
                   {0: "face", 1: "leopard", 2: "motorbike", 4: "airplane", 99: "yin_yang"}),
    "DescribableTextures": ("dtd", "images", 47, 2820, 1128, 1692, 24, 23, {0: "banded", 46: "zigzagged"}),
    "EuroSAT": ("eurosat", "2750", 10, 13500, 5400, 8100, 5, 5,
                {0: "Annual Crop Land", 3: "Highway or Road", 9: "Sea or Lake"}),
    "OxfordFlowers": ("oxford_flowers", "jpg", 102, 4093, 1633, 2463, 51, 51, {0: "pink primrose"}),
    "OxfordPets": ("oxford_pets", "images", 37, 2944, 736, 3669, 19, 18, {0: "abyssinian", 1: "american_bulldog"}),
    "StanfordCars": ("stanford_cars", "", 196, 6509, 1635, 8041, 98, 98, {0: "2000 AM General Hummer SUV"}),
    "UCF101": ("ucf101", "UCF-101-midframes", 101, 7639, 1898, 3783, 51, 50,
               {0: "Apply_Eye_Makeup", 100: "Yo_Yo"}),
}


# Datasets whose train and val images are all generated, so that 16-shot draws find their files.
FULL_TRAIN_VAL = ("OxfordPets",)


def checked_entries(entries):
    """The entries the loader checks without few-shot: the first and last image of each label."""
    first, last = {}, {}
    for entry in entries:
        first.setdefault(entry[1], entry)
        last[entry[1]] = entry
    return list(first.values()) + list(last.values())


@pytest.fixture(scope="module")
def coop_root(tmp_path_factory):
    """A data root for the seven real split files, with empty image files.

    Only the images the loaders check are generated (``checked_entries``; every train/val image for
    ``FULL_TRAIN_VAL``): generating all ~86k listed files costs tens of seconds on a busy disk.
    """
    skip_unless_dir(SPLITS)
    root = tmp_path_factory.mktemp("coop")
    for name, (dirname, image_subdir, *_rest) in UPSTREAM.items():
        dataset_dir = root / dirname
        image_dir = dataset_dir / image_subdir if image_subdir else dataset_dir
        split_file = SPLITS / f"split_zhou_{name}.json"
        with open(split_file) as f:
            split = json.load(f)
        made = set()
        for key, entries in split.items():
            full = name in FULL_TRAIN_VAL and key in ("train", "val")
            for relpath, _, _ in entries if full else checked_entries(entries):
                path = os.path.join(image_dir, relpath)
                folder = os.path.dirname(path)
                if folder not in made:
                    os.makedirs(folder, exist_ok=True)
                    made.add(folder)
                open(path, "wb").close()
        shutil.copy(split_file, dataset_dir / split_file.name)
    return root


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_real_split_files_give_upstream_numbers(coop_root, name, capsys):
    dirname, image_subdir, n_cls, n_train, n_val, n_test, n_base, n_new, names = UPSTREAM[name]
    dataset = build_dataset(make_cfg(coop_root, name))
    assert dataset.num_classes == n_cls and len(dataset.classnames) == n_cls
    assert (len(dataset.train_x), len(dataset.val), len(dataset.test)) == (n_train, n_val, n_test)
    for label, classname in names.items():
        assert dataset.lab2cname[label] == classname
    image_dir = os.path.join(coop_root, dirname, image_subdir)
    assert all(item.impath.startswith(os.path.normpath(image_dir) + os.sep) for item in dataset.test)
    assert dataset.split_path == os.path.join(coop_root, dirname, f"split_zhou_{name}.json")
    # nothing is written into the data folder without few-shot
    assert not os.path.exists(os.path.join(coop_root, dirname, "split_fewshot"))

    base = build_dataset(make_cfg(coop_root, name, subsample="base"))
    new = build_dataset(make_cfg(coop_root, name, subsample="new"))
    assert (base.num_classes, new.num_classes) == (n_base, n_new)
    assert base.classnames == dataset.classnames[:n_base] and new.classnames == dataset.classnames[n_base:]
    assert len(base.test) + len(new.test) == n_test
    assert {it.label for it in new.test} == set(range(n_new))


@pytest.mark.parametrize("name", FULL_TRAIN_VAL)
def test_real_split_files_sixteen_shots(coop_root, name, capsys):
    n_cls = UPSTREAM[name][2]
    dataset = build_dataset(make_cfg(coop_root, name, shots=16, seed=1))
    out = capsys.readouterr().out
    assert "Creating a 16-shot dataset" in out and "Saving preprocessed few-shot data to" in out
    assert (len(dataset.train_x), len(dataset.val)) == (16 * n_cls, 4 * n_cls)
    assert len(dataset.test) == UPSTREAM[name][5]


def test_stanford_cars_names_are_year_first(coop_root):
    names = build_dataset(make_cfg(coop_root, "StanfordCars")).classnames
    assert all(re.match(r"(19|20)\d\d \S", n) for n in names), [n for n in names if not re.match(r"\d{4} ", n)][:3]


# ------------------------------------------------------------------ real images through the pipeline


def real_root(tmp_path, dirname, image_subdir, name):
    source = REAL / dirname
    skip_unless_dir(source)
    dataset_dir = tmp_path / dirname
    dataset_dir.mkdir()
    os.symlink(source / image_subdir, dataset_dir / image_subdir)
    shutil.copy(source / f"split_zhou_{name}.json", dataset_dir)
    return tmp_path


@pytest.mark.parametrize(
    "name, dirname, image_subdir, n_cls, first_name",
    [("DescribableTextures", "dtd", "images", 3, "banded"),
     ("OxfordFlowers", "oxford_flowers", "jpg", 5, "pink primrose")],
)
def test_real_images_through_fewshot_base_new_and_transform(tmp_path, name, dirname, image_subdir, n_cls, first_name):
    from PIL import Image
    from torchvision import transforms as T

    root = real_root(tmp_path, dirname, image_subdir, name)
    full = build_dataset(make_cfg(root, name))
    assert full.num_classes == n_cls and full.classnames[0] == first_name
    base = build_dataset(make_cfg(root, name, shots=4, seed=2, subsample="base"))
    n_base = (n_cls + 1) // 2
    assert base.num_classes == n_base and len(base.train_x) == 4 * n_base and len(base.val) == 4 * n_base
    assert base.classnames == full.classnames[:n_base]
    assert os.path.isfile(root / dirname / "split_fewshot" / "shot_4-seed_2.json")
    tfm = T.Compose([T.Resize(224), T.CenterCrop(224), T.ToTensor()])
    for item in base.train_x[:2] + base.test[:1]:
        with Image.open(item.impath) as img:
            x = tfm(img.convert("RGB"))
        assert tuple(x.shape) == (3, 224, 224) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        assert float(x.std()) > 0.01  # a real picture, not a blank


def test_real_images_through_dassl_data_manager(tmp_path):
    """The default Dassl config and DataManager batch the loader's output: CoOp's test transform."""
    import torch

    from dassl.config import get_cfg_default
    from dassl.data import DataManager

    root = real_root(tmp_path, "dtd", "images", "DescribableTextures")
    cfg = get_cfg_default()
    cfg.merge_from_list(["DATASET.ROOT", str(root), "DATASET.NAME", "DescribableTextures", "DATASET.NUM_SHOTS", 2,
                         "DATASET.SUBSAMPLE_CLASSES", "new", "SEED", 1, "DATALOADER.NUM_WORKERS", 0,
                         "DATALOADER.TEST.BATCH_SIZE", 4])
    torch.manual_seed(0)
    dm = DataManager(cfg)
    assert dm.num_classes == 1 and dm.lab2cname == {0: "braided"}
    batch = next(iter(dm.test_loader))
    assert tuple(batch["img"].shape) == (4, 3, 224, 224) and batch["label"].tolist() == [0, 0, 0, 0]
    assert all("/braided/" in p for p in batch["impath"])
