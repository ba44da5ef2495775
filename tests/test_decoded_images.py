"""Decoded-image caches (dassl/data/decoded_images.py): exact for evaluation and training, keyed
so that a changed image, transform, size or split is never served stale, written atomically (a
SIGKILL mid-write is never served), shared between builders, skipped when it cannot be written."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dassl.config import get_cfg_default
from dassl.data import DatasetWrapper
from dassl.data import decoded_images as di
from dassl.data.data_manager import cache_for_loader
from dassl.data.datasets import Datum
from dassl.data.transforms import build_transform
from dassl.utils.errors import UserError
from dassl.utils.tools import read_image
from tests.helpers import REPO, SHARED_DATA, shared_data_skip_reason
from tests.toy_run import CLASSNAMES, base_argv, run

pytestmark = pytest.mark.usefixtures("one_thread")
REAL = SHARED_DATA / "real"


def _pixels(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth gradient plus noise: resizing it exercises the interpolation."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / max(1, w - 1), yy * 255 / max(1, h - 1), (xx + yy) * 127 / max(1, h + w)], -1)
    return np.clip(base + rng.integers(-40, 41, (h, w, 3)), 0, 255).astype(np.uint8)


def write_images(folder: Path, n: int = 12, seed: int = 0) -> list[str]:
    """``n`` images of various sizes, formats and modes (RGB/L/P/RGBA/CMYK/16-bit)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        h, w = int(rng.integers(20, 70)), int(rng.integers(20, 70))
        img = Image.fromarray(_pixels(rng, h, w))
        kind = i % 6
        if kind == 0:
            path, img = folder / f"{i:03d}.jpg", img
        elif kind == 1:
            path, img = folder / f"{i:03d}.png", img.convert("L")
        elif kind == 2:
            path, img = folder / f"{i:03d}.png", img.convert("P")
        elif kind == 3:
            path, img = folder / f"{i:03d}.png", img.convert("RGBA")
        elif kind == 4:
            path, img = folder / f"{i:03d}.jpg", img.convert("CMYK")
        else:
            path = folder / f"{i:03d}.png"
            img = Image.fromarray(np.asarray(img.convert("L")).astype(np.uint16) * 257)
        img.save(path)
        paths.append(str(path))
    return paths


def real_images() -> list[str]:
    folders = [REAL / "dtd" / "images", REAL / "oxford_flowers" / "jpg"]
    if not all(f.is_dir() for f in folders):
        pytest.skip(shared_data_skip_reason(REAL))
    return sorted(str(p) for f in folders for p in f.rglob("*.jpg"))[::12]


def cfg_for(cache_dir: Path, size=(24, 24), interpolation="bicubic", transforms=("normalize",), **dataloader):
    cfg = get_cfg_default()
    cfg.DATASET.NAME = "CacheToy"
    cfg.INPUT.SIZE = size
    cfg.INPUT.INTERPOLATION = interpolation
    cfg.INPUT.TRANSFORMS = transforms
    cfg.INPUT.PIXEL_MEAN = [0.48145466, 0.4578275, 0.40821073]
    cfg.INPUT.PIXEL_STD = [0.26862954, 0.26130258, 0.27577711]
    cfg.DATALOADER.CACHE_DIR = str(cache_dir)
    for key, value in dataloader.items():
        cfg.DATALOADER[key] = value
    return cfg


def wrapper(cfg, paths, is_train: bool, split: str = "test", cached: bool = True, lines=None, tfm=None):
    """A ``DatasetWrapper`` over ``paths``, with its cache opened (logging into ``lines``) if ``cached``."""
    data = [Datum(impath=p, label=i % 3, classname=CLASSNAMES[i % 3]) for i, p in enumerate(paths)]
    tfm = tfm if tfm is not None else build_transform(cfg, is_train=is_train)
    ds = DatasetWrapper(cfg, data, transform=tfm, is_train=is_train)
    if cached:
        cache = cache_for_loader(cfg, ds, split, is_train)
        assert cache is not None
        ds.use_cache(cache)
        cache_lines = lines if lines is not None else []
        ds.open_cache(log=cache_lines.append)
        assert ds.images is not None, cache_lines
    return ds


def cache_files(root: Path) -> list[Path]:
    return sorted(root.rglob(f"*{di.SUFFIX}"))


