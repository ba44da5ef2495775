"""Synthetic datasets: generation on first use, layout, registration, splits, few-shot, base/new."""
import json
import os

import pytest

import datasets  # noqa: F401  (registers every loader)
from dassl.config import get_cfg_default
from dassl.data.datasets.build import DATASET_REGISTRY, build_dataset
from datasets.synthetic import (
    GENERATOR_VERSION,
    MARKER,
    SPLIT_SIZES,
    SYNTHETIC_DATASETS,
    ensure_generated,
)
from datasets.synthetic_render import COLOUR_NAMES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# SHA-256 of the raw pixels of every image of the clean dataset, in split-file order.
PINNED_CLEAN_PIXEL_SHA256 = "05512e03e99936f2f3cb976c0261e473f7245d8b7a154cd2c1e8227a98096707"


def _cfg(root, name="SyntheticShapes", shots=-1, subsample="all", seed=1):
    cfg = get_cfg_default()
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NAME = name
    cfg.DATASET.NUM_SHOTS = shots
    cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    cfg.SEED = seed
    return cfg


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("synthetic")
    build_dataset(_cfg(path))  # generates synthetic_shapes/ once for the module
    return path


def test_every_style_is_registered_with_a_config_file():
    assert set(SYNTHETIC_DATASETS) >= {"SyntheticShapes", "SyntheticShapesWarm"}
    for name, style in SYNTHETIC_DATASETS.items():
        assert name in DATASET_REGISTRY
        cfg = get_cfg_default()
        cfg.merge_from_file(os.path.join(REPO, "configs", "datasets", f"synthetic_{style}.yaml"))
        assert cfg.DATASET.NAME == name


def test_full_splits_layout_and_class_names(root):
    ds = build_dataset(_cfg(root))
    per_class = SPLIT_SIZES
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == tuple(100 * per_class[k] for k in ("train", "val", "test"))
    assert ds.num_classes == 100
    assert ds.classnames == sorted(ds.classnames)
    assert ds.lab2cname[0] == "black arrow" and ds.lab2cname[99] == "yellow triangle"
    folder = os.path.join(root, "synthetic_shapes")
    assert sorted(os.listdir(os.path.join(folder, "images")))[:2] == ["black_arrow", "black_circle"]
    item = ds.test[0]
    assert item.impath == os.path.join(folder, "images", "black_arrow", "test_000.png")
    from PIL import Image

    with Image.open(item.impath) as im:
        assert im.size == (32, 32) and im.mode == "RGB"
    with open(os.path.join(folder, "split_zhou_SyntheticShapes.json")) as f:
        split = json.load(f)
    assert split["train"][0] == ["black_arrow/train_000.png", 0, "black arrow"]


def test_generation_is_pinned_and_reused(root, capsys):
    folder = os.path.join(root, "synthetic_shapes")
    with open(os.path.join(folder, MARKER)) as f:
        marker = json.load(f)
    assert marker["version"] == GENERATOR_VERSION and marker["style"] == "clean"
    assert marker["pixel_sha256"] == PINNED_CLEAN_PIXEL_SHA256
    mtime = os.path.getmtime(os.path.join(folder, "images", "red_star", "val_007.png"))
    build_dataset(_cfg(root))
    assert "Generating" not in capsys.readouterr().out
    assert os.path.getmtime(os.path.join(folder, "images", "red_star", "val_007.png")) == mtime
    assert not [e for e in os.listdir(root) if e.startswith(".")]  # no temporary folder left


def test_base_and_new_split_by_colour_with_16_shots(root):
    colours = sorted(COLOUR_NAMES)
    for subsample, expected in (("base", colours[:5]), ("new", colours[5:])):
        ds = build_dataset(_cfg(root, shots=16, subsample=subsample))
        assert ds.num_classes == 50
        assert (len(ds.train_x), len(ds.val), len(ds.test)) == (800, 200, 1000)
        assert {name.split()[0] for name in ds.classnames} == set(expected)
        assert sorted({d.label for d in ds.test}) == list(range(50))
    cache = os.path.join(root, "synthetic_shapes", "split_fewshot", "shot_16-seed_1.json")
    assert os.path.isfile(cache)


def test_fewshot_subset_depends_on_seed_only(root):
    a = build_dataset(_cfg(root, shots=4, seed=3)).train_x
    b = build_dataset(_cfg(root, shots=4, seed=3)).train_x
    c = build_dataset(_cfg(root, shots=4, seed=4)).train_x
    assert [d.impath for d in a] == [d.impath for d in b]
    assert [d.impath for d in a] != [d.impath for d in c]
    assert len(a) == 400


@pytest.mark.slow
def test_incomplete_folder_is_regenerated(tmp_path, capsys):
    folder = tmp_path / "synthetic_shapes_small"
    (folder / "images" / "red_star").mkdir(parents=True)
    (folder / "images" / "red_star" / "train_000.png").write_bytes(b"half-written")
    ds = build_dataset(_cfg(tmp_path, name="SyntheticShapesSmall", shots=1))
    assert "incomplete" in capsys.readouterr().out
    assert len(ds.train_x) == 100
    assert (folder / MARKER).is_file()
    assert os.path.getsize(folder / "images" / "red_star" / "train_000.png") > 100


def test_folder_with_foreign_files_is_not_deleted(tmp_path):
    folder = tmp_path / "synthetic_shapes_fog"
    folder.mkdir()
    (folder / "my_notes.txt").write_text("keep me")
    with pytest.raises(RuntimeError, match="synthetic_shapes_fog.*my_notes.txt"):
        ensure_generated(str(tmp_path), "synthetic_shapes_fog", "fog", "split_zhou_SyntheticShapesFog.json")
    assert (folder / "my_notes.txt").read_text() == "keep me"
