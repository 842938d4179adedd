"""Image loading: any path / PIL image / array -> contiguous RGB uint8 (H, W, 3).

Handles grayscale, RGBA/LA, palette, CMYK, 16-bit and float images and applies
EXIF orientation. Every failure raises ImageError naming the file and the problem.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageInput = Union[str, os.PathLike, np.ndarray, Image.Image]

MAX_PIXELS = 178_956_970
"""Largest image accepted (pixels; Pillow's hard decompression-bomb limit). A 12000x9000 photo is 108 MP."""


class ImageError(ValueError):
    """An image could not be used. ``path`` names the file (or '<array>')."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def to_rgb_uint8(array: np.ndarray, name: str = "<array>") -> np.ndarray:
    """Convert an array image to contiguous RGB uint8 (H, W, 3).

    Accepts (H, W), (H, W, 1), (H, W, 3) (taken as RGB) and (H, W, 4) (RGBA, alpha
    dropped); dtypes uint8, uint16 (scaled by 1/257), bool, and floats (taken as
    [0, 1] when max <= 1, else [0, 255]).
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ImageError(name, f"expected an image array of shape (H, W), (H, W, 3) or (H, W, 4), got {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ImageError(name, f"image has no pixels (shape {a.shape})")
    if a.shape[2] == 4:
        a = a[:, :, :3]
    if a.dtype == np.uint8:
        pass
    elif a.dtype == np.uint16:
        a = ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ImageError(name, "image array contains NaN or infinite values")
        scale = 255.0 if a.size and float(a.max()) <= 1.0 else 1.0
        a = np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.integer):
        a = np.clip(a, 0, 255).astype(np.uint8)
    else:
        raise ImageError(name, f"unsupported image dtype {a.dtype}")
    return np.ascontiguousarray(a)


def _pil_to_rgb(img: Image.Image, name: str) -> np.ndarray:
    img = ImageOps.exif_transpose(img) if img.getexif().get(0x0112, 1) != 1 else img  # else a full copy
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return to_rgb_uint8(np.asarray(img, dtype=np.uint16), name)
    if mode == "I":
        a = np.asarray(img, dtype=np.int64)
        a = a // 257 if a.max(initial=0) > 255 else a
        return to_rgb_uint8(np.clip(a, 0, 255).astype(np.uint8), name)
    if mode == "F":
        return to_rgb_uint8(np.asarray(img, dtype=np.float32), name)
    if mode in ("P", "PA", "LA", "RGBA", "La", "RGBa"):
        img = img.convert("RGBA")
    if img.mode != "RGB":
        img = img.convert("RGB")
    if img.width * img.height > _BANDED_PIXELS:
        return _pil_rgb_banded(img)
    return to_rgb_uint8(np.asarray(img), name)


_BANDED_PIXELS = 16_000_000
"""Above this many pixels an RGB image is copied out of PIL in bands of rows: ``np.asarray``
of the whole image goes through a full-size bytes copy (peak 3 bytes per pixel more)."""


def _pil_rgb_banded(img: Image.Image, band_pixels: int = 4_000_000) -> np.ndarray:
    """RGB PIL image -> (H, W, 3) uint8, the same pixels as ``np.asarray(img)``, copied
    ``band_pixels`` at a time (peak: the PIL image, the array and one band)."""
    w, h = img.size
    out = np.empty((h, w, 3), np.uint8)
    rows = max(1, band_pixels // max(w, 1))
    for y in range(0, h, rows):
        out[y:y + rows] = np.asarray(img.crop((0, y, w, min(h, y + rows))))
    return out


def load_image(image: ImageInput) -> np.ndarray:
    """Load ``image`` (path, PIL.Image or array) as contiguous RGB uint8 (H, W, 3)."""
    if isinstance(image, np.ndarray):
        return to_rgb_uint8(image)
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image, getattr(image, "filename", "") or "<PIL.Image>")
    if not isinstance(image, (str, os.PathLike)):
        raise ImageError(repr(type(image)), "expected a path, a PIL.Image or a numpy array")
    path = Path(image)
    name = str(path)
    if not path.exists():
        raise ImageError(name, "file not found")
    if path.is_dir():
        raise ImageError(name, "is a directory, not an image file")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ImageError(name, f"cannot read file ({e.strerror})") from e
    if size == 0:
        raise ImageError(name, "file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow warns above ~89 MP; we accept up to MAX_PIXELS and check it ourselves.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise ImageError(name, f"image is {w}x{h}, more than {MAX_PIXELS} pixels")
                img.load()
                return _pil_to_rgb(img, name)
    except ImageError:
        raise
    except UnidentifiedImageError as e:
        raise ImageError(name, "not a recognised image format") from e
    except Image.DecompressionBombError as e:
        raise ImageError(name, f"image too large ({e})") from e
    except (OSError, SyntaxError, ValueError) as e:
        msg = str(e)
        if "truncated" in msg.lower():
            msg = "image file is truncated or corrupt"
        raise ImageError(name, f"cannot decode image: {msg}") from e
