"""OpenAI CLIP's public API: ``available_models``, ``load``, ``tokenize``, ``build_model``.

Model files
    ``load(name)`` downloads OpenAI's published file for ``name`` (see ``available_models()``)
    into the cache directory and verifies its SHA-256 (the second-to-last component of the URL).
    The cache directory is ``download_root`` if given, else the environment variable
    ``CLIP_CACHE_DIR``, else ``~/.cache/clip`` (OpenAI's and CoOp's location). A cached file with
    the right hash is used without touching the network; to work offline, download the URL by hand
    and place it in the cache directory under the URL's file name (``ViT-B-16.pt``, ...), or pass
    the file's path to ``load``.

    Official files are TorchScript archives. ``load_state_dict`` reads their weights with
    ``torch.jit.load`` (TorchScript's own restricted deserializer) and reads plain state-dict
    files with ``torch.load(weights_only=True)``; no arbitrary pickled Python code is ever run.
"""
from __future__ import annotations

import functools
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
from typing import Sequence

import torch
from PIL import Image
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor
from tqdm import tqdm

from .model import _build, build_model
from .open_clip_models import is_open_clip_name
from .simple_tokenizer import SimpleTokenizer

__all__ = ["available_models", "load", "tokenize", "build_model", "load_state_dict",
           "default_cache_dir", "token_count", "is_open_clip_name"]



class _ModelURLs(dict):
    """OpenAI's model names -> their URLs. Upstream trainer files resolve
    ``MODEL.BACKBONE.NAME`` as ``clip._download(clip._MODELS[name])``; so that they load a local
    weights file too (an offline cluster, a file placed in the cache by hand), looking up the path
    of an existing file gives that path, which ``_download`` returns as it is. ``name in _MODELS``
    and ``available_models()`` still list only the names."""

    def __missing__(self, key):
        if isinstance(key, str) and os.path.isfile(os.path.expanduser(key)):
            return os.path.expanduser(key)
        raise KeyError(f"Model {key!r} not found; available models = {list(self)}, or the path of "
                       "an existing model file")


_BASE = "https://openaipublic.azureedge.net/clip/models"
_MODELS = _ModelURLs({
    "RN50": f"{_BASE}/afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt",
    "RN101": f"{_BASE}/8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599/RN101.pt",
    "RN50x4": f"{_BASE}/7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd/RN50x4.pt",
    "RN50x16": f"{_BASE}/52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa/RN50x16.pt",
    "RN50x64": f"{_BASE}/be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c/RN50x64.pt",
    "ViT-B/32": f"{_BASE}/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
    "ViT-B/16": f"{_BASE}/5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
    "ViT-L/14": f"{_BASE}/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
    "ViT-L/14@336px": f"{_BASE}/3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt",
})
del _BASE

CACHE_ENV_VAR = "CLIP_CACHE_DIR"
_CHUNK = 1 << 20
_TIMEOUT_S = 60

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def available_models() -> list[str]:
    """Names accepted by ``load``."""
    return list(_MODELS)


def default_cache_dir() -> str:
    """``$CLIP_CACHE_DIR`` if set, else ``~/.cache/clip``."""
    return os.environ.get(CACHE_ENV_VAR) or os.path.expanduser("~/.cache/clip")


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


class DownloadError(RuntimeError):
    """A model download failed; the message names the URL, the cause and how to get the file by
    hand (``train.py`` prints it as one line, without a traceback)."""


