"""tools/import_upstream_checkpoint.py: upstream CoOp/CoCoOp/IVLP/MaPLe/PromptSRC checkpoints into
this project's weights-only checkpoints, loaded through our trainers' ``load_model``.

Two sources of upstream checkpoints:

* folders built here, in upstream's layout (key names and shapes as the upstream fixtures' README
  lists them, a pickled optimizer and CosineAnnealingLR as upstream Dassl writes), so the
  converter is tested without the shared folder;
* the upstream fixtures (written by the upstream code itself, with upstream's logits), when
  ``$MMLOP_SHARED_DATA/upstream_fixtures`` exists: the converted prompts in our models must give
  upstream's logits within 1e-5.
"""
from __future__ import annotations

import datetime
import importlib.util
import json
import os
import pathlib
import random
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

import clip
from clip.model import build_model, build_model_from_config
from tests.helpers import REPO, SHARED_DATA, shared_data_skip_reason
from trainers.cocoop import CoCoOpCLIP
from trainers.coop import CoOpCLIP
from trainers.core.trainer import PromptTrainer
from trainers.ivlp import IVLPCLIP, IVLPSettings
from trainers.maple import MaPLeCLIP
from trainers.promptsrc import PromptSRCCLIP

FIXTURES = SHARED_DATA / "upstream_fixtures"
TOOL = REPO / "tools" / "import_upstream_checkpoint.py"
CLASSNAMES = ["banded", "blotchy", "braided", "bubbly", "bumpy"]
TINY_ARCH = dict(embed_dim=64, image_resolution=32, vision_layers=4, vision_width=64,
                 vision_patch_size=16, context_length=77, vocab_size=49408, transformer_width=64,
                 transformer_heads=1, transformer_layers=4)
# The fixtures' configs (manifest.json cfg_trainer), per method.
CONFIGS = {
    "coop": {"N_CTX": 4, "CSC": False, "CTX_INIT": "", "CLASS_TOKEN_POSITION": "end"},
    "cocoop": {"N_CTX": 4, "CTX_INIT": "a photo of a"},
    "ivlp": {"N_CTX_VISION": 4, "N_CTX_TEXT": 4, "CTX_INIT": "a photo of a",
             "PROMPT_DEPTH_VISION": 3, "PROMPT_DEPTH_TEXT": 3},
    "maple": {"N_CTX": 2, "CTX_INIT": "a photo of a", "PROMPT_DEPTH": 3},
    "promptsrc": {"N_CTX_VISION": 4, "N_CTX_TEXT": 4, "CTX_INIT": "a photo of a",
                  "PROMPT_DEPTH_VISION": 3, "PROMPT_DEPTH_TEXT": 3},
}
TRAINER = {"coop": "CoOp", "cocoop": "CoCoOp", "ivlp": "IVLP", "maple": "MaPLe",
           "promptsrc": "PromptSRC"}
FOLDER = {"coop": "prompt_learner", "cocoop": "prompt_learner", "ivlp": "VLPromptLearner",
          "maple": "MultiModalPromptLearner", "promptsrc": "VLPromptLearner"}


