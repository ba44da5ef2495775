"""The trainers/ contract: method facts on the trainer class, config checks before any loading,
``train.py --list-trainers``, and a new method added as one file (plus its config) that the run
scripts and the demo table pick up with no other edit."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import train
import trainers
from clip.model import build_model_from_config
from dassl.engine import TRAINER_REGISTRY
from trainers.core.methods import PROTOCOLS, method_info, registered_methods

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = sorted(n for n in TRAINER_REGISTRY.registered_names()
              if TRAINER_REGISTRY.get(n).__module__.startswith("trainers."))


def test_every_method_states_its_facts_and_their_configs_exist():
    assert OURS == ["CoCoOp", "CoOp", "IVLP", "MMLoP", "MaPLe", "PromptSRC", "VPT", "ZeroshotCLIP"]
    for name in OURS:
        info = method_info(name)
        assert info.description and info.label
        assert info.default_configs.get("base2new"), name
        assert {p.split(":")[0] for p in info.default_configs} <= set(PROTOCOLS)
        for stem in [*info.default_configs.values(), info.tiny_config]:
            assert os.path.isfile(info.config_file(stem)), (name, stem)
    assert [m.name for m in registered_methods() if m.name in OURS][:2] == ["ZeroshotCLIP", "CoOp"]
    assert not method_info("ZeroshotCLIP").trains and method_info("MMLoP").trains


def test_list_trainers(capsys):
    assert train.cli(["--list-trainers"]) == 0
    out = capsys.readouterr().out
    for name in OURS:
        assert name in out
    assert "vit_b16_c2_ep30_batch4_4+4ctx_cross_datasets" in out


def test_scripts_helper_prints_the_default_config_and_refuses_unknown_ones():
    run = [sys.executable, "-m", "trainers.core", "shell"]
    ok = subprocess.run(run + ["PromptSRC", "few_shot", "dtd"], cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "CFG=vit_b16_c2_ep50_batch4_4+4ctx_few_shot" in ok.stdout and "TRAINS=1" in ok.stdout
    bad = subprocess.run(run + ["IVLP", "few_shot", "dtd"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "IVLP has no default config for the few_shot protocol" in bad.stderr


# One bad value per trainer: (trainer, KEY, VALUE, words the message must hold).
BAD_VALUES = [
    ("ZeroshotCLIP", "TRAINER.ZEROSHOTCLIP.PREC", "fp8", ["'fp8'", "'fp16'", "'bf16'"]),
    ("CoOp", "TRAINER.COOP.CLASS_TOKEN_POSITION", "left", ["'left'", "'end'", "'middle'"]),
    ("CoOp", "TRAINER.COOP.N_CTX", "0", ["N_CTX = 0", ">= 1"]),
    ("CoCoOp", "TRAINER.COCOOP.N_CTX", "-2", ["N_CTX = -2", ">= 1"]),
    ("IVLP", "TRAINER.IVLP.PROMPT_DEPTH_TEXT", "13", ["PROMPT_DEPTH_TEXT = 13", "12 text layers"]),
    ("MaPLe", "TRAINER.MAPLE.PROMPT_DEPTH", "0", ["PROMPT_DEPTH = 0", ">= 1"]),
    ("VPT", "TRAINER.VPT.PROMPT_DEPTH_VISION", "13", ["PROMPT_DEPTH_VISION = 13", "12 vision layers"]),
    ("PromptSRC", "TRAINER.PROMPTSRC.TEXT_LOSS_WEIGHT", "-1.0", ["TEXT_LOSS_WEIGHT = -1.0", ">= 0"]),
    ("PromptSRC", "TRAINER.PROMPTSRC.GPA_STD", "0.0", ["GPA_STD", "> 0"]),
    ("MMLoP", "TRAINER.MMLOP.RANK", "5", ["RANK = 5", "between 1 and 4"]),
    ("MMLoP", "TRAINER.MMLOP.SHARE_U", "both", ["'both'", "'modality_and_layers'"]),
    ("MMLoP", "TRAINER.MMLOP.CTX_INIT", "a photo", ["2 BPE tokens", "N_CTX is 4"]),
]


def test_every_trainer_has_a_fail_early_case():
    assert sorted({t for t, *_ in BAD_VALUES}) == OURS


@pytest.mark.parametrize("trainer,key,value,words", BAD_VALUES)
def test_bad_value_fails_before_any_loading(tmp_path, capsys, trainer, key, value, words):
    info = method_info(trainer)
    argv = ["--root", str(tmp_path / "no_such_data"), "--trainer", trainer,
            "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "dtd.yaml"),
            "--config-file", info.config_file(info.default_configs["base2new"]),
            "--output-dir", str(tmp_path / "out"), key, value]
    assert train.cli(argv) == 1
    err = capsys.readouterr().err
    # The dataset root does not exist: had the dataset been read first, its error would show.
    assert err.startswith("error: ") and key in err, err
    for w in words:
        assert w in err, err
    assert not (tmp_path / "out").exists()          # refused before anything is written


TOY_METHOD = '''
"""ToyPrompt: shallow text and vision prompts (layer 0 only), cross-entropy: a method in one file."""
from torch import nn
from yacs.config import CfgNode as CN

from dassl.engine import TRAINER_REGISTRY
from trainers.core import (CrossEntropyPromptTrainer, PromptedCLIP, context_parameter,
                           normal_prompt, text_context)
from trainers.core import checks
from trainers.core.backbone import backbone_dims


class ToyPromptLearner(nn.Module):
    def __init__(self, n_ctx, text_width, vision_width, init):
        super().__init__()
        self.text = normal_prompt(n_ctx, text_width) if init is None else context_parameter(init)
        self.vision = normal_prompt(n_ctx, vision_width)

    def forward(self):
        return [self.text], [self.vision]


@TRAINER_REGISTRY.register()
class ToyPrompt(CrossEntropyPromptTrainer):
    """Shallow text + vision prompts."""

    description = "shallow text and vision prompts (a test method)"
    label = "Toy prompt"
    config_node = "TOYPROMPT"
    default_configs = {"base2new": "tiny"}
    tiny_config = "tiny"
    config_dir = CONFIG_DIR
    table_order = 55

    @classmethod
    def add_config(cls, cfg):
        cfg.TRAINER.TOYPROMPT = CN()
        cfg.TRAINER.TOYPROMPT.N_CTX = 2
        cfg.TRAINER.TOYPROMPT.CTX_INIT = "a photo"
        cfg.TRAINER.TOYPROMPT.PREC = "fp32"

    @classmethod
    def check_config(cls, cfg, node, prefix):
        super().check_config(cfg, node, prefix)
        checks.check_range(node, prefix, "N_CTX", low=1)

    def build_model(self):
        clip_model = self.load_backbone()
        dims = backbone_dims(clip_model)
        context = text_context(clip_model, self.node.CTX_INIT, self.node.N_CTX)
        learner = ToyPromptLearner(self.node.N_CTX, dims.text_width, dims.vision_width,
                                   context.init)
        self.model = PromptedCLIP(clip_model, self.dm.dataset.classnames, learner, context.prefix,
                                  self.precision)
        self.register_prompt_learner(self.model.prompt_learner)
'''

TOY_CONFIG = """\
DATALOADER:
  TRAIN_X:
    BATCH_SIZE: 4
