"""End to end through the shell scripts: base2new_train.sh then base2new_test.sh on the synthetic
dataset with a tiny random CLIP file, the upstream output tree, log lines, results, the skip of a
finished run, and the base/novel/HM table."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.clip_helpers import save_tiny_clip

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = "vit_b16_c2_ep30_batch4_4+4ctx"
TINY_PARAMS = 2 * (4 + 64 + 64)                          # depth 2, n 4, rank 1, shared U


def _dataset_stem() -> str:
    for stem in ("synthetic_shapes", "synthetic_clean"):
        if os.path.isfile(os.path.join(REPO, "configs", "datasets", f"{stem}.yaml")):
            return stem
    pytest.skip("no configs/datasets/synthetic_shapes.yaml in this checkout")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("b2n")
    ckpt = save_tiny_clip(root / "tiny_clip.pt")
    e = dict(os.environ, DATA=str(root / "data"), OUTPUT=str(root / "output"), SHOTS="1",
             PYTHON=sys.executable)
    opts = ["MODEL.BACKBONE.NAME", str(ckpt), "INPUT.SIZE", "(32, 32)", "OPTIM.MAX_EPOCH", "2",
            "DATALOADER.NUM_WORKERS", "0", "TRAINER.MMLOP.PROMPT_DEPTH", "2",
            "TRAIN.PRINT_FREQ", "5", "DATALOADER.TEST.BATCH_SIZE", "250"]
    return {"env": e, "opts": opts, "root": root, "dataset": _dataset_stem()}


def _run(env, *args):
    return subprocess.run(["bash", *args], cwd=REPO, env=env["env"], capture_output=True,
                          text=True, timeout=600)


def _tail(env, split):
    return os.path.join(env["root"], "output", "base2new", split, env["dataset"], "shots_1",
                        "MMLoP", CFG, "seed1")


@pytest.mark.slow
def test_base2new_train_test_and_table(env):
    r = _run(env, "scripts/base2new_train.sh", env["dataset"], "1", *env["opts"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    train_dir = _tail(env, "train_base")
    log = open(os.path.join(train_dir, "log.txt")).read()
    assert f"Number of trainable parameters: {TINY_PARAMS:,}" in log
    assert "epoch [2/2] batch [" in log and "Finish training" in log and "* accuracy:" in log
    ckpt_path = os.path.join(train_dir, "prompt_learner", "model.pth.tar-2")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    assert set(ckpt["state_dict"]) == {"U.0", "U.1", "V_text.0", "V_text.1", "V_vision.0",
                                       "V_vision.1"}
    base = json.load(open(os.path.join(train_dir, "results.json")))
    assert base["subsample_classes"] == "base" and base["num_classes"] == 50
    assert base["num_trainable_params"] == TINY_PARAMS and base["epoch"] == 2

    r = _run(env, "scripts/base2new_test.sh", env["dataset"], "1", *env["opts"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    test_dir = _tail(env, "test_new")
    log = open(os.path.join(test_dir, "log.txt")).read()
    assert f'Loading weights to prompt_learner from "{ckpt_path}" (epoch = 2)' in log
    novel = json.load(open(os.path.join(test_dir, "results.json")))
    assert novel["subsample_classes"] == "new" and novel["num_classes"] == 50
    assert novel["epoch"] == 2

    r = _run(env, "scripts/base2new_train.sh", env["dataset"], "1", *env["opts"])
    assert r.returncode == 0
    assert f"Oops! The results exist at {os.path.relpath(train_dir, REPO)}" in r.stdout or \
        f"Oops! The results exist at {train_dir} (so skip this job)" in r.stdout

    out = subprocess.run([sys.executable, "scripts/base2new_table.py",
                          os.path.join(env["root"], "output", "base2new"), "--trainer", "MMLoP",
                          "--cfg", CFG, "--shots", "1", "--json",
                          str(env["root"] / "table.json")],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    b, n = base["accuracy"], novel["accuracy"]
    hm = 2 * b * n / (b + n) if b + n else 0.0
    rows = json.load(open(env["root"] / "table.json"))
    assert [r["dataset"] for r in rows] == [env["dataset"], "Average"]
    assert rows[0]["base"] == pytest.approx(b) and rows[0]["novel"] == pytest.approx(n)
    assert rows[0]["hm"] == pytest.approx(hm)
    assert f"{hm:.2f}" in out.stdout


def test_scripts_reject_unknown_dataset_and_missing_model(env):
    r = _run(env, "scripts/base2new_train.sh", "no_such_dataset", "1")
    assert r.returncode == 2 and "configs/datasets/no_such_dataset.yaml not found" in r.stderr
    r = _run(env, "scripts/base2new_test.sh", env["dataset"], "7", *env["opts"])
    assert r.returncode == 2 and "run scripts/base2new_train.sh" in r.stderr
    r = _run(env, "scripts/base2new_train.sh")
    assert r.returncode == 2 and "usage:" in r.stderr


def test_read_cfg_follows_yaml_and_opts(capsys):
    from trainers.core import config_value as read_cfg
    yaml = os.path.join(REPO, "configs", "trainers", "MMLoP", f"{CFG}.yaml")
    assert read_cfg.read_value(yaml, "OPTIM.MAX_EPOCH", []) == 30
    assert read_cfg.read_value(yaml, "OPTIM.MAX_EPOCH", ["OPTIM.MAX_EPOCH", "3"]) == 3
    assert read_cfg.main([yaml + ".missing", "OPTIM.MAX_EPOCH"]) == 2
    assert "not found" in capsys.readouterr().err
