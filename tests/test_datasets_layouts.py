"""Loaders on generated miniature trees in each upstream layout, and their error messages."""
import json
import os

import pytest
from yacs.config import CfgNode as CN

import datasets  # noqa: F401  (registers the loaders)
from dassl.data.datasets.build import build_dataset
from datasets.protocol import DatasetNotFoundError
from tests.helpers import REPO, make_cfg, touch, write

WNIDS = {"n01440764": "tench", "n01443537": "goldfish", "n01484850": "great white shark", "n01491361": "tiger shark"}


def write_classnames(folder, wnids=WNIDS):
    write(os.path.join(folder, "classnames.txt"), "".join(f"{w} {n}\n" for w, n in wnids.items()))


def snapshot(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, files in os.walk(folder) for f in files)


# ------------------------------------------------------------------ ImageNet and its variants


@pytest.fixture
def imagenet_root(tmp_path):
    dataset_dir = tmp_path / "imagenet"
    write_classnames(str(dataset_dir))
    for k, wnid in enumerate(sorted(WNIDS)):
        for i in range(5 + k):
            touch(str(dataset_dir / "images" / "train" / wnid / f"{wnid}_{i}.JPEG"))
        for i in range(2):
            touch(str(dataset_dir / "images" / "val" / wnid / f"ILSVRC2012_val_{k}{i}.JPEG"))
    return tmp_path


def test_imagenet_labels_names_and_val_is_test(imagenet_root):
    dataset = build_dataset(make_cfg(imagenet_root, "ImageNet"))
    assert dataset.classnames == ["tench", "goldfish", "great white shark", "tiger shark"]
    assert (len(dataset.train_x), len(dataset.test)) == (5 + 6 + 7 + 8, 8)
    assert dataset.val is dataset.test
    assert all(os.path.basename(os.path.dirname(it.impath)) == sorted(WNIDS)[it.label] for it in dataset.train_x)
    assert [os.path.basename(it.impath) for it in dataset.train_x[:2]] == ["n01440764_0.JPEG", "n01440764_1.JPEG"]


def test_imagenet_listing_cache_is_reused_and_invalidated(imagenet_root, capsys):
    listing = os.path.join(imagenet_root, "imagenet", "image_listing.json")
    build_dataset(make_cfg(imagenet_root, "ImageNet"))
    assert f"Saved image listing to {listing}" in capsys.readouterr().out
    build_dataset(make_cfg(imagenet_root, "ImageNet"))
    assert "image listing" not in capsys.readouterr().out.lower()
    touch(os.path.join(imagenet_root, "imagenet", "images", "train", "n01443537", "new.JPEG"))
    dataset = build_dataset(make_cfg(imagenet_root, "ImageNet"))
    assert "is stale (class folders changed); rebuilding it" in capsys.readouterr().out
    assert len(dataset.train_x) == 27
    write(listing, "{broken")
    assert len(build_dataset(make_cfg(imagenet_root, "ImageNet")).train_x) == 27
    assert "is corrupt" in capsys.readouterr().out


def test_imagenet_fewshot_samples_train_only_then_base_new(imagenet_root, capsys):
    dataset = build_dataset(make_cfg(imagenet_root, "ImageNet", shots=2, seed=1))
    assert len(dataset.train_x) == 8 and len(dataset.test) == 8 and dataset.val is dataset.test
    with open(os.path.join(imagenet_root, "imagenet", "split_fewshot", "shot_2-seed_1.json")) as f:
        assert set(json.load(f)["subsets"]) == {"train"}
    new = build_dataset(make_cfg(imagenet_root, "ImageNet", shots=2, seed=1, subsample="new"))
    assert "Loading preprocessed few-shot data from" in capsys.readouterr().out
    assert new.classnames == ["great white shark", "tiger shark"] and len(new.test) == 4
    assert {it.label for it in new.test} == {0, 1}


def test_imagenet_flat_or_mismatched_val_is_an_error(imagenet_root):
    val = os.path.join(imagenet_root, "imagenet", "images", "val")
    os.rename(os.path.join(val, "n01491361"), os.path.join(imagenet_root, "moved"))
    with pytest.raises(DatasetNotFoundError, match=r"same class folders.*n01491361.*DATASETS.md#imagenet"):
        build_dataset(make_cfg(imagenet_root, "ImageNet"))
    for wnid in sorted(WNIDS)[:3]:
        for name in os.listdir(os.path.join(val, wnid)):
            os.rename(os.path.join(val, wnid, name), os.path.join(val, name))
        os.rmdir(os.path.join(val, wnid))
    with pytest.raises(DatasetNotFoundError, match=r"has no class folders.*flat val set"):
        build_dataset(make_cfg(imagenet_root, "ImageNet"))


