"""Utilities: logger tee, meters, read_image, accuracy, the Classification evaluator, import hygiene."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from dassl.config import get_cfg_default
from dassl.evaluation import Classification, build_evaluator
from dassl.metrics import compute_accuracy
from dassl.utils import (
    AverageMeter,
    ImageReadError,
    MetricMeter,
    collect_env_info,
    read_image,
    set_random_seed,
    setup_logger,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_setup_logger_mirrors_stdout_and_close_restores(tmp_path, capsys):
    original = sys.stdout
    logger = setup_logger(str(tmp_path))
    try:
        print("first line")
        assert open(tmp_path / "log.txt").read() == "first line\n"  # flushed per line
    finally:
        logger.close()
    assert sys.stdout is original
    print("not logged")
    assert open(tmp_path / "log.txt").read() == "first line\n"

    second = setup_logger(str(tmp_path))
    try:
        print("second run")
    finally:
        second.close()
    stamped = [n for n in os.listdir(tmp_path) if n.startswith("log.txt-")]
    assert len(stamped) == 1 and len(stamped[0]) == len("log.txt-2026-01-01-00-00-00")
    assert open(tmp_path / stamped[0]).read() == "second run\n"
    assert open(tmp_path / "log.txt").read() == "first line\n"
    assert "first line" in capsys.readouterr().out


def test_meters():
    meter = AverageMeter()
    meter.update(2.0)
    meter.update(4.0, n=3)
    assert (meter.val, meter.sum, meter.count, meter.avg) == (4.0, 14.0, 4, 3.5)
    metrics = MetricMeter()
    metrics.update({"loss": 1.0, "acc": torch.tensor(50.0)})
    metrics.update({"loss": 3.0, "acc": 100.0})
    assert str(metrics) == "loss 3.0000 (2.0000) acc 100.0000 (75.0000)"
    with pytest.raises(TypeError):
        metrics.update([1.0])


def test_read_image_errors_name_the_file(tmp_path):
    good = tmp_path / "a.png"
    Image.new("L", (4, 4), 7).save(good)
    img = read_image(str(good))
    assert img.mode == "RGB" and img.size == (4, 4)
    missing = str(tmp_path / "missing.jpg")
    with pytest.raises(ImageReadError, match="missing.jpg") as info:
        read_image(missing)
    assert isinstance(info.value, OSError)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(OSError, match="broken.jpg"):
        read_image(str(broken))


def test_compute_accuracy_topk():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05], [0.2, 0.3, 0.5], [0.5, 0.4, 0.1]])
    target = torch.tensor([1, 1, 2, 2])
    top1, top2 = compute_accuracy(logits, target, topk=(1, 2))
    assert top1.item() == pytest.approx(50.0) and top2.item() == pytest.approx(75.0)


def test_classification_block_macro_f1_per_class_and_cmat(tmp_path, capsys):
    from sklearn.metrics import f1_score

    cfg = get_cfg_default()
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.TEST.PER_CLASS_RESULT = True
    cfg.TEST.COMPUTE_CMAT = True
    evaluator = build_evaluator(cfg, lab2cname={0: "cat", 1: "dog", 2: "fox"})
    assert isinstance(evaluator, Classification)
    gen = torch.Generator().manual_seed(0)
    y_true = torch.randint(0, 3, (2465,), generator=gen)
    logits = torch.randn(2465, 3, generator=gen) + 1.5 * torch.nn.functional.one_hot(y_true, 3)
    evaluator.process(logits[:1000], y_true[:1000])
    evaluator.process(logits[1000:], y_true[1000:])
    results = evaluator.evaluate()
    pred = logits.argmax(1)
    correct = int((pred == y_true).sum())
    out = capsys.readouterr().out
    acc = 100 * correct / 2465
    assert results["accuracy"] == pytest.approx(acc) and results["error_rate"] == pytest.approx(100 - acc)
    sk = 100 * f1_score(y_true.numpy(), pred.numpy(), average="macro", labels=np.unique(y_true.numpy()))
    assert results["macro_f1"] == pytest.approx(sk)
    expected = (f"=> result\n* total: 2,465\n* correct: {correct:,}\n* accuracy: {acc:.1f}%\n"
                f"* error: {100 - acc:.1f}%\n* macro_f1: {sk:.1f}%\n")
    assert expected in out
    assert "* class: 1 (dog)\ttotal: " in out and "* average: " in out
    cmat = torch.load(tmp_path / "cmat.pt", weights_only=True)
    assert cmat.shape == (3, 3) and torch.allclose(cmat.sum(1), torch.ones(3, dtype=cmat.dtype))
    assert f"Confusion matrix is saved to {tmp_path / 'cmat.pt'}" in out


def test_build_evaluator_did_you_mean():
    cfg = get_cfg_default()
    cfg.TEST.EVALUATOR = "Clasification"
    with pytest.raises(ValueError, match=r"do you mean \[Classification\]"):
        build_evaluator(cfg)


def test_set_random_seed_repeats_streams():
    import random

    set_random_seed(3)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    set_random_seed(3)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_collect_env_info_lists_versions():
    info = collect_env_info()
    assert torch.__version__ in info and "Pillow" in info and "CUDA available" in info and "Python" in info


@pytest.mark.slow
def test_import_has_no_global_side_effects():
    code = textwrap.dedent(
        """
        import logging, sys
        root_level, handlers, disabled = logging.root.level, list(logging.root.handlers), logging.root.manager.disable
        import dassl, dassl.config, dassl.data, dassl.data.transforms, dassl.engine, dassl.evaluation
        import dassl.metrics, dassl.optim, dassl.utils
        assert logging.root.level == root_level and logging.root.handlers == handlers
        assert logging.root.manager.disable == disabled == 0
        heavy = [m for m in ("tensorboard", "torch.utils.tensorboard", "sklearn", "matplotlib") if m in sys.modules]
        assert not heavy, heavy
        assert not hasattr(sys.stdout, "file")
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_write_json_files_get_the_permissions_open_would_give(tmp_path):
    from dassl.utils import write_json

    write_json({"a": 1}, str(tmp_path / "atomic.json"))
    with open(tmp_path / "plain.json", "w") as f:
        f.write("{}")
    mode = lambda name: os.stat(tmp_path / name).st_mode & 0o777  # noqa: E731
    assert mode("atomic.json") == mode("plain.json")
