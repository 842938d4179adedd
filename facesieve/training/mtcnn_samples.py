"""MTCNN training samples: square crops of a box dataset, resized to 12 / 24 / 48 pixels.

A crop's class comes from its best IoU with the image's faces: negative (< 0.3),
part face (0.4 .. 0.65), positive (>= 0.65); crops in 0.3 .. 0.4 are discarded.
Landmark samples are near-face crops (IoU >= 0.65) of faces that have landmarks.
Targets are relative to the crop (pixels / crop side):

* box: (gx1 - cx1, gy1 - cy1, gx2 - cx2, gy2 - cy2) / side, for positives and parts;
* landmarks: (x - cx1, y - cy1) / side per point, (5, 2) flattened as x0, y0, x1, y1, ...

P-Net samples are random crops (``generate_random_samples``); R-Net and O-Net samples
are mined from the previous stages' detections (``samples_from_candidates``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np

from facesieve.data.labels import BoxDataset
from facesieve.io.atomic import atomic_open
from facesieve.io.images import load_image
from facesieve.ops.boxes import box_iou, square_boxes
from facesieve.training.losses import LANDMARK, NEGATIVE, PART, POSITIVE

NEG_IOU = 0.3
PART_IOU = 0.4
POS_IOU = 0.65
DISCARD = -1
STAGE_SIZES = {"pnet": 12, "rnet": 24, "onet": 48}
DEFAULT_RATIO = (3.0, 1.0, 1.0, 2.0)
"""negatives : positives : part faces : landmark faces."""


def classify_iou(max_iou: np.ndarray) -> np.ndarray:
    """(M,) best IoU with any face -> (M,) int8 NEGATIVE / PART / POSITIVE / DISCARD."""
    m = np.asarray(max_iou, np.float64)
    out = np.full(m.shape, DISCARD, np.int8)
    out[m < NEG_IOU] = NEGATIVE
    out[(m >= PART_IOU) & (m < POS_IOU)] = PART
    out[m >= POS_IOU] = POSITIVE
    return out


def box_targets(crops: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(M, 4) crops and their (M, 4) matched faces, both xyxy -> (M, 4) offsets / crop side."""
    crops = np.asarray(crops, np.float64)
    side = (crops[:, 2] - crops[:, 0])[:, None]
    return ((np.asarray(gt, np.float64) - crops) / side).astype(np.float32)


def landmark_targets(crops: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(M, 4) crops and (M, 5, 2) landmarks in pixels -> (M, 10) crop-relative x0, y0, x1, ..."""
    crops = np.asarray(crops, np.float64)
    side = (crops[:, 2] - crops[:, 0])[:, None, None]
    rel = (np.asarray(landmarks, np.float64) - crops[:, None, :2]) / side
    return rel.reshape(-1, 10).astype(np.float32)


def square(boxes: np.ndarray) -> np.ndarray:
    """(M, 4) xyxy -> float64 squares with the same centre and side max(w, h)
    (``facesieve.ops.boxes.square_boxes``)."""
    return square_boxes(np.asarray(boxes, np.float64).reshape(-1, 4))


def crop_resize(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Cut (M, 4) xyxy boxes (rounded to integers; parts outside the image read as 0)
    from an (H, W, 3) uint8 image and resize each to (size, size) -> (M, size, size, 3)."""
    h, w = image.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), np.uint8)
    for i, b in enumerate(np.round(np.asarray(boxes)).astype(np.int64)):
        x1, y1, x2, y2 = (int(v) for v in b)
        if x2 <= x1 or y2 <= y1:
            continue
        patch = np.zeros((y2 - y1, x2 - x1, 3), np.uint8)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if sx2 > sx1 and sy2 > sy1:
            patch[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = image[sy1:sy2, sx1:sx2]
        interp = cv2.INTER_AREA if patch.shape[0] > size else cv2.INTER_LINEAR
        out[i] = cv2.resize(patch, (size, size), interpolation=interp)
    return out


@dataclass
class SampleSet:
    """Crops with labels and targets.

    images: (K, S, S, 3) uint8 RGB; labels: (K,) int8 NEGATIVE/POSITIVE/PART/LANDMARK;
    boxes: (K, 4) float32 box targets (0 where unused); landmarks: (K, 10) float32
    (0 where unused).
    """

    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    landmarks: np.ndarray

    @staticmethod
    def empty(size: int) -> "SampleSet":
        return SampleSet(np.zeros((0, size, size, 3), np.uint8), np.zeros(0, np.int8),
                         np.zeros((0, 4), np.float32), np.zeros((0, 10), np.float32))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def counts(self) -> dict[str, int]:
        names = {NEGATIVE: "negative", POSITIVE: "positive", PART: "part", LANDMARK: "landmark"}
        return {name: int((self.labels == k).sum()) for k, name in names.items()}

    def select(self, idx: np.ndarray) -> "SampleSet":
        return SampleSet(self.images[idx], self.labels[idx], self.boxes[idx], self.landmarks[idx])

    @staticmethod
    def concat(parts: Sequence["SampleSet"], size: int) -> "SampleSet":
        parts = [p for p in parts if len(p)]
        if not parts:
            return SampleSet.empty(size)
        return SampleSet(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                           ("images", "labels", "boxes", "landmarks")))

    def save(self, path: str | Path) -> None:
        """Write an .npz atomically."""
        with atomic_open(path, "wb") as f:
            np.savez(f, images=self.images, labels=self.labels, boxes=self.boxes, landmarks=self.landmarks)

    @staticmethod
    def load(path: str | Path) -> "SampleSet":
        with np.load(path) as z:
            return SampleSet(z["images"], z["labels"], z["boxes"], z["landmarks"])


