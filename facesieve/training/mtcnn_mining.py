"""Earlier MTCNN stages as proposal generators: mining R-/O-Net samples, measuring a
stage's recall, and assembling a full cascade checkpoint from trained stages.

Proposals are the boxes the next stage would see in ``facesieve.detectors.mtcnn``:
P-Net windows after its NMS, regression and squaring (R-Net's input), or those after
R-Net's threshold, NMS, regression and squaring (O-Net's input). Boxes are returned
xyxy in continuous 0-based pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from facesieve.data.labels import BoxDataset
from facesieve.io.atomic import atomic_open
from facesieve.io.images import load_image
from facesieve.nets.constants import MTCNN_STAGES
from facesieve.ops.boxes import box_iou

Proposer = Callable[[np.ndarray], np.ndarray]


def cascade_nets(pnet: str | None = None, rnet: str | None = None, onet: str | None = None):  # noqa: ANN201
    """MTCNNNets with the released weights, stages replaced by the given files (a stage
    .pth from ``facesieve train mtcnn`` or a full MTCNN state dict)."""
    from facesieve.nets.mtcnn import MTCNNNets
    from facesieve.weights.mtcnn import load_into, load_mtcnn_state_dict, read_stage_state

    nets = MTCNNNets()
    load_into(nets, load_mtcnn_state_dict(None), source="mtcnn package weights")
    for name, path in zip(MTCNN_STAGES, (pnet, rnet, onet)):
        if path:
            getattr(nets, name).load_state_dict(read_stage_state(path, name), strict=True)
    return nets


def build_cascade(pnet: str | None = None, rnet: str | None = None, onet: str | None = None,
                  device: str = "cpu", **options):  # noqa: ANN201 - MTCNNDetector
    """The MTCNN detector on ``cascade_nets(pnet, rnet, onet)``; options as MTCNNDetector's."""
    from facesieve.backends.mtcnn import TorchMTCNNRunner
    from facesieve.detectors.mtcnn import MTCNNDetector

    runner = TorchMTCNNRunner(cascade_nets(pnet, rnet, onet), device)
    return MTCNNDetector(runner, **options)


def cascade_proposals(det, image: np.ndarray, upto: str) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """Boxes (N, 4) continuous xyxy px and scores (N,) entering stage ``upto`` ("rnet": P-Net
    output; "onet": R-Net output) of an MTCNNDetector on one RGB uint8 image."""
    boxes, scores = det.proposals([image], upto)[0]
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores, np.float64)


def cascade_proposer(stage: str, pnet: str | None, rnet: str | None, device: str = "cpu",
                     min_face_size: float = 12.0) -> Proposer:
    """Proposal function for mining ``stage`` ("rnet" or "onet") samples.

    min_face_size: smallest face the P-Net pyramid looks for while mining (px; the original
    MTCNN recipe mines with 12 to get small hard negatives too).
    """
    det = build_cascade(pnet, rnet if stage == "onet" else None, device=device, min_face_size=min_face_size)
    return lambda image: cascade_proposals(det, image, stage)[0]


@dataclass
class RecallResult:
    """Recall of proposals at IoU >= iou over faces with min(w, h) >= min_size px."""

    faces: int
    found: int
    proposals: int
    images: int
    iou: float
    min_size: float

    @property
    def recall(self) -> float:
        return self.found / self.faces if self.faces else 0.0

    @property
    def proposals_per_image(self) -> float:
        return self.proposals / self.images if self.images else 0.0


def proposal_recall(dataset: BoxDataset, propose: Proposer, min_size: float = 24.0, iou: float = 0.5,
                    progress: Callable[[Iterable], Iterable] = lambda x: x) -> RecallResult:
    """How many ground-truth faces (min side >= min_size) some proposal overlaps by >= iou."""
    faces = found = proposals = 0
    for i in progress(range(len(dataset))):
        gt = dataset.items[i].boxes
        wh = gt[:, 2:] - gt[:, :2]
        gt = gt[wh.min(axis=1) >= min_size] if len(gt) else gt
        boxes = np.asarray(propose(load_image(dataset.image_path(i))), np.float64).reshape(-1, 4)
        proposals += len(boxes)
        faces += len(gt)
        if len(gt) and len(boxes):
            found += int((box_iou(gt, boxes).max(axis=1) >= iou).sum())
    return RecallResult(faces, found, proposals, len(dataset), iou, min_size)


def write_cascade(path: str | Path, pnet: str | None = None, rnet: str | None = None,
                  onet: str | None = None) -> None:
    """Save a full MTCNNNets state dict (trained stages + released weights for the rest)
    that ``facesieve.load("mtcnn", weights=path)`` reads. Atomic."""
    state = {k: v.detach().cpu().contiguous() for k, v in cascade_nets(pnet, rnet, onet).state_dict().items()}
    with atomic_open(path, "wb") as f:
        torch.save(state, f)
