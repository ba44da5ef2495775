"""The shared CoOp data protocol: few-shot draws and their JSON cache, base/new, split files."""
import json
import os
import random

import pytest

from dassl.data.datasets.base_dataset import DatasetBase, Datum
from datasets import protocol
from datasets.oxford_pets import OxfordPets
from tests.helpers import make_cfg


def make_items(image_dir, n_classes=5, per_class=10, touch=True):
    items = [
        Datum(os.path.join(image_dir, f"c{label}", f"{i:03d}.jpg"), label, classname=f"class {label}")
        for i in range(per_class)
        for label in range(n_classes)
    ]
    if touch:
        for item in items:
            os.makedirs(os.path.dirname(item.impath), exist_ok=True)
            open(item.impath, "wb").close()
    return items


@pytest.fixture
def data(tmp_path):
    dataset_dir = tmp_path / "ds"
    image_dir = str(dataset_dir / "images")
    return str(dataset_dir), image_dir, make_items(image_dir)


def paths(items):
    return [item.impath for item in items]


def test_fewshot_matches_upstream_global_random_draw(data):
    """Same stream as Dassl's generate_fewshot_dataset after random.seed(SEED): train, then val."""
    dataset_dir, image_dir, items = data
    train, val = protocol.generate_fewshot_cached(items, items[:30], 4, 3, dataset_dir, image_dir)
    random.seed(3)
    base = DatasetBase()
    ref_train = base.generate_fewshot_dataset(items, num_shots=4)
    ref_val = base.generate_fewshot_dataset(items[:30], num_shots=4)
    assert paths(train) == paths(ref_train) and paths(val) == paths(ref_val)
    assert len(train) == 20 and len(val) == 5 * 4  # 6 val items per class, min(K, 4) = 4 kept


def test_fewshot_val_uses_min_k_4_and_is_independent_of_global_random(data, capsys):
    dataset_dir, image_dir, items = data
    random.seed(123)
    train, val = protocol.generate_fewshot_cached(items, items, 8, 1, dataset_dir + "a", image_dir)
    random.seed(999)
    train2, val2 = protocol.generate_fewshot_cached(items, items, 8, 1, dataset_dir + "b", image_dir)
    assert paths(train) == paths(train2) and paths(val) == paths(val2)
    counts = {label: sum(it.label == label for it in val) for label in range(5)}
    assert counts == {label: 4 for label in range(5)}
    assert len(train) == 40


def test_fewshot_differs_across_seeds_and_keeps_small_classes_whole(data):
    dataset_dir, image_dir, items = data
    a, _ = protocol.generate_fewshot_cached(items, None, 2, 1, dataset_dir, image_dir)
    b, _ = protocol.generate_fewshot_cached(items, None, 2, 2, dataset_dir, image_dir)
    assert paths(a) != paths(b)
    big, _ = protocol.generate_fewshot_cached(items, None, 50, 1, dataset_dir, image_dir)
    assert sorted(paths(big)) == sorted(paths(items))


def test_cache_is_json_with_relative_paths_and_is_reused(data, capsys):
    dataset_dir, image_dir, items = data
    cfg = make_cfg("unused", "OxfordPets", shots=2, seed=5)
    first = protocol.finalize_splits(cfg, dataset_dir, image_dir, items, items, items, anchor="x")
    out = capsys.readouterr().out
    path = os.path.join(dataset_dir, "split_fewshot", "shot_2-seed_5.json")
    assert "Creating a 2-shot dataset" in out and f"Saving preprocessed few-shot data to {path}" in out
    with open(path) as f:
        cache = json.load(f)
    assert cache["key"]["num_shots"] == 2 and cache["key"]["seed"] == 5
    assert all(not os.path.isabs(p) and p.startswith("c") for p in cache["subsets"]["train"])
    second = protocol.finalize_splits(cfg, dataset_dir, image_dir, items, items, items, anchor="x")
    out = capsys.readouterr().out
    assert f"Loading preprocessed few-shot data from {path}" in out and "Creating" not in out
    assert [paths(s) for s in first] == [paths(s) for s in second]


