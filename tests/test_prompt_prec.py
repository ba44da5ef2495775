"""``TRAINER.<NODE>.PROMPT_PREC``: the prompt parameters' dtype (``trainers/core/precision.py``).

On CPU every ``PREC`` falls back to fp32, so the fp16 path is exercised here with a forced fp16
``Precision`` on CPU (fp16 CPU kernels are enough for a tiny CLIP): under ``upstream`` the
tensors upstream trains as fp16 parameters are fp16 and the others fp32, there is no gradient
scaler and one optimizer step is plain SGD in fp16; under ``fp32`` (the default) every prompt is
fp32 and a run gives bit for bit what it gave without the key; a bad value stops the run before
anything is loaded.
"""
from __future__ import annotations

import os

import pytest
import torch

import datasets  # noqa: F401  (registers the datasets)
import tests.toy_run  # noqa: F401  (registers the toy dataset of the ``data_root`` fixture)
import train
import trainers
from clip.model import build_model_from_config
from dassl.config import get_cfg_default
from dassl.engine import build_trainer
from dassl.utils import set_random_seed
from trainers.core import trainer as trainer_module
from trainers.core.methods import method_info
from trainers.core.precision import Precision, cast_prompt_parameters, prompt_dtype, resolve_precision, scales_gradients

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(vision_layers=2, transformer_layers=2, vision_width=64, transformer_width=64,
            transformer_heads=1, image_resolution=32, vision_patch_size=8, embed_dim=32)
FP16_CPU = Precision("fp16", torch.float16, None, True, "cpu")

