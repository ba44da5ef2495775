"""A few MMLoP iterations through train.py on the real DTD slice (../shared/data/real/dtd, three
classes) with ViT-B/16 from random weights, on CPU. Skips when the slice is absent."""
from __future__ import annotations

import os

import pytest
import torch

from clip.model import CLIP, MODEL_CONFIGS
from tests.helpers import REPO, SHARED_DATA
from trainers.core import trainer as prompt_trainer
from trainers.core.backbone import freeze
from trainers.mmlop import MMLoP

DTD = str(SHARED_DATA / "real" / "dtd")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(os.path.join(DTD, "split_zhou_DescribableTextures.json")),
                    reason=f"real DTD slice {DTD} is absent: set MMLOP_SHARED_DATA to a folder with "
                           "coop_splits/, real/ and upstream_fixtures/ to run this test")
def test_mmlop_iterations_on_real_dtd_with_vit_b16(tmp_path, monkeypatch, capsys):
    import train

    root = tmp_path / "data" / "dtd"                 # links, so caches land in tmp, not shared
    root.mkdir(parents=True)
    for name in ("images", "split_zhou_DescribableTextures.json"):
        os.symlink(os.path.join(DTD, name), root / name)

    def random_vit_b16(name):
        assert name == "ViT-B/16"
        torch.manual_seed(0)
        return freeze(CLIP(**MODEL_CONFIGS["ViT-B/16"]))

    monkeypatch.setattr(prompt_trainer, "load_clip_to_cpu", random_vit_b16)
    snapshot = {}
    build = MMLoP.build_model

    def build_and_snapshot(self):
        build(self)
        snapshot["prompts"] = {k: v.clone() for k, v in
                               self.model.prompt_learner.state_dict().items()}
        snapshot["clip"] = {k: self.model.clip_model.state_dict()[k].clone()
                            for k in ("visual.conv1.weight", "text_projection",
                                      "transformer.resblocks.0.attn.in_proj_weight")}

    monkeypatch.setattr(MMLoP, "build_model", build_and_snapshot)
    out = tmp_path / "out"
    args = train.build_parser().parse_args([
        "--root", str(tmp_path / "data"), "--seed", "1", "--trainer", "MMLoP",
        "--dataset-config-file", os.path.join(REPO, "configs/datasets/dtd.yaml"),
        "--config-file",
        os.path.join(REPO, "configs/trainers/MMLoP/vit_b16_c2_ep30_batch4_4+4ctx.yaml"),
        "--output-dir", str(out),
        "DATASET.NUM_SHOTS", "1", "DATALOADER.TRAIN_X.BATCH_SIZE", "2", "OPTIM.MAX_EPOCH", "2",
        "DATALOADER.NUM_WORKERS", "0", "TEST.NO_TEST", "True", "OPTIM.LR", "0.1"])
    trainer = train.main(args)
    log = open(out / "log.txt").read()
    assert "Number of trainable parameters: 11,556" in log
    assert "epoch [2/2] batch [1/1]" in log and "loss_kl" in log
    assert trainer.model.classnames == ["banded", "blotchy", "braided"]
    ckpt = torch.load(out / "prompt_learner" / "model.pth.tar-2", map_location="cpu",
                      weights_only=True)
    assert set(ckpt["state_dict"]) == set(snapshot["prompts"])
    assert all(not torch.equal(ckpt["state_dict"][k], v) for k, v in snapshot["prompts"].items())
    state = trainer.model.clip_model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in snapshot["clip"].items())