def test_imagenet_missing_classnames_says_where_to_put_it(imagenet_root):
    os.remove(os.path.join(imagenet_root, "imagenet", "classnames.txt"))
    expected = os.path.join(imagenet_root, "imagenet", "classnames.txt")
    with pytest.raises(DatasetNotFoundError, match=r"Missing classnames.txt") as err:
        build_dataset(make_cfg(imagenet_root, "ImageNet"))
    assert expected in str(err.value) and "DATASETS.md#imagenet" in str(err.value)


def test_imagenetv2_numeric_folders_follow_classnames_file_order(tmp_path):
    dataset_dir = tmp_path / "imagenetv2"
    write_classnames(str(dataset_dir))
    for label in range(4):
        for i in range(label + 1):
            touch(str(dataset_dir / "imagenetv2-matched-frequency-format-val" / str(label) / f"{i}.jpeg"))
    dataset = build_dataset(make_cfg(tmp_path, "ImageNetV2", shots=16, subsample="base"))  # both ignored
    assert dataset.classnames == list(WNIDS.values()) and len(dataset.test) == 10
    assert dataset.train_x is dataset.test and not dataset.val
    assert all(os.path.basename(os.path.dirname(it.impath)) == str(it.label) for it in dataset.test)
    assert not os.path.exists(dataset_dir / "split_fewshot")


def test_imagenet_sketch_sorted_wnid_folders(tmp_path):
    dataset_dir = tmp_path / "imagenet-sketch"
    write_classnames(str(dataset_dir))
    for wnid in reversed(sorted(WNIDS)):
        touch(str(dataset_dir / "images" / wnid / "sketch_0.JPEG"))
    dataset = build_dataset(make_cfg(tmp_path, "ImageNetSketch"))
    assert dataset.classnames == ["tench", "goldfish", "great white shark", "tiger shark"]
    assert dataset.num_classes == 4 and dataset.train_x is dataset.test


@pytest.mark.parametrize("name, dirname, subdir", [("ImageNetA", "imagenet-adversarial", "imagenet-a"),
                                                   ("ImageNetR", "imagenet-rendition", "imagenet-r")])
def test_imagenet_a_r_subset_labels_and_shared_classnames(tmp_path, name, dirname, subdir):
    write_classnames(str(tmp_path / "imagenet"))  # only ImageNet's copy: the variant falls back to it
    image_dir = tmp_path / dirname / subdir
    for wnid in ("n01491361", "n01443537"):  # a 2-class subset, like the 200 of 1000
        for i in range(3):
            touch(str(image_dir / wnid / f"{i}.jpg"))
    write(str(image_dir / "README.txt"), "not a class")
    dataset = build_dataset(make_cfg(tmp_path, name))
    assert dataset.num_classes == 2 and dataset.classnames == ["goldfish", "tiger shark"]
    assert [it.label for it in dataset.test] == [0, 0, 0, 1, 1, 1]


def test_imagenet_variant_unknown_wnid_is_reported(tmp_path):
    write_classnames(str(tmp_path / "imagenet-rendition"))
    touch(str(tmp_path / "imagenet-rendition" / "imagenet-r" / "n99999999" / "0.jpg"))
    with pytest.raises(ValueError, match=r"n99999999.*no entry in classnames.txt.*DATASETS.md#imagenetr"):
        build_dataset(make_cfg(tmp_path, "ImageNetR"))


# ------------------------------------------------------------------ Food101, SUN397, FGVCAircraft


def write_split(path, image_dir, entries):
    split = {k: [[rel, label, name] for rel, label, name in v] for k, v in entries.items()}
    write(path, json.dumps(split))
    for v in entries.values():
        for rel, _, _ in v:
            touch(os.path.join(image_dir, rel))


def three_way(classes, n_train=4, n_val=2, n_test=3):
    """``{split: [(relpath, label, classname)]}`` for ``classes = [(folder, classname)]``."""
    out = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        out[split] = [(f"{folder}/{split}_{i}.jpg", label, cname) for label, (folder, cname) in enumerate(classes)
                      for i in range(n)]
    return out