def _download(url: str, root: str | None = None) -> str:
    """Return the path of the verified cached copy of ``url``, downloading it if needed.

    The file goes to ``<root>/<basename of url>``; ``root`` defaults to ``default_cache_dir()``.
    The expected SHA-256 is the second-to-last component of the URL path. The transfer is written
    to a temporary file in the same folder and moved into place only once complete and verified;
    any failure removes it and raises ``RuntimeError`` saying how to recover.

    ``url`` may also be the path of an existing local file (what ``_MODELS[path]`` gives): it is
    returned as it is, whatever ``root``, and nothing is downloaded or verified.
    """
    if "://" not in url and os.path.isfile(os.path.expanduser(url)):
        return os.path.expanduser(url)
    root = os.path.expanduser(root) if root else default_cache_dir()
    os.makedirs(root, exist_ok=True)
    url_path = urllib.parse.urlparse(url).path
    filename = os.path.basename(url_path)
    expected_sha256 = url_path.split("/")[-2].lower()
    target = os.path.join(root, filename)
    advice = (f"Retry, or download {url} by hand (any browser or `curl -L -o`) and place it at "
              f"{target}")

    if os.path.exists(target) and not os.path.isfile(target):
        raise RuntimeError(f"{target} exists and is not a regular file; remove it and retry")
    if os.path.isfile(target):
        if _sha256(target) == expected_sha256:
            return target
        warnings.warn(f"{target} exists, but its SHA-256 does not match {expected_sha256}; "
                      "downloading it again", stacklevel=2)

    fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{filename}.", suffix=".part")
    try:
        digest = hashlib.sha256()
        received = 0
        with os.fdopen(fd, "wb") as out, \
                urllib.request.urlopen(url, timeout=_TIMEOUT_S) as source:
            length = source.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(total=total, desc=filename, unit="iB", unit_scale=True,
                      unit_divisor=1024, ncols=80) as bar:
                while chunk := source.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total is not None and received != total:
            raise DownloadError(f"Download of {url} was interrupted: received {received} of "
                               f"{total} bytes; nothing was cached. {advice}")
        if digest.hexdigest() != expected_sha256:
            raise DownloadError(f"Downloaded {url} ({received} bytes), but its SHA-256 "
                               f"{digest.hexdigest()} does not match the expected "
                               f"{expected_sha256}; the file was discarded. {advice}")
        os.replace(tmp, target)
    except RuntimeError:
        _remove_quietly(tmp)
        raise
    except (OSError, urllib.error.URLError, http.client.HTTPException) as e:
        _remove_quietly(tmp)
        raise DownloadError(f"Could not download {url}: {e!r}; nothing was cached. {advice}") from None
    except BaseException:  # KeyboardInterrupt and the like: clean up, then propagate unchanged
        _remove_quietly(tmp)
        raise
    return target


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def load_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Read a CLIP state dict from a TorchScript archive or a plain state-dict file, on CPU.

    TorchScript archives (OpenAI's official files) are read with ``torch.jit.load``; other files
    with ``torch.load(..., weights_only=True)``, which accepts a ``{name: tensor}`` dict or a
    ``{"state_dict": {...}}`` wrapper and refuses to unpickle arbitrary Python objects. Anything
    else raises ``RuntimeError`` naming the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CLIP model file not found: {path}")
    try:
        with warnings.catch_warnings():  # torch >= 2.9 flags torch.jit as deprecated
            warnings.simplefilter("ignore", FutureWarning)
            return dict(torch.jit.load(path, map_location="cpu").state_dict())
    except Exception as e:  # not a TorchScript archive: try a plain state dict
        jit_error = e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RuntimeError(
            f"{path} is neither a TorchScript archive nor a plain PyTorch state-dict file "
            f"(TorchScript: {_first_line(jit_error)}; torch.load(weights_only=True): "
            f"{_first_line(e)})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not (isinstance(obj, dict) and obj
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())):
        raise RuntimeError(f"{path} does not hold a state dict (a dict of name -> tensor, "
                           f"possibly under 'state_dict'); got {type(obj).__name__}")
    return obj


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def _convert_image_to_rgb(image: Image.Image) -> Image.Image:
    return image.convert("RGB")


def _transform(n_px: int) -> Compose:
    """CLIP's eval preprocessing: bicubic resize, center crop, RGB, tensor, CLIP normalisation."""
    return Compose([
        Resize(n_px, interpolation=InterpolationMode.BICUBIC),
        CenterCrop(n_px),
        _convert_image_to_rgb,
        ToTensor(),
        Normalize(MEAN, STD),
    ])


class _ResizeLongest:
    """Resize so that the longer edge is ``size`` (open_clip's ``resize_mode="longest"``; the
    center crop that follows pads the shorter edge with zeros)."""

    def __init__(self, size: int, interpolation: InterpolationMode):
        self.size, self.interpolation = size, interpolation

    def __call__(self, image: Image.Image) -> Image.Image:
        from torchvision.transforms import functional as TF

        w, h = image.size
        scale = self.size / max(w, h)
        return TF.resize(image, [max(1, round(h * scale)), max(1, round(w * scale))],
                         interpolation=self.interpolation)


