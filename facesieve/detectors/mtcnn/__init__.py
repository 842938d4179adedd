"""MTCNN detector: the P-Net -> R-Net -> O-Net cascade (Zhang et al., 2016), batched.

The cascade follows the reference implementation (facenet-pytorch, same original weights)
step by step, so that detections agree with it:

1. Image pyramid: scales ``12 / min_face_size * factor**k`` while the short side stays
   >= 12 px; level size ``int(h * s + 1) x int(w * s + 1)``, area (box-average) resampling
   with PyTorch's ``interpolate(mode="area")`` bins, computed from an integral image.
2. P-Net over every level of every image of the batch: levels (cut into row bands when
   too big) are packed onto canvases of about ``pnet_max_pixels`` (even offsets; an edge
   map keeps levels from seeing each other), one network call per canvas. Cells with face
   probability >= thresholds[0] become 12x12 windows; NMS 0.5 per (image, level), NMS 0.7
   per image, box regression, squaring.
3. R-Net on 24x24 crops of all candidates of the batch, area-resampled like the reference
   (from the integral image, in a few vectorised gathers), in chunks; keep probability >
   thresholds[1], NMS 0.7, regression, squaring.
4. O-Net on 48x48 crops with landmarks, keep probability > thresholds[2], regression,
   final NMS in the "min" overlap mode: intersection over the smaller box's area, not IoU
   (``nms_threshold``, default 0.7).

Speed on CPU: channels-last tensors, cache-sized canvases and chunks, and ``workers``
threads each running single-threaded network calls: a batch with enough images is spread
over them as whole-cascade tasks (image by image, no waiting between stages); a single
image's independent pieces (levels, canvases, chunks of crops with their network call)
run side by side (see ``MTCNNDetector.detect_arrays_raw`` and ``workers.Workers``).

Boxes are reported as the reference (and the original MATLAB MTCNN) computes them: the
windows start at ``floor((2 * cell + 1) / scale)``, a 1-based pixel index. We keep them
as they are: against WIDER FACE annotations they align better than the same boxes shifted
to 0-based (x1 - 1, y1 - 1), which lowers AP (measured: -0.6 easy on 40 dev images).
Landmarks are 0-based (x, y) pixels, as in the reference.

Modules: ``resample`` (area resampling from integral images, banded for big images),
``pyramid`` (scales, canvas packing), ``workers`` (thread scheduling), ``cascade`` (the
detector); box geometry in ``facesieve.ops.boxes``.

The three network calls are behind ``MTCNNRunner`` (``facesieve.backends.mtcnn``;
``pnet``, ``rnet``, ``onet`` on float32
NCHW numpy arrays) so another backend (e.g. ONNX Runtime) can replace the torch one.
"""
from __future__ import annotations

from facesieve.backends.mtcnn import MTCNNRunner, TorchMTCNNRunner
from facesieve.detectors.mtcnn.cascade import MTCNNDetector, build
from facesieve.detectors.mtcnn.pyramid import (
    EDGE_VALUE,
    PNET_CELL,
    PNET_STRIDE,
    Piece,
    level_size,
    pack_pieces,
    pnet_output_size,
    pyramid_scales,
    split_rows,
)
from facesieve.detectors.mtcnn.resample import (
    BandedImages,
    IntegralImages,
    area_bins,
    area_rows,
    band_table,
    crop_resize_area,
    normalize,
    resize_area,
    take_entries,
)
from facesieve.detectors.mtcnn.workers import Workers
from facesieve.ops.boxes import crop_windows, regress_boxes, square_boxes

__all__ = [
    "BandedImages", "EDGE_VALUE", "IntegralImages", "MTCNNDetector", "MTCNNRunner", "PNET_CELL", "PNET_STRIDE",
    "Piece", "TorchMTCNNRunner", "Workers", "area_bins", "area_rows", "band_table", "build", "crop_resize_area",
    "crop_windows", "level_size", "normalize", "pack_pieces", "pnet_output_size", "pyramid_scales",
    "regress_boxes", "resize_area", "split_rows", "square_boxes", "take_entries",
]
