"""The Detector interface every model implements.

Data flows one way: image -> RGB uint8 array -> tensor batch -> network ->
decode -> NMS -> list[Face] in original image pixels.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from facesieve.io.images import ImageInput, _is_tensor, check_channel_order, load_image
from facesieve.types import Face

_SINGLE_IMAGE_HINT = "for one image use detect(image) or detect_batch([image])"


def _batch_items(images: object) -> Iterable[ImageInput]:
    """The images of a ``detect_batch`` argument; TypeError for a single image passed by mistake.

    A 4-D numpy array (N, H, W, C) or torch tensor (N, C, H, W) / (N, H, W, C) is a batch of N
    images; a 2-D/3-D array or tensor, a path, a PIL image or bytes is one image.
    """
    if isinstance(images, np.ndarray) or _is_tensor(images):
        shape = tuple(images.shape)  # type: ignore[attr-defined]
        if len(shape) == 4:
            return list(images)  # type: ignore[arg-type]
        kind = "numpy array" if isinstance(images, np.ndarray) else "tensor"
        raise TypeError(f"detect_batch takes a sequence of images, got one {kind} of shape {shape}; "
                        f"{_SINGLE_IMAGE_HINT} (a 4-D array is taken as a batch)")
    if isinstance(images, (str, bytes, os.PathLike, Image.Image)):
        raise TypeError(f"detect_batch takes a sequence of images, got one {type(images).__name__}; "
                        f"{_SINGLE_IMAGE_HINT}")
    if not isinstance(images, Iterable):
        raise TypeError(f"detect_batch takes a sequence of images, got {type(images).__name__}")
    return images  # type: ignore[return-value]


def image_arrays(images: Iterable[ImageInput], channel_order: str = "rgb") -> list[np.ndarray]:
    """The images of a batch (any kinds ``Detector.detect`` takes) as RGB uint8 (H, W, 3)
    arrays; an RGB uint8 contiguous array is passed through without a copy. Raises as
    ``detect_batch`` (TypeError for a single image, ImageError for an unusable one)."""
    co = check_channel_order(channel_order)
    return [load_image(im, co) for im in _batch_items(images)]


class Detector(ABC):
    """Base class. Subclasses implement ``_detect_arrays``.

    Attributes:
        name: registry name of the model (e.g. "retinaface-mnet025", "mtcnn").
        device: torch device string the network runs on.
        score_threshold / nms_threshold: defaults used when a call passes None. nms_threshold is
            the overlap above which NMS suppresses the weaker box: intersection over union for
            RetinaFace, intersection over the smaller box's area for MTCNN (its "min" mode).
        channel_order: "rgb" (default) or "bgr": colour order of array / tensor inputs when
            a call passes None (``facesieve.load(..., channel_order="bgr")`` for OpenCV arrays).
        clip_boxes: default of the calls' ``clip_boxes`` (False: the reference detectors'
            boxes, which may reach outside the image; see ``Face``).
    """

    name: str = ""
    score_threshold: float = 0.5
    nms_threshold: float = 0.4
    default_batch_size: int = 8
    channel_order: str = "rgb"
    clip_boxes: bool = False

    def detect(
        self,
        image: ImageInput,
        score_threshold: float | None = None,
        nms_threshold: float | None = None,
        channel_order: str | None = None,
        clip_boxes: bool | None = None,
    ) -> list[Face]:
        """Detect faces in one image.

        image: a path, a PIL.Image, a numpy array (H, W, 3) uint8 (or grayscale, RGBA,
            uint16, float in [0, 1] / [0, 255]) or a torch.Tensor ((3, H, W) float in [0, 1]
            as torchvision uses, or (H, W, 3) uint8; any device). See ``facesieve.io.images``.
        score_threshold / nms_threshold: override the detector's defaults (nms_threshold: IoU
            for RetinaFace, intersection over the smaller box for MTCNN).
        channel_order: "rgb" or "bgr", colour order of an array / tensor (default: the
            detector's ``channel_order``, "rgb" unless loaded otherwise). Files and PIL
            images are always decoded in true colour.
        clip_boxes: clamp boxes and landmarks to the image (default: the detector's
            ``clip_boxes``, False; see ``Face`` for the convention).
        Returns the faces: boxes xyxy and landmarks (x, y) in pixels
        of the original image (after EXIF orientation for files).
        Raises ImageError (a ValueError) naming the file or "<array>" / "<tensor>" for an
        input that is not a usable image (missing file, permission denied, unsupported
        format, impossible shape, dtype or value range such as a mean/std-normalised
        float array, NaN); ImageTypeError (also a TypeError) for a non-image object;
        ValueError for an unknown channel_order.
        """
        return self.detect_batch(
            [image], batch_size=1, score_threshold=score_threshold, nms_threshold=nms_threshold,
            channel_order=channel_order, clip_boxes=clip_boxes,
        )[0]

    def detect_batch(
        self,
        images: Iterable[ImageInput],
        batch_size: int | None = None,
        score_threshold: float | None = None,
        nms_threshold: float | None = None,
        channel_order: str | None = None,
        clip_boxes: bool | None = None,
    ) -> list[list[Face]]:
        """Detect faces in many images (sizes may differ); one list of Faces per image.

        images: a sequence (list, tuple, generator) of images of any kind ``detect`` takes,
            or a 4-D array / tensor holding N images. A single image (one 2-D/3-D array or
            tensor, a path string, a PIL image) raises TypeError instead of being iterated.
        Other arguments, return values and errors as ``detect``. Images are grouped
        ``batch_size`` at a time into one padded tensor per batch. Results equal one-by-one
        ``detect`` calls. Raises ImageError for an image that cannot be loaded (batch jobs
        that must go past bad files load them first).
        """
        co = self.channel_order if channel_order is None else channel_order
        clip = self.clip_boxes if clip_boxes is None else bool(clip_boxes)
        if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        st = check_fraction("score_threshold", self.score_threshold if score_threshold is None else score_threshold)
        nt = check_fraction("nms_threshold", self.nms_threshold if nms_threshold is None else nms_threshold)
        arrays = image_arrays(images, co)
        bs = max(1, int(batch_size or self.default_batch_size))
        out: list[list[Face]] = []
        for start in range(0, len(arrays), bs):
            out.extend(self._detect_arrays(arrays[start : start + bs], st, nt))
        if clip:
            out = [[f.clipped(a.shape[1], a.shape[0]) for f in faces] for a, faces in zip(arrays, out)]
        return out

    @abstractmethod
    def _detect_arrays(
        self, images: Sequence[np.ndarray], score_threshold: float, nms_threshold: float
    ) -> list[list[Face]]:
        """Detect in a batch of RGB uint8 (H, W, 3) arrays; boxes in each image's pixels."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def check_fraction(name: str, value: float) -> float:
    """``value`` as a float in [0, 1] (a probability or an overlap threshold); ValueError
    naming ``name`` otherwise (a threshold outside it would silently keep every box or none)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= v <= 1.0:  # also refuses NaN
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return v


def check_size(name: str, value: int | None) -> int | None:
    """``value`` as a positive int (pixels) or None; ValueError naming ``name`` otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not float(value).is_integer() or value < 1:
        raise ValueError(f"{name} must be a positive number of pixels or None, got {value!r}")
    return int(value)


def check_detector_options(detector: "Detector") -> None:
    """Validate a built detector's default options (thresholds in [0, 1], sizes positive);
    raises ValueError naming the option. ``facesieve.load`` calls it."""
    check_fraction("score_threshold", detector.score_threshold)
    check_fraction("nms_threshold", detector.nms_threshold)
    for name in ("target_size", "max_size"):
        check_size(name, getattr(detector, name, None))
    for i, t in enumerate(getattr(detector, "thresholds", ()) or ()):
        check_fraction(f"thresholds[{i}]", t)
    min_face = getattr(detector, "min_face_size", None)
    if min_face is not None and not min_face > 0:
        raise ValueError(f"min_face_size must be > 0 pixels, got {min_face!r}")


def release_freed_memory() -> None:
    """Hand memory freed by the last big call back to the OS (glibc ``malloc_trim``; a no-op
    elsewhere). glibc keeps freed heap pages of mid-sized buffers (tiles, activations) in
    the process: after a 48-MP image torch RetinaFace held 410 MB more than before it."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            import ctypes

            _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM = None
