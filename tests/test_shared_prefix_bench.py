"""The benchmark of the exact speed-ups (bench/bench_mmlop.py) on a tiny CLIP: every measured
item runs, the measured zero-shot image-feature cache gives the step's own features for the same
images, and a whole run (workers, tables, JSON, the ImageNet estimate) completes."""
from __future__ import annotations

import json

import pytest
import torch

from bench.bench_mmlop import EXTRA, MODES, Bench, main
from trainers.core import anchors
from trainers.core import model as prompted_model


def test_shared_prefix_bench_items_run_and_the_zero_shot_cache_is_exact_for_the_same_images():
    bench = Bench(6, "cpu", "fp32", batch=2, eval_batches=1, eval_batch=2, tiny=True)
    assert prompted_model.cached_text_features is anchors.cached_text_features   # restored
    assert bench.text_rows()["shared_prefix_rows"] == 5
    items = [f"{phase}:{m}" for phase in ("train", "eval") for m in MODES] + list(EXTRA.values())
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


@pytest.mark.slow
def test_shared_prefix_bench_whole_run(tmp_path):
    out = tmp_path / "bench.json"
    record = main(["--tiny", "--quick", "--device", "cpu", "--classes", "6", "--phases", "train",
                   "--reps", "2", "--warmup", "0", "--batch-scaling", "4", "--scaling-classes",
                   "6", "--imagenet", "--imagenet-classes", "6", "--json", str(out)])
    assert json.loads(out.read_text())["rows"] == record["rows"]
    first = record["rows"][0]
    assert first["shared_prefix_rows"] == 5
    for mode in MODES:
        assert first["modes"][mode]["time"]["n"] == 2 and first["modes"][mode]["peak_mb"] > 0
    assert first["modes"]["zs-forward"]["time"]["n"] == 2
    assert record["imagenet"]["all"]["epoch_min"] > 0
    assert "| 6 | training step (batch 2) |" in record["markdown"]
    assert record["load_before"] and record["load_after"]
