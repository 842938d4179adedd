"""Image loading: any path / PIL image / numpy array / torch tensor -> contiguous RGB uint8 (H, W, 3).

Handles grayscale, RGBA/LA, palette, CMYK, 16-bit and float images and applies
EXIF orientation. Every failure raises ImageError naming the file and the problem.

Conventions for in-memory images (what ``Detector.detect`` / ``detect_batch`` accept):

- numpy arrays are channels-last: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4). Colour
  arrays are RGB(A) unless ``channel_order="bgr"`` (OpenCV's ``cv2.imread`` order;
  then BGR(A)). Channels-first numpy arrays are refused with a hint.
- torch tensors (any device; moved to the CPU): (H, W, C) or (C, H, W) with C in 1, 3, 4
  (torchvision / facenet-pytorch use (3, H, W) float in [0, 1]); (H, W) grayscale. When
  both readings are possible (e.g. 3x5x3) a floating tensor is taken as (C, H, W) and an
  integer one as (H, W, C).
- dtypes: uint8 as is; uint16 is a 16-bit image (scaled by 1/257); bool (0/255); other
  integers must lie in [0, 255]; floats must be finite and lie in [0, 1] (scaled by 255)
  or, when the maximum is above 1, in [0, 255]. Anything else (negative values, as left
  by a mean/std normalisation, values above 255, NaN/inf) raises ImageError: such an
  array cannot be an image, and guessing would give silent wrong detections.
  (A float image in [0, 255] whose values are all <= 1 is read as [0, 1]: pass uint8 to
  avoid the ambiguity.)
- PIL images and files are decoded in their true colours; ``channel_order`` does not
  apply to them.
"""
from __future__ import annotations

import errno
import importlib.util
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:
    import torch

ImageInput = Union[str, os.PathLike, np.ndarray, Image.Image, "torch.Tensor"]

CHANNEL_ORDERS = ("rgb", "bgr")
"""Accepted ``channel_order`` values (case-insensitive)."""

MAX_PIXELS = 178_956_970
"""Largest image accepted (pixels; Pillow's hard decompression-bomb limit). A 12000x9000 photo is 108 MP."""

FLOAT_TOLERANCE = 1e-3
"""Slack allowed outside [0, 1] (or [0, 255]) for float images, for resampling round-off (clipped)."""

# Formats of photos that this Pillow may not open, by suffix: what to install or do.
_PLUGIN_HINTS = {
    ".heic": ("HEIC/HEIF", "pip install pillow-heif"),
    ".heif": ("HEIC/HEIF", "pip install pillow-heif"),
    ".hif": ("HEIC/HEIF", "pip install pillow-heif"),
    ".avif": ("AVIF", "pip install pillow-avif-plugin (or Pillow >= 11.3 built with AVIF)"),
    ".jxl": ("JPEG XL", "pip install pillow-jxl-plugin"),
}
_RAW_SUFFIXES = frozenset({".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".dng", ".orf",
                           ".rw2", ".raf", ".pef", ".srw", ".x3f", ".3fr", ".erf", ".kdc", ".mrw", ".raw"})
"""Camera raw formats: image-like, never decoded here (convert them to JPEG/PNG/TIFF first)."""
# ISO-BMFF brands (bytes 8..12 after "ftyp") of HEIF-family and AVIF files
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}