def test_food101_layout(tmp_path):
    classes = [("apple_pie", "apple_pie"), ("baby_back_ribs", "baby_back_ribs"), ("baklava", "baklava")]
    write_split(str(tmp_path / "food-101" / "split_zhou_Food101.json"), str(tmp_path / "food-101" / "images"),
                three_way(classes))
    dataset = build_dataset(make_cfg(tmp_path, "Food101", shots=2, subsample="base"))
    assert dataset.classnames == ["apple_pie", "baby_back_ribs"] and len(dataset.train_x) == 4
    assert dataset.test[0].impath == str(tmp_path / "food-101" / "images" / "apple_pie" / "test_0.jpg")


def test_sun397_layout(tmp_path):
    classes = [("a/abbey", "abbey"), ("a/apartment_building/outdoor", "outdoor apartment_building"),
               ("b/bakery/shop", "shop bakery")]
    write_split(str(tmp_path / "sun397" / "split_zhou_SUN397.json"), str(tmp_path / "sun397" / "SUN397"),
                three_way(classes))
    dataset = build_dataset(make_cfg(tmp_path, "SUN397"))
    assert dataset.classnames == ["abbey", "outdoor apartment_building", "shop bakery"]
    assert dataset.train_x[-1].impath.endswith(os.path.join("SUN397", "b", "bakery", "shop", "train_3.jpg"))


def write_fgvc(root, variants=("707-320", "A300B4", "Cessna 172", "DHC-1")):
    d = os.path.join(root, "fgvc_aircraft")
    write(os.path.join(d, "variants.txt"), "".join(v + "\n" for v in variants))
    for split, n in (("train", 3), ("val", 2), ("test", 2)):
        lines = []
        for label, variant in enumerate(variants):
            for i in range(n):
                image_id = f"{split[:2]}{label}{i:04d}"
                lines.append(f"{image_id} {variant}\n")
                touch(os.path.join(d, "images", image_id + ".jpg"))
        write(os.path.join(d, f"images_variant_{split}.txt"), "".join(lines))
    return d


def test_fgvc_aircraft_variants_with_spaces(tmp_path, capsys):
    d = write_fgvc(str(tmp_path))
    dataset = build_dataset(make_cfg(tmp_path, "FGVCAircraft", shots=1, subsample="new"))
    assert dataset.classnames == ["Cessna 172", "DHC-1"]
    assert (len(dataset.train_x), len(dataset.val), len(dataset.test)) == (2, 2, 4)
    assert dataset.test[0].impath == os.path.join(d, "images", "te20000.jpg")
    full = build_dataset(make_cfg(tmp_path, "FGVCAircraft"))
    assert full.lab2cname == {0: "707-320", 1: "A300B4", 2: "Cessna 172", 3: "DHC-1"}
    assert (len(full.train_x), len(full.val), len(full.test)) == (12, 8, 8)


def test_fgvc_aircraft_unknown_variant(tmp_path):
    d = write_fgvc(str(tmp_path))
    write(os.path.join(d, "images_variant_val.txt"), "0000001 Boeing 999\n")
    with pytest.raises(ValueError, match=r"images_variant_val.txt: variant 'Boeing 999'.*variants.txt"):
        build_dataset(make_cfg(tmp_path, "FGVCAircraft"))


# ------------------------------------------------------------------ errors


def pets_root(tmp_path):
    classes = [("Abyssinian", "abyssinian"), ("beagle", "beagle")]
    entries = {k: [(f"{folder}_{split_i}.jpg".replace("/", "_"), label, cname)
                   for (folder, cname), label, split_i in [(c, i, f"{k}{j}") for i, c in enumerate(classes)
                                                           for j in range(3)]] for k in ("train", "val", "test")}
    write_split(str(tmp_path / "oxford_pets" / "split_zhou_OxfordPets.json"), str(tmp_path / "oxford_pets" / "images"),
                entries)
    return tmp_path