OPTIM:
  NAME: "sgd"
  LR: 0.01
  MAX_EPOCH: 2
  LR_SCHEDULER: "cosine"
"""

TINY_CLIP = dict(vision_layers=2, transformer_layers=2, vision_width=64, transformer_width=64,
                 transformer_heads=1, image_resolution=32, vision_patch_size=8, embed_dim=32)


@pytest.mark.slow
def test_a_method_in_one_file_runs_through_the_scripts_and_the_demo_table(tmp_path):
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    (config_dir / "tiny.yaml").write_text(TOY_CONFIG)
    toy = tmp_path / "toy_prompt.py"
    toy.write_text(f"CONFIG_DIR = {str(config_dir)!r}\n" + textwrap.dedent(TOY_METHOD))
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny_clip.pt"
    torch.save(build_model_from_config("ViT-B/16", **TINY_CLIP).state_dict(), ckpt)
    env = dict(os.environ, MMLOP_TRAINERS=str(toy), TRAINER="ToyPrompt", DATA=str(tmp_path / "data"),
               OUTPUT=str(tmp_path / "output"), SHOTS="1", PYTHON=sys.executable)
    opts = ["MODEL.BACKBONE.NAME", str(ckpt), "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0",
            "DATALOADER.TEST.BATCH_SIZE", "250"]
    dirs = {}
    for script, split in (("base2new_train.sh", "train_base"), ("base2new_test.sh", "test_new")):
        r = subprocess.run(["bash", f"scripts/{script}", "synthetic_clean", "1", *opts], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        dirs[split] = tmp_path / "output" / "base2new" / split / "synthetic_clean" / "shots_1" / "ToyPrompt" / \
            "tiny" / "seed1"
    results = {k: json.loads((d / "results.json").read_text()) for k, d in dirs.items()}
    assert results["train_base"]["trainer"] == "ToyPrompt"
    assert results["train_base"]["num_trainable_params"] == 2 * (64 + 64)
    assert results["test_new"]["epoch"] == 2 and results["test_new"]["subsample_classes"] == "new"
    assert (dirs["train_base"] / "prompt_learner" / "model.pth.tar-2").is_file()

    # The same file, imported in this process as train.py imports it, puts a row in the demo table.
    trainers._import_file(str(toy))
    from proxy.demo import available_methods, format_table, summarize
    from proxy.runs import RunResult

    methods = available_methods(["ToyPrompt", "MMLoP"])
    assert [m.trainer for m in methods] == ["ToyPrompt", "MMLoP"] and methods[0].label == "Toy prompt"
    run = RunResult("Toy prompt", "synthetic_clean", 1, results["train_base"]["accuracy"],
                    results["test_new"]["accuracy"], results["train_base"]["num_trainable_params"])
    table = format_table(summarize([run], methods, ["synthetic_clean"]), ["synthetic_clean"])
    assert "| Toy prompt " in table and "256" in table
