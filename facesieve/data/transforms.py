"""Training augmentation on RGB uint8 images with face boxes and landmarks.

All geometry is in pixels with continuous coordinates (a box ``x1..x2`` covers
``x2 - x1`` pixels; mirroring maps ``x -> W - x``). Boxes are xyxy (N, 4), landmarks
(N, 5, 2) in LANDMARK_NAMES order, ``has_landmarks`` (N,) bool. Each transform is a
small function taking an explicit ``np.random.Generator`` so runs are reproducible.
The RetinaFace recipe (``RetinaFaceAugment``): random square crop -> photometric
distortion -> pad to square (only when no crop was found) -> horizontal mirror ->
resize to ``image_size``; targets come out normalised to [0, 1] of the output size.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import cv2
import numpy as np

from facesieve.types import LANDMARK_NAMES

LANDMARK_FLIP_ORDER: tuple[int, ...] = (1, 0, 2, 4, 3)
"""Index permutation applied to the 5 landmarks by a horizontal mirror.

After mirroring, the point that was the left eye lies on the right; the new "left_eye"
(smaller x) is the old right eye, and likewise for the mouth corners; the nose stays.
"""
assert [LANDMARK_NAMES[i] for i in LANDMARK_FLIP_ORDER] == [
    "right_eye", "left_eye", "nose", "mouth_right", "mouth_left"
]

CROP_SCALES: tuple[float, ...] = (0.3, 0.45, 0.6, 0.8, 1.0)
"""Square crop sides as fractions of the image's short side (reference recipe)."""

_INTERPOLATIONS = (cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA, cv2.INTER_NEAREST, cv2.INTER_LANCZOS4)


@dataclass
class Sample:
    """An image with its faces. image: (H, W, 3) uint8 RGB; boxes (N, 4) xyxy pixels;
    landmarks (N, 5, 2) pixels; has_landmarks (N,) bool."""

    image: np.ndarray
    boxes: np.ndarray
    landmarks: np.ndarray
    has_landmarks: np.ndarray

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        n = len(self.boxes)
        self.landmarks = np.asarray(self.landmarks, np.float32).reshape(n, 5, 2)
        self.has_landmarks = np.asarray(self.has_landmarks, bool).reshape(n)

    def select(self, keep: np.ndarray) -> "Sample":
        return Sample(self.image, self.boxes[keep], self.landmarks[keep], self.has_landmarks[keep])


def hflip(sample: Sample) -> Sample:
    """Mirror horizontally: x -> W - x for boxes and landmarks, left/right landmarks swapped."""
    w = sample.image.shape[1]
    boxes = sample.boxes.copy()
    boxes[:, 0] = w - sample.boxes[:, 2]
    boxes[:, 2] = w - sample.boxes[:, 0]
    lms = sample.landmarks.copy()
    lms[:, :, 0] = w - lms[:, :, 0]
    lms = lms[:, list(LANDMARK_FLIP_ORDER), :]
    return Sample(np.ascontiguousarray(sample.image[:, ::-1]), boxes, lms, sample.has_landmarks.copy())


def box_inside_fraction(boxes: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Fraction of each (N, 4) xyxy box's area that lies inside the xyxy ``region`` -> (N,)."""
    lt = np.maximum(boxes[:, :2], region[:2])
    rb = np.minimum(boxes[:, 2:], region[2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None), axis=1)
    return inter / np.maximum(area, 1e-12)


def crop(sample: Sample, region: Sequence[int]) -> Sample:
    """Crop to the integer xyxy ``region``; keep faces whose centre lies strictly inside it,
    clip their boxes to the region and shift all coordinates to the crop's origin."""
    x1, y1, x2, y2 = (int(v) for v in region)
    centres = (sample.boxes[:, :2] + sample.boxes[:, 2:]) / 2
    inside = np.all((centres > (x1, y1)) & (centres < (x2, y2)), axis=1)
    s = sample.select(inside)
    boxes = s.boxes.copy()
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], x1, x2) - x1
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], y1, y2) - y1
    lms = s.landmarks - np.array([x1, y1], np.float32)
    return Sample(sample.image[y1:y2, x1:x2].copy(), boxes, lms, s.has_landmarks)


