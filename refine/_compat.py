"""Make `import torchvision` work on test machines whose torchvision C++ ops cannot load.

Example:
    >>> from refine._compat import ensure_torchvision_importable
    >>> ensure_torchvision_importable() in (True, False)     # True when the shim had to act
    True
    >>> import torchvision.transforms.v2.functional           # importable either way

Why this exists: the CPU machines run the CPU build of torch, but the only torchvision 0.28 wheel
the package index offers is the CUDA build. Its `_C` extension cannot load (it links CUDA
libraries), which torchvision tolerates by design (`torchvision.extension._has_ops()` is False),
except that `torchvision._meta_registrations` then calls `torch.library.register_fake` for ops that
were never defined, and torch 2.13 raises. transformers imports torchvision for every image and
video processor and for every model module, so nothing VLM-related would import.

The shim retries the import with `register_fake` made a no-op for `torchvision::*` ops only. The
pure-PyTorch parts that transformers uses (transforms.v2 functional, InterpolationMode) are then
importable; the C++ ops (nms, roi_align...) still raise when called, as torchvision intends. The
compiled image decoder is missing too, so `torchvision.io.decode_image` (which transformers uses
for images given as paths or data URLs) gets a Pillow implementation. When torchvision imports
normally, nothing is patched. Subprocesses need it too: see
`python_with_torchvision_shim`.
"""

from __future__ import annotations

import sys

_state: dict[str, bool] = {}


def ensure_torchvision_importable() -> bool:
    """Import torchvision, working around missing C++ ops; True when the workaround was needed."""
    if "patched" in _state:
        return _state["patched"]
    import torch

    try:
        import torchvision  # noqa: F401

        _state["patched"] = False
        return False
    except ModuleNotFoundError:
        _state["patched"] = False  # no torchvision at all: transformers falls back by itself
        return False
    except RuntimeError:
        # A failed import leaves half-initialised torchvision modules behind: drop them first.
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]

    original = torch.library.register_fake

    def register_fake_unless_torchvision(op, func=None, /, **kwargs):
        if isinstance(op, str) and op.startswith("torchvision::"):
            return (lambda fn: fn) if func is None else func
        return original(op, func, **kwargs)

    torch.library.register_fake = register_fake_unless_torchvision
    try:
        import torchvision  # noqa: F401,F811
    finally:
        torch.library.register_fake = original
    _decode_images_with_pil()
    _state["patched"] = True
    return True


def _decode_images_with_pil() -> None:
    """Give `torchvision.io.decode_image` a Pillow implementation when the image extension is missing.

    transformers decodes images given as paths, URLs or base64 data URLs (what `transformers serve`
    receives) with `torchvision.io.decode_image`, which needs torchvision's compiled `image`
    extension. Same contract: (C, H, W) uint8 tensor, `mode` conversion, optional EXIF transpose.
    """
    import io
    import os

    import numpy as np
    import torch
    import torchvision.io
    import torchvision.io.image as tv_image
    from PIL import Image, ImageOps

    if tv_image._has_image_ops():
        return
    pil_modes = {"UNCHANGED": None, "GRAY": "L", "GRAY_ALPHA": "LA", "RGB": "RGB", "RGB_ALPHA": "RGBA", "RGBA": "RGBA"}

    def decode_image(input, mode=tv_image.ImageReadMode.UNCHANGED, apply_exif_orientation=False):
        if isinstance(input, (str, os.PathLike)):
            image = Image.open(input)
        else:
            image = Image.open(io.BytesIO(input.detach().cpu().numpy().tobytes()))
        if apply_exif_orientation:
            image = ImageOps.exif_transpose(image)
        name = mode.name if isinstance(mode, tv_image.ImageReadMode) else str(mode).upper()
        target = pil_modes.get(name)
        if target is not None and image.mode != target:
            image = image.convert(target)
        elif target is None and image.mode not in ("L", "LA", "RGB", "RGBA"):
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        array = np.array(image)
        tensor = torch.from_numpy(array[None] if array.ndim == 2 else array.transpose(2, 0, 1).copy())
        return tensor.contiguous()  # (C, H, W) uint8

    tv_image.decode_image = decode_image
    torchvision.io.decode_image = decode_image


def python_with_torchvision_shim(module_code: str) -> list[str]:
    """argv for `python -c` that applies the shim and then runs `module_code`.

    >>> python_with_torchvision_shim("print(1)")[1:3]
    ['-c', 'from refine._compat import ensure_torchvision_importable; ensure_torchvision_importable()\\nprint(1)']
    """
    prelude = "from refine._compat import ensure_torchvision_importable; ensure_torchvision_importable()"
    return [sys.executable, "-c", f"{prelude}\n{module_code}"]
