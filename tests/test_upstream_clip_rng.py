"""Loading CLIP advances the global torch generator exactly as OpenAI's ``build_model`` (which
CoOp's ``load_clip_to_cpu`` calls): ``clip.build_model``, ``clip.load`` and our trainers'
``load_clip_to_cpu`` alike, the last two keeping the file's fp32 values exactly.

The expected numbers are ``torch.manual_seed(1); <build>; torch.rand(5)`` as measured with the
upstream code (the "RNG fact" of the upstream fixtures). They depend only on the architecture, so
the tiny case runs on a random state dict of the fixtures' architecture when the shared folder is
absent, and on the fixture file itself when it is present.
"""
from __future__ import annotations

import json

import pytest
import torch

import clip
from clip.model import build_model, build_model_from_config
from tests.helpers import SHARED_DATA, shared_data_skip_reason
from trainers.core.backbone import load_clip_to_cpu

FIXTURES = SHARED_DATA / "upstream_fixtures"

NO_BUILD = [0.7576315999031067, 0.2793108820915222, 0.40306925773620605, 0.7346844673156738,
            0.029281556606292725]
AFTER_TINY = [0.9434558153152466, 0.8114427924156189, 0.5777493119239807, 0.5188714265823364,
              0.9620816707611084]
AFTER_VIT_B16 = [0.5143173336982727, 0.24165773391723633, 0.5263881683349609, 0.20490717887878418,
                 0.5992180109024048]
# The fixtures' tiny CLIP: ViT, 32 px, patch 16, width 64, 4 layers per tower, embed_dim 64.
TINY_ARCH = dict(embed_dim=64, image_resolution=32, vision_layers=4, vision_width=64,
                 vision_patch_size=16, context_length=77, vocab_size=49408, transformer_width=64,
                 transformer_heads=1, transformer_layers=4)


def _rand_after(build) -> tuple[list[float], object]:
    torch.manual_seed(1)
    out = build()
    return torch.rand(5).tolist(), out


def _check_paths(state_dict: dict, path: str, expected: list[float]) -> None:
    """Every loading path draws ``expected``; the loaders keep the file's values exactly."""
    got, model = _rand_after(lambda: build_model(state_dict))
    assert got == expected and model.dtype == torch.float16
    got, _ = _rand_after(lambda: build_model(state_dict, precision="fp32"))
    assert got == expected
    got, (model, _) = _rand_after(lambda: clip.load(path, device="cpu", precision="fp32"))
    assert got == expected
    got, frozen = _rand_after(lambda: load_clip_to_cpu(path))
    assert got == expected
    stored = torch.load(path, map_location="cpu", weights_only=True)
    for loaded in (model, frozen):
        assert loaded.dtype == torch.float32 and loaded.token_embedding.weight.dtype == torch.float32
        for k, v in loaded.state_dict().items():
            assert v.dtype == torch.float32 and torch.equal(v, stored[k].float()), k


def test_generator_itself_is_unchanged():
    got, _ = _rand_after(lambda: None)
    assert got == NO_BUILD   # if this fails, torch's generator changed and the rest is moot


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_tiny_architecture_draws_as_upstream(tmp_path, dtype):
    torch.manual_seed(0)
    state_dict = {k: v.to(dtype) if v.is_floating_point() else v
                  for k, v in build_model_from_config(TINY_ARCH).state_dict().items()}
    path = tmp_path / "tiny.pt"
    torch.save(state_dict, path)
    _check_paths(state_dict, str(path), AFTER_TINY)


def test_tiny_fixture_file_draws_the_manifest_numbers(tmp_path):
    if not FIXTURES.is_dir():
        pytest.skip(shared_data_skip_reason(FIXTURES))
    manifest = json.loads((FIXTURES / "manifest.json").read_text())["rng_after_build"]
    assert manifest["tiny_clip_state_dict"] == manifest["tiny_clip_state_dict_as_fp32"] == AFTER_TINY
    assert manifest["no_build"] == NO_BUILD and manifest["vit_b16_open_clip_random"] == AFTER_VIT_B16
    fixture = FIXTURES / "tiny_clip_state_dict.pt"
    state_dict = torch.load(fixture, map_location="cpu", weights_only=True)
    _check_paths(state_dict, str(fixture), manifest["tiny_clip_state_dict"])
    as_fp32 = {k: v.float() for k, v in state_dict.items()}
    torch.save(as_fp32, tmp_path / "tiny_fp32.pt")
    _check_paths(as_fp32, str(tmp_path / "tiny_fp32.pt"), manifest["tiny_clip_state_dict_as_fp32"])


@pytest.mark.slow
def test_vit_b16_draws_as_upstream(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    state_dict = open_clip.create_model("ViT-B-16", pretrained=None,
                                        force_quick_gelu=True).state_dict()
    got, model = _rand_after(lambda: build_model(state_dict))
    assert got == AFTER_VIT_B16
    assert model.visual.conv1.weight.dtype == torch.float16 and model.visual.proj.dtype == torch.float16
    assert model.visual.class_embedding.dtype == torch.float32
    del model
    path = tmp_path / "vit_b16.pt"
    torch.save({k: v.half() for k, v in state_dict.items()}, path)   # half the disk of fp32
    got, frozen = _rand_after(lambda: load_clip_to_cpu(str(path)))
    assert got == AFTER_VIT_B16
    assert frozen.dtype == torch.float32
    for k, v in frozen.state_dict().items():
        assert torch.equal(v, state_dict[k].half().float()), k