# --- evaluation: bit-identical, built once, then read ---------------------------------------------

@pytest.mark.parametrize("source", ["generated", "real"])
def test_cached_evaluation_images_equal_uncached_bit_for_bit(source, tmp_path):
    if source == "generated":
        paths, size = write_images(tmp_path / "img"), (24, 24)
    else:
        paths, size = real_images(), (224, 224)  # CLIP's evaluation pipeline on real JPEGs
    cfg = cfg_for(tmp_path / "cache", size=size)
    lines: list[str] = []
    cached = wrapper(cfg, paths, is_train=False, lines=lines)
    plain = wrapper(cfg, paths, is_train=False, cached=False)
    assert len(cached) == len(paths) > 5
    for i in range(len(paths)):
        a, b = cached[i], plain[i]
        assert a["img"].dtype == torch.float32 and a["img"].shape == (3, *size)
        assert torch.equal(a["img"], b["img"]), paths[i]
        assert a["label"] == b["label"] and a["impath"] == b["impath"]
    stage = f"resize {size[0]} (bicubic) + center crop {size[0]}x{size[1]}"
    assert lines[0].startswith(f"Decoded-image cache (test, {stage}): building ")
    (path,) = cache_files(tmp_path / "cache")
    assert path.parent.name == "cachetoy" and path.name.startswith(f"test-r{size[0]}bicubic-c{size[0]}x{size[1]}-")
    assert path.stat().st_size > len(paths) * size[0] * size[1] * 3  # pixels + index + footer
    assert lines[-1].startswith(f"Decoded-image cache (test, {stage}): built in ")
    assert f"on disk; the cache folder {tmp_path / 'cache'} holds" in lines[-1]
    # A second loader (another seed, method or protocol) reads the same file without decoding.
    mtime = path.stat().st_mtime_ns
    again: list[str] = []
    wrapper(cfg, paths, is_train=False, lines=again)
    assert again == [f"Decoded-image cache (test, {stage}): {len(paths):,} images read from {path} "
                     f"({di.format_bytes(path.stat().st_size)} on disk; the cache folder {tmp_path / 'cache'} "
                     f"holds {di.format_bytes(path.stat().st_size)})"]
    assert path.stat().st_mtime_ns == mtime and cache_files(tmp_path / "cache") == [path]


def toy_dataset(root: Path) -> str:
    """``ToyColorsTrainCli``'s layout with JPEG/PNG images of 10-30 px (larger than INPUT.SIZE 8x8)."""
    rng = np.random.default_rng(1)
    colors = [(150, 100, 100), (100, 150, 100), (100, 100, 150)]
    for split, n in {"train": 8, "val": 2, "test": 12}.items():
        for cname, color in zip(CLASSNAMES, colors):
            folder = root / split / cname
            folder.mkdir(parents=True)
            for i in range(n):
                h, w = int(rng.integers(10, 31)), int(rng.integers(10, 31))
                noise = rng.integers(-60, 61, (h, w, 3))
                pixels = np.clip(np.asarray(color)[None, None] + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:03d}.{'jpg' if i % 2 else 'png'}")
    return str(root)


@pytest.mark.parametrize("transforms", [["random_flip", "normalize"],
                                        ["random_resized_crop", "random_flip", "normalize"]])
def test_train_py_with_caches_trains_and_predicts_exactly_as_without(transforms, tmp_path, trainer_yaml, capsys):
    """Through train.py (ToyDasslTrainer, 4 epochs, evaluation): every prediction, the accuracy and
    the trained weights are the same with both caches on as with both off."""
    root = toy_dataset(tmp_path / "data")
    opts = ["INPUT.TRANSFORMS", json.dumps(transforms), "INPUT.INTERPOLATION", "bicubic",
            "DATALOADER.CACHE_DIR", str(tmp_path / "cache")]
    on = run(base_argv(root, trainer_yaml, str(tmp_path / "on"), *opts))
    off = run(base_argv(root, trainer_yaml, str(tmp_path / "off"), *opts,
                        "DATALOADER.CACHE_TEST", "False", "DATALOADER.CACHE_TRAIN", "False"))
    assert len(on.evaluator._y_pred) == 36 and len(set(on.evaluator._y_pred)) > 1
    assert on.evaluator._y_pred == off.evaluator._y_pred
    res_on = json.load(open(tmp_path / "on" / "results.json"))
    res_off = json.load(open(tmp_path / "off" / "results.json"))
    assert res_on["accuracy"] == res_off["accuracy"]
    w_on, w_off = on.model.state_dict(), off.model.state_dict()
    assert all(torch.equal(w_on[k], w_off[k]) for k in w_on)
    log = open(tmp_path / "on" / "log.txt").read()
    train_stage = "resize 8x8 (bicubic)" if transforms[0] == "random_flip" else "decoded, full size"
    assert f"Decoded-image cache (train_x, {train_stage}): built in " in log
    assert "Decoded-image cache (test, resize 8 (bicubic) + center crop 8x8): built in " in log
    assert str(tmp_path / "cache" / "toycolorstraincli") in log
    assert "Decoded-image cache" not in open(tmp_path / "off" / "log.txt").read()
    assert len(cache_files(tmp_path / "cache")) == 2  # val is never read (TEST.FINAL_MODEL last_step)


