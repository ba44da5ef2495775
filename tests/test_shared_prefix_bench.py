"""The benchmark of the exact speed-ups (bench/bench_mmlop.py): real class names by default, the
shipped config's batch sizes, paired ratios that print no number when the spread covers 1, and a
whole run on a tiny CLIP whose every row records its setting."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from bench.bench_mmlop import (
    CONFIG,
    EXTRA,
    IMAGENET_NAMES,
    MODES,
    REPO,
    Bench,
    _fmt_ratio,
    _parser,
    class_names,
    config_batch_sizes,
    main,
    memory_worker,
    paired_ratios,
    ratio_interval,
)
from trainers.core import anchors
from trainers.core import model as prompted_model

SHARED = os.path.join(REPO, "..", "shared", "data")
DTD_SPLIT = os.path.join(SHARED, "coop_splits", "split_zhou_DescribableTextures.json")


def test_default_class_names_are_imagenets_real_1000():
    with open(IMAGENET_NAMES) as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    wnids = [line.split(" ", 1)[0] for line in lines]
    assert len(lines) == 1000 and len(set(wnids)) == 1000 and wnids == sorted(wnids)
    names, label = class_names(1000)
    assert names == [line.split(" ", 1)[1] for line in lines]
    assert names[:3] == ["tench", "goldfish", "great white shark"] and names[-1] == "toilet paper"
    assert label == "ImageNet (real names)"
    subset, label = class_names(100)
    assert subset == names[::10] and label == "ImageNet (real names), 100 of 1000 evenly spaced"


def test_synthetic_names_only_when_asked_and_labelled_so():
    names, label = class_names(20, "synthetic")
    assert len(set(names)) == 20 and label.startswith("synthetic") and "not real" in label


@pytest.mark.skipif(not os.path.isfile(DTD_SPLIT), reason="../shared/data (CoOp split files) is absent")
def test_a_datasets_own_names_from_its_split_file():
    names, label = class_names(47, DTD_SPLIT)
    assert names[:3] == ["banded", "blotchy", "braided"] and len(names) == 47
    assert label.endswith("(real names)")


def test_too_many_classes_for_the_names_stops_before_any_work(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "bench/bench_mmlop.py", "--tiny", "--device", "cpu",
                           "--classes", "1001", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[0] == (
        "bench_mmlop.py: --classes 1001: ImageNet (real names) has only 1000 class names; ask for "
        "at most 1000 classes or --names synthetic")
    assert not out.exists() and not os.path.exists(str(out) + ".partial")


def test_a_names_file_that_is_not_json_is_named_in_the_first_line(tmp_path):
    bad = tmp_path / "split_zhou_Broken.json"
    bad.write_text('{"train": [')
    proc = subprocess.run([sys.executable, "bench/bench_mmlop.py", "--tiny", "--device", "cpu",
                           "--names", str(bad), "--json", str(tmp_path / "bench.json")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and not (tmp_path / "bench.json").exists()
    assert proc.stderr.splitlines()[0].startswith(f"bench_mmlop.py: --names {bad}: not valid JSON (")


def test_default_batch_sizes_are_the_shipped_configs():
    assert os.path.basename(CONFIG) == "vit_b16_c2_ep30_batch4_4+4ctx.yaml"
    assert config_batch_sizes() == (4, 100)


def test_paired_ratios_and_unresolved_spreads_print_no_ratio():
    seconds = {"eval:reference": [10.0, 12.0, 11.0], "eval:all": [6.0, 6.6, 6.2],
               "eval:image": [4.0, 4.4, 4.2], "eval:trunc": [6.5, 6.0, 6.6]}
    ratios = paired_ratios("eval", seconds, 10)          # class text + image tower per round
    assert ratios["all / reference, 1 test batch"] == pytest.approx([10 / 14, 11 / 16.4, 10.4 / 15.2])
    assert ratios["all / reference, 10 test batches"][0] == pytest.approx((6.0 + 10 * 4.0) / 140.0)
    assert ratios["limit: image / reference"][1] == pytest.approx(4.4 / 16.4)
    assert ratios["all / trunc, class text"] == pytest.approx([6.0 / 6.5, 1.1, 6.2 / 6.6])
    clear = ratio_interval(ratios["limit: image / reference"])
    assert clear["resolved"] and clear["low"] < clear["ratio"] < clear["high"] < 1
    assert _fmt_ratio(clear).startswith(f"{clear['ratio']:.2f}× [")
    noisy = ratio_interval(ratios["all / trunc, 1 test batch"])       # 0.95, 1.06, 0.96
    assert not noisy["resolved"] and noisy["low"] < 1 < noisy["high"]
    assert _fmt_ratio(noisy).startswith("not resolved: interval ") and "×" not in _fmt_ratio(noisy)
    assert math.isclose(ratio_interval([0.5, 0.5])["ratio"], 0.5)


def test_shared_prefix_bench_items_run_and_the_zero_shot_cache_is_exact_for_the_same_images():
    bench = Bench(class_names(6)[0], "cpu", "fp32", batch=2, eval_batch=3, tiny=True)
    assert prompted_model.cached_text_features is anchors.cached_text_features   # restored
    assert bench.text_rows()["shared_prefix_rows"] == 5
    items = [f"{phase}:{m}" for phase in ("train", "eval") for m in MODES] + ["eval:image"] \
        + list(EXTRA.values())
    for item in items:
        assert bench.run(item) >= 0
    counts = bench.model.text_encoder.path_counts
    assert counts["shared_prefix"] >= 3 and counts["plain"] >= 4
    model = bench.model
    model.prompt_learner.train()
    bench.zero_shot_cache(False)
    plain = model(bench.images)
    bench.zero_shot_cache(True)
    cached = model(bench.images)
    bench.zero_shot_cache(False)
    assert "image_features" not in model.__dict__
    assert torch.equal(plain.image_zs, cached.image_zs)
    assert torch.equal(plain.zs_logits, cached.zs_logits)
    torch.testing.assert_close(plain.logits, cached.logits, rtol=0, atol=0)


def test_a_later_test_batch_reuses_the_text_features_and_the_reference_does_not():
    bench = Bench(class_names(6)[0], "cpu", "fp32", batch=2, eval_batch=3, tiny=True)
    cache = bench.model.text_cache
    bench.run("eval:image")
    assert (cache.misses, cache.hits) == (1, 1)
    bench.run("eval:reference")
    assert (cache.misses, cache.hits) == (1, 1) and not cache.enabled


def test_memory_worker_reports_a_peak_for_a_whole_test_batch():
    args = _parser().parse_args(["--tiny", "--device", "cpu", "--names", "synthetic"])
    args.eval_batch, args.threads, args.mem_limit_gb = 3, 0, 0
    out = memory_worker(args, 6, 2, "eval-batch:reference")
    assert out["peak_bytes"] > 0 and out["cold_seconds"] > 0


@pytest.mark.slow
def test_shared_prefix_bench_whole_run_records_every_figures_setting(tmp_path):
    out = tmp_path / "bench.json"
    record = main(["--tiny", "--device", "cpu", "--classes", "6", "--reps", "2", "--max-reps", "2",
                   "--warmup", "0", "--eval-batches", "4", "--batch-scaling", "3",
                   "--scaling-classes", "6", "--zs", "--imagenet", "--imagenet-classes", "6",
                   "--no-memory", "--json", str(out)])
    assert json.loads(out.read_text())["rows"] == record["rows"]
    settings = record["settings"]
    assert settings["names"] == "ImageNet (real names)" and settings["names_arg"] == "imagenet"
    assert (settings["batch"], settings["eval_batch"]) == (4, 100)
    assert settings["batch_source"] == ("training and test batch sizes from "
                                        "configs/trainers/MMLoP/vit_b16_c2_ep30_batch4_4+4ctx.yaml")
    assert settings["threads_used"] >= 1 and record["load_before"] and record["load_after"]
    for row in record["rows"]:
        assert row["classes"] == 6 and row["test_batch"] == 100
        assert row["names"] == "ImageNet (real names), 6 of 1000 evenly spaced"
        assert row["threads"] >= 1 and row["load_before"] and row["load_after"]
    train, evaluation = record["rows"][:2]
    assert (train["phase"], train["train_batch"], evaluation["phase"]) == ("train", 4, "eval")
    assert [r["train_batch"] for r in record["rows"][2:]] == [3, 4]
    for mode in MODES:
        assert train["modes"][mode]["time"]["n"] == 2
    assert evaluation["modes"]["image"]["time"]["n"] == 2
    assert set(evaluation["ratios"]) >= {"all / reference, 1 test batch",
                                         "all / reference, 4 test batches",
                                         "limit: image / reference", "all / trunc, 1 test batch"}
    assert train["modes"]["zs-forward"]["time"]["n"] == 2
    assert record["imagenet"]["all"]["epoch_min"] > 0
    table = record["markdown"]
    assert table.splitlines()[0].startswith("Setting: ViT-B/16 (random weights), fp32, device cpu")
    assert "class names: ImageNet (real names); training batch 4, test batch 100" in table
    assert "| 6 | training step, batch 4 (text rows per class: 77 reference," in table
    assert "| reference: class text (77 rows), recomputed for every test batch |" in table