def _load_tool():
    spec = importlib.util.spec_from_file_location("import_upstream_checkpoint", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


# ----------------------------------------------------------------------------- helpers


def build_ours(method: str, clip_model, cfg: dict, classnames=CLASSNAMES):
    """Our model of ``method`` on ``clip_model`` (fp32) with the upstream config values."""
    if method == "coop":
        return CoOpCLIP(clip_model, classnames, cfg["N_CTX"], cfg["CTX_INIT"], cfg["CSC"],
                        cfg["CLASS_TOKEN_POSITION"])
    if method == "cocoop":
        return CoCoOpCLIP(clip_model, classnames, cfg["N_CTX"], cfg["CTX_INIT"])
    if method == "maple":
        return MaPLeCLIP(clip_model, classnames, cfg["N_CTX"], cfg["PROMPT_DEPTH"], cfg["CTX_INIT"])
    settings = IVLPSettings(cfg["N_CTX_TEXT"], cfg["N_CTX_VISION"], cfg["PROMPT_DEPTH_TEXT"],
                            cfg["PROMPT_DEPTH_VISION"], cfg["CTX_INIT"])
    return (IVLPCLIP if method == "ivlp" else PromptSRCCLIP)(clip_model, classnames, settings)


class TrainerStub:
    """Just what ``PromptTrainer.load_model`` reads: the registered modules and the name."""

    load_model = PromptTrainer.load_model

    def __init__(self, model, name: str):
        self._models = {"prompt_learner": model.prompt_learner}
        self.cfg = types.SimpleNamespace(TRAINER=types.SimpleNamespace(NAME=name))
        self.eval_epoch = None

    def get_model_names(self):
        return list(self._models)


def load_through_trainer(model, method: str, directory, epoch: int = 1):
    stub = TrainerStub(model, TRAINER[method])
    stub.load_model(str(directory), epoch)
    assert stub.eval_epoch == epoch
    return model.eval()


def cfg_from_settings(method: str, settings: dict) -> dict:
    """Our model's config from the converter's printed ``TRAINER.<NODE>.*`` settings."""
    cfg = dict(CONFIGS[method])
    for key, value in settings.items():
        cfg[key.split(".")[-1]] = value
    return cfg


def _tiny_clip(seed: int = 0):
    torch.manual_seed(seed)
    return build_model_from_config(TINY_ARCH).eval()


def _suffix(clip_model, prefix: str, n_ctx: int, classnames=CLASSNAMES) -> torch.Tensor:
    """Upstream's token_prefix/token_suffix buffers for "<prefix> <class>."."""
    tokens = clip.tokenize([f"{prefix} {c}." for c in classnames])
    with torch.no_grad():
        emb = clip_model.token_embedding(tokens)
    return emb[:, :1], emb[:, 1 + n_ctx:]


def _randn(*shape, gen):
    return torch.randn(*shape, generator=gen) * 0.02


def upstream_state_dict(method: str, clip_model, dtype=torch.float32) -> OrderedDict:
    """A state dict with upstream's keys and shapes for ``method`` on ``clip_model``."""
    gen = torch.Generator().manual_seed(2024)
    cfg = CONFIGS[method]
    d = clip_model.ln_final.weight.shape[0]
    sd = OrderedDict()
    if method in ("coop", "cocoop"):
        n = cfg["N_CTX"]
        prefix, suffix = _suffix(clip_model, cfg["CTX_INIT"] or "X X X X", n)
        sd["ctx"] = _randn(n, d, gen=gen)
        sd["token_prefix"], sd["token_suffix"] = prefix, suffix
        if method == "cocoop":
            e = clip_model.text_projection.shape[1]
            sd["meta_net.linear1.weight"] = _randn(e // 16, e, gen=gen)
            sd["meta_net.linear1.bias"] = _randn(e // 16, gen=gen)
            sd["meta_net.linear2.weight"] = _randn(d, e // 16, gen=gen)
            sd["meta_net.linear2.bias"] = _randn(d, gen=gen)
        return OrderedDict((k, v.to(dtype)) for k, v in sd.items())
    # whole CustomCLIP: frozen towers under image_encoder./text_encoder., logit_scale, prompts
    frozen = clip_model.state_dict()
    vision = OrderedDict((k[len("visual."):], v) for k, v in frozen.items() if k.startswith("visual."))
    sd["logit_scale"] = frozen["logit_scale"]
    n = cfg["N_CTX"] if method == "maple" else cfg["N_CTX_TEXT"]
    prefix, suffix = _suffix(clip_model, cfg["CTX_INIT"], n)
    sd["prompt_learner.ctx"] = _randn(n, d, gen=gen)
    sd["prompt_learner.token_prefix"], sd["prompt_learner.token_suffix"] = prefix, suffix
    if method == "maple":
        depth = cfg["PROMPT_DEPTH"]
        vw = clip_model.visual.conv1.weight.shape[0]
        sd["prompt_learner.proj.weight"] = _randn(vw, d, gen=gen)
        sd["prompt_learner.proj.bias"] = _randn(vw, gen=gen)
        for k in range(depth - 1):
            sd[f"prompt_learner.compound_prompts_text.{k}"] = _randn(n, d, gen=gen)
        for k in range(depth - 1):
            sd[f"prompt_learner.compound_prompt_projections.{k}.weight"] = _randn(vw, d, gen=gen)
            sd[f"prompt_learner.compound_prompt_projections.{k}.bias"] = _randn(vw, gen=gen)
    else:
        sd["image_encoder.VPT"] = _randn(cfg["N_CTX_VISION"], d, gen=gen)
        for i in range(1, cfg["PROMPT_DEPTH_VISION"]):
            sd[f"image_encoder.transformer.resblocks.{i}.VPT_shallow"] = _randn(
                cfg["N_CTX_VISION"], d, gen=gen)
        for i in range(1, cfg["PROMPT_DEPTH_TEXT"]):
            sd[f"text_encoder.transformer.resblocks.{i}.VPT_shallow"] = _randn(n, d, gen=gen)
    sd.update((f"image_encoder.{k}", v) for k, v in vision.items())
    for k, v in frozen.items():
        if k.startswith("transformer.") or k in ("positional_embedding", "ln_final.weight",
                                                 "ln_final.bias", "text_projection"):
            sd[f"text_encoder.{k}"] = v
    if method == "promptsrc":
        sd.update((f"prompt_learner.ZS_image_encoder.{k}", v) for k, v in vision.items())
    return OrderedDict((k, v.to(dtype)) for k, v in sd.items())


def write_upstream_folder(root: Path, method: str, state_dict: dict, epoch: int = 1) -> Path:
    """``root/<registered name>/model.pth.tar-<epoch>`` + ``checkpoint``, as upstream Dassl's
    save_model writes them (optimizer state, the warm-up scheduler dict holding the pickled
    CosineAnnealingLR object, val_result None)."""
    folder = root / FOLDER[method]
    folder.mkdir(parents=True)
    params = [torch.nn.Parameter(v.clone().float()) for k, v in state_dict.items()
              if k.endswith("ctx") or "VPT" in k]
    optim = torch.optim.SGD(params, lr=0.002, momentum=0.9)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optim, 5)
    scheduler = {"successor": cosine, "warmup_epoch": 1, "cons_lr": 1e-5, "last_epoch": epoch,
                 "base_lrs": [0.002]}
    torch.save({"state_dict": state_dict, "epoch": epoch, "optimizer": optim.state_dict(),
                "scheduler": scheduler, "val_result": None}, folder / f"model.pth.tar-{epoch}")
    (folder / "checkpoint").write_text(f"model.pth.tar-{epoch}\n")
    return root


def expected_values(method: str, state_dict: dict, as_stored: bool) -> dict:
    """Our parameter name -> the value the converter must store (see the tool's docstring)."""
    out = {}
    for key, value in state_dict.items():
        new = tool._rename(TRAINER[method], key)
        if new is not None:
            value = value.float()
            if not as_stored and tool.injected_in_fp16(TRAINER[method], new):
                value = value.half().float()
            out[new] = value
    return out


# ----------------------------------------------------------------------------- built here


@pytest.fixture(scope="module")
def tiny_clip():
    return _tiny_clip()


@pytest.mark.parametrize("method", list(CONFIGS))
@pytest.mark.parametrize("as_stored", [False, True])
def test_upstream_layout_converts_into_our_parameters(tmp_path, tiny_clip, method, as_stored):
    sd = upstream_state_dict(method, tiny_clip)
    src = write_upstream_folder(tmp_path / "upstream", method, sd)
    result = tool.import_checkpoint(str(src), str(tmp_path / "ours"), trust_pickle=True,
                                    as_stored=as_stored)
    assert result.trainer == TRAINER[method] and result.epoch == 1

    # the written file: our engine's layout, tensors only, fp32
    saved = torch.load(tmp_path / "ours" / "prompt_learner" / "model.pth.tar-1",
                       map_location="cpu", weights_only=True)
    assert (tmp_path / "ours" / "prompt_learner" / "checkpoint").read_text() == "model.pth.tar-1\n"
    assert {"state_dict", "epoch", "optimizer", "scheduler", "val_result"} <= set(saved)
    assert saved["epoch"] == 1 and saved["optimizer"] is None and saved["scheduler"] is None
    assert saved["imported_from"]["upstream_trainer"] == TRAINER[method]
    expected = expected_values(method, sd, as_stored)
    assert list(saved["state_dict"]) == list(expected)
    for name, value in saved["state_dict"].items():
        assert value.dtype == torch.float32 and torch.equal(value, expected[name]), name

    # exactly the trainable parameters of our model, loaded through the trainer's load_model
    model = build_ours(method, tiny_clip, cfg_from_settings(method, result.settings))
    ours = dict(model.prompt_learner.named_parameters())
    assert set(ours) == set(expected)
    load_through_trainer(model, method, tmp_path / "ours")
    for name, p in model.prompt_learner.named_parameters():
        assert torch.equal(p.detach(), expected[name]), name
    dropped = [k for keys in result.dropped.values() for k in keys]
    assert set(dropped) >= {k for k in sd if k.endswith(("token_prefix", "token_suffix"))}
    if method in ("ivlp", "maple", "promptsrc"):
        assert "logit_scale" in dropped and any(k.startswith("image_encoder.") for k in dropped)


def test_printed_settings_and_command(tmp_path, tiny_clip, capsys):
    sd = upstream_state_dict("maple", tiny_clip)
    src = write_upstream_folder(tmp_path / "up", "maple", sd)
    assert tool.main([str(src), str(tmp_path / "out"), "--trust-pickle"]) == 0
    out = capsys.readouterr().out
    assert "prompt_learner.compound_prompts_text.0" in out and "-> compound_prompts_text.0" in out
    assert "Dropped" in out and "class-dependent buffers" in out and "frozen CLIP weights" in out
    assert "TRAINER.MAPLE.N_CTX 2" in out and "TRAINER.MAPLE.PROMPT_DEPTH 3" in out
    # 2 learned tokens of "a photo of a": "of a" stays fixed, so CTX_INIT matters and is printed
    assert "TRAINER.MAPLE.CTX_INIT 'a photo of a'" in out
    assert (f"python train.py --trainer MaPLe --eval-only --model-dir {tmp_path / 'out'} "
            "--load-epoch 1") in out
    # with 4 learned tokens every prompt word is replaced: CTX_INIT '' is exact
    sd = upstream_state_dict("ivlp", tiny_clip)
    result = tool.import_checkpoint(str(write_upstream_folder(tmp_path / "up2", "ivlp", sd)),
                                    str(tmp_path / "out2"), trust_pickle=True)
    assert result.settings == {"TRAINER.IVLP.N_CTX_TEXT": 4, "TRAINER.IVLP.N_CTX_VISION": 4,
                               "TRAINER.IVLP.PROMPT_DEPTH_TEXT": 3,
                               "TRAINER.IVLP.PROMPT_DEPTH_VISION": 3, "TRAINER.IVLP.CTX_INIT": ""}


def test_untrusted_pickle_is_refused_with_the_reason(tmp_path, tiny_clip, capsys):
    src = write_upstream_folder(tmp_path / "up", "coop", upstream_state_dict("coop", tiny_clip))
    with pytest.raises(tool.UpstreamImportError, match="--trust-pickle") as info:
        tool.import_checkpoint(str(src), str(tmp_path / "out"))
    assert "pickled Python objects" in str(info.value) and "LR-scheduler" in str(info.value)
    assert not (tmp_path / "out").exists()
    assert tool.main([str(src), str(tmp_path / "out")]) == 1
    assert "error: " in capsys.readouterr().err


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


class Shell:
    """What a malicious checkpoint pickles: ``os.system`` (``posix.system`` on Linux)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Today:
    def __reduce__(self):
        return (datetime.date, (2020, 1, 1))


def _upstream_with(tmp_path, tiny_clip, scheduler) -> Path:
    folder = tmp_path / "up" / "prompt_learner"
    folder.mkdir(parents=True)
    torch.save({"state_dict": upstream_state_dict("coop", tiny_clip), "epoch": 1, "scheduler": scheduler},
               folder / "model.pth.tar-1")
    return tmp_path / "up"


@pytest.mark.parametrize("payload", [Evil, Shell])
def test_trusted_files_still_cannot_run_code(tmp_path, tiny_clip, capsys, payload):
    marker = tmp_path / "code_was_run"
    src = _upstream_with(tmp_path, tiny_clip, payload(str(marker)))
    name = "posix.system" if payload is Shell else "pathlib.Path.touch"
    for flags in ([], ["--trust-pickle"], ["--trust-pickle", "--allow-global", name]):
        assert tool.main([str(src), str(tmp_path / "out"), *flags]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err
        assert "--allow-global" not in err.replace(f"--allow-global {name}:", "")   # never suggested
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_allowing_a_forbidden_global_is_refused_before_reading(tmp_path, tiny_clip, capsys):
    src = _upstream_with(tmp_path, tiny_clip, Shell(str(tmp_path / "x")))
    assert tool.main([str(src), str(tmp_path / "out"), "--trust-pickle", "--allow-global", "builtins.eval"]) == 1
    assert capsys.readouterr().err.splitlines()[0] == (
        "error: --allow-global builtins.eval: it runs code or touches the system, so it is never unpickled; "
        "no Dassl or PyTorch checkpoint needs it")


def test_harmless_unknown_object_can_be_allowed_by_name(tmp_path, tiny_clip):
    src = _upstream_with(tmp_path, tiny_clip, Today())
    with pytest.raises(tool.UpstreamImportError, match="refused to unpickle the Python object datetime.date.*"
                                                       "--allow-global datetime.date"):
        tool.import_checkpoint(str(src), str(tmp_path / "out"), trust_pickle=True)
    result = tool.import_checkpoint(str(src), str(tmp_path / "out"), trust_pickle=True,
                                    allow_globals=["datetime.date"])
    assert result.trainer == "CoOp"


def test_random_bytes_are_corrupt_not_a_trust_question(tmp_path, capsys):
    folder = tmp_path / "up" / "prompt_learner"
    folder.mkdir(parents=True)
    (folder / "model.pth.tar-1").write_bytes(random.Random(0).randbytes(4000))
    assert tool.main([str(tmp_path / "up"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {folder / 'model.pth.tar-1'} is not a readable PyTorch checkpoint: it is corrupt")
    assert "--trust-pickle" not in err


def test_not_an_upstream_checkpoint_is_explained(tmp_path, tiny_clip):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "log.txt").write_text("hello")
    with pytest.raises(tool.UpstreamImportError, match="not an upstream checkpoint folder.*"
                                                       "VLPromptLearner/.*log.txt"):
        tool.import_checkpoint(str(tmp_path / "run"), str(tmp_path / "out"), trust_pickle=True)
    with pytest.raises(tool.UpstreamImportError, match="does not exist"):
        tool.import_checkpoint(str(tmp_path / "nope"), str(tmp_path / "out"))
    # one of our own checkpoints: nothing to convert
    ours = tmp_path / "ours" / "prompt_learner"
    ours.mkdir(parents=True)
    torch.save({"state_dict": {"ctx_text.0": torch.zeros(4, 64)}, "epoch": 3},
               ours / "model.pth.tar-3")
    with pytest.raises(tool.UpstreamImportError, match="already a checkpoint of this project"):
        tool.import_checkpoint(str(tmp_path / "ours"), str(tmp_path / "out"))
    # an epoch that is not there names the ones that are
    src = write_upstream_folder(tmp_path / "up", "coop", upstream_state_dict("coop", tiny_clip))
    with pytest.raises(tool.UpstreamImportError, match=r"epochs in .*: 1"):
        tool.import_checkpoint(str(src), str(tmp_path / "out"), trust_pickle=True, epoch=5)


def test_fp16_checkpoint_trainer_choice_and_overwrite(tmp_path, tiny_clip):
    sd = upstream_state_dict("ivlp", tiny_clip, dtype=torch.float16)   # PREC fp16 on a GPU
    src = write_upstream_folder(tmp_path / "up", "ivlp", sd)
    result = tool.import_checkpoint(str(src), str(tmp_path / "out"), trust_pickle=True,
                                    trainer="PromptSRC")
    assert result.trainer == "PromptSRC" and result.upstream_trainer == "IVLP"
    assert all(v.dtype == torch.float32 for v in result.state_dict.values())
    assert torch.equal(result.state_dict["ctx_text.0"], sd["prompt_learner.ctx"].float())
    assert any("float16" in note for note in result.notes)
    with pytest.raises(tool.UpstreamImportError, match="exists.*--overwrite"):
        tool.import_checkpoint(str(src), str(tmp_path / "out"), trust_pickle=True)
    tool.import_checkpoint(str(src), str(tmp_path / "out"), trust_pickle=True, overwrite=True)
    with pytest.raises(tool.UpstreamImportError, match="MaPLe cannot evaluate|which MaPLe"):
        tool.import_checkpoint(str(src), str(tmp_path / "o2"), trust_pickle=True, trainer="MaPLe")


@pytest.mark.slow
def test_train_py_eval_only_loads_a_converted_checkpoint(tmp_path, tiny_clip):
    """The converted folder is a --model-dir for train.py --eval-only (IVLP, synthetic data)."""
    dataset_yaml = REPO / "configs" / "datasets" / "synthetic_clean.yaml"
    if not dataset_yaml.is_file():
        pytest.skip("no synthetic dataset config in this checkout")
    backbone = tmp_path / "tiny.pt"
    torch.save(tiny_clip.state_dict(), backbone)
    src = write_upstream_folder(tmp_path / "up", "ivlp", upstream_state_dict("ivlp", tiny_clip))
    result = tool.import_checkpoint(str(src), str(tmp_path / "imported"), trust_pickle=True)
    opts = [x for k, v in result.settings.items() for x in (k, str(v))]
    env = {k: v for k, v in os.environ.items() if k not in ("MMLOP_TRAINERS",
                                                             "MMLOP_TRAINER_OVERRIDES")}
    r = subprocess.run(
        [sys.executable, "train.py", "--root", str(tmp_path / "data"), "--seed", "1",
         "--trainer", "IVLP", "--dataset-config-file", str(dataset_yaml),
         "--config-file", str(REPO / "configs" / "trainers" / "IVLP" / "vit_b16_c2_ep20_batch4_4+4ctx.yaml"),
         "--output-dir", str(tmp_path / "eval"), "--eval-only", "--model-dir",
         str(tmp_path / "imported"), "--load-epoch", "1", "MODEL.BACKBONE.NAME", str(backbone),
         "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0", "DATASET.NUM_SHOTS", "1",
         "DATASET.SUBSAMPLE_CLASSES", "new", "DATALOADER.TEST.BATCH_SIZE", "500", *opts],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    log = (tmp_path / "eval" / "log.txt").read_text()
    assert f'Loading weights to prompt_learner from "{tmp_path / "imported"}' in log
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["trainer"] == "IVLP" and results["epoch"] == 1 and results["total"] > 0


# ----------------------------------------------------------------------------- upstream fixtures


@pytest.fixture(scope="module")
def fixtures():
    if not FIXTURES.is_dir():
        pytest.skip(shared_data_skip_reason(FIXTURES))
    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    state_dict = torch.load(FIXTURES / "tiny_clip_state_dict.pt", map_location="cpu",
                            weights_only=True)
    return types.SimpleNamespace(
        manifest=manifest,
        classnames=json.loads((FIXTURES / "classnames.json").read_text()),
        inputs=torch.load(FIXTURES / "inputs.pt", map_location="cpu", weights_only=True),
        clip_fp32={k: v.float() for k, v in state_dict.items()})


def _fixture_logits(fx, method: str, out_dir: Path, cfg: dict) -> torch.Tensor:
    clip_model = build_model(fx.clip_fp32, precision="fp32")
    model = build_ours(method, clip_model, cfg, fx.classnames)
    load_through_trainer(model, method, out_dir)
    with torch.no_grad():
        return model(fx.inputs)


# The fixtures of MaPLe and PromptSRC were made with Tensor.half/Module.half as the identity (their
# README), so upstream's fp16 cast of inserted prompts did not happen there: compare as stored.
AS_STORED = {"coop": False, "cocoop": False, "ivlp": False, "maple": True, "promptsrc": True}


@pytest.mark.parametrize("method", list(CONFIGS))
def test_fixture_checkpoints_give_upstream_logits(tmp_path, fixtures, method):
    fx = fixtures
    facts = fx.manifest["methods"][method]
    assert {k: facts["cfg_trainer"][k] for k in CONFIGS[method]} == CONFIGS[method]
    src = FIXTURES / method
    with pytest.raises(tool.UpstreamImportError, match="--trust-pickle"):
        tool.import_checkpoint(str(src), str(tmp_path / "refused"))
    result = tool.import_checkpoint(str(src), str(tmp_path / "ours"), trust_pickle=True,
                                    as_stored=AS_STORED[method])
    assert result.upstream_trainer == TRAINER[method] and result.epoch == facts["epoch"]
    expected = torch.load(FIXTURES / facts["logits_file"], map_location="cpu", weights_only=True)

    # with the fixture's config values (manifest.json) ...
    logits = _fixture_logits(fx, method, tmp_path / "ours", dict(facts["cfg_trainer"]))
    diff = (logits - expected).abs().max().item()
    assert diff <= 1e-5, f"{method}: max abs diff {diff:.3g}"
    # ... and with the settings the converter printed
    logits = _fixture_logits(fx, method, tmp_path / "ours", cfg_from_settings(method, result.settings))
    assert (logits - expected).abs().max().item() <= 1e-5


def test_fixture_ivlp_needs_upstreams_fp16_prompt_cast(tmp_path, fixtures):
    """Upstream IVLP (an fp32 run) computes with fp16-rounded inserted prompts: the stored values
    themselves are off by more than the tolerance, their rounding is within it."""
    result = tool.import_checkpoint(str(FIXTURES / "ivlp"), str(tmp_path / "stored"),
                                    trust_pickle=True, as_stored=True)
    assert not any("fp16 rounding" in note for note in result.notes)
    expected = torch.load(FIXTURES / "ivlp_logits.pt", map_location="cpu", weights_only=True)
    cfg = dict(fixtures.manifest["methods"]["ivlp"]["cfg_trainer"])
    diff = (_fixture_logits(fixtures, "ivlp", tmp_path / "stored", cfg) - expected).abs().max()
    assert diff > 1e-5