# --- keyed: a change is never served stale ---------------------------------------------------------

def test_cache_is_rebuilt_for_a_changed_image_transform_size_or_split(tmp_path):
    folder = tmp_path / "img"
    folder.mkdir()
    rng = np.random.default_rng(3)
    paths = []
    for i in range(6):  # BMP: a new picture of the same size has the same number of bytes
        Image.fromarray(_pixels(rng, 30, 40)).save(folder / f"{i}.bmp")
        paths.append(str(folder / f"{i}.bmp"))
    cache = tmp_path / "cache"
    cfg = cfg_for(cache)

    def built(cfg_, paths_, split="test") -> Path:
        before = set(cache_files(cache))
        ds = wrapper(cfg_, paths_, is_train=False, split=split)
        plain = wrapper(cfg_, paths_, is_train=False, cached=False)
        assert all(torch.equal(ds[i]["img"], plain[i]["img"]) for i in range(len(paths_)))
        (new,) = set(cache_files(cache)) - before
        return new

    first = built(cfg, paths)
    # The same image replaced by another picture with the same size and modification time.
    st = os.stat(paths[2])
    Image.fromarray(255 - _pixels(rng, 30, 40)).save(paths[2])
    os.utime(paths[2], ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(paths[2]).st_size == st.st_size and os.stat(paths[2]).st_mtime_ns == st.st_mtime_ns
    changed = built(cfg, paths)
    assert changed != first
    arr = di.DecodedImages.open(str(changed), di.cache_key(paths, di.leading_deterministic_steps(
        build_transform(cfg, is_train=False))))
    assert arr is not None and not np.array_equal(arr.array(2), di.DecodedImages(str(first), arr.shapes).array(2))
    # Another interpolation, another input size, another split (list of images): other files.
    others = [built(cfg_for(cache, interpolation="bilinear"), paths), built(cfg_for(cache, size=(16, 16)), paths),
              built(cfg, paths[:4], split="val"), built(cfg, paths[1:] + paths[:1])]
    assert len({first, changed, *others}) == 6
    assert "-r24bilinear-c24x24-" in others[0].name and "-r16bicubic-c16x16-" in others[1].name
    assert others[2].name.startswith("val-")


def test_key_records_what_the_pixels_depend_on(tmp_path):
    paths = write_images(tmp_path / "img", n=2)
    steps = di.leading_deterministic_steps(build_transform(cfg_for(tmp_path), is_train=False))
    key = di.cache_key(paths, steps)
    assert key["stage"] == ["Resize(size=24, interpolation=bicubic, max_size=None, antialias=True)",
                            "CenterCrop(size=(24, 24))"]
    assert {"pillow", "libjpeg", "torchvision", "decoder", "images_sha256"} <= set(key) and key["images"] == 2


# --- atomic: a killed build is never served ---------------------------------------------------------

KILL_SCRIPT = """
import sys
from torchvision.transforms import CenterCrop, Resize
from torchvision.transforms import InterpolationMode
from dassl.data.decoded_images import DecodedImageCache
paths = open(sys.argv[2]).read().split()
steps = [Resize(100, interpolation=InterpolationMode.BICUBIC), CenterCrop(100)]
DecodedImageCache(sys.argv[1], "killed", "test", paths, steps).prepare()
"""


@pytest.mark.slow
def test_sigkill_during_a_cache_build_is_never_served(tmp_path):
    from torchvision.transforms import CenterCrop, InterpolationMode, Resize

    rng = np.random.default_rng(5)
    folder = tmp_path / "img"
    folder.mkdir()
    paths = []
    for i in range(300):
        Image.fromarray(_pixels(rng, 256, 256)).save(folder / f"{i:03d}.jpg", quality=90)
        paths.append(str(folder / f"{i:03d}.jpg"))
    (tmp_path / "paths.txt").write_text("\n".join(paths))
    steps = [Resize(100, interpolation=InterpolationMode.BICUBIC), CenterCrop(100)]
    cache = di.DecodedImageCache(str(tmp_path / "cache"), "killed", "test", paths, steps)
    key = di.cache_key(paths, steps)
    final = Path(cache.file_path(key))
    env = dict(os.environ, MMLOP_CPUS="1", PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path / "cache"), str(tmp_path / "paths.txt")],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    temps: list[Path] = []
    while time.time() < deadline and proc.poll() is None:
        temps = [p for p in final.parent.glob(f".{final.name}.*.tmp") if p.stat().st_size > 0] \
            if final.parent.is_dir() else []
        if temps:
            break
        time.sleep(0.005)
    assert temps and proc.poll() is None, "the build finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not final.exists() and temps[0].exists()  # half a file, under a name nobody reads
    assert di.DecodedImages.open(str(final), key) is None
    lines: list[str] = []
    images = cache.prepare(log=lines.append)  # the killed builder's lock is gone with it
    assert f"Removed a temporary file left by an interrupted cache build: {temps[0]}" in lines
    assert not list(final.parent.glob("*.tmp")) and final.exists() and len(images) == 300
    for i in (0, 150, 299):
        expected = np.asarray(CenterCrop(100)(Resize(100, interpolation=InterpolationMode.BICUBIC)(
            read_image(paths[i]))))
        assert np.array_equal(images.array(i), expected)


