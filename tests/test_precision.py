"""GPU precisions compute what upstream computes (``trainers/core/precision.py``, ``bench/gpu_check.py``).

Upstream's ``PREC fp16`` runs OpenAI's ``build_model`` output: Conv/Linear/attention weights and the
two projections in fp16, embeddings, LayerNorms and ``logit_scale`` in fp32. The backbone cast must
give that layout (and the same one with bf16), so ``exp(logit_scale)`` stays 100.00 instead of
100.03 (fp16) or 98.86 (bf16). Half types are forced onto the CPU kernels here (``--cpu-half``; real
CPU runs fall back to fp32), and one training step of every trainer is compared with fp32.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import tests.toy_run  # noqa: F401  (registers the toy dataset of the ``data_root`` fixture)
from bench import gpu_check
from clip.model import build_model, build_model_from_config
from tests.clip_helpers import TINY_RESNET, TINY_VIT, tiny_model
from trainers.core.methods import registered_methods
from trainers.core.precision import Precision, cast_backbone

pytestmark = pytest.mark.usefixtures("one_thread")

FP16 = Precision("fp16", torch.float16, None, True, "cpu")
BF16 = Precision("bf16", torch.bfloat16, None, False, "cpu")
AMP = Precision("amp", torch.float32, torch.float16, True, "cpu")
FP32 = Precision("fp32", torch.float32, None, False, "cpu")
OPENAI_LOGIT_SCALE = 4.6052  # ln(100) to the 4 decimals OpenAI's checkpoints store
TRAINERS = [m.name for m in registered_methods() if m.tiny_config]


def _stays_fp32(name: str) -> bool:
    """OpenAI's rule written out by name: embeddings, LayerNorms, BatchNorms, logit_scale, and the
    attention pool's positional embedding keep fp32."""
    leaf = name.rsplit(".", 1)[-1]
    module = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else ""
    return (name in ("token_embedding.weight", "positional_embedding", "logit_scale",
                     "visual.class_embedding", "visual.positional_embedding",
                     "visual.attnpool.positional_embedding")
            or module.startswith(("ln_", "bn")) or ".downsample.1." in name   # downsample.1: a BatchNorm
            or leaf in ("running_mean", "running_var"))


@pytest.mark.parametrize("arch", [TINY_VIT, TINY_RESNET], ids=["vit", "resnet"])
@pytest.mark.parametrize("precision", [FP16, BF16], ids=["fp16", "bf16"])
def test_every_backbone_tensor_gets_openais_dtype(arch, precision):
    model = cast_backbone(tiny_model(arch), precision, "cpu")
    tensors = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    wrong = {k: v.dtype for k, v in tensors.items()
             if v.dtype != (torch.float32 if _stays_fp32(k) else precision.weight_dtype)}
    assert not wrong
    assert any(v.dtype == precision.weight_dtype for v in tensors.values())
    assert gpu_check.layout_errors(model, precision.weight_dtype) == []


@pytest.mark.parametrize("arch", [TINY_VIT, TINY_RESNET], ids=["vit", "resnet"])
def test_fp16_layout_is_openais_build_model_layout(arch):
    """The same dtypes as the model OpenAI's ``build_model`` returns (``clip.load`` on CUDA)."""
    ours = cast_backbone(tiny_model(arch), FP16, "cpu").state_dict()
    openai = build_model(tiny_model(arch).state_dict()).state_dict()
    assert {k: v.dtype for k, v in ours.items()} == {k: v.dtype for k, v in openai.items()}


@pytest.mark.parametrize("precision", [FP32, AMP], ids=["fp32", "amp"])
def test_fp32_and_amp_keep_every_weight_fp32(precision):
    model = cast_backbone(tiny_model(), precision, "cpu")
    assert {v.dtype for v in model.state_dict().values() if v.is_floating_point()} == {torch.float32}


def test_a_whole_model_cast_is_caught():
    """The check tells the old cast (every floating tensor) from OpenAI's rule."""
    errors = gpu_check.layout_errors(tiny_model().half(), torch.float16)
    assert "logit_scale is torch.float16, OpenAI's rule: torch.float32" in errors
    assert any(e.startswith("token_embedding.weight") for e in errors)


