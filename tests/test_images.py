import io

import numpy as np
import pytest
import torch
from PIL import Image

from refine.errors import InputError
from refine.images import load_image, to_pil, to_tensor


def _png_bytes(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "image, expected",
    [
        (Image.new("RGB", (4, 3), (10, 20, 30)), (10, 20, 30)),
        (Image.new("RGBA", (4, 3), (255, 0, 0, 0)), (255, 255, 255)),  # transparent -> white
        (Image.new("RGBA", (4, 3), (255, 0, 0, 255)), (255, 0, 0)),
        (Image.new("LA", (4, 3), (0, 0)), (255, 255, 255)),
        (Image.new("L", (4, 3), 77), (77, 77, 77)),
        (Image.new("1", (4, 3), 1), (255, 255, 255)),
        (Image.new("CMYK", (4, 3), (0, 255, 255, 0)), (255, 0, 0)),
        (Image.new("YCbCr", (4, 3), (128, 128, 128)), None),
    ],
    ids=["rgb", "rgba-transparent", "rgba-opaque", "la", "l", "1", "cmyk", "ycbcr"],
)
def test_every_mode_becomes_rgb(image, expected):
    out = load_image(image)
    assert out.mode == "RGB" and out.size == (4, 3)
    if expected is not None:
        assert out.getpixel((1, 1)) == expected


def test_palette_with_transparency_is_composited_on_white():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 255] + [0] * 765)
    image.info["transparency"] = 0
    reloaded = Image.open(io.BytesIO(_png_bytes(image)))
    assert load_image(reloaded).getpixel((0, 0)) == (255, 255, 255)
    opaque = Image.new("P", (4, 4), 0)
    opaque.putpalette([0, 0, 255] + [0] * 765)
    assert load_image(opaque).getpixel((0, 0)) == (0, 0, 255)


def test_sixteen_bit_is_rescaled_not_clipped():
    array = np.full((3, 3), 32768, dtype=np.uint16)  # half of the 16-bit range
    image = Image.fromarray(array)
    assert image.mode.startswith("I;16")
    data = _png_bytes(image)
    out = load_image(data)
    assert abs(out.getpixel((0, 0))[0] - 128) <= 1


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (6, 2), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    data = _png_bytes(image, "JPEG", exif=exif.tobytes())
    assert load_image(data).size == (2, 6)


def test_paths_bytes_arrays_and_tensors(tmp_path):
    image = Image.new("RGB", (5, 4), (0, 128, 255))
    path = tmp_path / "a.png"
    image.save(path)
    assert load_image(path).getpixel((0, 0)) == (0, 128, 255)
    assert load_image(str(path)).getpixel((0, 0)) == (0, 128, 255)
    assert load_image(path.read_bytes()).getpixel((0, 0)) == (0, 128, 255)
    array = np.asarray(image)
    assert load_image(array).getpixel((0, 0)) == (0, 128, 255)
    tensor = to_tensor(image)  # (3, H, W) in [0, 1]
    assert tensor.shape == (3, 4, 5)
    assert load_image(tensor).getpixel((0, 0)) == (0, 128, 255)
    assert load_image(tensor * 2 - 1).getpixel((0, 0)) == (0, 128, 255)  # [-1, 1] convention
    assert to_pil(tensor).getpixel((0, 0)) == (0, 128, 255)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (b"this is not an image at all", "not an image"),
        (_png_bytes(Image.new("RGB", (64, 64), (1, 2, 3)))[:60], "truncated"),
    ],
    ids=["empty", "not-image", "truncated"],
)
def test_bad_bytes_raise_input_error_naming_the_reason(data, reason, tmp_path):
    path = tmp_path / "bad.png"
    path.write_bytes(data)
    with pytest.raises(InputError, match=reason) as info:
        load_image(path)
    assert "bad.png" in str(info.value)


def test_pixel_cap_is_checked_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (300, 300)).save(path)
    with pytest.raises(InputError, match="exceeds the cap"):
        load_image(path, max_pixels=300 * 299)
    assert load_image(path, max_pixels=300 * 300).size == (300, 300)


def test_other_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="not an image"):
        load_image(np.zeros((2, 3, 7)))
    with pytest.raises(InputError, match="NaN"):
        load_image(torch.full((3, 2, 2), float("nan")))
    with pytest.raises(InputError, match="cannot read"):
        load_image(12345)
    with pytest.raises(InputError, match="empty image"):
        load_image(np.zeros((0, 4, 3), dtype=np.uint8))