def test_truncated_or_foreign_file_is_rebuilt(tmp_path):
    paths = write_images(tmp_path / "img", n=3)
    cfg = cfg_for(tmp_path / "cache")
    wrapper(cfg, paths, is_train=False)
    (path,) = cache_files(tmp_path / "cache")
    data = path.read_bytes()
    path.write_bytes(data[:-5])  # not complete: the footer is gone
    lines: list[str] = []
    ds = wrapper(cfg, paths, is_train=False, lines=lines)
    assert "building" in lines[0] and path.read_bytes() == data
    plain = wrapper(cfg, paths, is_train=False, cached=False)
    assert all(torch.equal(ds[i]["img"], plain[i]["img"]) for i in range(3))


# --- shared: a second builder waits for the first and reads its file ------------------------------

def test_second_builder_waits_for_the_first_and_reuses_its_file(tmp_path):
    import fcntl

    paths = write_images(tmp_path / "img", n=4)
    steps = di.leading_deterministic_steps(build_transform(cfg_for(tmp_path), is_train=False))
    cache = di.DecodedImageCache(str(tmp_path / "cache"), "shared", "test", paths, steps)
    key = di.cache_key(paths, steps)
    path = cache.file_path(key)
    os.makedirs(os.path.dirname(path))
    lock_path = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # "another process" is building
    lines: list[str] = []
    result = {}
    waiter = threading.Thread(target=lambda: result.setdefault("images", cache.prepare(log=lines.append)))
    waiter.start()
    deadline = time.time() + 30
    while not lines and time.time() < deadline:
        time.sleep(0.01)
    assert lines == [f"Waiting for another process that builds the same cache ({lock_path})"]
    di.write_cache(path, key, paths, steps)
    mtime = os.stat(path).st_mtime_ns
    os.close(fd)
    waiter.join(30)
    assert result["images"] is not None and len(result["images"]) == 4
    assert lines[1].startswith("Decoded-image cache (test, ") and f"4 images read from {path}" in lines[1]
    assert os.stat(path).st_mtime_ns == mtime


# --- training: the same augmented tensors for the same RNG state -----------------------------------

