"""Upstream CoOp-family code on this project: trainer files written the way upstream's zsclip.py
and coop.py are (their imports, load_clip_to_cpu(cfg), the template lists; a CoOp-style prompt
learner trained, saved, then evaluated with --eval-only --model-dir --load-epoch), our trainers
under an upstream train.py whose extend_cfg knows only upstream's keys."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import datasets  # noqa: F401  (registers the datasets)
import trainers  # noqa: F401  (registers the trainers)
from dassl.config import ConfigError, get_cfg_default
from dassl.engine import build_trainer
from tests.clip_helpers import save_tiny_clip

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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


# Written by us in the style of upstream CoOp's trainers/coop.py: its own TextEncoder, PromptLearner
# and CustomCLIP on OpenAI's model attributes, the TRAINER.COOP keys of upstream's extend_cfg
# (N_CTX, CSC, CTX_INIT, PREC, CLASS_TOKEN_POSITION), Dassl's optimizer/registration/checkpoint
# API and an upstream-style load_model that drops the class-dependent buffers.
UPSTREAM_STYLE_COOP = '''
import os.path as osp

import torch
import torch.nn as nn
from torch.nn import functional as F

from clip import clip
from clip.simple_tokenizer import SimpleTokenizer
from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.metrics import compute_accuracy
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import load_checkpoint, load_pretrained_weights
from trainers.coop import load_clip_to_cpu

tokenizer = SimpleTokenizer()


class TextEncoder(nn.Module):
    def __init__(self, clip_model):
        super().__init__()
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.dtype = clip_model.dtype

    def forward(self, prompts, tokenized_prompts):
        x = prompts + self.positional_embedding.type(self.dtype)
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = self.ln_final(x).type(self.dtype)
        rows = torch.arange(x.shape[0], device=x.device)
        return x[rows, tokenized_prompts.argmax(dim=-1)] @ self.text_projection


class PromptLearner(nn.Module):
    def __init__(self, cfg, classnames, clip_model):
        super().__init__()
        node = cfg.TRAINER.COOP
        dtype = clip_model.dtype
        width = clip_model.ln_final.weight.shape[0]
        assert cfg.INPUT.SIZE[0] == clip_model.visual.input_resolution
        assert node.CLASS_TOKEN_POSITION == "end"
        init = node.CTX_INIT.replace("_", " ")
        if init:
            n_ctx = len(init.split(" "))
            with torch.no_grad():
                emb = clip_model.token_embedding(clip.tokenize(init)).type(dtype)
            ctx = emb[0, 1:1 + n_ctx, :]
            prefix_text = init
        else:
            n_ctx = node.N_CTX
            shape = (len(classnames), n_ctx, width) if node.CSC else (n_ctx, width)
            ctx = torch.empty(*shape, dtype=dtype)
            nn.init.normal_(ctx, std=0.02)
            prefix_text = " ".join("X" for _ in range(n_ctx))
        print(f'Initial context: "{prefix_text}"')
        print(f"Number of context words (tokens): {n_ctx}")
        self.ctx = nn.Parameter(ctx)
        names = [c.replace("_", " ") for c in classnames]
        self.name_lens = [len(tokenizer.encode(c)) for c in names]
        tokens = torch.cat([clip.tokenize(f"{prefix_text} {c}.") for c in names])
        with torch.no_grad():
            emb = clip_model.token_embedding(tokens).type(dtype)
        self.register_buffer("token_prefix", emb[:, :1, :])
        self.register_buffer("token_suffix", emb[:, 1 + n_ctx:, :])
        self.tokenized_prompts = tokens
        self.n_cls, self.n_ctx = len(classnames), n_ctx

    def forward(self):
        ctx = self.ctx
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        return torch.cat([self.token_prefix, ctx, self.token_suffix], dim=1)


class CustomCLIP(nn.Module):
    def __init__(self, cfg, classnames, clip_model):
        super().__init__()
        self.prompt_learner = PromptLearner(cfg, classnames, clip_model)
        self.tokenized_prompts = self.prompt_learner.tokenized_prompts
        self.image_encoder = clip_model.visual
        self.text_encoder = TextEncoder(clip_model)
        self.logit_scale = clip_model.logit_scale
        self.dtype = clip_model.dtype

    def forward(self, image):
        image_features = self.image_encoder(image.type(self.dtype))
        text_features = self.text_encoder(self.prompt_learner(), self.tokenized_prompts)
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        return self.logit_scale.exp() * image_features @ text_features.t()


@TRAINER_REGISTRY.register()
class UpstreamStyleCoOp(TrainerX):
    def check_cfg(self, cfg):
        assert cfg.TRAINER.COOP.PREC in ["fp16", "fp32", "amp"]

    def build_model(self):
        cfg = self.cfg
        classnames = self.dm.dataset.classnames
        print(f"Loading CLIP (backbone: {cfg.MODEL.BACKBONE.NAME})")
        clip_model = load_clip_to_cpu(cfg)
        if cfg.TRAINER.COOP.PREC in ("fp32", "amp"):
            clip_model.float()
        print("Building custom CLIP")
        self.model = CustomCLIP(cfg, classnames, clip_model)
        print("Turning off gradients in both the image and the text encoder")
        for name, param in self.model.named_parameters():
            if "prompt_learner" not in name:
                param.requires_grad_(False)
        if cfg.MODEL.INIT_WEIGHTS:
            load_pretrained_weights(self.model.prompt_learner, cfg.MODEL.INIT_WEIGHTS)
        self.model.to(self.device)
        self.optim = build_optimizer(self.model.prompt_learner, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model("prompt_learner", self.model.prompt_learner, self.optim, self.sched)
        self.scaler = torch.amp.GradScaler("cuda") if cfg.TRAINER.COOP.PREC == "amp" else None

    def forward_backward(self, batch):
        image, label = self.parse_batch_train(batch)
        output = self.model(image)
        loss = F.cross_entropy(output, label)
        self.model_backward_and_update(loss)
        summary = {"loss": loss.item(), "acc": compute_accuracy(output, label)[0].item()}
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return summary

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def load_model(self, directory, epoch=None):
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given")
            return
        model_file = "model-best.pth.tar" if epoch is None else f"model.pth.tar-{epoch}"
        for name in self.get_model_names():
            model_path = osp.join(directory, name, model_file)
            if not osp.exists(model_path):
                raise FileNotFoundError(f'Model not found at "{model_path}"')
            checkpoint = load_checkpoint(model_path)
            state_dict = checkpoint["state_dict"]
            for key in ("token_prefix", "token_suffix"):
                state_dict.pop(key, None)
            print(f'Loading weights to {name} from "{model_path}" (epoch = {checkpoint["epoch"]})')
            self._models[name].load_state_dict(state_dict, strict=False)
'''

UPSTREAM_STYLE_COOP_CONFIG = """\
DATALOADER:
  TRAIN_X:
    BATCH_SIZE: 4
  TEST:
    BATCH_SIZE: 16
  NUM_WORKERS: 0