def balance(samples: SampleSet, rng: np.random.Generator, ratio: Sequence[float] = DEFAULT_RATIO) -> SampleSet:
    """Subsample classes towards negatives:positives:parts:landmarks = ``ratio``.

    The scale is set by the class that is scarcest relative to its share (classes with
    no samples at all are ignored), so no class is oversampled.
    """
    labels = samples.labels
    classes = (NEGATIVE, POSITIVE, PART, LANDMARK)
    have = {c: np.flatnonzero(labels == c) for c in classes}
    units = [len(have[c]) / r for c, r in zip(classes, ratio) if r > 0 and len(have[c])]
    if not units:
        return samples
    unit = min(units)
    keep = []
    for c, r in zip(classes, ratio):
        n = min(len(have[c]), int(round(unit * r)))
        keep.append(rng.choice(have[c], size=n, replace=False) if n < len(have[c]) else have[c])
    idx = np.sort(np.concatenate(keep)).astype(np.int64)
    return samples.select(idx)


# --------------------------------------------------------------------------- crop proposals


def random_crops(width: int, height: int, count: int, rng: np.random.Generator, min_size: int = 12) -> np.ndarray:
    """``count`` random squares inside the image, side in [min_size, min(w, h) / 2) -> (count, 4)."""
    hi = max(min_size + 1, min(width, height) // 2)
    side = rng.integers(min_size, hi, size=count)
    x = rng.integers(0, np.maximum(width - side, 0) + 1)
    y = rng.integers(0, np.maximum(height - side, 0) + 1)
    return np.stack([x, y, x + side, y + side], axis=1).astype(np.float64)


def near_face_crops(face: np.ndarray, count: int, rng: np.random.Generator, shift: float = 0.2) -> np.ndarray:
    """Squares around one xyxy face: side in [0.8 min(w, h), 1.25 max(w, h)], centre moved
    by up to ``shift`` of the face size -> (count, 4). These give positives and parts."""
    x1, y1, x2, y2 = (float(v) for v in face)
    w, h = x2 - x1, y2 - y1
    lo, hi = 0.8 * min(w, h), 1.25 * max(w, h)
    side = rng.uniform(lo, max(hi, lo + 1e-6), size=count)
    cx = (x1 + x2) / 2 + rng.uniform(-shift, shift, size=count) * w
    cy = (y1 + y2) / 2 + rng.uniform(-shift, shift, size=count) * h
    return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=1)