def test_missing_dataset_folder(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        build_dataset(make_cfg(tmp_path, "OxfordPets", shots=16))
    assert str(err.value) == f"Missing dataset folder: {tmp_path / 'oxford_pets'} (see DATASETS.md#oxfordpets)"
    assert isinstance(err.value, FileNotFoundError)
    assert os.listdir(tmp_path) == []  # no split_fewshot/ created for an absent dataset


def test_missing_split_file(tmp_path):
    root = pets_root(tmp_path)
    os.remove(root / "oxford_pets" / "split_zhou_OxfordPets.json")
    with pytest.raises(DatasetNotFoundError, match=r"Missing split file: .*oxford_pets/split_zhou_OxfordPets.json\. "
                                                   r"Download split_zhou_OxfordPets.json .*tools/make_split.py.*"
                                                   r"DATASETS.md#oxfordpets"):
        build_dataset(make_cfg(root, "OxfordPets"))
    assert snapshot(str(root / "oxford_pets")) == sorted(
        os.path.join("images", n) for n in os.listdir(root / "oxford_pets" / "images"))  # nothing generated


@pytest.mark.parametrize("victim", [0, 2, 5])  # first, last of class 0, last of class 1 in test
def test_missing_listed_image_is_named(tmp_path, victim):
    root = pets_root(tmp_path)
    with open(root / "oxford_pets" / "split_zhou_OxfordPets.json") as f:
        rel = json.load(f)["test"][victim][0]
    missing = str(root / "oxford_pets" / "images" / rel)
    os.remove(missing)
    with pytest.raises(DatasetNotFoundError) as err:
        build_dataset(make_cfg(root, "OxfordPets"))
    assert str(err.value).startswith("Image listed in ") and missing in str(err.value)
    assert str(err.value).endswith("(see DATASETS.md#oxfordpets)")


def test_missing_fewshot_image_is_named(tmp_path):
    root = pets_root(tmp_path)
    split_file = root / "oxford_pets" / "split_zhou_OxfordPets.json"
    with open(split_file) as f:
        middle = json.load(f)["train"][1][0]  # not a spot-checked item, but few-shot checks every pick
    os.remove(root / "oxford_pets" / "images" / middle)
    with pytest.raises(DatasetNotFoundError, match=middle):
        build_dataset(make_cfg(root, "OxfordPets", shots=3))


def test_invalid_subsample_value(tmp_path):
    root = pets_root(tmp_path)
    with pytest.raises(ValueError, match=r"DATASET.SUBSAMPLE_CLASSES must be one of 'all', 'base', 'new', got 'Base'"):
        build_dataset(make_cfg(root, "OxfordPets", subsample="Base"))


def test_only_the_fewshot_cache_is_written(tmp_path):
    root = pets_root(tmp_path)
    before = snapshot(str(root))
    build_dataset(make_cfg(root, "OxfordPets", subsample="base"))
    assert snapshot(str(root)) == before
    build_dataset(make_cfg(root, "OxfordPets", shots=1, seed=3))
    assert sorted(set(snapshot(str(root))) - set(before)) == [os.path.join("oxford_pets", "split_fewshot",
                                                                           "shot_1-seed_3.json")]


# ------------------------------------------------------------------ registry, configs, docs

CONFIGS = {
    "caltech101": "Caltech101", "dtd": "DescribableTextures", "eurosat": "EuroSAT", "fgvc_aircraft": "FGVCAircraft",
    "food101": "Food101", "imagenet": "ImageNet", "imagenet_a": "ImageNetA", "imagenet_r": "ImageNetR",
    "imagenet_sketch": "ImageNetSketch", "imagenetv2": "ImageNetV2", "oxford_flowers": "OxfordFlowers",
    "oxford_pets": "OxfordPets", "stanford_cars": "StanfordCars", "sun397": "SUN397", "ucf101": "UCF101",
}


@pytest.mark.parametrize("config, name", sorted(CONFIGS.items()))
def test_dataset_configs_name_registered_loaders(config, name):
    from dassl.data.datasets.build import DATASET_REGISTRY

    with open(os.path.join(REPO, "configs", "datasets", f"{config}.yaml")) as f:
        cfg = CN.load_cfg(f)
    assert cfg.DATASET.NAME == name and name in DATASET_REGISTRY.registered_names()
    anchor = getattr(DATASET_REGISTRY.get(name), "anchor", None) or name.lower()
    with open(os.path.join(REPO, "DATASETS.md")) as f:
        headings = [line[3:].strip().lower() for line in f if line.startswith("## ")]
    assert anchor in headings  # the section that error messages cite exists


def test_missing_image_folder(tmp_path):
    os.makedirs(tmp_path / "eurosat")
    with pytest.raises(DatasetNotFoundError, match=r"Missing image folder: .*eurosat/2750 \(see DATASETS.md#eurosat\)"):
        build_dataset(make_cfg(tmp_path, "EuroSAT"))
