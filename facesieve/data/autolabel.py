"""Give a box-only face dataset 5-point landmarks from a trained detector.

Each image is run through the detector; its detections are matched one-to-one to the
ground-truth boxes (maximum total IoU, pairs below ``iou_threshold`` dropped). A matched
face takes the detection's landmarks (and its score in the label.txt score column); an
unmatched face keeps its box and stays without landmarks. Ground-truth boxes are never
changed, added or removed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from facesieve.data.labels import BoxDataset, ImageLabels
from facesieve.io.images import ImageError, load_image
from facesieve.ops.boxes import box_iou
from facesieve.types import Face


def match_boxes(gt: np.ndarray, det: np.ndarray, iou_threshold: float = 0.5) -> np.ndarray:
    """One-to-one matching of (G, 4) ground-truth to (D, 4) detected xyxy boxes.

    Maximises the summed IoU (Hungarian), then drops pairs with IoU < iou_threshold.
    Returns (G,) int64: the matched detection index, or -1.
    """
    out = np.full(len(gt), -1, np.int64)
    if len(gt) == 0 or len(det) == 0:
        return out
    iou = box_iou(np.asarray(gt, np.float64), np.asarray(det, np.float64))
    from facesieve.optional import require

    rows, cols = require("scipy.optimize", "facesieve label (auto-labelling)", "train").linear_sum_assignment(-iou)
    good = iou[rows, cols] >= iou_threshold
    out[rows[good]] = cols[good]
    return out


def label_image(item: ImageLabels, faces: list[Face], iou_threshold: float = 0.5) -> ImageLabels:
    """ImageLabels of ``item`` with landmarks taken from the matched detections."""
    with_lm = [f for f in faces if f.landmarks is not None]
    det = np.asarray([f.box for f in with_lm], np.float64).reshape(-1, 4)
    match = match_boxes(item.boxes, det, iou_threshold)
    n = len(item)
    lms = np.full((n, 5, 2), -1.0, np.float32)
    scores = np.full(n, -1.0, np.float32)
    has = match >= 0
    for g in np.flatnonzero(has):
        f = with_lm[match[g]]
        lms[g] = np.asarray(f.landmarks, np.float32).reshape(5, 2)
        scores[g] = f.score
    vis = np.where(has[:, None], 0.0, -1.0).repeat(5, axis=1).astype(np.float32)
    return ImageLabels(item.path, item.boxes.copy(), lms, has, vis, scores)


@dataclass
class LabelStats:
    images: int = 0
    faces: int = 0
    labelled: int = 0
    failed_images: int = 0

    @property
    def fraction(self) -> float:
        return self.labelled / self.faces if self.faces else 0.0


def annotate_dataset(
    dataset: BoxDataset,
    detector,  # noqa: ANN001 - any facesieve Detector
    iou_threshold: float = 0.5,
    score_threshold: float = 0.3,
    progress: Callable[[Iterable], Iterable] = lambda x: x,
    on_error: Callable[[str], None] | None = None,
) -> tuple[list[ImageLabels], LabelStats]:
    """Run ``detector`` on every image and attach landmarks to the matched faces.

    Images that cannot be loaded keep their boxes without landmarks (``on_error`` is told).
    """
    out: list[ImageLabels] = []
    stats = LabelStats()
    for i in progress(range(len(dataset))):
        item = dataset.items[i]
        stats.images += 1
        stats.faces += len(item)
        try:
            image = load_image(dataset.image_path(i))
        except ImageError as e:
            stats.failed_images += 1
            if on_error is not None:
                on_error(str(e))
            out.append(ImageLabels(item.path, item.boxes.copy()))
            continue
        faces = detector.detect(image, score_threshold=score_threshold) if len(item) else []
        labelled = label_image(item, faces, iou_threshold)
        stats.labelled += int(labelled.has_landmarks.sum())
        out.append(labelled)
    return out, stats