def nearby_negative_crops(face: np.ndarray, count: int, rng: np.random.Generator, min_size: int = 12) -> np.ndarray:
    """Squares that overlap one face only a little: side in [min_size, min(w, h) / 2 .. ],
    shifted by up to its own side from the face's corner -> (count, 4) (hard negatives)."""
    x1, y1, x2, y2 = (float(v) for v in face)
    w, h = x2 - x1, y2 - y1
    side = rng.uniform(min_size, max(min_size + 1.0, min(w, h)), size=count)
    dx = rng.uniform(-1, 1, size=count) * np.maximum(side, w)
    dy = rng.uniform(-1, 1, size=count) * np.maximum(side, h)
    nx, ny = x1 + dx, y1 + dy
    return np.stack([nx, ny, nx + side, ny + side], axis=1)


def _inside(crops: np.ndarray, width: int, height: int) -> np.ndarray:
    return (crops[:, 0] >= 0) & (crops[:, 1] >= 0) & (crops[:, 2] <= width) & (crops[:, 3] <= height)


def samples_from_candidates(
    image: np.ndarray,
    gt: np.ndarray,
    candidates: np.ndarray,
    size: int,
) -> SampleSet:
    """Label square crops by IoU with the faces, attach box targets, cut and resize them.

    image: (H, W, 3) uint8 RGB; gt: (G, 4) xyxy faces; candidates: (M, 4) xyxy crops
    (squared here, rounded to pixels). Crops in the discard band are dropped.
    """
    if len(candidates) == 0:
        return SampleSet.empty(size)
    crops = np.round(square(candidates))
    crops = crops[(crops[:, 2] - crops[:, 0]) >= 1]
    if len(gt):
        iou = box_iou(crops, gt)
        best, best_iou = iou.argmax(axis=1), iou.max(axis=1)
    else:
        best, best_iou = np.zeros(len(crops), np.int64), np.zeros(len(crops))
    labels = classify_iou(best_iou)
    keep = labels != DISCARD
    crops, labels, best = crops[keep], labels[keep], best[keep]
    boxes = np.zeros((len(crops), 4), np.float32)
    has_face = labels != NEGATIVE
    if has_face.any():
        boxes[has_face] = box_targets(crops[has_face], gt[best[has_face]])
    return SampleSet(crop_resize(image, crops, size), labels, boxes, np.zeros((len(crops), 10), np.float32))


def landmark_samples(
    image: np.ndarray,
    gt: np.ndarray,
    landmarks: np.ndarray,
    size: int,
    per_face: int,
    rng: np.random.Generator,
    min_face: float = 12.0,
) -> SampleSet:
    """Near-face crops with IoU >= 0.65 of faces that have landmarks, labelled LANDMARK.

    gt: (G, 4) xyxy faces with landmarks (G, 5, 2) pixels. Crops must lie in the image.
    """
    h, w = image.shape[:2]
    crops_all, lms_all = [], []
    for face, lm in zip(np.asarray(gt, np.float64), np.asarray(landmarks, np.float64)):
        if min(face[2] - face[0], face[3] - face[1]) < min_face:
            continue
        crops = np.round(near_face_crops(face, per_face * 3, rng, shift=0.1))
        crops = crops[_inside(crops, w, h) & ((crops[:, 2] - crops[:, 0]) >= 1)]
        if len(crops) == 0:
            continue
        crops = crops[box_iou(crops, face[None])[:, 0] >= POS_IOU][:per_face]
        crops_all.append(crops)
        lms_all.append(np.repeat(lm[None], len(crops), axis=0))
    if not crops_all:
        return SampleSet.empty(size)
    crops = np.concatenate(crops_all)
    lms = np.concatenate(lms_all)
    n = len(crops)
    return SampleSet(crop_resize(image, crops, size), np.full(n, LANDMARK, np.int8),
                     np.zeros((n, 4), np.float32), landmark_targets(crops, lms))


@dataclass
class RandomSampleConfig:
    """How many crops to try per image / face when generating P-Net samples.

    negatives_per_image: random squares anywhere; negatives_near_face: squares next to each
    face; near_face_per_face: shifted crops around each face (positives and parts);
    landmarks_per_face: landmark crops per face with landmarks; min_face: faces smaller
    than this (pixels, min side) give no positives/parts/landmark crops.
    """

    negatives_per_image: int = 50
    negatives_near_face: int = 5
    near_face_per_face: int = 20
    landmarks_per_face: int = 10
    min_face: float = 20.0
    min_crop: int = 12


