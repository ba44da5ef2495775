"""Bad data is found before any work is spent: split-file consistency, NUM_SHOTS, the pre-flight
image check (every bad file in one error, cached when passed)."""
from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest
from PIL import Image

import datasets  # noqa: F401  (registers the loaders)
from dassl.config import get_cfg_default
from dassl.data import DataManager, ImageCheckError, image_check
from dassl.data.datasets.build import build_dataset
from dassl.engine import TrainerX
from datasets.protocol import DatasetNotFoundError, SplitFileError, read_split
from datasets.split_checks import CanonicalNames, check_split, folder_classnames
from tests.helpers import SHARED_DATA, make_cfg, skip_unless_dir, write

CLASSES = ("banded", "blotchy", "braided", "bubbly")
SIZES = {"train": 4, "val": 2, "test": 3}


def save_jpeg(path, value: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    noise = np.random.default_rng(value).integers(0, 64, (48, 48, 3))
    Image.fromarray((noise + value).astype(np.uint8)).save(path, quality=95)  # body >> header (~600 bytes)


def dtd_root(tmp_path, classes=CLASSES, images=True) -> tuple:
    """``<tmp>/dtd/images/<class>/<split>_<i>.jpg`` (tiny real JPEGs) and its split file."""
    image_dir = tmp_path / "dtd" / "images"
    split = {k: [] for k in SIZES}
    for label, name in enumerate(classes):
        for key, n in SIZES.items():
            for i in range(n):
                rel = f"{name}/{key}_{i}.jpg"
                if images:
                    save_jpeg(str(image_dir / rel), 40 * label + i)
                split[key].append([rel, label, name])
    write_split(tmp_path, split)
    return tmp_path, split


def write_split(root, split) -> str:
    path = str(root / "dtd" / "split_zhou_DescribableTextures.json")
    write(path, json.dumps(split))
    return path


def image_path(root, rel) -> str:
    return str(root / "dtd" / "images" / rel)


# ------------------------------------------------------------------ split-file consistency


def read_bad(tmp_path, split, **kw):
    path = write_split(tmp_path, split)
    with pytest.raises(SplitFileError) as err:
        read_split(path, str(tmp_path), **kw)
    message = str(err.value)
    assert message.startswith(f"Split file {path} is inconsistent:") and "tools/make_split.py" in message
    return message


def test_label_with_two_class_names_lists_the_minority_entries(tmp_path):
    _, split = dtd_root(tmp_path, images=False)
    split["val"][3][2] = "bandedd"  # label 1 ("blotchy"), entry val[3]
    message = read_bad(tmp_path, split)
    assert "label 1 has 2 class names ('blotchy' x8, 'bandedd' x1)" in message
    assert 'val[3] ["blotchy/val_1.jpg", 1, "bandedd"]' in message
    assert issubclass(SplitFileError, ValueError)


def test_class_name_with_two_labels_is_an_error(tmp_path):
    _, split = dtd_root(tmp_path, images=False)
    split["test"][0][1] = 2  # "banded" entry labelled 2
    message = read_bad(tmp_path, split)
    assert "class name 'banded' has 2 labels (0 x8, 2 x1); entries not labelled 0" in message
    assert 'test[0] ["banded/test_0.jpg", 2, "banded"]' in message


@pytest.mark.parametrize(
    "relabel, expected",
    [({0: 1, 1: 2, 2: 3, 3: 4}, "found 1..4, missing [0];"), ({0: 0, 1: 1, 2: 3, 3: 4}, "found 0..4, missing [2];")],
)
def test_labels_must_be_zero_to_n_minus_one(tmp_path, relabel, expected):
    _, split = dtd_root(tmp_path, images=False)
    for entries in split.values():
        for entry in entries:
            entry[1] = relabel[entry[1]]
    message = read_bad(tmp_path, split)
    assert f"labels must be 0..3 for 4 distinct labels, {expected} entries outside" in message
    assert 'train[12] ["bubbly/train_0.jpg", 4, "bubbly"]' in message


def test_malformed_entries_are_all_listed_with_a_limit(tmp_path):
    _, split = dtd_root(tmp_path, images=False)
    for i in range(12):
        split["train"][i][1] = str(split["train"][i][1])  # "0" instead of 0
    split["test"].append(["x.jpg", 0])
    message = read_bad(tmp_path, split)
    assert "13 entries are not [relative_path (str), label (int), classname (str)]" in message
    assert 'train[0] ["banded/train_0.jpg", "0", "banded"]' in message and "... and 3 more" in message


def test_invalid_json_and_missing_keys_are_split_file_errors(tmp_path):
    path = tmp_path / "dtd" / "split_zhou_DescribableTextures.json"
    write(str(path), "{not json")
    with pytest.raises(SplitFileError, match="not valid JSON"):
        read_split(str(path), str(tmp_path))
    write(str(path), json.dumps({"train": []}))
    with pytest.raises(SplitFileError, match="keys 'train', 'val' and 'test'"):
        read_split(str(path), str(tmp_path))


def test_folder_names_are_canonical_for_dtd(tmp_path):
    root, split = dtd_root(tmp_path)
    for entries in split.values():
        for entry in entries:
            if entry[1] == 2:
                entry[2] = "plaited"  # consistent within the split, but not the folder's name
    write_split(root, split)
    with pytest.raises(SplitFileError) as err:
        build_dataset(make_cfg(root, "DescribableTextures"))
    assert "class names differ from the class folders of" in str(err.value)
    assert "folder 'braided': 'plaited' in 9 entries (first train[8]), expected 'braided'" in str(err.value)


def test_label_canonical_names_list_every_difference(tmp_path):
    _, split = dtd_root(tmp_path, images=False)
    canonical = CanonicalNames(source="names.txt", by_label={0: "banded", 1: "blotched", 2: "braided"})
    with pytest.raises(SplitFileError) as err:
        check_split("s.json", split, canonical)
    message = str(err.value)
    assert "2 class names differ from names.txt" in message
    assert "label 1: 'blotchy' in the split, 'blotched' in names.txt" in message
    assert "label 3: 'bubbly' in the split, no such label in names.txt" in message


def test_renamed_folders_caltech_style(tmp_path):
    split = {"train": [["Faces/a.jpg", 0, "face"], ["accordion/b.jpg", 1, "accordion"]], "val": [], "test": []}
    check_split("s.json", split, folder_classnames("/x", {"Faces": "face"}))
    split["train"][0][2] = "Faces"
    with pytest.raises(SplitFileError, match="folder 'Faces': 'Faces' in 1 entries"):
        check_split("s.json", split, folder_classnames("/x", {"Faces": "face"}))


FOLDER_DATASETS = {"Caltech101": "caltech101", "DescribableTextures": "dtd", "EuroSAT": "eurosat", "UCF101": "ucf101"}


@pytest.mark.parametrize("name", sorted(FOLDER_DATASETS))
def test_coop_split_files_pass_and_a_tampered_copy_fails(name):
    splits = SHARED_DATA / "coop_splits"
    skip_unless_dir(splits)
    from dassl.data.datasets.build import DATASET_REGISTRY

    with open(splits / f"split_zhou_{name}.json") as f:
        split = json.load(f)
    loader = DATASET_REGISTRY.get(name)
    canonical = folder_classnames("images", loader.folder_names)
    check_split(name, split, canonical)
    tampered = copy.deepcopy(split)
    label = tampered["test"][-1][1]
    for entries in tampered.values():
        for entry in entries:
            if entry[1] == label:
                entry[2] = entry[2] + " (edited)"
    with pytest.raises(SplitFileError, match=r"1 class names differ"):
        check_split(name, tampered, canonical)


# ------------------------------------------------------------------ NUM_SHOTS


@pytest.mark.parametrize("shots", [-3, -2, 2.5, True, "16"])
def test_meaningless_num_shots_name_the_key(tmp_path, shots):
    root, _ = dtd_root(tmp_path)
    cfg = make_cfg(root, "DescribableTextures")
    cfg.DATASET.NUM_SHOTS = shots
    with pytest.raises(ValueError, match=r"DATASET.NUM_SHOTS must be -1 or 0 \(use all images\) or a positive"):
        build_dataset(cfg)


@pytest.mark.parametrize("shots, n_train", [(-1, 16), (0, 16), (2, 8)])
def test_allowed_num_shots(tmp_path, shots, n_train):
    root, _ = dtd_root(tmp_path)
    assert len(build_dataset(make_cfg(root, "DescribableTextures", shots=shots)).train_x) == n_train


# ------------------------------------------------------------------ missing images at build time


def test_build_time_lists_every_missing_image(tmp_path):
    root, split = dtd_root(tmp_path)
    victims = [split["train"][0][0], split["train"][1][0], split["test"][4][0]]  # spot-checked, middle, middle
    for rel in victims:
        os.remove(image_path(root, rel))
    with pytest.raises(DatasetNotFoundError) as err:
        build_dataset(make_cfg(root, "DescribableTextures"))
    message = str(err.value)
    assert "all 3 missing images" in message and message.endswith("(see DATASETS.md#describabletextures)")
    for rel, ref in zip(victims, ("train[0]", "train[1]", "test[4]")):
        assert f"{image_path(root, rel)} ({ref})" in message


# ------------------------------------------------------------------ pre-flight image check


def dm_cfg(root, level=None, shots=0, subsample="all"):
    cfg = get_cfg_default()
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NAME = "DescribableTextures"
    cfg.DATASET.NUM_SHOTS = shots
    cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.VERBOSE = False
    cfg.USE_CUDA = False
    if level is not None:
        cfg.DATASET.CHECK_IMAGES = level  # the key may be absent from the defaults
    return cfg


def break_images(root, split):
    """A missing file, an undecodable file and a truncated JPEG, none of them spot-checked."""
    missing, garbage, truncated = split["train"][1][0], split["test"][1][0], split["val"][2][0]
    os.remove(image_path(root, missing))
    with open(image_path(root, garbage), "wb") as f:
        f.write(b"not an image at all")
    with open(image_path(root, truncated), "rb") as f:
        data = f.read()
    with open(image_path(root, truncated), "wb") as f:
        f.write(data[: len(data) * 3 // 4])  # header intact, pixel data cut
    return missing, garbage, truncated


def test_every_bad_file_is_listed_with_its_entries_and_nothing_is_built(tmp_path):
    root, split = dtd_root(tmp_path)
    missing, garbage, truncated = break_images(root, split)
    built = []

    class RecordingTrainer(TrainerX):
        def build_model(self):
            built.append("model")

    split_file = str(root / "dtd" / "split_zhou_DescribableTextures.json")
    with pytest.raises(ImageCheckError) as err:
        RecordingTrainer(dm_cfg(root, "full"))
    assert built == []  # the data check stops the run before the model is built
    message = str(err.value)
    assert message.startswith("3 of 36 images this run would read are bad (1 missing, 2 cannot be decoded; "
                              "DATASET.CHECK_IMAGES='full'); nothing was trained.")
    assert "DATASETS.md#checks-before-training" in message
    assert f"{image_path(root, missing)}: missing (run lists: train_x[1]; {split_file} train[1])" in message
    assert f"{image_path(root, garbage)}: cannot decode" in message and f"test[1]; {split_file} test[1])" in message
    assert f"{image_path(root, truncated)}: cannot decode" in message and f"{split_file} val[2])" in message
    assert isinstance(err.value, OSError)


def test_header_level_is_the_default_and_misses_only_truncated_bodies(tmp_path):
    root, split = dtd_root(tmp_path)
    missing, garbage, truncated = break_images(root, split)
    with pytest.raises(ImageCheckError) as err:
        DataManager(dm_cfg(root))  # no CHECK_IMAGES key: "header"
    message = str(err.value)
    assert "2 of 36 images" in message and "DATASET.CHECK_IMAGES='header'" in message
    assert image_path(root, missing) in message and image_path(root, garbage) in message
    assert image_path(root, truncated) not in message


def test_only_the_images_of_the_run_are_checked(tmp_path):
    root, split = dtd_root(tmp_path)
    bad = split["test"][10][0]  # class 3 (bubbly): a "new" class
    assert bad.startswith("bubbly/")
    with open(image_path(root, bad), "wb") as f:
        f.write(b"junk")
    DataManager(dm_cfg(root, subsample="base", shots=2))  # classes 0, 1 only: passes
    with pytest.raises(ImageCheckError, match="1 of 10 images"):  # classes 2, 3: 1 train + 1 val + 3 test each
        DataManager(dm_cfg(root, subsample="new", shots=1))


def cache_files(root):
    folder = root / "dtd" / "split_fewshot"
    return sorted(n for n in os.listdir(folder) if n.startswith("image_check-")) if folder.is_dir() else []


def test_passed_check_is_cached_and_invalidated(tmp_path, monkeypatch, capsys):
    root, split = dtd_root(tmp_path)
    calls = []
    real = image_check.check_paths
    monkeypatch.setattr(image_check, "check_paths", lambda paths, level: calls.append(level) or real(paths, level))
    DataManager(dm_cfg(root))
    assert calls == ["header"] and len(cache_files(root)) == 1
    assert "Image check (header): 36 images OK" in capsys.readouterr().out
    DataManager(dm_cfg(root))
    assert calls == ["header"] and "36 images passed before (cached in" in capsys.readouterr().out
    DataManager(dm_cfg(root, "full"))  # another level: its own cache file
    assert calls == ["header", "full"] and len(cache_files(root)) == 2
    DataManager(dm_cfg(root, shots=2))  # another checked list
    assert calls == ["header", "full", "header"] and len(cache_files(root)) == 3
    # the split file changes (same lists): checked again
    path = root / "dtd" / "split_zhou_DescribableTextures.json"
    path.write_text(json.dumps(split, indent=1))
    DataManager(dm_cfg(root))
    assert calls[-1] == "header" and len(calls) == 4
    # an image is removed from a folder: the folder's mtime changes, checked again and reported
    os.remove(image_path(root, split["train"][2][0]))
    with pytest.raises(ImageCheckError, match="1 of 36 images"):  # build-time spot check misses train[2]
        DataManager(dm_cfg(root))
    assert len(calls) == 5


def test_cache_file_content_and_off_level(tmp_path, capsys, monkeypatch):
    root, _ = dtd_root(tmp_path)
    DataManager(dm_cfg(root))
    (name,) = cache_files(root)
    with open(root / "dtd" / "split_fewshot" / name) as f:
        cache = json.load(f)
    assert cache["schema"] == image_check.SCHEMA and cache["key"]["level"] == "header"
    assert cache["key"]["images"] == 36 and cache["key"]["split_file"].endswith("split_zhou_DescribableTextures.json")
    monkeypatch.setattr(image_check, "check_paths", lambda *a: pytest.fail("checked with CHECK_IMAGES='off'"))
    capsys.readouterr()
    DataManager(dm_cfg(root, "off"))
    assert "Image check skipped (DATASET.CHECK_IMAGES='off')" in capsys.readouterr().out


def test_invalid_level_names_the_key(tmp_path):
    root, _ = dtd_root(tmp_path)
    with pytest.raises(ValueError, match=r"DATASET.CHECK_IMAGES must be one of 'header', 'full', 'off', got 'fast'"):
        DataManager(dm_cfg(root, "fast"))


def test_unwritable_cache_is_reported_not_fatal(tmp_path, monkeypatch, capsys):
    root, _ = dtd_root(tmp_path)

    def fail(*args):
        raise PermissionError("read-only")

    monkeypatch.setattr(image_check, "write_json", fail)
    DataManager(dm_cfg(root))
    assert "Could not write image-check cache" in capsys.readouterr().out


def test_real_flowers_slice_passes_the_full_check(tmp_path):
    source = SHARED_DATA / "real" / "oxford_flowers"
    skip_unless_dir(source)
    dataset_dir = tmp_path / "oxford_flowers"
    dataset_dir.mkdir()
    os.symlink(source / "jpg", dataset_dir / "jpg")
    (dataset_dir / "split_zhou_OxfordFlowers.json").write_bytes((source / "split_zhou_OxfordFlowers.json").read_bytes())
    cfg = dm_cfg(tmp_path, "full")
    cfg.DATASET.NAME = "OxfordFlowers"
    dm = DataManager(cfg)
    assert len(dm.dataset.test) == 79 and len(os.listdir(dataset_dir / "split_fewshot")) == 1


# --- coverage: every class in every split, duplicates, train/test overlap; base/new cut ----------

def _three_class_split():
    return {"train": [["a/1.jpg", 0, "a"], ["b/1.jpg", 1, "b"], ["c/1.jpg", 2, "c"]],
            "val": [["a/2.jpg", 0, "a"], ["b/2.jpg", 1, "b"], ["c/2.jpg", 2, "c"]],
            "test": [["a/3.jpg", 0, "a"], ["b/3.jpg", 1, "b"], ["c/3.jpg", 2, "c"]]}


@pytest.mark.parametrize("change,expected", [
    (lambda s: s.update(train=s["train"][:1] + s["train"][2:], val=s["val"][:1] + s["val"][2:]),
     "1 classes have no 'train' entry:\n  label 1 'b'\n1 classes have no 'val' entry:\n  label 1 'b'"),
    (lambda s: s["train"].append(["a/1.jpg", 0, "a"]),
     "1 'train' entries list an image already listed:\n  train[3] [\"a/1.jpg\", 0, \"a\"] (also train[0])"),
    (lambda s: s["train"].append(["c/3.jpg", 2, "c"]),
     "1 'train' images are also test images:\n  train[3] [\"c/3.jpg\", 2, \"c\"] (also test[2])"),
])
def test_coverage_duplicates_and_overlap_are_listed(change, expected):
    split = _three_class_split()
    check_split("s.json", split)
    change(split)
    with pytest.raises(SplitFileError) as info:
        check_split("s.json", split)
    assert str(info.value).startswith(f"Split file s.json is inconsistent:\n{expected}\nFix: ")


def test_base_new_cut_comes_from_the_full_class_list():
    from dassl.data.datasets import Datum
    from datasets.protocol import subsample_classes

    def items(labels):
        return [Datum(impath=f"/x/{i}.jpg", label=label, classname=str(label)) for i, label in enumerate(labels)]

    train, test = items([0, 2, 3]), items([0, 1, 2, 3])          # class 1 has no train entry
    base_train, base_test = subsample_classes(train, test, subsample="base")
    assert sorted({d.classname for d in base_test}) == ["0", "1"]  # base = first half of all 4 classes
    assert sorted({d.classname for d in base_train}) == ["0"]
    _, new_test = subsample_classes(train, test, subsample="new")
    assert sorted({d.classname for d in new_test}) == ["2", "3"]