TRAIN_PIPELINES = [
    ("coop", ("random_resized_crop", "random_flip", "normalize"), {}),
    ("resize first", ("random_flip", "normalize"), {}),
    ("random crop", ("random_crop", "random_flip", "normalize"), {}),
    ("all the rest", ("random_translation", "colorjitter", "randomgrayscale", "gaussian_blur", "cutout",
                      "normalize", "gaussian_noise"), {}),
    ("instance norm", ("instance_norm",), {}),
    ("k views and img0", ("random_resized_crop", "random_flip", "normalize"),
     {"K_TRANSFORMS": 2, "RETURN_IMG0": True}),
]


def _draws(ds, epochs: int = 3) -> list:
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    out = []
    for _ in range(epochs):
        for i in torch.randperm(len(ds)).tolist():
            item = ds[i]
            views = item["img"] if isinstance(item["img"], list) else [item["img"]]
            out.append(views + ([item["img0"]] if "img0" in item else []))
    return out


@pytest.mark.parametrize("source", ["generated", "real"])
@pytest.mark.parametrize("name,transforms,dataloader", TRAIN_PIPELINES, ids=[p[0] for p in TRAIN_PIPELINES])
def test_training_cache_gives_the_same_augmented_tensors_for_the_same_rng(source, name, transforms, dataloader,
                                                                          tmp_path):
    """The training cache's exactness claim: the stage (decode, plus a leading resize) is
    deterministic and the random steps see the same image, so with the same RNG state the cached
    loader returns the very tensors of the uncached one, epoch after epoch; hence the same
    distribution of augmented tensors."""
    if source == "generated":
        paths, size = write_images(tmp_path / "img"), (16, 16)
    else:
        paths, size = real_images()[:6], (96, 96)
    cfg = cfg_for(tmp_path / "cache", size=size, transforms=transforms, **dataloader)
    cached = wrapper(cfg, paths, is_train=True, split="train_x")
    plain = wrapper(cfg, paths, is_train=True, split="train_x", cached=False)
    crops = {"random_crop", "random_resized_crop"} & set(transforms)
    assert len(cached.cache.steps) == (0 if crops or dataloader else 1)  # the leading resize, if any
    a, b = _draws(cached), _draws(plain)
    assert len(a) == 3 * len(paths)
    for views_a, views_b in zip(a, b):
        assert len(views_a) == len(views_b) == (3 if dataloader else 1)
        assert all(torch.equal(x, y) for x, y in zip(views_a, views_b))
    # Not a constant pipeline: two epochs of the same image differ.
    assert any(not torch.equal(a[i][0], a[i + len(paths)][0]) for i in range(len(paths))) or name == "instance norm"


def test_list_of_transforms_caches_the_decoded_image(tmp_path):
    paths = write_images(tmp_path / "img", n=6)
    cfg = cfg_for(tmp_path / "cache", size=(16, 16), transforms=("random_resized_crop", "normalize"))
    tfms = [build_transform(cfg, is_train=True), build_transform(cfg, is_train=False)]
    cached = wrapper(cfg, paths, is_train=True, split="train_x", tfm=tfms)
    plain = wrapper(cfg, paths, is_train=True, split="train_x", cached=False, tfm=tfms)
    assert cached.cache.steps == []
    random.seed(1)
    torch.manual_seed(1)
    a = [(cached[i]["img"], cached[i]["img2"]) for i in range(6)]
    random.seed(1)
    torch.manual_seed(1)
    b = [(plain[i]["img"], plain[i]["img2"]) for i in range(6)]
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))


# --- switches, folders, space ---------------------------------------------------------------------

def test_switches_and_custom_wrappers(tmp_path):
    paths = write_images(tmp_path / "img", n=2)
    data = [Datum(impath=p) for p in paths]
    cfg = cfg_for(tmp_path / "cache", CACHE_TEST=False)
    ds = DatasetWrapper(cfg, data, transform=build_transform(cfg, is_train=False))
    assert cache_for_loader(cfg, ds, "test", is_train=False) is None
    assert cache_for_loader(cfg, ds, "train_x", is_train=True) is not None
    cfg = cfg_for(tmp_path / "cache", CACHE_TRAIN=False)
    assert cache_for_loader(cfg, ds, "train_x", is_train=True) is None

    class Custom(DatasetWrapper):
        def __getitem__(self, idx):
            return {"img": read_image(self.data_source[idx].impath)}

    assert cache_for_loader(cfg, Custom(cfg, data, transform=ds.transform), "test", is_train=False) is None
    assert cache_for_loader(cfg, DatasetWrapper(cfg, data, transform=None), "test", is_train=False) is None
    del cfg.DATALOADER["CACHE_TEST"]  # a config without the key (built by hand): no cache
    assert cache_for_loader(cfg, ds, "test", is_train=False) is None