def _preprocess_transform(cfg: dict) -> Compose:
    """Eval preprocessing of a model's ``preprocess_cfg`` (open_clip models): ``resize_mode``
    ``shortest`` (resize + center crop, OpenAI's), ``squash`` (resize to a square) or
    ``longest`` (fit inside, zero padding), then RGB, tensor and the model's normalization."""
    n_px = int(cfg["size"])
    interpolation = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR,
                     "nearest": InterpolationMode.NEAREST}[cfg.get("interpolation", "bicubic")]
    mode = cfg.get("resize_mode", "shortest")
    if mode == "squash":
        resize = [Resize((n_px, n_px), interpolation=interpolation)]
    elif mode == "longest":
        resize = [_ResizeLongest(n_px, interpolation), CenterCrop(n_px)]
    else:
        resize = [Resize(n_px, interpolation=interpolation), CenterCrop(n_px)]
    return Compose([*resize, _convert_image_to_rgb, ToTensor(),
                    Normalize(tuple(cfg["mean"]), tuple(cfg["std"]))])


def load(name: str, device: str | torch.device | None = None, jit: bool = False,
         download_root: str | None = None, precision: str | None = None):
    """Load a CLIP model by name (``available_models()``), from a local file path, or an open_clip
    model named ``open_clip:<model>:<pretrained tag or weights file>`` (``clip.open_clip_models``).

    Returns ``(model, preprocess)``: the model in eval mode on ``device`` (default ``"cuda"`` when
    available, else ``"cpu"``) and the torchvision transform for its input resolution.
    ``precision``: ``"fp16"`` (OpenAI's mixed layout, see ``clip.model.convert_weights``) or
    ``"fp32"`` (every weight fp32 with the file's exact values, no fp16 round trip); the default is
    ``"fp16"`` on CUDA and ``"fp32"`` elsewhere.

    The model is built as ``build_model`` builds it (random initialization, then the weights), so
    loading advances the global torch generator exactly as OpenAI's ``build_model``/``load`` and
    the ``load_clip_to_cpu`` of CoOp-family code do, whatever the precision. An open_clip model
    is built without drawing random numbers (there is no upstream stream to follow), downloads
    through open_clip's cache (``download_root`` is its ``cache_dir``), and comes with the
    preprocessing it was trained with (``model.preprocess_cfg``).
    """
    if jit:
        raise NotImplementedError("jit=True is not supported by this implementation; "
                                  "use clip.load(..., jit=False)")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if precision is None:
        precision = "fp16" if device.type == "cuda" else "fp32"
    if precision not in ("fp16", "fp32"):
        raise ValueError(f"precision must be 'fp16' or 'fp32', got {precision!r}")

    if is_open_clip_name(name):
        from .open_clip_models import build as build_open_clip

        model = build_open_clip(name, precision=precision, cache_dir=download_root)
        model = model.to(device).eval()
        return model, _preprocess_transform(model.preprocess_cfg)
    if name in _MODELS:
        path = _download(_MODELS[name], download_root)
    elif os.path.isfile(os.path.expanduser(name)):
        path = os.path.expanduser(name)
    else:
        raise RuntimeError(f"Model {name} not found; available models = {available_models()} "
                           "(or pass the path of a model file, or open_clip:<model>:<tag or file>)")

    # The state dict is ours alone: the model may keep its tensors instead of copying them.
    model = _build(load_state_dict(path), precision, copy=False)
    model = model.to(device).eval()
    return model, _transform(model.visual.input_resolution)


@functools.cache
def _get_tokenizer() -> SimpleTokenizer:
    return SimpleTokenizer()


def token_count(texts: str | Sequence[str]) -> list[int]:
    """Number of BPE tokens of each text, without the start and end tokens (no context limit)."""
    if isinstance(texts, str):
        texts = [texts]
    tokenizer = _get_tokenizer()
    return [len(tokenizer.encode(text)) for text in texts]


def tokenize(texts: str | Sequence[str], context_length: int = 77,
             truncate: bool = False) -> torch.LongTensor:
    """Token ids ``[N, context_length]``: ``<|startoftext|>``, the text, ``<|endoftext|>``, zeros.

    A text that does not fit raises ``RuntimeError`` unless ``truncate`` is set; then it is cut to
    ``context_length`` tokens, the last of which is ``<|endoftext|>``.
    """
    if isinstance(texts, str):
        texts = [texts]
    tokenizer = _get_tokenizer()
    sot, eot = tokenizer.sot_token, tokenizer.eot_token
    result = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        tokens = [sot] + tokenizer.encode(text) + [eot]
        if len(tokens) > context_length:
            if not truncate:
                raise RuntimeError(f"Input {text} is too long for context length {context_length}")
            tokens = tokens[:context_length]
            tokens[-1] = eot
        result[i, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
    return result