def test_cache_survives_a_moved_data_root(tmp_path, data):
    dataset_dir, image_dir, items = data
    train, _ = protocol.generate_fewshot_cached(items, None, 3, 1, dataset_dir, image_dir)
    moved = str(tmp_path / "moved")
    os.rename(dataset_dir, moved)
    moved_items = [Datum(it.impath.replace(dataset_dir, moved), it.label, classname=it.classname) for it in items]
    again, _ = protocol.generate_fewshot_cached(moved_items, None, 3, 1, moved, os.path.join(moved, "images"))
    assert [p.replace(dataset_dir, moved) for p in paths(train)] == paths(again)
    assert all(p.startswith(moved) for p in paths(again))


def test_stale_cache_is_reported_and_rebuilt(data, capsys):
    dataset_dir, image_dir, items = data
    protocol.generate_fewshot_cached(items, None, 2, 1, dataset_dir, image_dir)
    capsys.readouterr()
    changed = items[:-1]  # the source split lost one image: same K and seed, different subset key
    train, _ = protocol.generate_fewshot_cached(changed, None, 2, 1, dataset_dir, image_dir)
    out = capsys.readouterr().out
    assert "is stale (source_sha256 changed); rebuilding it" in out and "Creating a 2-shot dataset" in out
    relabelled = [Datum(it.impath, (it.label + 1) % 5, classname=it.classname) for it in changed]
    protocol.generate_fewshot_cached(relabelled, None, 2, 1, dataset_dir, image_dir)
    assert "is stale (source_sha256 changed)" in capsys.readouterr().out
    protocol.generate_fewshot_cached(relabelled, None, 2, 1, dataset_dir, image_dir)
    assert "Creating" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "content, reason",
    [
        ("{not json", "corrupt"),
        ('{"schema": "something else"}', "corrupt (not a few-shot cache)"),
        ("[1, 2]", "corrupt"),
    ],
)
def test_corrupt_cache_is_reported_and_rebuilt(data, capsys, content, reason):
    dataset_dir, image_dir, items = data
    expected, _ = protocol.generate_fewshot_cached(items, None, 2, 1, dataset_dir, image_dir)
    path = protocol.fewshot_cache_path(dataset_dir, 2, 1)
    with open(path, "w") as f:
        f.write(content)
    capsys.readouterr()
    train, _ = protocol.generate_fewshot_cached(items, None, 2, 1, dataset_dir, image_dir)
    out = capsys.readouterr().out
    assert f"Few-shot cache {path} is {reason}" in out and "rebuilding it" in out
    assert paths(train) == paths(expected)
    with open(path) as f:
        assert json.load(f)["schema"] == protocol.FEWSHOT_SCHEMA


def test_cache_listing_unknown_images_is_rejected(data, capsys):
    dataset_dir, image_dir, items = data
    protocol.generate_fewshot_cached(items, None, 2, 1, dataset_dir, image_dir)
    path = protocol.fewshot_cache_path(dataset_dir, 2, 1)
    with open(path) as f:
        cache = json.load(f)
    cache["subsets"]["train"][0] = "elsewhere/x.jpg"
    with open(path, "w") as f:
        json.dump(cache, f)
    capsys.readouterr()
    train, _ = protocol.generate_fewshot_cached(items, None, 2, 1, dataset_dir, image_dir)
    assert "is corrupt ('train' does not list images of the split)" in capsys.readouterr().out
    assert all(os.path.isfile(p) for p in paths(train))


def test_negative_seed_draws_without_cache(data, capsys):
    dataset_dir, image_dir, items = data
    train, _ = protocol.generate_fewshot_cached(items, None, 2, -1, dataset_dir, image_dir)
    assert len(train) == 10
    assert not os.path.exists(os.path.join(dataset_dir, "split_fewshot"))
    assert "not cached" in capsys.readouterr().out


