"""Every trainer on an open_clip backbone (``open_clip:<model>:<weights file>``, a tiny random
open_clip model saved by open_clip itself): each builds and trains (ZeroshotCLIP evaluates), with
parameter counts that follow the model's widths; the base-to-novel scripts run end to end and
record the backbone as given; a config whose normalization does not fit the model stops with one
message naming the keys and values to set."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import train
from trainers.core.methods import method_info

open_clip = pytest.importorskip("open_clip")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASET = "synthetic_clean"
TEXT_W, VISION_W, EMBED, LAYERS = 64, 128, 32, 3
DEPTH = 3                                   # the prompt depth of the tiny configs


def _expected_params(trainer: str) -> int:
    t, v, e = TEXT_W, VISION_W, EMBED
    maple_proj = t * v + v
    return {
        "ZeroshotCLIP": 0,
        "CoOp": 4 * t,
        "CoCoOp": 4 * t + (e * (e // 16) + e // 16) + (e // 16 * t + t),
        "VPT": DEPTH * 4 * v,
        "IVLP": DEPTH * 4 * (t + v),
        "MaPLe": 2 * t + maple_proj + (DEPTH - 1) * (2 * t + maple_proj),
        "PromptSRC": DEPTH * 4 * (t + v),
        "MMLoP": DEPTH * (4 + t + v),
    }[trainer]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    if not os.path.isfile(os.path.join(REPO, "configs", "datasets", f"{DATASET}.yaml")):
        pytest.skip(f"no configs/datasets/{DATASET}.yaml in this checkout")
    root = tmp_path_factory.mktemp("open_clip_trainers")
    torch.manual_seed(0)
    model = open_clip.create_model(
        "ViT-B-16", pretrained=None, embed_dim=EMBED,
        vision_cfg=dict(layers=LAYERS, width=VISION_W, patch_size=8, image_size=32),
        text_cfg=dict(context_length=77, vocab_size=49408, width=TEXT_W, heads=1, layers=LAYERS))
    weights = root / "tiny_open_clip.bin"
    torch.save(model.state_dict(), weights)
    return {"root": root, "data": str(root / "data"), "name": f"open_clip:ViT-B-16:{weights}"}


def _argv(env, trainer: str, out: str, *opts: str) -> list[str]:
    info = method_info(trainer)
    argv = ["--root", env["data"], "--seed", "1", "--trainer", trainer,
            "--dataset-config-file", os.path.join(REPO, "configs", "datasets", f"{DATASET}.yaml"),
            "--config-file", info.config_file(info.tiny_config), "--output-dir", out]
    if not info.trains:
        argv.append("--eval-only")
    return argv + ["MODEL.BACKBONE.NAME", env["name"], "OPTIM.MAX_EPOCH", "1", "DATASET.NUM_SHOTS", "1",
                   "DATASET.SUBSAMPLE_CLASSES", "base", "DATALOADER.TRAIN_X.BATCH_SIZE", "16",
                   "DATALOADER.TEST.BATCH_SIZE", "250", *opts]


TRAINERS = ["ZeroshotCLIP", "CoOp", "CoCoOp", "VPT", "IVLP", "MaPLe", "PromptSRC", "MMLoP"]
EXTRA = {"PromptSRC": ["TRAINER.PROMPTSRC.GPA_MEAN", "1.0"]}   # GPA over the one epoch


@pytest.mark.slow
@pytest.mark.parametrize("trainer", TRAINERS)
def test_every_trainer_builds_and_trains_on_an_open_clip_model(env, trainer):
    out = str(env["root"] / "runs" / trainer)
    opts = [] if trainer == "ZeroshotCLIP" else ["TEST.NO_TEST", "True"]
    assert train.cli(_argv(env, trainer, out, *opts, *EXTRA.get(trainer, []))) == 0
    log = open(os.path.join(out, "log.txt")).read()
    assert f"Loading CLIP (backbone: {env['name']})" in log
    assert "open_clip ViT-B-16 (file) from" in log and "GELU" in log
    assert f"Number of trainable parameters: {_expected_params(trainer):,}" in log
    if method_info(trainer).trains:
        assert "epoch [1/1] batch [3/3]" in log and "Finish training" in log
        assert os.path.isfile(os.path.join(out, "prompt_learner", "model.pth.tar-1"))
    else:
        assert "* accuracy:" in log
        result = json.load(open(os.path.join(out, "results.json")))
        assert result["backbone"] == env["name"]


@pytest.mark.slow
def test_normalization_mismatch_stops_the_run_with_the_values_to_set(env, capsys):
    out = str(env["root"] / "runs" / "mismatch")
    argv = _argv(env, "CoOp", out, "INPUT.PIXEL_MEAN", "[0.5, 0.5, 0.5]", "INPUT.SIZE", "(64, 64)")
    assert train.cli(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the input settings do not fit MODEL.BACKBONE.NAME open_clip:ViT-B-16:")
    assert "INPUT.PIXEL_MEAN is [0.5, 0.5, 0.5], the model was trained with [0.48145466" in err
    assert 'INPUT.SIZE "(32, 32)" INPUT.PIXEL_MEAN "[0.48145466, 0.4578275, 0.40821073]"' in err
    assert "Traceback" not in err


def _script(env, script: str, *opts: str):
    e = dict(os.environ, DATA=env["data"], OUTPUT=str(env["root"] / "output"), SHOTS="1",
             PYTHON=sys.executable, OMP_NUM_THREADS="1")
    return subprocess.run(["bash", f"scripts/{script}", DATASET, "1", *opts], cwd=REPO, env=e,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_base2new_scripts_on_an_open_clip_model(env):
    cfg = "vit_b16_c2_ep30_batch4_4+4ctx"
    opts = ["MODEL.BACKBONE.NAME", env["name"], "INPUT.SIZE", "(32, 32)", "OPTIM.MAX_EPOCH", "2",
            "DATALOADER.NUM_WORKERS", "0", "TRAINER.MMLOP.PROMPT_DEPTH", "2",
            "DATALOADER.TEST.BATCH_SIZE", "250", "TRAIN.PRINT_FREQ", "5"]
    dirs = {}
    for script, split in (("base2new_train.sh", "train_base"), ("base2new_test.sh", "test_new")):
        r = _script(env, script, *opts)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        dirs[split] = os.path.join(env["root"], "output", "base2new", split, DATASET, "shots_1", "MMLoP",
                                   cfg, "seed1")
    n_params = 2 * (4 + TEXT_W + VISION_W)
    for split, directory in dirs.items():
        log = open(os.path.join(directory, "log.txt")).read()
        result = json.load(open(os.path.join(directory, "results.json")))
        assert result["backbone"] == env["name"], split            # model and weights as given
        assert f"NAME: {env['name']}" in log                      # the config dump
        assert f"Loading CLIP (backbone: {env['name']})" in log
        assert result["num_trainable_params"] == n_params
    assert result["subsample_classes"] == "new" and result["epoch"] == 2
    train_log = open(os.path.join(dirs["train_base"], "log.txt")).read()
    assert f"Number of trainable parameters: {n_params:,}" in train_log
    assert "epoch [2/2] batch [" in train_log and "* accuracy:" in train_log
