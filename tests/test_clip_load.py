"""clip.load / clip.clip._download / clip.load_state_dict: files, cache, checks. No internet."""
import io
import os
import pathlib
import pickle
import warnings

import pytest
import torch
from PIL import Image

import clip
from clip import clip as clip_module
from tests.clip_helpers import TINY_RESNET, TINY_VIT, FileServer, randomize_batchnorm, tiny_model, unused_port

MARKER = "clip_test_pickle_was_executed"


class Evil:
    """Unpickling this creates a marker file: it must never happen."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _torchscript_bytes(model):
    images = torch.randn(1, 3, model.visual.input_resolution, model.visual.input_resolution)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (images, clip.tokenize(["a dog"])), check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
    return buffer.getvalue()


def _features(model):
    torch.manual_seed(0)
    n = model.visual.input_resolution
    with torch.no_grad():
        return (model.encode_image(torch.randn(2, 3, n, n)),
                model.encode_text(clip.tokenize(["a photo of a dog.", "a cat"])))


@pytest.fixture
def server():
    with FileServer() as s:
        yield s


@pytest.fixture(autouse=True)
def _no_user_cache(tmp_path, monkeypatch):
    # never touch ~/.cache/clip from tests
    monkeypatch.setenv("CLIP_CACHE_DIR", str(tmp_path / "env_cache"))


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("config", ["vit", "resnet"])
def test_torchscript_and_plain_state_dict_load_identically(tmp_path, config):
    model = tiny_model(TINY_RESNET if config == "resnet" else TINY_VIT)
    if config == "resnet":
        randomize_batchnorm(model)
    ts_path, sd_path, wrapped_path = (tmp_path / "ts.pt", tmp_path / "sd.pt", tmp_path / "w.pth")
    ts_path.write_bytes(_torchscript_bytes(model))
    torch.save(model.state_dict(), sd_path)
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, wrapped_path)

    expected = _features(model)
    n = model.visual.input_resolution
    for path in (ts_path, sd_path, wrapped_path):
        loaded, preprocess = clip.load(str(path), device="cpu")
        assert preprocess(Image.new("RGB", (90, 70))).shape[-2:] == (n, n)
        assert loaded.dtype == torch.float32 and not loaded.training
        assert loaded.visual.input_resolution == model.visual.input_resolution
        for got, exp in zip(_features(loaded), expected):
            torch.testing.assert_close(got, exp, atol=0, rtol=0)
    sd = clip.load_state_dict(ts_path)
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    assert set(model.state_dict()) <= set(sd)


def test_load_with_fp16_precision_keeps_openai_layout(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(tiny_model().state_dict(), path)
    model, _ = clip.load(str(path), device="cpu", precision="fp16")
    assert model.dtype == torch.float16 and model.token_embedding.weight.dtype == torch.float32
    with pytest.raises(ValueError, match="precision"):
        clip.load(str(path), device="cpu", precision="bf16")
    with pytest.raises(NotImplementedError, match="jit=False"):
        clip.load(str(path), device="cpu", jit=True)


def test_random_bytes_are_rejected_with_file_name(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(RuntimeError, match="garbage.pt is neither a TorchScript archive"):
        clip.load(str(path), device="cpu")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_arbitrary_pickle_is_never_executed(tmp_path, monkeypatch, writer):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / MARKER
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        if writer == "pickle":
            pickle.dump(Evil(str(marker)), f)
        else:
            torch.save({"state_dict": Evil(str(marker))}, f)
    with pytest.raises(RuntimeError, match=r"evil\.pt"):
        clip.load_state_dict(path)
    with pytest.raises(RuntimeError, match=r"evil\.pt"):
        clip.load(str(path), device="cpu")
    assert not marker.exists()
    # sanity check of the test itself: a plain pickle.load would have run it
    if writer == "pickle":
        with open(path, "rb") as f:
            pickle.load(f)
        assert marker.exists()


def test_non_state_dict_content_is_rejected(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(RuntimeError, match="list.pt does not hold a state dict"):
        clip.load_state_dict(path)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        clip.load_state_dict(tmp_path / "missing.pt")


def test_unknown_model_name_lists_available_models():
    with pytest.raises(RuntimeError, match="Model ViT-H/14 not found") as info:
        clip.load("ViT-H/14", device="cpu")
    for name in clip.available_models():
        assert name in str(info.value)


def test_model_table():
    assert clip.available_models() == ["RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B/32",
                                       "ViT-B/16", "ViT-L/14", "ViT-L/14@336px"]
    for name, url in clip_module._MODELS.items():
        assert url.startswith("https://openaipublic.azureedge.net/clip/models/")
        digest, filename = url.split("/")[-2:]
        assert len(digest) == 64 and int(digest, 16) >= 0
        assert filename == name.replace("/", "-").replace("@", "-") + ".pt"


def test_preprocess():
    preprocess = clip_module._transform(32)
    image = Image.new("L", (50, 40), color=128)
    x = preprocess(image)
    assert x.shape == (3, 32, 32)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])
    torch.testing.assert_close(x[:, 0, 0], (128 / 255 - mean) / std)


# --------------------------------------------------------------------------- downloads


def test_download_verifies_caches_and_reuses(tmp_path, server):
    data = os.urandom(300_000)
    url = server.add("Model-A.pt", data)
    path = clip_module._download(url, root=str(tmp_path / "cache"))
    assert path == str(tmp_path / "cache" / "Model-A.pt")
    assert pathlib.Path(path).read_bytes() == data
    assert len(server.requests) == 1
    assert os.listdir(tmp_path / "cache") == ["Model-A.pt"]
    # cached with the right hash: no request at all, and it works offline
    assert clip_module._download(url, root=str(tmp_path / "cache")) == path
    offline_url = url.replace(server.base, f"http://127.0.0.1:{unused_port()}")
    assert clip_module._download(offline_url, root=str(tmp_path / "cache")) == path
    assert len(server.requests) == 1


def test_cache_dir_from_env_var(tmp_path, server, monkeypatch):
    monkeypatch.setenv("CLIP_CACHE_DIR", str(tmp_path / "from_env"))
    url = server.add("m.pt", b"weights")
    assert clip_module._download(url) == str(tmp_path / "from_env" / "m.pt")
    assert clip_module.default_cache_dir() == str(tmp_path / "from_env")
    monkeypatch.delenv("CLIP_CACHE_DIR")
    assert clip_module.default_cache_dir() == os.path.expanduser("~/.cache/clip")


def test_wrong_hash_leaves_nothing_and_explains(tmp_path, server):
    url = server.add("Model-B.pt", b"not the expected content", digest="0" * 64)
    root = tmp_path / "cache"
    with pytest.raises(RuntimeError) as info:
        clip_module._download(url, root=str(root))
    message = str(info.value)
    assert "SHA-256" in message and "does not match" in message
    assert url in message and str(root / "Model-B.pt") in message and "Retry" in message
    assert os.listdir(root) == []


def test_interrupted_transfer_leaves_nothing_and_explains(tmp_path, server):
    data = os.urandom(200_000)
    url = server.add("Model-C.pt", data)
    server.short[url[len(server.base):]] = 1000
    root = tmp_path / "cache"
    with pytest.raises(RuntimeError) as info:
        clip_module._download(url, root=str(root))
    message = str(info.value)
    assert "interrupted" in message or "Could not download" in message
    assert url in message and str(root / "Model-C.pt") in message
    assert os.listdir(root) == []


def test_cached_file_with_wrong_hash_is_downloaded_again(tmp_path, server):
    data = b"good weights" * 1000
    url = server.add("Model-D.pt", data)
    root = tmp_path / "cache"
    root.mkdir()
    (root / "Model-D.pt").write_bytes(b"corrupted")
    with pytest.warns(UserWarning, match="does not match"):
        path = clip_module._download(url, root=str(root))
    assert pathlib.Path(path).read_bytes() == data and len(server.requests) == 1


def test_cached_file_with_wrong_hash_offline_gives_advice(tmp_path, server):
    data = b"good weights"
    url = server.add("Model-E.pt", data)
    root = tmp_path / "cache"
    root.mkdir()
    (root / "Model-E.pt").write_bytes(b"corrupted")
    offline_url = url.replace(server.base, f"http://127.0.0.1:{unused_port()}")
    with pytest.warns(UserWarning), pytest.raises(RuntimeError) as info:
        clip_module._download(offline_url, root=str(root))
    message = str(info.value)
    assert "Could not download" in message and str(root / "Model-E.pt") in message
    assert sorted(os.listdir(root)) == ["Model-E.pt"]


def test_load_by_name_downloads_then_works_offline(tmp_path, server, monkeypatch):
    model = tiny_model()
    data = _torchscript_bytes(model)
    url = server.add("Tiny.pt", data)
    monkeypatch.setitem(clip_module._MODELS, "Tiny", url)
    loaded, preprocess = clip.load("Tiny", device="cpu", download_root=str(tmp_path / "c"))
    assert len(server.requests) == 1
    for got, exp in zip(_features(loaded), _features(model)):
        torch.testing.assert_close(got, exp, atol=0, rtol=0)
    loaded_again, _ = clip.load("Tiny", device="cpu", download_root=str(tmp_path / "c"))
    assert len(server.requests) == 1
    assert "Tiny" in clip.available_models()
