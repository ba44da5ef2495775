"""read_image on high-depth grey images: rescaled to 8 bits, never silently all white or all black."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dassl.utils.tools import read_image, to_rgb


def stats(img):
    """(mean, min, max) of an RGB image whose three channels must be equal (a grey source)."""
    arr = np.asarray(img).astype(np.float64)
    assert img.mode == "RGB" and arr.shape[2] == 3
    assert np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])
    return arr.mean(), arr.min(), arr.max()


def ramp(lo, hi, dtype, shape=(32, 64)):
    return np.linspace(lo, hi, shape[0] * shape[1]).reshape(shape).astype(dtype)


def test_16bit_png_maps_the_full_range(tmp_path):
    values = ramp(0, 65535, np.uint16)
    path = tmp_path / "ramp16.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I;16")  # what PIL makes of a 16-bit grey PNG
    mean, lo, hi = stats(read_image(str(path)))
    assert lo == 0 and hi == 255
    assert mean == pytest.approx(values.mean() / 257, abs=0.6)  # PIL's own convert gives ~255 here


def test_dark_16bit_png_stays_dark(tmp_path):
    values = ramp(0, 1000, np.uint16)  # all above 255: PIL's convert would make every pixel 255
    path = tmp_path / "dark16.png"
    Image.fromarray(values).save(path)
    mean, lo, hi = stats(read_image(str(path)))
    assert hi == round(1000 * 255 / 65535) and mean == pytest.approx(values.mean() / 257, abs=0.6)


@pytest.mark.parametrize("mode, dtype", [("I;16", "<u2"), ("I;16L", "<u2"), ("I;16B", ">u2")])
def test_16bit_byte_orders(mode, dtype):
    values = ramp(0, 65535, np.uint16)
    img = Image.frombytes(mode, (values.shape[1], values.shape[0]), values.astype(dtype).tobytes())
    mean, lo, hi = stats(to_rgb(img))
    assert (lo, hi) == (0, 255) and mean == pytest.approx(values.mean() / 257, abs=0.6)


def test_32bit_integer_tiff_within_16bit_range_is_16bit(tmp_path):
    values = ramp(0, 30000, np.int32)
    path = tmp_path / "i32.tif"
    Image.fromarray(values).save(path)
    with Image.open(path) as img:
        assert img.mode == "I"
    mean, lo, hi = stats(read_image(str(path)))
    assert lo == 0 and hi == round(30000 * 255 / 65535)
    assert mean == pytest.approx(values.mean() * 255 / 65535, abs=0.6)


def test_32bit_integer_beyond_16bit_uses_its_own_range(tmp_path):
    values = ramp(-100_000, 900_000, np.int32)
    path = tmp_path / "i32wide.tif"
    Image.fromarray(values).save(path)
    mean, lo, hi = stats(read_image(str(path)))
    assert (lo, hi) == (0, 255) and mean == pytest.approx(127.5, abs=0.6)


@pytest.mark.parametrize(
    "lo_value, hi_value, expected_max",
    [(0.0, 1.0, 255), (0.0, 0.5, 128), (0.0, 200.0, 200), (-3.0, 7.0, 255)],
)
def test_float_images(tmp_path, lo_value, hi_value, expected_max):
    values = ramp(lo_value, hi_value, np.float32)
    path = tmp_path / "f.tif"
    Image.fromarray(values).save(path)
    with Image.open(path) as img:
        assert img.mode == "F"
    mean, lo, hi = stats(read_image(str(path)))
    assert lo == 0 and hi == expected_max
    assert mean == pytest.approx(expected_max / 2, abs=1.0)  # linear ramps: the mean is half the max


def test_float_nan_and_inf_become_black():
    values = ramp(0.0, 1.0, np.float32)
    values[0, :4] = [np.nan, np.inf, -np.inf, np.nan]
    out = np.asarray(to_rgb(Image.fromarray(values)))
    assert (out[0, :4] == 0).all() and out.max() == 255


def test_constant_high_depth_images_keep_their_level():
    grey = np.asarray(to_rgb(Image.fromarray(np.full((4, 4), 300, np.int32))))
    assert (grey == 1).all()  # 300 of 65535, not clipped to 255 (white)
    assert (np.asarray(to_rgb(Image.fromarray(np.full((4, 4), 5.0, np.float32)))) == 5).all()


@pytest.mark.parametrize("mode", ["1", "L", "P", "LA", "RGBA", "CMYK", "RGB", "YCbCr"])
def test_other_modes_keep_pils_conversion(tmp_path, mode):
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    img = base.convert(mode) if mode != "LA" else base.convert("L").convert("LA")
    ext = "tif" if mode in ("CMYK", "YCbCr") else "png"
    path = tmp_path / f"img.{ext}"
    img.save(path)
    with Image.open(path) as reopened:
        expected = np.asarray(reopened.convert("RGB"))
    assert np.array_equal(np.asarray(read_image(str(path))), expected)