def test_subsample_base_new_rule_and_relabelling(capsys):
    items = [Datum(f"/x/{label}_{i}.jpg", label, classname=f"n{label}") for label in (4, 0, 2, 1, 3) for i in range(2)]
    base_train, base_test = protocol.subsample_classes(items, items[:4], subsample="base")
    assert "SUBSAMPLE BASE CLASSES!" in capsys.readouterr().out
    assert sorted({it.classname for it in base_train}) == ["n0", "n1", "n2"]  # ceil(5/2) = 3 base
    assert {it.classname: it.label for it in base_train} == {"n0": 0, "n1": 1, "n2": 2}
    assert [it.impath for it in base_train] == [it.impath for it in items if it.label < 3]  # order kept
    assert [it.classname for it in base_test] == ["n0", "n0"]  # labels come from the first dataset only
    (new_train,) = protocol.subsample_classes(items, subsample="new")
    assert "SUBSAMPLE NEW CLASSES!" in capsys.readouterr().out
    assert {it.classname: it.label for it in new_train} == {"n3": 0, "n4": 1}
    same = protocol.subsample_classes(items, items, subsample="all")
    assert same[0] is items and same[1] is items


def test_invalid_subsample_names_the_config_key(data):
    dataset_dir, image_dir, items = data
    with pytest.raises(ValueError, match=r"DATASET.SUBSAMPLE_CLASSES must be one of 'all', 'base', 'new', got 'bas'"):
        protocol.finalize_splits(make_cfg("x", "OxfordPets", subsample="bas"), dataset_dir, image_dir, items, items,
                                 items, anchor="x")


def test_upstream_static_methods_are_the_shared_ones():
    from datasets.dtd import DescribableTextures

    assert OxfordPets.read_split is protocol.read_split
    assert OxfordPets.save_split is protocol.save_split
    assert OxfordPets.split_trainval is protocol.split_trainval
    assert OxfordPets.subsample_classes is protocol.subsample_classes
    assert DescribableTextures.read_and_split_data is protocol.read_and_split_data


def test_save_and_read_split_round_trip(tmp_path, capsys):
    prefix = str(tmp_path / "images")
    items = make_items(prefix, n_classes=3, per_class=4, touch=False)
    path = str(tmp_path / "split.json")
    OxfordPets.save_split(items[:6], items[6:9], items[9:], path, prefix)
    assert f"Saved split to {path}" in capsys.readouterr().out
    with open(path) as f:
        raw = json.load(f)
    assert raw["train"][0] == ["c0/000.jpg", 0, "class 0"]
    train, val, test = OxfordPets.read_split(path, prefix)
    assert f"Reading split from {path}" in capsys.readouterr().out
    assert (train, val, test) == (items[:6], items[6:9], items[9:])


def test_split_trainval_holds_out_rounded_fraction_per_label(capsys):
    items = [Datum(f"/x/{label}_{i}.jpg", label) for label in range(3) for i in range(10)]
    train, val = protocol.split_trainval(items, p_val=0.2, rng=random.Random(0))
    assert "Splitting trainval into 80% train and 20% val" in capsys.readouterr().out
    assert len(val) == 6 and len(train) == 24
    assert sorted(paths(train + val)) == sorted(paths(items))
    again, _ = protocol.split_trainval(items, p_val=0.2, rng=random.Random(0))
    assert paths(again) == paths(train)


def test_read_and_split_data_is_sorted_and_seeded(tmp_path, capsys):
    image_dir = str(tmp_path / "images")
    make_items(image_dir, n_classes=3, per_class=10)
    os.makedirs(os.path.join(image_dir, "ignored_cls"))
    a, b = (protocol.read_and_split_data(image_dir, ignored=["ignored_cls"], new_cnames={"c1": "Class One"},
                                         rng=random.Random(1)) for _ in range(2))
    assert "Splitting into 50% train, 20% val, and 30% test" in capsys.readouterr().out
    assert [paths(x) for x in a] == [paths(x) for x in b]
    assert [len(x) for x in a] == [15, 6, 9]
    assert {it.label: it.classname for it in a[0]} == {0: "c0", 1: "Class One", 2: "c2"}


def test_unwritable_cache_location_is_reported_not_fatal(data, monkeypatch, capsys):
    dataset_dir, image_dir, items = data

    def read_only(obj, fpath):
        raise PermissionError(13, "Permission denied", fpath)

    monkeypatch.setattr(protocol, "write_json", read_only)
    train, val = protocol.generate_fewshot_cached(items, items, 2, 1, dataset_dir, image_dir)
    out = capsys.readouterr().out
    assert "Could not write few-shot cache" in out and "continuing without it" in out and "Saving" not in out
    assert len(train) == 10 and len(val) == 10