def random_samples_for_image(
    image: np.ndarray,
    gt: np.ndarray,
    landmarks: np.ndarray,
    has_landmarks: np.ndarray,
    size: int,
    rng: np.random.Generator,
    cfg: RandomSampleConfig = RandomSampleConfig(),
) -> SampleSet:
    """All random-crop samples of one image (before class balancing)."""
    h, w = image.shape[:2]
    gt = np.asarray(gt, np.float64).reshape(-1, 4)
    cands = [random_crops(w, h, cfg.negatives_per_image, rng, cfg.min_crop)]
    big = np.minimum(gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]) >= cfg.min_face
    for face in gt[big]:
        cands.append(nearby_negative_crops(face, cfg.negatives_near_face, rng, cfg.min_crop))
        cands.append(near_face_crops(face, cfg.near_face_per_face, rng))
    crops = np.concatenate(cands)
    crops = crops[_inside(np.round(crops), w, h)]
    out = samples_from_candidates(image, gt, crops, size)
    lm_mask = np.asarray(has_landmarks, bool) & big
    lm = landmark_samples(image, gt[lm_mask], np.asarray(landmarks)[lm_mask], size,
                          cfg.landmarks_per_face, rng, cfg.min_face)
    return SampleSet.concat([out, lm], size)


def generate_random_samples(
    dataset: BoxDataset,
    size: int,
    rng: np.random.Generator,
    cfg: RandomSampleConfig = RandomSampleConfig(),
    ratio: Sequence[float] | None = DEFAULT_RATIO,
    progress: Callable[[Iterable], Iterable] = lambda x: x,
) -> SampleSet:
    """P-Net style samples from every image of a box dataset, balanced to ``ratio``."""
    parts = []
    for i in progress(range(len(dataset))):
        item = dataset.items[i]
        image = load_image(dataset.image_path(i))
        parts.append(random_samples_for_image(image, item.boxes, item.landmarks, item.has_landmarks,
                                              size, rng, cfg))
    samples = SampleSet.concat(parts, size)
    return balance(samples, rng, ratio) if ratio is not None else samples


def mine_samples(
    dataset: BoxDataset,
    propose: Callable[[np.ndarray], np.ndarray],
    size: int,
    rng: np.random.Generator,
    landmarks_per_face: int = 10,
    min_face: float = 12.0,
    ratio: Sequence[float] | None = DEFAULT_RATIO,
    progress: Callable[[Iterable], Iterable] = lambda x: x,
) -> SampleSet:
    """R-Net / O-Net samples: crops of the previous stages' detections on each image.

    propose: RGB uint8 image -> (M, 4) xyxy candidate boxes (the earlier stages' output).
    Landmark samples come from random near-face crops as for P-Net.
    """
    parts = []
    for i in progress(range(len(dataset))):
        item = dataset.items[i]
        image = load_image(dataset.image_path(i))
        cands = np.asarray(propose(image), np.float64).reshape(-1, 4)
        parts.append(samples_from_candidates(image, item.boxes, cands, size))
        lm = item.has_landmarks
        parts.append(landmark_samples(image, item.boxes[lm], item.landmarks[lm], size,
                                      landmarks_per_face, rng, min_face))
    samples = SampleSet.concat(parts, size)
    return balance(samples, rng, ratio) if ratio is not None else samples


def mirror_samples(images: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Horizontally mirror crops and their crop-relative targets.

    images (K, S, S, 3); boxes (K, 4) offsets -> (-dx2, dy1, -dx1, dy2); landmarks (K, 10)
    x -> 1 - x with left/right points swapped (LANDMARK_FLIP_ORDER).
    """
    from facesieve.data.transforms import LANDMARK_FLIP_ORDER

    imgs = images[:, :, ::-1]
    b = np.stack([-boxes[:, 2], boxes[:, 1], -boxes[:, 0], boxes[:, 3]], axis=1)
    lm = landmarks.reshape(-1, 5, 2).copy()
    lm[:, :, 0] = 1.0 - lm[:, :, 0]
    lm = lm[:, list(LANDMARK_FLIP_ORDER)].reshape(-1, 10)
    return imgs, b.astype(np.float32), lm.astype(np.float32)