def test_explicit_cache_dir_that_cannot_be_written_is_named_before_any_work(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    cfg = cfg_for(blocker / "cache")
    ds = DatasetWrapper(cfg, [Datum(impath="x.png")], transform=build_transform(cfg, is_train=False))
    with pytest.raises(UserError) as info:
        cache_for_loader(cfg, ds, "test", is_train=False)
    message = str(info.value)
    assert message.startswith(f"DATALOADER.CACHE_DIR = '{blocker / 'cache'}' cannot be used: Not a directory.")
    assert "or to '' for the default" in message


def test_default_cache_dir_that_cannot_be_written_falls_back_to_decoding(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("MMLOP_CACHE_DIR", str(blocker))
    paths = write_images(tmp_path / "img", n=3)
    cfg = cfg_for(tmp_path / "unused", CACHE_DIR="")
    data = [Datum(impath=p) for p in paths]
    ds = DatasetWrapper(cfg, data, transform=build_transform(cfg, is_train=False))
    cache = cache_for_loader(cfg, ds, "test", is_train=False)
    assert cache.root == str(blocker / "decoded_images")
    ds.use_cache(cache)
    lines: list[str] = []
    ds.open_cache(log=lines.append)
    assert ds.images is None and len(lines) == 1
    assert lines[0].startswith("Decoded-image cache (test, resize 24 (bicubic) + center crop 24x24) not used: "
                               "Not a directory")
    assert "the images are decoded as usual. Set DATALOADER.CACHE_DIR" in lines[0]
    plain = DatasetWrapper(cfg, data, transform=build_transform(cfg, is_train=False))
    assert all(torch.equal(ds[i]["img"], plain[i]["img"]) for i in range(3))


def test_build_stops_before_the_disk_is_full(tmp_path, monkeypatch):
    """The reserve is set above the real free space of the test's disk: nothing is written."""
    paths = write_images(tmp_path / "img", n=3)
    monkeypatch.setattr(di, "RESERVE_BYTES", shutil.disk_usage(tmp_path).free + (1 << 40))
    cfg = cfg_for(tmp_path / "cache")
    ds = DatasetWrapper(cfg, [Datum(impath=p) for p in paths], transform=build_transform(cfg, is_train=False))
    lines: list[str] = []
    assert cache_for_loader(cfg, ds, "test", is_train=False).prepare(log=lines.append) is None
    assert len(lines) == 2 and lines[0].startswith("Decoded-image cache (test, resize 24 (bicubic) + center crop "
                                                   "24x24): building ")
    assert " not used: 5.2 kB more would leave " in lines[1] and "(the cache keeps " in lines[1]
    assert cache_files(tmp_path / "cache") == [] and not list((tmp_path / "cache").rglob("*.tmp"))


def test_loader_opens_its_cache_when_iterated_in_the_main_process(tmp_path, capsys):
    """Workers read the memory map the main process opened (fork) or map it themselves (spawn)."""
    from dassl.data.data_manager import build_data_loader

    paths = write_images(tmp_path / "img", n=6)
    cfg = cfg_for(tmp_path / "cache", NUM_WORKERS=1)
    data = [Datum(impath=p) for p in paths]
    loader = build_data_loader(cfg, "SequentialSampler", data, batch_size=4, tfm=build_transform(cfg, is_train=False),
                               is_train=False, split_name="test")
    capsys.readouterr()
    assert loader.dataset.images is None and cache_files(tmp_path / "cache") == []  # nothing before iterating
    batches = list(loader)
    assert "Decoded-image cache (test, " in capsys.readouterr().out
    plain = DatasetWrapper(cfg, data, transform=build_transform(cfg, is_train=False))
    expected = torch.stack([plain[i]["img"] for i in range(6)])
    assert torch.equal(torch.cat([b["img"] for b in batches]), expected)
    import pickle

    clone = pickle.loads(pickle.dumps(loader.dataset))  # what a spawned worker receives
    assert clone.images._data is None and torch.equal(clone[5]["img"], expected[5])
