"""Tiny-CLIP pretraining: determinism, checkpoint format (clip.load, OpenAI names), caching, CLI."""
from dataclasses import replace

import pytest
import torch

import clip
from proxy.data import CaptionedShapes, trim_tokens
from proxy.pretrain import StandInPrompts, checkpoint_path, contrastive_loss, get_checkpoint, lr_at, main, pretrain
from proxy.tiny_clip import HELD_OUT, TINY_CLIP_ARCH, PretrainConfig

TINY = replace(PretrainConfig(), steps=2, batch_size=8, warmup_steps=1)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_pretraining_is_deterministic_per_seed():
    a = pretrain(3, TINY, log=lambda _: None)
    b = pretrain(3, TINY, log=lambda _: None)
    c = pretrain(4, TINY, log=lambda _: None)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["visual.conv1.weight"], c["visual.conv1.weight"])


def test_checkpoint_loads_with_clip_load_and_has_openai_names(tmp_path):
    lines = []
    path = get_checkpoint(1, TINY, cache_dir=str(tmp_path), evaluate=False, log=lines.append)
    assert path == checkpoint_path(1, TINY, str(tmp_path))
    assert any(line.startswith("pretrain step 2/2 loss") for line in lines)
    state = torch.load(path, weights_only=True)
    for name in ("visual.conv1.weight", "visual.class_embedding", "visual.proj", "token_embedding.weight",
                 "transformer.resblocks.3.attn.in_proj_weight", "text_projection", "logit_scale"):
        assert name in state
    assert state["visual.conv1.weight"].shape == (128, 3, 8, 8)
    assert state["token_embedding.weight"].shape == (49408, 128)
    model, preprocess = clip.load(path, device="cpu")
    assert model.visual.input_resolution == 32
    assert model.encode_image(torch.zeros(2, 3, 32, 32)).shape == (2, TINY_CLIP_ARCH["embed_dim"])
    assert model.encode_text(clip.tokenize(["a photo of a red star."])).shape == (1, 128)
    # Second call reuses the cache; another seed is another file.
    lines.clear()
    assert get_checkpoint(1, TINY, cache_dir=str(tmp_path), evaluate=False, log=lines.append) == path
    assert lines == [f"Using cached tiny CLIP {path}"]
    assert checkpoint_path(2, TINY, str(tmp_path)) != path
    assert checkpoint_path(1, replace(TINY, lr=2e-3), str(tmp_path)) != path


