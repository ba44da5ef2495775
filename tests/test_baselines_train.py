"""The baseline trainers end to end on the synthetic dataset with a tiny random CLIP file:
Gaussian prompt aggregation of PromptSRC and MMLoP through train.py (uninterrupted and resumed),
and every baseline through scripts/base2new_train.sh and scripts/base2new_test.sh."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from clip.model import build_model_from_config
from trainers.core.gpa import GaussianPromptAggregator, gpa_weights
from trainers.mmlop import MMLoP
from trainers.promptsrc import PromptSRC

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASET = "synthetic_clean"
TEXT_W, VISION_W, EMBED = 64, 128, 32     # widths of a loaded file: multiples of 64
TINY = dict(vision_layers=2, transformer_layers=2, vision_width=VISION_W,
            transformer_width=TEXT_W, transformer_heads=2, image_resolution=32,
            vision_patch_size=8, embed_dim=EMBED)
COMMON_OPTS = ["INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0",
               "DATALOADER.TRAIN_X.BATCH_SIZE", "16", "DATALOADER.TEST.BATCH_SIZE", "250",
               "TRAIN.PRINT_FREQ", "5"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    if not os.path.isfile(os.path.join(REPO, "configs", "datasets", f"{DATASET}.yaml")):
        pytest.skip(f"no configs/datasets/{DATASET}.yaml in this checkout")
    root = tmp_path_factory.mktemp("baselines")
    torch.manual_seed(0)
    ckpt = root / "tiny_clip.pt"
    torch.save(build_model_from_config("ViT-B/16", **TINY).state_dict(), ckpt)
    shallow = root / "tiny_clip_1_text_layer.pt"      # CoCoOp: B x C text sequences, no depth
    torch.save(build_model_from_config("ViT-B/16", **{**TINY, "transformer_layers": 1})
               .state_dict(), shallow)
    return {"root": root, "data": str(root / "data"), "shallow": str(shallow),
            "opts": ["MODEL.BACKBONE.NAME", str(ckpt), *COMMON_OPTS]}


# ------------------------------------------------ GPA (PromptSRC, MMLoP) through train.py
GPA_EPOCHS, GPA_MEAN, GPA_STD = 4, 2.5, 1.0
GPA_RUN_OPTS = ["OPTIM.MAX_EPOCH", str(GPA_EPOCHS), "TRAIN.CHECKPOINT_FREQ", "1",
                "TEST.NO_TEST", "True", "DATASET.NUM_SHOTS", "1",
                "DATASET.SUBSAMPLE_CLASSES", "base"]
GPA_CASES = {
    # trainer: (class, config stem, opts, a layer-1 prompt parameter, "loaded" log line,
    # trainable parameters on the tiny CLIP)
    "PromptSRC": (PromptSRC, "vit_b16_c2_ep20_batch4_4+4ctx",
                  ["TRAINER.PROMPTSRC.GPA_MEAN", str(GPA_MEAN), "TRAINER.PROMPTSRC.GPA_STD",
                   str(GPA_STD), "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", "2",
                   "TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", "2"],
                  "ctx_text.1",
                  "GPA: loaded the Gaussian-weighted average of the prompts of 4 epochs",
                  2 * (4 * TEXT_W + 4 * VISION_W)),
    "MMLoP": (MMLoP, "vit_b16_c2_ep30_batch4_4+4ctx",
              ["TRAINER.MMLOP.GPA", "True", "TRAINER.MMLOP.GPA_MEAN", str(GPA_MEAN),
               "TRAINER.MMLOP.GPA_STD", str(GPA_STD), "TRAINER.MMLOP.PROMPT_DEPTH", "2"],
              "V_text.1",
              "GPA: loaded the Gaussian-weighted average of 4 epochs",
              2 * (4 * 1 + 1 * TEXT_W + 1 * VISION_W)),      # U [4, 1], V_text, V_vision
}


def _train(env, trainer: str, out: str):
    import train

    cfg, opts = GPA_CASES[trainer][1:3]
    args = train.build_parser().parse_args([
        "--root", env["data"], "--seed", "1", "--trainer", trainer,
        "--dataset-config-file", os.path.join(REPO, "configs", "datasets", f"{DATASET}.yaml"),
        "--config-file", os.path.join(REPO, "configs", "trainers", trainer, f"{cfg}.yaml"),
        "--output-dir", out, *env["opts"], *GPA_RUN_OPTS, *opts])
    return train.main(args)


@pytest.fixture
def snapshots(monkeypatch):
    """Records the prompts each time the GPA adds an epoch: ``{epoch: {name: tensor}}``."""
    seen: dict[int, dict[str, torch.Tensor]] = {}
    original = GaussianPromptAggregator.add

    def add(self, epoch, module):
        seen[epoch] = {n: p.detach().clone() for n, p in module.named_parameters()}
        original(self, epoch, module)

    monkeypatch.setattr(GaussianPromptAggregator, "add", add)
    return seen


def _weighted_average(snaps: dict) -> dict[str, torch.Tensor]:
    w = gpa_weights(GPA_EPOCHS, GPA_MEAN, GPA_STD)
    assert sorted(snaps) == list(range(1, GPA_EPOCHS + 1))
    return {name: sum(w[e - 1] * snaps[e][name] for e in snaps) for name in snaps[1]}


def _saved_prompts(out: str, epoch: int) -> dict[str, torch.Tensor]:
    path = os.path.join(out, "prompt_learner", f"model.pth.tar-{epoch}")
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
@pytest.mark.parametrize("trainer_name", list(GPA_CASES))
def test_gpa_uninterrupted_and_resumed(env, snapshots, monkeypatch, trainer_name):
    trainer_cls, _, _, layer1, loaded_line, n_params = GPA_CASES[trainer_name]
    full = str(env["root"] / trainer_name / "gpa_full")
    trainer = _train(env, trainer_name, full)
    expected = _weighted_average(snapshots)
    final = dict(trainer.model.prompt_learner.named_parameters())
    saved = _saved_prompts(full, GPA_EPOCHS)
    for name, value in expected.items():
        torch.testing.assert_close(final[name].detach(), value, rtol=0, atol=1e-7)
        torch.testing.assert_close(saved[name], value, rtol=0, atol=1e-7)
    last = snapshots[GPA_EPOCHS][layer1]
    assert not torch.allclose(saved[layer1], last, atol=1e-6)   # the average, not epoch 4
    log = open(os.path.join(full, "log.txt")).read()
    assert loaded_line in log
    assert "loss_text" in log and "loss_image" in log and "loss_kl" in log
    assert f"Number of trainable parameters: {n_params:,}" in log

    # killed after epoch 2, then the same command again: resumes with the GPA accumulator
    resumed = str(env["root"] / trainer_name / "gpa_resumed")
    full_snaps = dict(snapshots)
    snapshots.clear()
    original = trainer_cls.after_epoch

    def killed_after_2(self):
        original(self)
        if self.epoch + 1 == 2:
            raise KeyboardInterrupt("simulated kill after epoch 2")

    monkeypatch.setattr(trainer_cls, "after_epoch", killed_after_2)
    with pytest.raises(KeyboardInterrupt):
        _train(env, trainer_name, resumed)
    monkeypatch.setattr(trainer_cls, "after_epoch", original)
    # the accumulator rides in the checkpoint itself: no kill can separate them
    checkpoint_2 = os.path.join(resumed, "prompt_learner", "model.pth.tar-2")
    assert torch.load(checkpoint_2, weights_only=True)["gpa_state"]["epochs_added"] == [1, 2]
    broken = str(env["root"] / trainer_name / "gpa_broken")
    shutil.copytree(resumed, broken)
    for name in os.listdir(os.path.join(broken, "prompt_learner")):     # every kept epoch loses it
        if name.startswith("model.pth.tar-"):
            path = os.path.join(broken, "prompt_learner", name)
            stripped = torch.load(path, weights_only=True)
            del stripped["gpa_state"]
            torch.save(stripped, path)

    _train(env, trainer_name, resumed)
    log = open(os.path.join(resumed, sorted(n for n in os.listdir(resumed)
                                            if n.startswith("log.txt-"))[0])).read()
    assert "Previous epoch: 2" in log and "GPA: restored the accumulator of epochs [1, 2]" in log
    assert sorted(snapshots) == [1, 2, 3, 4]                       # 1-2 before the kill, 3-4 after
    direct = _weighted_average(snapshots)
    saved_resumed = _saved_prompts(resumed, GPA_EPOCHS)
    for name, value in expected.items():
        torch.testing.assert_close(saved_resumed[name], direct[name], rtol=0, atol=1e-7)
        torch.testing.assert_close(saved_resumed[name], value, rtol=0, atol=1e-6)
        torch.testing.assert_close(snapshots[3][name], full_snaps[3][name], rtol=0, atol=1e-6)

    from dassl.utils.torchtools import CheckpointReadError

    # checkpoints without their GPA state are named, never half-resumed
    with pytest.raises(CheckpointReadError, match=r'model.pth.tar-2" has no GPA state.*model.pth.tar-1" has'):
        _train(env, trainer_name, broken)


# ----------------------------------------------------------- every baseline through the scripts
SCRIPT_CASES = {
    # trainer: (config stem, opts ("shallow": the 1-text-layer CLIP file), trainable parameters
    # on the tiny CLIP, checkpoint keys)
    "IVLP": ("vit_b16_c2_ep5_batch4_2+2ctx",
             ["TRAINER.IVLP.PROMPT_DEPTH_TEXT", "2", "TRAINER.IVLP.PROMPT_DEPTH_VISION", "2"],
             2 * (2 * TEXT_W + 2 * VISION_W),
             {"ctx_text.0", "ctx_text.1", "ctx_vision.0", "ctx_vision.1"}),
    "MaPLe": ("vit_b16_c2_ep5_batch4_2ctx", ["TRAINER.MAPLE.PROMPT_DEPTH", "2"],
              2 * TEXT_W + 2 * (TEXT_W * VISION_W + VISION_W) + 2 * TEXT_W,
              {"ctx", "proj.weight", "proj.bias", "compound_prompts_text.0",
               "compound_prompt_projections.0.weight", "compound_prompt_projections.0.bias"}),
    "PromptSRC": ("vit_b16_c2_ep20_batch4_4+4ctx",
                  ["TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", "2",
                   "TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", "2"],
                  2 * (4 * TEXT_W + 4 * VISION_W),
                  {"ctx_text.0", "ctx_text.1", "ctx_vision.0", "ctx_vision.1"}),
    "VPT": ("vit_b16_c2_ep5_batch4_4", ["TRAINER.VPT.PROMPT_DEPTH_VISION", "2"], 2 * 8 * VISION_W,
            {"ctx_vision.0", "ctx_vision.1"}),
    "CoCoOp": ("vit_b16_c4_ep10_batch1_ctxv1", ["MODEL.BACKBONE.NAME", "shallow"],
               4 * TEXT_W + (EMBED * (EMBED // 16) + EMBED // 16) + (EMBED // 16 * TEXT_W + TEXT_W),
               {"ctx", "meta_net.linear1.weight", "meta_net.linear1.bias",
                "meta_net.linear2.weight", "meta_net.linear2.bias"}),
}


def _script(env, trainer, cfg, script, opts):
    e = dict(os.environ, DATA=env["data"], OUTPUT=str(env["root"] / "output"), SHOTS="1",
             PYTHON=sys.executable, TRAINER=trainer, CFG=cfg, OMP_NUM_THREADS="1")
    r = subprocess.run(["bash", script, DATASET, "1", *opts], cwd=REPO, env=e,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("trainer", list(SCRIPT_CASES))
def test_base2new_scripts(env, trainer):
    cfg, extra_opts, n_params, keys = SCRIPT_CASES[trainer]
    opts = [*env["opts"], "OPTIM.MAX_EPOCH", "1",
            *(env["shallow"] if o == "shallow" else o for o in extra_opts)]
    tail = os.path.join(DATASET, "shots_1", trainer, cfg, "seed1")
    train_dir = os.path.join(env["root"], "output", "base2new", "train_base", tail)
    test_dir = os.path.join(env["root"], "output", "base2new", "test_new", tail)

    _script(env, trainer, cfg, "scripts/base2new_train.sh", opts)
    log = open(os.path.join(train_dir, "log.txt")).read()
    assert f"Loading trainer: {trainer}" in log
    assert f"Number of trainable parameters: {n_params:,}" in log
    assert "epoch [1/1] batch [" in log and "Finish training" in log and "* accuracy:" in log
    ckpt_path = os.path.join(train_dir, "prompt_learner", "model.pth.tar-1")
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)["state_dict"]
    assert set(state) == keys
    base = json.load(open(os.path.join(train_dir, "results.json")))
    assert base["subsample_classes"] == "base" and base["num_classes"] == 50
    assert base["num_trainable_params"] == n_params and base["epoch"] == 1

    _script(env, trainer, cfg, "scripts/base2new_test.sh", opts)
    log = open(os.path.join(test_dir, "log.txt")).read()
    assert f'Loading weights to prompt_learner from "{ckpt_path}" (epoch = 1)' in log
    novel = json.load(open(os.path.join(test_dir, "results.json")))
    assert novel["subsample_classes"] == "new" and novel["num_classes"] == 50
    assert novel["total"] == 1000 and novel["epoch"] == 1