class ImageError(ValueError):
    """An image could not be used. ``path`` names the file (or '<array>', '<tensor>')."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ImageTypeError(ImageError, TypeError):
    """The input is not an image container at all (a list, bytes, None, ...): also a TypeError."""


def check_channel_order(channel_order: str) -> str:
    """Normalise ``channel_order`` to "rgb" or "bgr"; ValueError for anything else."""
    co = str(channel_order).lower() if isinstance(channel_order, str) else channel_order
    if co not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    return co  # type: ignore[return-value]


def _float_to_uint8(a: np.ndarray, name: str) -> np.ndarray:
    if a.dtype != np.float64 and a.dtype != np.float32:
        a = a.astype(np.float32)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ImageError(name, "image array contains NaN or infinite values")
    if lo >= -FLOAT_TOLERANCE and hi <= 1.0 + FLOAT_TOLERANCE:
        scale = 255.0
    elif lo >= -255 * FLOAT_TOLERANCE and hi <= 255.0 * (1 + FLOAT_TOLERANCE):
        scale = 1.0
    else:
        hint = (" (normalised with a mean/std? undo it: x * std + mean)" if lo < 0 else "")
        raise ImageError(
            name, f"float image values span [{lo:.4g}, {hi:.4g}]; expected [0, 1] or [0, 255]{hint}"
        )
    return np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)


def to_rgb_uint8(array: np.ndarray, name: str = "<array>", channel_order: str = "rgb") -> np.ndarray:
    """Convert a channels-last array image to contiguous RGB uint8 (H, W, 3).

    Accepts (H, W), (H, W, 1), (H, W, 3) and (H, W, 4) (alpha dropped); colour channels
    in ``channel_order`` ("rgb" or "bgr"). dtypes and value ranges: see the module
    docstring. Raises ImageError (a ValueError) for a shape, dtype or value range that
    cannot be an image, and ImageTypeError for an object that is not an array.
    """
    co = check_channel_order(channel_order)
    if not isinstance(array, np.ndarray):
        raise ImageTypeError(name, f"expected a numpy array, got {type(array).__name__}")
    a = array
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        hint = ""
        if a.ndim == 3 and a.shape[0] in (1, 3, 4):
            hint = "; channels-first (C, H, W)? pass array.transpose(1, 2, 0)"
        elif a.ndim == 4:
            hint = "; a stack of images? pass them to detect_batch"
        raise ImageError(name, f"expected an image array of shape (H, W), (H, W, 3) or (H, W, 4), got {a.shape}{hint}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ImageError(name, f"image has no pixels (shape {a.shape})")
    if a.shape[2] == 4:
        a = a[:, :, :3]
    if co == "bgr" and a.shape[2] == 3:
        a = a[:, :, ::-1]
    if a.dtype == np.uint8:
        pass
    elif a.dtype == np.uint16:
        a = ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        a = _float_to_uint8(a, name)
    elif np.issubdtype(a.dtype, np.integer):
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 255:
            raise ImageError(name, f"{a.dtype} image values span [{lo}, {hi}]; expected [0, 255] "
                                   "(16-bit images: pass uint16)")
        a = a.astype(np.uint8)
    else:
        raise ImageError(name, f"unsupported image dtype {a.dtype} (expected uint8, uint16, bool or float)")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a)


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach") and hasattr(x, "dim")


def tensor_to_numpy(t: "torch.Tensor", name: str = "<tensor>") -> np.ndarray:
    """A torch image tensor (any device) as a channels-last numpy array (see the module docstring)."""
    import torch

    t = t.detach()
    if t.is_complex():
        raise ImageError(name, f"unsupported tensor dtype {t.dtype}")
    if t.dim() == 3:
        c_first, c_last = t.shape[0] in (1, 3, 4), t.shape[2] in (1, 3, 4)
        if c_first and (not c_last or t.is_floating_point()):
            t = t.permute(1, 2, 0)
        elif not c_last:
            raise ImageError(name, f"expected an image tensor of shape (C, H, W) or (H, W, C) with C in 1, 3, 4, "
                                   f"got {tuple(t.shape)}")
    elif t.dim() == 4:
        raise ImageError(name, f"got a 4-D tensor {tuple(t.shape)}: a batch? pass it to detect_batch")
    elif t.dim() != 2:
        raise ImageError(name, f"expected an image tensor of shape (C, H, W), (H, W, C) or (H, W), got {tuple(t.shape)}")
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    return t.cpu().contiguous().numpy()


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


def unsupported_format_hint(path: str | os.PathLike) -> str | None:
    """Why an image-like file cannot be decoded here and what to do, or None.

    From the suffix (HEIC/HEIF, AVIF, JPEG XL, camera raw) or, for a mis-named file, the
    ISO-BMFF brand in its header. Formats this Pillow opens (e.g. AVIF on Pillow 13) give None.
    """
    from PIL import features

    suffix = Path(path).suffix.lower()
    kind = None
    try:
        with open(path, "rb") as f:
            head = f.read(16)
        if head[4:8] == b"ftyp":
            brand = head[8:12]
            kind = ".heic" if brand in _HEIF_BRANDS else ".avif" if brand in _AVIF_BRANDS else None
    except OSError:
        pass
    kind = kind or suffix
    if kind == ".avif" and (features.check("avif") or importlib.util.find_spec("pillow_avif") is not None):
        return None  # decodable here: a failure is the file's own
    if kind in (".heic", ".heif", ".hif") and importlib.util.find_spec("pillow_heif") is not None:
        return None
    if kind in _PLUGIN_HINTS:
        fmt, fix = _PLUGIN_HINTS[kind]
        return f"{fmt} image: this Pillow cannot decode it; {fix}"
    if suffix in _RAW_SUFFIXES:
        return "camera raw image: not supported; convert it to JPEG, PNG or TIFF first"
    return None


def _register_plugins() -> None:
    """Let Pillow open HEIC/HEIF and AVIF when their optional plugins are installed."""
    global _PLUGINS_TRIED
    if _PLUGINS_TRIED:
        return
    _PLUGINS_TRIED = True
    try:
        import pillow_heif  # type: ignore[import-not-found]

        pillow_heif.register_heif_opener()
    except Exception:  # not installed, or broken: files are then reported per file
        pass
    try:
        import pillow_avif  # type: ignore[import-not-found]  # noqa: F401  (registers on import)
    except Exception:
        pass


_PLUGINS_TRIED = False


def _os_reason(e: OSError, doing: str) -> str:
    if isinstance(e, FileNotFoundError):
        return "file not found"
    if isinstance(e, PermissionError):
        return f"permission denied ({doing})"
    if isinstance(e, IsADirectoryError):
        return "is a directory, not an image file"
    if e.errno == errno.ENOTDIR:
        return "file not found (a parent is not a directory)"
    return f"cannot read file ({doing}: {e.strerror or e})"


def load_image(image: ImageInput, channel_order: str = "rgb") -> np.ndarray:
    """Load ``image`` as contiguous RGB uint8 (H, W, 3).

    image: a path (str / os.PathLike), a PIL.Image, a numpy array or a torch.Tensor (see
        the module docstring for shapes, dtypes and value ranges).
    channel_order: "rgb" (default) or "bgr": the colour order of array and tensor inputs
        (cv2.imread gives BGR). Files and PIL images are always decoded in true colour.
    Raises ImageError (a ValueError) naming the file (or "<array>" / "<tensor>") and the
    cause: file not found, permission denied, not an image, unsupported format (with what
    to install), corrupt, too large, impossible shape / dtype / value range;
    ImageTypeError (also a TypeError) for an object that is not an image at all.
    """
    co = check_channel_order(channel_order)
    if isinstance(image, np.ndarray):
        return to_rgb_uint8(image, "<array>", co)
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image, getattr(image, "filename", "") or "<PIL.Image>")
    if _is_tensor(image):
        return to_rgb_uint8(tensor_to_numpy(image), "<tensor>", co)
    if not isinstance(image, (str, os.PathLike)):
        raise ImageTypeError(f"<{type(image).__name__}>",
                             "expected a path, a PIL.Image, a numpy array or a torch.Tensor")
    path = Path(image)
    name = str(path)
    try:
        st = path.stat()
    except OSError as e:
        raise ImageError(name, _os_reason(e, "stat")) from e
    if path.is_dir():
        raise ImageError(name, "is a directory, not an image file")
    if st.st_size == 0:
        raise ImageError(name, "file is empty (0 bytes)")
    if path.suffix.lower() in _RAW_SUFFIXES:  # Pillow would open some (DNG) as their small TIFF preview
        raise ImageError(name, unsupported_format_hint(path) or "camera raw image: not supported")
    _register_plugins()
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
        raise ImageError(name, unsupported_format_hint(path) or "not a recognised image format") from e
    except Image.DecompressionBombError as e:
        raise ImageError(name, f"image too large ({e})") from e
    except (OSError, SyntaxError, ValueError) as e:
        if isinstance(e, OSError) and e.errno is not None:  # a real OS error, not a decoder's
            raise ImageError(name, _os_reason(e, "read")) from e
        msg = str(e)
        if "truncated" in msg.lower():
            msg = "image file is truncated or corrupt"
        raise ImageError(name, f"cannot decode image: {msg}") from e


def describe_error(e: BaseException) -> str:
    """One line for a per-image failure in a batch job: an ImageError's reason (its file is
    reported beside it), "out of memory", an OS error's text and file, or the exception's
    type and message."""
    if isinstance(e, ImageError):
        return e.reason
    if isinstance(e, MemoryError):
        return "out of memory"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror + (f": {e.filename}" if e.filename else "")
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
