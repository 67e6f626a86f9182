"""One image loader used everywhere: paths, bytes, PIL images, arrays and tensors in; RGB PIL out.

Example:
    >>> from PIL import Image
    >>> from refine.images import load_image
    >>> rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))     # fully transparent red
    >>> load_image(rgba).getpixel((0, 0))                      # alpha composited on white
    (255, 255, 255)

Policy (the same for every entry point, so a CLI run and a Python run see the same pixels):
* EXIF orientation is applied, then any mode becomes RGB. Alpha (RGBA, LA, PA, P with a
  transparency entry) is composited on white; 16-bit and 32-bit greyscale are rescaled by their
  bit depth instead of clipped; CMYK, YCbCr, LAB, HSV go through Pillow's converters.
* Empty, truncated, non-image and over-large inputs raise `InputError` naming the input and the
  reason. The pixel cap (`max_pixels`, default 64 MP) is checked from the header, before decoding,
  so a decompression bomb never reaches memory.
* Tensors and arrays: (3, H, W) or (H, W, 3) or (H, W); float in [0, 1] (or [-1, 1] when any value
  is negative: the diffusion convention) or uint8.
"""

from __future__ import annotations

import io
import warnings
from os import PathLike
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from refine.errors import InputError

DEFAULT_MAX_PIXELS = 64 * 1024 * 1024

ImageLike = Union[str, PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray, Any]

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


def load_image(source: ImageLike, *, name: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Return `source` as a decoded RGB `PIL.Image.Image` (see the module docstring for the policy)."""
    label = name or _label(source)
    if isinstance(source, Image.Image):
        _check_size(source.size, label, max_pixels)
        return _to_rgb(ImageOps.exif_transpose(source) if source.getexif() else source, label)
    if isinstance(source, (str, PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"{label}: no such file")
        data = path.read_bytes()
        return _decode(data, label, max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode(bytes(source), label, max_pixels)
    if isinstance(source, np.ndarray) or _is_tensor(source):
        return _from_array(source, label, max_pixels)
    raise InputError(f"{label}: cannot read an image from a {type(source).__name__}; pass a path, bytes, a PIL image, an array or a tensor")


def to_tensor(image: Image.Image):
    """RGB PIL image -> float32 tensor (3, H, W) in [0, 1]."""
    import torch

    array = np.asarray(load_image(image), dtype=np.float32) / 255.0  # (H, W, 3)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def to_pil(tensor) -> Image.Image:
    """Float tensor (3, H, W) in [0, 1] -> RGB PIL image (values are clamped, then rounded)."""
    array = tensor.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, "RGB")


def _label(source: Any) -> str:
    if isinstance(source, (str, PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return f"<{type(source).__name__}>"


def _is_tensor(obj: Any) -> bool:
    return type(obj).__module__.startswith("torch") and hasattr(obj, "detach")


def _check_size(size: tuple[int, int], label: str, max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise InputError(f"{label}: empty image ({width}x{height})")
    if width * height > max_pixels:
        raise InputError(
            f"{label}: {width}x{height} = {width * height} pixels exceeds the cap of {max_pixels}; "
            "resize it or raise max_pixels"
        )


def _decode(data: bytes, label: str, max_pixels: int) -> Image.Image:
    if not data:
        raise InputError(f"{label}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Our own cap replaces Pillow's bomb heuristics; its warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_size(image.size, label, max_pixels)
            image.load()
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(f"{label}: not an image (no known image format)") from None
    except Image.DecompressionBombError as err:
        raise InputError(f"{label}: refused as a decompression bomb ({err})") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(f"{label}: truncated or corrupt image data ({err})") from None
    image = ImageOps.exif_transpose(image)
    return _to_rgb(image, label)


def _to_rgb(image: Image.Image, label: str) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode in {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}:
        array = np.asarray(image).astype(np.float64)
        # Rescale by bit depth, not by content: a dark 16-bit image must stay dark.
        scale = 65535.0 if mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        if mode == "F":
            scale = 1.0 if array.max(initial=0) <= 1.0 else 255.0
        grey = np.clip(array / scale * 255.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as err:
        raise InputError(f"{label}: cannot convert image mode {mode!r} to RGB ({err})") from None


def _from_array(source: Any, label: str, max_pixels: int) -> Image.Image:
    array = source.detach().cpu().float().numpy() if _is_tensor(source) else np.asarray(source)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # (C, H, W) -> (H, W, C)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise InputError(f"{label}: array of shape {tuple(array.shape)} is not an image; expected (3, H, W), (H, W, 3) or (H, W)")
    _check_size((array.shape[1], array.shape[0]), label, max_pixels)
    if array.dtype != np.uint8:
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise InputError(f"{label}: image array contains NaN or infinity")
        if array.min() < 0:
            array = (array + 1.0) / 2.0  # [-1, 1] diffusion convention
        array = np.clip(array * 255.0, 0, 255).round().astype(np.uint8)
    mode = "L" if array.ndim == 2 else ("RGB" if array.shape[-1] == 3 else "RGBA")
    return _to_rgb(Image.fromarray(np.ascontiguousarray(array), mode), label)