# trainer: (config node, keys for the tiny CLIP, the parameters upstream trains in fp16)
CASES = {
    "CoOp": ("COOP", dict(N_CTX=4, CTX_INIT="a photo of a"), {"ctx"}),
    "CoCoOp": ("COCOOP", dict(N_CTX=4, CTX_INIT="a photo of a"),
               {"ctx", "meta_net.linear1.weight", "meta_net.linear1.bias",
                "meta_net.linear2.weight", "meta_net.linear2.bias"}),
    "IVLP": ("IVLP", dict(PROMPT_DEPTH_TEXT=2, PROMPT_DEPTH_VISION=2), {"ctx_text.0"}),
    "MaPLe": ("MAPLE", dict(PROMPT_DEPTH=2), {"ctx", "proj.weight", "proj.bias"}),
    "PromptSRC": ("PROMPTSRC", dict(PROMPT_DEPTH_TEXT=2, PROMPT_DEPTH_VISION=2, GPA_MEAN=1.0),
                  {"ctx_text.0"}),
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("prompt_prec") / "tiny_clip.pt"
    torch.manual_seed(0)
    torch.save(build_model_from_config("ViT-B/16", **TINY).state_dict(), path)
    return str(path)


def _build(name: str, data_root: str, clip_file: str, out, prompt_prec: str | None):
    """The trainer ``name`` on the toy data; ``prompt_prec`` None: the node lacks the key."""
    node_name, keys, _ = CASES[name]
    cfg = get_cfg_default()
    trainers.extend_cfg(cfg)
    cfg.DATASET.NAME = "ToyColorsTrainCli"
    cfg.DATASET.ROOT = data_root
    cfg.MODEL.BACKBONE.NAME = clip_file
    cfg.INPUT.SIZE = (32, 32)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.TRAIN_X.BATCH_SIZE = 4
    cfg.OPTIM.NAME = "sgd"
    cfg.OPTIM.LR = 0.01
    cfg.OPTIM.MAX_EPOCH = 1
    cfg.USE_CUDA = False
    cfg.OUTPUT_DIR = str(out)
    cfg.TRAINER.NAME = name
    node = cfg.TRAINER[node_name]
    for key, value in keys.items():
        node[key] = value
    if prompt_prec is None:
        del node["PROMPT_PREC"]
    else:
        node.PROMPT_PREC = prompt_prec
    cfg.freeze()
    set_random_seed(1)
    return build_trainer(cfg)


def _step(trainer) -> dict:
    """One training step on the first batch, as the last batch of the epoch (so the LR scheduler
    and PromptSRC's GPA run too); returns the loss summary."""
    trainer.set_model_mode("train")
    batch = next(iter(trainer.train_loader_x))
    trainer.epoch, trainer.batch_idx, trainer.num_batches = 0, 0, 1
    return trainer.forward_backward(batch)


def _dtypes(module) -> dict[str, torch.dtype]:
    return {n: p.dtype for n, p in module.named_parameters()}


@pytest.fixture
def forced_fp16(monkeypatch):
    """``PREC`` resolves to fp16 on the CPU (normally it falls back to fp32 there)."""
    monkeypatch.setattr(trainer_module, "resolve_precision", lambda *args, **kwargs: FP16_CPU)


@pytest.mark.parametrize("name", list(CASES))
def test_upstream_under_fp16_trains_upstreams_fp16_tensors_with_plain_sgd(
        name, forced_fp16, data_root, clip_file, tmp_path, capsys):
    trainer = _build(name, data_root, clip_file, tmp_path, "upstream")
    assert trainer.precision is FP16_CPU and trainer.model.clip_model.dtype == torch.float16
    learner = trainer.model.prompt_learner
    half = CASES[name][2]
    assert _dtypes(learner) == {n: torch.float16 if n in half else torch.float32
                                for n, _ in learner.named_parameters()}
    assert trainer.scaler is None                             # plain SGD, no loss scaling
    node = f"TRAINER.{CASES[name][0]}.PROMPT_PREC"
    assert f"{node} upstream: fp16 parameters" in capsys.readouterr().out

    before = {n: p.detach().clone() for n, p in learner.named_parameters()}
    group = trainer.optim.param_groups[0]
    lr, wd = group["lr"], group["weight_decay"]
    summary = _step(trainer)
    assert torch.isfinite(torch.tensor(summary["loss"]))
    assert _dtypes(learner) == {n: p.dtype for n, p in before.items()}
    for n, p in learner.named_parameters():
        if n not in half:
            continue
        # SGD's first step on the fp16 tensor itself: p - lr * (g + wd * p), in fp16; the
        # gradient is used as computed (no scale), and there is no fp32 master copy.
        g = p.grad
        assert g.dtype == torch.float16
        expected = before[n].add(g.add(before[n], alpha=wd), alpha=-lr)
        assert torch.equal(p.detach(), expected), n
        assert not torch.equal(p.detach(), before[n]), n


@pytest.mark.filterwarnings("ignore:.*CUDA is not available")
@pytest.mark.parametrize("name", ["CoCoOp", "MaPLe"])
def test_fp32_under_fp16_keeps_every_prompt_fp32_and_scales_gradients(
        name, forced_fp16, data_root, clip_file, tmp_path):
    trainer = _build(name, data_root, clip_file, tmp_path, "fp32")
    assert trainer.model.clip_model.dtype == torch.float16
    learner = trainer.model.prompt_learner
    assert set(_dtypes(learner).values()) == {torch.float32}
    assert isinstance(trainer.scaler, torch.amp.GradScaler)
    _step(trainer)
    assert set(_dtypes(learner).values()) == {torch.float32}


@pytest.mark.parametrize("name", ["CoOp", "MaPLe"])
def test_fp32_default_gives_the_same_run_as_without_the_key(name, data_root, clip_file, tmp_path):
    """On the CPU (fp32): the key absent (an upstream ``extend_cfg``), ``fp32`` and ``upstream``
    (which changes nothing under fp32) give bit-identical losses and prompts after a step."""
    results = []
    for i, prompt_prec in enumerate([None, "fp32", "upstream"]):
        trainer = _build(name, data_root, clip_file, tmp_path / str(i), prompt_prec)
        assert trainer.cfg.TRAINER[CASES[name][0]].PROMPT_PREC == (prompt_prec or "fp32")
        assert trainer.scaler is None
        loss = _step(trainer)["loss"]
        state = {n: p.detach().clone() for n, p in trainer.model.prompt_learner.named_parameters()}
        assert set(p.dtype for p in state.values()) == {torch.float32}
        results.append((loss, state))
    for loss, state in results[1:]:
        assert loss == results[0][0]
        assert state.keys() == results[0][1].keys()
        assert all(torch.equal(state[n], results[0][1][n]) for n in state)


def test_the_dtype_decision():
    """fp16 only for a tensor upstream holds in fp16, under ``upstream`` and an fp16 run; the
    gradient scaler is dropped exactly then."""
    cuda = {p: Precision(p, d, a, s, "cuda") for p, d, a, s in [
        ("fp32", torch.float32, None, False), ("fp16", torch.float16, None, True),
        ("bf16", torch.bfloat16, None, False), ("amp", torch.float32, torch.float16, True)]}
    for prec, precision in cuda.items():
        for listed in (True, False):
            assert prompt_dtype(precision, "fp32", listed) == torch.float32
            half = listed and prec == "fp16"
            assert prompt_dtype(precision, "upstream", listed) == (
                torch.float16 if half else torch.float32)
        assert scales_gradients(precision, "fp32") == precision.use_grad_scaler
        assert scales_gradients(precision, "upstream") == (prec == "amp")
    cpu = resolve_precision("fp16", "cpu")                     # falls back to fp32 on the CPU
    assert prompt_dtype(cpu, "upstream", True) == torch.float32
    with pytest.raises(ValueError, match="PROMPT_PREC must be one of fp32, upstream"):
        prompt_dtype(cuda["fp16"], "half", True)


def test_cast_matches_names_and_submodules_not_prefixes():
    module = torch.nn.Module()
    module.proj = torch.nn.Linear(2, 2)
    module.projections = torch.nn.ModuleList([torch.nn.Linear(2, 2)])
    module.ctx = torch.nn.Parameter(torch.zeros(2))
    module.frozen = torch.nn.Parameter(torch.zeros(2), requires_grad=False)
    ctx = module.ctx
    changed = cast_prompt_parameters(module, FP16_CPU, "upstream", ("proj", "ctx", "frozen"))
    assert changed == ["ctx", "proj.weight", "proj.bias"]
    assert module.ctx is ctx and ctx.dtype == torch.float16   # the same parameter object
    assert module.projections[0].weight.dtype == module.frozen.dtype == torch.float32
    assert cast_prompt_parameters(module, FP16_CPU, "fp32", ()) == ["ctx", "proj.weight",
                                                                     "proj.bias"]
    assert set(_dtypes(module).values()) == {torch.float32}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_prompt_prec_fails_before_any_loading(name, tmp_path, capsys):
    info = method_info(name)
    key = f"TRAINER.{CASES[name][0]}.PROMPT_PREC"
    argv = ["--root", str(tmp_path / "no_such_data"), "--trainer", name,
            "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "dtd.yaml"),
            "--config-file", info.config_file(info.default_configs["base2new"]),
            "--output-dir", str(tmp_path / "out"), key, "fp16"]
    assert train.cli(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"{key} = 'fp16' is not allowed" in err, err
    assert "'fp32'" in err and "'upstream'" in err, err
    assert not (tmp_path / "out").exists()          # refused before the output folder (and any loading)
