"""Upstream CoOp-family code on this project: a trainer file written the way upstream's zsclip.py
and coop.py are (their imports, load_clip_to_cpu(cfg), the template lists), our trainers under an
upstream train.py whose extend_cfg knows only upstream's keys."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import datasets  # noqa: F401  (registers the datasets)
import trainers  # noqa: F401  (registers the trainers)
from clip.model import build_model_from_config
from dassl.config import get_cfg_default
from dassl.engine import build_trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(vision_layers=2, transformer_layers=2, vision_width=64, transformer_width=64,
            transformer_heads=1, image_resolution=32, vision_patch_size=8, embed_dim=32)

# Written in upstream's style (the structure of CoOp's zsclip.py), by us.
UPSTREAM_STYLE_ZS = '''
import torch
from clip import clip
from dassl.engine import TRAINER_REGISTRY, TrainerX
from trainers.coop import load_clip_to_cpu
from trainers.imagenet_templates import IMAGENET_TEMPLATES, IMAGENET_TEMPLATES_SELECT

CUSTOM_TEMPLATES = {"SyntheticShapes": "a photo of a {}."}


@TRAINER_REGISTRY.register()
class UpstreamStyleZS(TrainerX):
    def build_model(self):
        cfg = self.cfg
        classnames = self.dm.dataset.classnames
        clip_model = load_clip_to_cpu(cfg)
        clip_model.to(self.device)
        assert len(IMAGENET_TEMPLATES) == 80 and len(IMAGENET_TEMPLATES_SELECT) == 7
        temp = CUSTOM_TEMPLATES[cfg.DATASET.NAME]
        prompts = [temp.format(c.replace("_", " ")) for c in classnames]
        prompts = torch.cat([clip.tokenize(p) for p in prompts]).to(self.device)
        with torch.no_grad():
            text_features = clip_model.encode_text(prompts)
            text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        self.text_features = text_features
        self.clip_model = clip_model
        print("dtype of the upstream model:", clip_model.dtype)

    def model_inference(self, image):
        image_features = self.clip_model.encode_image(image)
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        logit_scale = self.clip_model.logit_scale.exp()
        return logit_scale * image_features @ self.text_features.t()
'''


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("dropin")
    torch.manual_seed(0)
    path = root / "tiny_clip.pt"
    torch.save(build_model_from_config("ViT-B/16", **TINY).state_dict(), path)
    return root, path


def test_upstream_style_zero_shot_trainer_file_runs(tiny_clip):
    root, ckpt = tiny_clip
    file = root / "upstream_zs.py"
    file.write_text(textwrap.dedent(UPSTREAM_STYLE_ZS))
    env = dict(os.environ, MMLOP_TRAINERS=str(file))
    out = root / "zs_out"
    r = subprocess.run(
        [sys.executable, "train.py", "--root", str(root / "data"), "--trainer", "UpstreamStyleZS",
         "--dataset-config-file", "configs/datasets/synthetic_clean.yaml",
         "--config-file", "configs/trainers/ZeroshotCLIP/tiny_clip.yaml", "--output-dir", str(out),
         "--eval-only", "MODEL.BACKBONE.NAME", str(ckpt), "INPUT.SIZE", "(32, 32)",
         "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TEST.BATCH_SIZE", "500"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    log = open(out / "log.txt").read()
    assert "dtype of the upstream model: torch.float16" in log        # OpenAI's build_model dtype
    assert "* accuracy:" in log and (out / "results.json").is_file()


def test_load_clip_to_cpu_takes_the_config_as_upstream(tiny_clip):
    from trainers.coop import load_clip_to_cpu

    cfg = get_cfg_default()
    cfg.MODEL.BACKBONE.NAME = str(tiny_clip[1])
    model = load_clip_to_cpu(cfg)
    assert model.visual.conv1.weight.dtype == torch.float16 and not model.training
    assert next(model.parameters()).device.type == "cpu"


def test_our_trainers_under_an_upstream_extend_cfg(tiny_clip):
    root, ckpt = tiny_clip
    cfg = get_cfg_default()
    from yacs.config import CfgNode as CN

    cfg.TRAINER.COOP = CN()                     # upstream CoOp's extend_cfg: its five keys only
    cfg.TRAINER.COOP.N_CTX = 4
    cfg.TRAINER.COOP.CSC = False
    cfg.TRAINER.COOP.CTX_INIT = ""
    cfg.TRAINER.COOP.PREC = "fp16"
    cfg.TRAINER.COOP.CLASS_TOKEN_POSITION = "end"
    cfg.merge_from_file(os.path.join(REPO, "configs", "datasets", "synthetic_clean.yaml"))
    cfg.DATASET.ROOT = str(root / "data")
    cfg.DATASET.NUM_SHOTS = 1
    cfg.MODEL.BACKBONE.NAME = str(ckpt)
    cfg.INPUT.SIZE = (32, 32)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.TRAINER.NAME = "CoOp"
    cfg.OUTPUT_DIR = str(root / "coop_out")
    cfg.freeze()
    trainer = build_trainer(cfg)
    assert trainer.cfg.TRAINER.COOP.TRUNCATE_TEXT is True and cfg.is_frozen()
    assert sum(p.numel() for p in trainer.model.prompt_learner.parameters()) == 4 * 64
    # MMLoP, whose node upstream's train.py does not know at all.
    cfg.defrost()
    cfg.TRAINER.NAME = "MMLoP"
    cfg.freeze()
    assert "MMLOP" not in cfg.TRAINER
    # The whole node is added with its defaults (depth 9), which then fail this 2-layer CLIP.
    with pytest.raises(ValueError, match="PROMPT_DEPTH must be in 1..2 for this backbone, got 9"):
        build_trainer(cfg)
    assert cfg.TRAINER.MMLOP.RANK == 1 and cfg.is_frozen()
