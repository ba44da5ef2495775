"""Explicit split generation (tools/make_split.py): deterministic, upstream name rules, never silent."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import datasets  # noqa: F401  (registers the loaders)
from dassl.data.datasets.base_dataset import Datum
from dassl.data.datasets.build import build_dataset
from datasets import make_split as ms
from datasets.protocol import DatasetNotFoundError
from tests.helpers import REPO, SHARED_DATA, make_cfg, skip_unless_dir, touch, write


def load(path):
    with open(path) as f:
        return json.load(f)


@pytest.mark.parametrize(
    "meta, expected",
    [
        ("AM General Hummer SUV 2000", "2000 AM General Hummer SUV"),
        ("Acura TL Type-S 2008", "2008 Acura TL Type-S"),
    ],
)
def test_cars_name_rule(meta, expected):
    assert ms.cars_classname(meta) == expected


def test_name_rules():
    assert ms.sun397_classname("a/apartment_building/outdoor") == "outdoor apartment_building"
    assert ms.sun397_classname("/a/abbey") == "abbey"
    assert ms.ucf101_classname("ApplyEyeMakeup") == "Apply_Eye_Makeup"
    assert ms.ucf101_classname("YoYo") == "Yo_Yo"
    assert ms.pets_classname("american_bulldog_12") == "american_bulldog"
    assert ms.pets_classname("Abyssinian_100") == "abyssinian"


def test_eurosat_folder_split_is_deterministic_and_named(tmp_path, capsys):
    image_dir = tmp_path / "eurosat" / "2750"
    for folder in ("SeaLake", "AnnualCrop", "Highway"):
        for i in range(10):
            touch(str(image_dir / folder / f"{folder}_{i}.jpg"))
    path = ms.make_split(str(tmp_path), "EuroSAT", seed=3)
    first = load(path)
    assert first["_generated_by"]["seed"] == 3 and first["_generated_by"]["comparable_with_coop"] is False
    assert [len(first[k]) for k in ("train", "val", "test")] == [15, 6, 9]
    assert {e[1]: e[2] for e in first["train"]} == {0: "Annual Crop Land", 1: "Highway or Road", 2: "Sea or Lake"}
    with pytest.raises(FileExistsError, match="--force"):
        ms.make_split(str(tmp_path), "EuroSAT", seed=3)
    ms.make_split(str(tmp_path), "EuroSAT", seed=3, force=True)
    assert load(path) == first
    ms.make_split(str(tmp_path), "EuroSAT", seed=4, force=True)
    assert load(path)["train"] != first["train"]
    capsys.readouterr()
    dataset = build_dataset(make_cfg(tmp_path, "EuroSAT"))
    assert "generated locally by tools/make_split.py" in capsys.readouterr().out
    assert dataset.classnames == ["Annual Crop Land", "Highway or Road", "Sea or Lake"]


def test_caltech101_ignores_background_and_renames(tmp_path):
    image_dir = tmp_path / "caltech-101" / "101_ObjectCategories"
    for folder in ("BACKGROUND_Google", "Faces", "Faces_easy", "Leopards", "accordion", "airplanes"):
        for i in range(4):
            touch(str(image_dir / folder / f"image_{i:04d}.jpg"))
    ms.make_split(str(tmp_path), "Caltech101")
    dataset = build_dataset(make_cfg(tmp_path, "Caltech101"))
    assert dataset.classnames == ["face", "leopard", "accordion", "airplane"]
    assert os.path.relpath(dataset.train_x[0].impath, image_dir).startswith("Faces/")


def test_sun397_from_official_lists(tmp_path):
    d = tmp_path / "sun397"
    cats = ["/a/abbey", "/a/apartment_building/outdoor"]
    write(str(d / "ClassName.txt"), "".join(c + "\n" for c in cats))
    train = [f"{c}/sun_{i}.jpg" for c in cats for i in range(5)]
    test = [f"{c}/sun_t{i}.jpg" for c in cats for i in range(2)]
    write(str(d / "Training_01.txt"), "".join(p + "\n" for p in train))
    write(str(d / "Testing_01.txt"), "".join(p + "\n" for p in test))
    for p in train + test:
        touch(str(d / "SUN397" / p.lstrip("/")))
    ms.make_split(str(tmp_path), "SUN397")
    split = load(d / "split_zhou_SUN397.json")
    assert split["test"][-1] == ["a/apartment_building/outdoor/sun_t1.jpg", 1, "outdoor apartment_building"]
    dataset = build_dataset(make_cfg(tmp_path, "SUN397"))
    assert dataset.classnames == ["abbey", "outdoor apartment_building"]
    assert (len(dataset.train_x), len(dataset.val), len(dataset.test)) == (8, 2, 4)


def test_ucf101_from_official_lists(tmp_path):
    lists = tmp_path / "ucf101" / "ucfTrainTestlist"
    write(str(lists / "classInd.txt"), "1 ApplyEyeMakeup\n2 YoYo\n")
    train = [f"{a}/v_{a}_g{g:02d}_c01.avi" for a in ("ApplyEyeMakeup", "YoYo") for g in range(5)]
    write(str(lists / "trainlist01.txt"), "".join(f"{p} {1 + (i >= 5)}\n" for i, p in enumerate(train)))
    write(str(lists / "testlist01.txt"), "ApplyEyeMakeup/v_ApplyEyeMakeup_g20_c01.avi\nYoYo/v_YoYo_g20_c01.avi\n")
    frames = tmp_path / "ucf101" / "UCF-101-midframes"
    for a, n in (("Apply_Eye_Makeup", "ApplyEyeMakeup"), ("Yo_Yo", "YoYo")):
        for g in list(range(5)) + [20]:
            touch(str(frames / a / f"v_{n}_g{g:02d}_c01.jpg"))
    ms.make_split(str(tmp_path), "UCF101")
    split = load(tmp_path / "ucf101" / "split_zhou_UCF101.json")
    assert split["test"] == [["Apply_Eye_Makeup/v_ApplyEyeMakeup_g20_c01.jpg", 0, "Apply_Eye_Makeup"],
                             ["Yo_Yo/v_YoYo_g20_c01.jpg", 1, "Yo_Yo"]]
    assert len(build_dataset(make_cfg(tmp_path, "UCF101")).train_x) == 8


def test_oxford_pets_from_annotations(tmp_path):
    ann = tmp_path / "oxford_pets" / "annotations"
    stems = [f"Abyssinian_{i}" for i in range(5)] + [f"american_bulldog_{i}" for i in range(5)]
    write(str(ann / "trainval.txt"), "#Image CLASS-ID SPECIES BREED ID\n" + "".join(
        f"{s} {1 + (i >= 5)} 1 1\n" for i, s in enumerate(stems)))
    write(str(ann / "test.txt"), "Abyssinian_9 1 1 1\namerican_bulldog_9 2 1 1\n")   # every class tested
    for s in stems + ["Abyssinian_9", "american_bulldog_9"]:
        touch(str(tmp_path / "oxford_pets" / "images" / f"{s}.jpg"))
    ms.make_split(str(tmp_path), "OxfordPets")
    dataset = build_dataset(make_cfg(tmp_path, "OxfordPets"))
    assert dataset.classnames == ["abyssinian", "american_bulldog"]
    assert (len(dataset.train_x), len(dataset.val), len(dataset.test)) == (8, 2, 2)


def test_flowers_and_cars_from_mat_files(tmp_path):
    from scipy.io import savemat

    d = tmp_path / "oxford_flowers"
    labels = [1, 2] * 10
    os.makedirs(d / "jpg")
    savemat(str(d / "imagelabels.mat"), {"labels": np.array([labels], dtype=np.uint8)})
    write(str(d / "cat_to_name.json"), json.dumps({"1": "pink primrose", "2": "hard-leaved pocket orchid"}))
    for i in range(len(labels)):
        touch(str(d / "jpg" / f"image_{i + 1:05d}.jpg"))
    ms.make_split(str(tmp_path), "OxfordFlowers")
    flowers = build_dataset(make_cfg(tmp_path, "OxfordFlowers"))
    assert flowers.classnames == ["pink primrose", "hard-leaved pocket orchid"]
    assert (len(flowers.train_x), len(flowers.val), len(flowers.test)) == (10, 4, 6)
    assert flowers.lab2cname[1] == "hard-leaved pocket orchid"

    c = tmp_path / "stanford_cars"
    anno_t = [("fname", "O"), ("class", "O")]
    names = np.array(["AM General Hummer SUV 2000", "Acura RL Sedan 2012"], dtype=object)
    os.makedirs(c / "devkit")
    savemat(str(c / "devkit" / "cars_meta.mat"), {"class_names": names.reshape(1, -1)})
    train = np.array([(f"{i:05d}.jpg", 1 + i % 2) for i in range(1, 11)], dtype=anno_t).reshape(1, -1)
    test = np.array([("00001.jpg", 2), ("00002.jpg", 1)], dtype=anno_t).reshape(1, -1)   # every class tested
    savemat(str(c / "devkit" / "cars_train_annos.mat"), {"annotations": train})
    savemat(str(c / "cars_test_annos_withlabels.mat"), {"annotations": test})
    for i in range(1, 11):
        touch(str(c / "cars_train" / f"{i:05d}.jpg"))
    touch(str(c / "cars_test" / "00001.jpg"))
    touch(str(c / "cars_test" / "00002.jpg"))
    ms.make_split(str(tmp_path), "StanfordCars")
    split = load(c / "split_zhou_StanfordCars.json")
    assert split["test"] == [["cars_test/00001.jpg", 1, "2012 Acura RL Sedan"],
                             ["cars_test/00002.jpg", 0, "2000 AM General Hummer SUV"]]
    cars = build_dataset(make_cfg(tmp_path, "StanfordCars"))
    assert cars.classnames == ["2000 AM General Hummer SUV", "2012 Acura RL Sedan"]


def test_missing_annotation_file_is_named(tmp_path):
    os.makedirs(tmp_path / "sun397")
    with pytest.raises(DatasetNotFoundError, match=r"sun397/ClassName.txt.*DATASETS.md#sun397"):
        ms.make_split(str(tmp_path), "SUN397")


@pytest.mark.slow
def test_command_line(tmp_path, capsys):
    for i in range(4):
        touch(str(tmp_path / "dtd" / "images" / "banded" / f"banded_{i:04d}.jpg"))
    args = ["--root", str(tmp_path), "--dataset", "DescribableTextures", "--seed", "2"]
    done = subprocess.run([sys.executable, str(REPO / "tools" / "make_split.py")] + args,
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "DescribableTextures: 2 train, 1 val, 1 test images" in done.stdout
    with pytest.raises(SystemExit) as exit_info:
        ms.main(args)
    assert exit_info.value.code == 1 and "exists; pass --force" in capsys.readouterr().err


# ------------------------------------------------------------------ comparable with CoOp's split


def test_identical_split_is_tagged_comparable_and_read_without_note(tmp_path, capsys):
    image_dir = tmp_path / "dtd" / "images"
    for folder in ("banded", "blotchy"):
        for i in range(10):
            touch(str(image_dir / folder / f"{folder}_{i:04d}.jpg"))
    path = ms.make_split(str(tmp_path), "DescribableTextures", seed=3)
    first = load(path)
    meta = first["_generated_by"]
    assert meta["comparable_with_coop"] is False and meta["sha256"] == ms.split_digests(first)
    assert "not comparable" in capsys.readouterr().out
    # The same split again, with these digests as "the published split": comparable, no note.
    ms.make_split(str(tmp_path), "DescribableTextures", seed=3, force=True, reference=meta["sha256"])
    again = load(path)
    assert again["_generated_by"]["comparable_with_coop"] is True
    assert {k: again[k] for k in ("train", "val", "test")} == {k: first[k] for k in ("train", "val", "test")}
    capsys.readouterr()
    build_dataset(make_cfg(tmp_path, "DescribableTextures"))
    assert "not comparable" not in capsys.readouterr().out
    # Another seed: different triples, not comparable, and the loader says so.
    ms.make_split(str(tmp_path), "DescribableTextures", seed=4, force=True, reference=meta["sha256"])
    assert load(path)["_generated_by"]["comparable_with_coop"] is False
    capsys.readouterr()
    build_dataset(make_cfg(tmp_path, "DescribableTextures"))
    assert "results are not comparable with published numbers" in capsys.readouterr().out


def test_digest_covers_path_label_name_and_order():
    split = {"train": [["a/1.jpg", 0, "a"], ["b/2.jpg", 1, "b"]], "val": [], "test": []}
    base = ms.split_digests(split)
    for change in (lambda s: s["train"].reverse(), lambda s: s["train"][0].__setitem__(2, "A"),
                   lambda s: s["train"][0].__setitem__(1, 1), lambda s: s["train"][0].__setitem__(0, "a/9.jpg")):
        other = json.loads(json.dumps(split))
        change(other)
        assert ms.split_digests(other)["train"] != base["train"]


@pytest.mark.parametrize("name", sorted(ms.COOP_SPLIT_SHA256))
def test_recorded_digests_are_those_of_coops_files(name):
    path = SHARED_DATA / "coop_splits" / f"split_zhou_{name}.json"
    skip_unless_dir(path.parent)
    published = load(path)
    assert ms.comparable_with_coop(name, published)
    published["test"] = published["test"][:-1]
    assert not ms.comparable_with_coop(name, published)


def test_generator_reproducing_coops_split_is_comparable(tmp_path, monkeypatch, capsys):
    published_path = SHARED_DATA / "coop_splits" / "split_zhou_DescribableTextures.json"
    skip_unless_dir(published_path.parent)
    published = load(published_path)
    image_dir = tmp_path / "dtd" / "images"
    first_last = {}
    for key in ("train", "val", "test"):
        for rel, label, _ in published[key]:
            first_last.setdefault((key, label), []).append(rel)
    for rels in first_last.values():  # the images the loader spot-checks
        touch(str(image_dir / rels[0]))
        touch(str(image_dir / rels[-1]))

    def coop_generator(dataset_dir, image_dir_, rng, anchor):
        return tuple([Datum(os.path.join(image_dir_, r), lab, classname=n) for r, lab, n in published[k]]
                     for k in ("train", "val", "test"))

    monkeypatch.setitem(ms.GENERATORS, "DescribableTextures", coop_generator)
    path = ms.make_split(str(tmp_path), "DescribableTextures")
    assert load(path)["_generated_by"]["comparable_with_coop"] is True
    assert "identical to CoOp's published split" in capsys.readouterr().out
    dataset = build_dataset(make_cfg(tmp_path, "DescribableTextures"))
    assert "not comparable" not in capsys.readouterr().out and dataset.num_classes == 47