def random_square_crop(
    sample: Sample, rng: np.random.Generator, scales: Sequence[float] = CROP_SCALES, max_tries: int = 250
) -> Sample | None:
    """Random square crop with side ``scale * short_side``, scale drawn from ``scales``.

    A try is accepted when at least one face lies entirely inside the crop and at least
    one face centre falls inside it (those faces are kept). Returns None when no try of
    ``max_tries`` succeeds (the caller then pads the whole image to a square).
    """
    h, w = sample.image.shape[:2]
    if len(sample.boxes) == 0:
        return None
    short = min(h, w)
    for _ in range(max_tries):
        side = int(float(rng.choice(np.asarray(scales))) * short)
        if side < 1:
            continue
        left = int(rng.integers(0, w - side)) if w > side else 0
        top = int(rng.integers(0, h - side)) if h > side else 0
        region = np.array([left, top, left + side, top + side], np.float32)
        if not np.any(box_inside_fraction(sample.boxes, region) >= 1.0):
            continue
        out = crop(sample, (left, top, left + side, top + side))
        if len(out.boxes):
            return out
    return None


def pad_to_square(sample: Sample, fill: Sequence[float]) -> Sample:
    """Pad right/bottom to a square of side max(H, W) with the colour ``fill`` (RGB)."""
    h, w = sample.image.shape[:2]
    side = max(h, w)
    if h == w:
        return sample
    out = np.empty((side, side, 3), np.uint8)
    out[:] = np.asarray(fill, np.float64).round().astype(np.uint8)
    out[:h, :w] = sample.image
    return replace(sample, image=out)


def photometric_distort(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random brightness (+-32), contrast (x0.5..1.5), saturation (x0.5..1.5) and hue
    (+-18 of OpenCV's 180) changes, each applied with probability 1/2; contrast goes
    before or after the HSV changes with equal chance. (H, W, 3) uint8 RGB in and out."""
    img = image.astype(np.float32)
    contrast_first = bool(rng.integers(2))

    def contrast(x: np.ndarray) -> np.ndarray:
        return x * float(rng.uniform(0.5, 1.5)) if rng.integers(2) else x

    if rng.integers(2):
        img = img + float(rng.uniform(-32, 32))
    if contrast_first:
        img = contrast(img)
    hsv = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV)
    if rng.integers(2):
        hsv[:, :, 1] = np.clip(hsv[:, :, 1].astype(np.float32) * float(rng.uniform(0.5, 1.5)), 0, 255)
    if rng.integers(2):
        hsv[:, :, 0] = (hsv[:, :, 0].astype(np.int32) + int(rng.integers(-18, 19))) % 180
    img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32)
    if not contrast_first:
        img = contrast(img)
    return np.clip(img, 0, 255).astype(np.uint8)


def resize_square(sample: Sample, size: int, rng: np.random.Generator | None = None) -> Sample:
    """Resize a square sample to (size, size) with a random interpolation (linear if rng is None)."""
    h, w = sample.image.shape[:2]
    interp = _INTERPOLATIONS[int(rng.integers(len(_INTERPOLATIONS)))] if rng is not None else cv2.INTER_LINEAR
    img = cv2.resize(sample.image, (size, size), interpolation=interp)
    sx, sy = size / w, size / h
    boxes = sample.boxes * np.array([sx, sy, sx, sy], np.float32)
    lms = sample.landmarks * np.array([sx, sy], np.float32)
    return Sample(img, boxes, lms, sample.has_landmarks)


@dataclass
class RetinaFaceAugment:
    """The RetinaFace training recipe for one image.

    image_size: output side in pixels (640 for MobileNet-0.25, 840 for ResNet-50).
    fill_rgb: padding colour (the network's mean, RGB).
    Returns a Sample whose image is (image_size, image_size, 3) uint8 RGB and whose boxes
    and landmarks are normalised by image_size (so in [0, 1] for boxes).
    """

    image_size: int = 640
    scales: tuple[float, ...] = CROP_SCALES
    fill_rgb: tuple[float, float, float] = (123.0, 117.0, 104.0)
    mirror_prob: float = 0.5
    distort: bool = True

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        cropped = random_square_crop(sample, rng, self.scales)
        s = cropped if cropped is not None else sample
        if self.distort:
            s = replace(s, image=photometric_distort(s.image, rng))
        if cropped is None:
            s = pad_to_square(s, self.fill_rgb)
        if rng.random() < self.mirror_prob:
            s = hflip(s)
        s = resize_square(s, self.image_size, rng)
        return Sample(s.image, s.boxes / self.image_size, s.landmarks / self.image_size, s.has_landmarks)


def to_chw_tensor_array(
    image: np.ndarray, mean: Sequence[float], std: Sequence[float] = (1.0, 1.0, 1.0), channel_order: str = "BGR"
) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> float32 (3, H, W) network input: channels reordered to
    ``channel_order`` then ``(x - mean) / std`` with mean/std given in that order."""
    img = image.astype(np.float32)
    if channel_order.upper() == "BGR":
        img = img[:, :, ::-1]
    img = (img - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(img.transpose(2, 0, 1))