@pytest.mark.parametrize("precision", [FP32, FP16, BF16, AMP], ids=["fp32", "fp16", "bf16", "amp"])
def test_logit_scale_is_100_under_every_precision(precision):
    model = tiny_model()
    with torch.no_grad():
        model.logit_scale.fill_(OPENAI_LOGIT_SCALE)
    scale = cast_backbone(model, precision, "cpu").logit_scale.detach().float().exp().item()
    assert f"{scale:.2f}" == "100.00"
    # What a whole-model cast gave (exp of the rounded exponent), so this test tells them apart.
    rounded = {torch.float16: "100.03", torch.bfloat16: "98.86"}
    if precision.weight_dtype in rounded:
        old = torch.tensor(OPENAI_LOGIT_SCALE).to(precision.weight_dtype).float().exp().item()
        assert f"{old:.2f}" == rounded[precision.weight_dtype]


def test_gpu_check_backbone_has_openais_logit_scale(tmp_path):
    sd = torch.load(gpu_check.save_backbone(str(tmp_path / "b.pt"), "tiny"))
    assert sd["logit_scale"].exp().item() == pytest.approx(100.0, abs=1e-4)
    assert sd["visual.conv1.weight"].shape == build_model_from_config(
        "ViT-B/16", **gpu_check.ARCHS["tiny"]).visual.conv1.weight.shape


@pytest.mark.parametrize("name", TRAINERS)
def test_one_step_under_forced_half_precisions_matches_fp32(name, data_root):
    """Every trainer, one step under fp16, fp16 + PROMPT_PREC upstream, bf16 and amp on the CPU
    kernels: layout, logit scale 100.00, finite, step loss and evaluated logits within
    ``gpu_check.TOLERANCES`` of fp32 (relative loss 2e-2 fp16/amp, 8e-2 bf16; logits / scale 5e-3
    fp16/amp, 2e-2 bf16; measured at most 3.5e-3, 2.7e-2, 4.3e-4 and 2.8e-3: docs/PRECISION.md)."""
    rows = gpu_check.check([name], "cpu", "tiny", 1, data_root, "ToyColorsTrainCli", cpu_half=True,
                           log=lambda line: None)
    assert [r.case for r in rows] == [c[0] for c in gpu_check.CASES]
    assert [(r.case, r.verdict, r.notes) for r in rows] == [(r.case, "PASS", []) for r in rows]
    for r in rows[1:]:
        assert r.logit_diff is not None and r.logit_scale == pytest.approx(100.0, abs=5e-3)
        assert (r.loss_rel_diff is not None) == bool(rows[0].losses)
        if r.prec != "fp32":
            assert r.logit_diff > 0    # the half type really ran


def test_gpu_check_on_cpu_skips_cuda_rows_with_a_word_and_writes_the_record(data_root, tmp_path, capsys):
    record = tmp_path / "check.json"
    # Two steps: the toy training set is one batch, so the second step starts the loader over.
    code = gpu_check.main(["--device", "cpu", "--trainers", "CoOp", "--steps", "2", "--data", data_root,
                           "--dataset", "ToyColorsTrainCli", "--json", str(record)])
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0].startswith("GPU check on cpu")
    assert "| CoOp | fp32 | PASS |" in out
    assert out.count("| SKIP |") == 4 and "needs CUDA" in out
    assert "Verdict: PASS (1 passed, 0 failed, 4 skipped)" in out
    data = json.loads(record.read_text())
    assert data["device"] == "cpu" and [r["verdict"] for r in data["rows"]] == ["PASS"] + ["SKIP"] * 4
    assert data["rows"][0]["logit_scale"] == pytest.approx(100.0, abs=5e-3)
    assert len(data["rows"][0]["losses"]) == 2


def test_gpu_check_fails_with_exit_1_past_a_tolerance(data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(gpu_check.TOLERANCES, "bf16", (0.0, 0.0))
    code = gpu_check.main(["--device", "cpu", "--trainers", "CoOp", "--steps", "1", "--cpu-half", "--data",
                           data_root, "--dataset", "ToyColorsTrainCli", "--json", str(tmp_path / "c.json")])
    out = capsys.readouterr().out
    assert code == 1
    assert "| CoOp | bf16 | FAIL |" in out and "(tolerance 0)" in out
    assert "Verdict: FAIL (4 passed, 1 failed, 0 skipped)" in out



@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the message of a machine without CUDA")
def test_gpu_sh_check_without_cuda_stops_with_one_message_before_the_bench():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(["bash", "bench/gpu.sh", "--check"], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable}, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].endswith("error: --device cuda: CUDA is not available here")
    assert proc.stdout == ""                    # nothing ran: neither the check nor the bench