INPUT:
  SIZE: (32, 32)
  TRANSFORMS: ["random_flip", "normalize"]
OPTIM:
  NAME: "sgd"
  LR: 0.01
  MAX_EPOCH: 2
  LR_SCHEDULER: "cosine"
  WARMUP_EPOCH: 1
  WARMUP_TYPE: "constant"
  WARMUP_CONS_LR: 1e-5
TRAINER:
  COOP:
    N_CTX: 4
    CTX_INIT: "a photo of a"
    PREC: "fp32"
"""


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("dropin")
    path = save_tiny_clip(root / "tiny_clip.pt")
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
    # the replaced node keeps our keys, so our YAML keys and overrides merge under it
    cfg.merge_from_list(["TRAINER.COOP.TRUNCATE_TEXT", "False"])
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
    assert trainer.cfg.TRAINER.COOP.TRUNCATE_TEXT is False and cfg.is_frozen()
    assert sum(p.numel() for p in trainer.model.prompt_learner.parameters()) == 4 * 64
    # MMLoP, whose node upstream's train.py does not know: there before any merge
    assert cfg.TRAINER.MMLOP.RANK == 1
    cfg.defrost()
    cfg.TRAINER.NAME = "MMLoP"
    cfg.freeze()
    # (its default PROMPT_DEPTH 9 does not fit the file's 2 layers, counted before the model is built)
    with pytest.raises(ConfigError, match="TRAINER.MMLOP.PROMPT_DEPTH = 9 is not allowed: .* has 2 text layers"):
        build_trainer(cfg)


def test_upstream_style_coop_trainer_file_trains_then_evaluates(tiny_clip, data_root, tmp_path):
    """The upstream trainer contract end to end through train.py's flow: the file is imported as
    MMLOP_TRAINERS imports it, trains 2 epochs on the toy data, saves ``prompt_learner/`` with
    ``ctx`` and the class buffers, and ``--eval-only --model-dir --load-epoch`` reloads the prompts
    and gives the accuracy of the final test of training."""
    import clip
    import tests.toy_run  # noqa: F401  (registers the toy dataset)
    import train
    from dassl.utils import load_checkpoint

    _, ckpt = tiny_clip
    file = tmp_path / "upstream_coop.py"
    file.write_text(UPSTREAM_STYLE_COOP)
    trainers._import_file(str(file))
    config = tmp_path / "coop.yaml"
    config.write_text(UPSTREAM_STYLE_COOP_CONFIG)

    def run(out, *extra):
        argv = ["--root", data_root, "--trainer", "UpstreamStyleCoOp", "--config-file", str(config),
                "--output-dir", str(out), "--seed", "1", *extra, "DATASET.NAME",
                "ToyColorsTrainCli", "MODEL.BACKBONE.NAME", str(ckpt), "USE_CUDA", "False"]
        return train.main(train.build_parser().parse_args(argv))

    trained = run(tmp_path / "train")
    saved = load_checkpoint(str(tmp_path / "train" / "prompt_learner" / "model.pth.tar-2"))
    assert saved["epoch"] == 2
    assert set(saved["state_dict"]) == {"ctx", "token_prefix", "token_suffix"}
    assert saved["state_dict"]["ctx"].shape == (4, 64)
    assert saved["state_dict"]["ctx"].dtype == torch.float32            # PREC fp32: .float()
    words = torch.load(ckpt, weights_only=True)["token_embedding.weight"][
        clip.tokenize("a photo of a")[0, 1:5]]
    assert not torch.equal(saved["state_dict"]["ctx"], words)           # it trained
    assert torch.equal(trained.model.prompt_learner.ctx.detach(), saved["state_dict"]["ctx"])

    evaluated = run(tmp_path / "eval", "--eval-only", "--model-dir", str(tmp_path / "train"),
                    "--load-epoch", "2")
    torch.testing.assert_close(evaluated.model.prompt_learner.ctx, saved["state_dict"]["ctx"],
                               rtol=0, atol=0)
    log = open(tmp_path / "eval" / "log.txt").read()
    assert 'Loading weights to prompt_learner from' in log and "(epoch = 2)" in log
    results = [json.loads((tmp_path / d / "results.json").read_text()) for d in ("train", "eval")]
    assert results[1]["accuracy"] == results[0]["accuracy"]
    assert results[1]["trainer"] == "UpstreamStyleCoOp"