def test_cli_copies_checkpoint_to_out(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MMLOP_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "weights" / "tiny.pt"
    assert main(["--seed", "1", "--steps", "1", "--no-eval", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1].startswith(str(tmp_path / "cache" / "tiny_clip-"))
    assert out.read_bytes() == open(printed[-1], "rb").read()
    with pytest.raises(SystemExit):
        main(["--steps", "0"])


def test_batches_hold_out_compositions_and_use_templates():
    stream = CaptionedShapes(0, 256, HELD_OUT, template_mix=0.5, templates=("a photo of a {}.", "a sketch of a {}."))
    images, tokens, class_ids = next(stream)
    assert images.shape == (256, 3, 32, 32) and images.dtype == torch.float32
    assert tokens.shape[0] == 256 and tokens.shape[1] < 77
    names = {stream.classes[i][0] for i in class_ids.tolist()}
    assert not names & set(HELD_OUT) and len(HELD_OUT) == 10
    sketch = clip.tokenize(["a sketch of a x."])[0, 1:3]
    n_sketch = sum(bool((row[1:3] == sketch).all()) for row in tokens)
    assert 80 < n_sketch < 176  # about half
    with pytest.raises(ValueError, match="unknown classes"):
        CaptionedShapes(0, 4, ("red blob",))


def test_style_mix_renders_that_fraction_in_other_styles():
    plain = CaptionedShapes(3, 400, style_mix=0.0)
    mixed = CaptionedShapes(3, 400, style_mix=0.25)
    (a, _, ids_a), (b, _, ids_b) = next(plain), next(mixed)
    assert torch.equal(ids_a, ids_b)  # same scenes; only the style of some images differs
    changed = (a != b).flatten(1).any(dim=1).float().mean().item()
    assert 0.17 < changed < 0.33, changed
    assert torch.equal(a, next(CaptionedShapes(3, 400))[0])  # no mixing unless asked


def test_stand_in_prompts_touch_only_prompt_positions_while_active():
    torch.manual_seed(0)
    model = clip.model.CLIP(**TINY_CLIP_ARCH).eval()
    images = torch.randn(3, 3, 32, 32)
    tokens = trim_tokens(clip.tokenize(["a photo of a red star.", "a photo of a blue ring."]))
    with torch.no_grad():
        plain = model.encode_image(images), model.encode_text(tokens)
        seen = []
        hook = model.visual.transformer.resblocks[1].register_forward_pre_hook(lambda m, a: seen.append(a[0].shape))
        stand_ins = StandInPrompts(model, n_tokens=4, depth=3)
        assert all(torch.equal(a, b) for a, b in zip(plain, (model.encode_image(images), model.encode_text(tokens))))
        stand_ins.active = True
        prompted = model.encode_image(images), model.encode_text(tokens)
        assert seen[-1] == (17 + 4, 3, 128)  # 4 tokens appended after the 16 patches and [CLS]
        assert not torch.allclose(prompted[0], plain[0]) and not torch.allclose(prompted[1], plain[1])
        stand_ins.remove()
        hook.remove()
        assert all(torch.equal(a, b) for a, b in zip(plain, (model.encode_image(images), model.encode_text(tokens))))


def test_trim_tokens_keeps_text_features():
    tokens = clip.tokenize(["a photo of a red star.", "a photo of a very very small blue heart."])
    trimmed = trim_tokens(tokens)
    assert trimmed.shape[1] == int(tokens.argmax(-1).max()) + 1
    torch.manual_seed(0)
    model = clip.model.CLIP(**TINY_CLIP_ARCH).eval()
    with torch.no_grad():
        assert torch.allclose(model.encode_text(tokens), model.encode_text(trimmed), atol=1e-5)


def test_loss_treats_same_class_as_positives_and_schedule():
    feats = torch.eye(4)
    ids = torch.tensor([0, 0, 1, 2])
    scale = torch.tensor(0.0)
    aligned = contrastive_loss(feats, feats, scale, ids)
    swapped = contrastive_loss(feats, feats[[1, 0, 2, 3]], scale, ids)
    assert torch.allclose(aligned, swapped)  # swapping two captions of one class changes nothing
    assert contrastive_loss(feats, feats[[2, 1, 0, 3]], scale, ids) > aligned
    config = PretrainConfig()
    assert lr_at(0, config) == pytest.approx(config.lr / config.warmup_steps)
    assert lr_at(config.warmup_steps - 1, config) == pytest.approx(config.lr)
    assert lr_at(config.steps - 1, config) < 1e-6


def test_bf16_autocast_only_where_the_cpu_has_it_and_the_cache_key_names_the_choice(monkeypatch):
    """The default config decides bf16 per machine (emulated bf16 made pretraining hours long on
    an AVX2-only CI machine); the checkpoint of an explicit choice and of the default that resolves
    to it are one file, and the record says which precision was used."""
    import proxy.tiny_clip as tiny_clip

    for native in (True, False):
        monkeypatch.setattr(tiny_clip, "fast_cpu_bf16", lambda native=native: native)
        assert PretrainConfig().resolved().bf16 is native
        assert checkpoint_path(1, PretrainConfig()) == checkpoint_path(1, replace(PretrainConfig(), bf16=native))
        assert checkpoint_path(1, PretrainConfig()) != checkpoint_path(1, replace(PretrainConfig(), bf16=not native))
    assert replace(PretrainConfig(), bf16=False).resolved().bf16 is False  # an explicit choice stays


def test_pretraining_record_names_the_resolved_precision(tmp_path, monkeypatch):
    import json

    import proxy.tiny_clip as tiny_clip

    monkeypatch.setattr(tiny_clip, "fast_cpu_bf16", lambda: False)
    path = get_checkpoint(1, replace(TINY, bf16=None), cache_dir=str(tmp_path), evaluate=False, log=lambda _: None)
    record = json.load(open(path[:-len(".pt")] + ".json"))
    assert record["config"]["bf16"] is False
