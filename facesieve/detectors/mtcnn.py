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
   final NMS in the "min" overlap mode (``nms_threshold``, default 0.7).

Speed on CPU: channels-last tensors, cache-sized canvases and chunks, and ``workers``
threads each running single-threaded network calls: a batch with enough images is spread
over them as whole-cascade tasks (image by image, no waiting between stages); a single
image's independent pieces (levels, canvases, chunks of crops with their network call)
run side by side (see ``MTCNNDetector.detect_arrays_raw`` and ``_map``).

Boxes are reported as the reference (and the original MATLAB MTCNN) computes them: the
windows start at ``floor((2 * cell + 1) / scale)``, a 1-based pixel index. We keep them
as they are: against WIDER FACE annotations they align better than the same boxes shifted
to 0-based (x1 - 1, y1 - 1), which lowers AP (measured: -0.6 easy on 40 dev images).
Landmarks are 0-based (x, y) pixels, as in the reference.

The three network calls are behind ``MTCNNRunner`` (``pnet``, ``rnet``, ``onet`` on float32
NCHW numpy arrays) so another backend (e.g. ONNX Runtime) can replace the torch one.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import cv2
import numpy as np
import torch

from facesieve.backends.mtcnn import MTCNNRunner, TorchMTCNNRunner, mtcnn_runner, parallel_workers
from facesieve.detectors.base import Detector, image_arrays
from facesieve.nets.mtcnn import IMAGE_MEAN, IMAGE_SCALE, MTCNNNets
from facesieve.ops.boxes import batched_nms
from facesieve.types import Face, faces_from_arrays
from facesieve.weights.checks import check_outputs_finite, describe_weights, verify_weights
from facesieve.weights.mtcnn import load_into, load_mtcnn_state_dict

EDGE_VALUE = -1.0e4
"""Added to P-Net's first activations outside the packed levels; far below any real value
(|conv1| <= sum|w| + |b| < 10 on inputs in [-1, 1]), so max-pooling never picks it."""

PNET_CELL = 12
PNET_STRIDE = 2


# ----------------------------------------------------------------------------- resampling


class IntegralImages:
    """Summed-area tables of a batch of RGB uint8 images in one flat (rows, 4) uint32 table.

    Image i's table is ``sat(i)``, (H + 1, W + 1, 4): entry [y, x, c] = sum of channel c
    over pixels [0, y) x [0, x) (c = 0, 1, 2: R, G, B; channel 3 is padding). Entries wrap
    modulo 2**32, yet the difference of four entries is exact for any rectangle whose true
    sum is < 2**32 (every resampling bin here), even on huge images.

    Four channels make an entry 16 bytes: ``packed`` views the table as one complex128 per
    entry, so that gathers copy single 16-byte items (numpy's fast path, ~2x faster than
    gathering 12-byte rows).
    """

    def __init__(self, images: Sequence[np.ndarray], map_fn: Callable[..., list[Any]] | None = None) -> None:
        """map_fn: optional parallel ``map(fn, items) -> list`` (the tables are independent)."""
        self.shapes = [im.shape[:2] for im in images]
        sizes = np.array([(h + 1) * (w + 1) for h, w in self.shapes], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.table = np.empty((int(sizes.sum()), 4), np.uint32)
        self.packed = self.table.view(np.complex128).reshape(-1)
        self.strides = np.array([w + 1 for _, w in self.shapes], np.int64)

        def fill(i: int) -> None:
            rgba = cv2.cvtColor(np.ascontiguousarray(images[i]), cv2.COLOR_RGB2RGBA)
            cv2.integral(rgba, sum=self.sat(i).view(np.int32), sdepth=cv2.CV_32S)

        (map_fn or (lambda f, xs: [f(x) for x in xs]))(fill, range(len(images)))

    @classmethod
    def of_table(cls, sat: np.ndarray) -> "IntegralImages":
        """One image given by its (H + 1, W + 1, 4) uint32 table (e.g. ``band_table``)."""
        self = cls.__new__(cls)
        self.shapes = [(sat.shape[0] - 1, sat.shape[1] - 1)]
        self.offsets = np.zeros(1, np.int64)
        self.table = np.ascontiguousarray(sat).reshape(-1, 4)
        self.packed = self.table.view(np.complex128).reshape(-1)
        self.strides = np.array([sat.shape[1]], np.int64)
        return self

    def sat(self, i: int) -> np.ndarray:
        h, w = self.shapes[i]
        o = int(self.offsets[i])
        return self.table[o:o + (h + 1) * (w + 1)].reshape(h + 1, w + 1, 4)

    def gather(self, index: np.ndarray) -> np.ndarray:
        """Entries at flat row indices ``index`` (any shape) -> index.shape + (4,) uint32."""
        return take_entries(self.packed, index)


def take_entries(packed: np.ndarray, index: np.ndarray, axis: int | None = None) -> np.ndarray:
    """``np.take`` on a complex128 view of 4-channel uint32 entries (``IntegralImages.packed``
    or a row block of it), returned as uint32 with the 4 channels last: result shape
    ``np.take(packed, index, axis).shape + (4,)``."""
    out = np.take(packed, index, axis=axis)
    return out.view(np.uint32).reshape(*out.shape, 4)


def area_bins(start: np.ndarray, length: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Bins of PyTorch's area resampling (adaptive average pooling) of ``length`` pixels
    starting at ``start`` onto ``size`` outputs: bin i covers [lo, hi) with
    lo = start + floor(i * length / size), hi = start + ceil((i + 1) * length / size).

    start, length: (N,) ints -> lo, hi: (N, size) int64.
    """
    i = np.arange(size, dtype=np.int64)[None, :]
    start = np.asarray(start, dtype=np.int64)[:, None]
    length = np.asarray(length, dtype=np.int64)[:, None]
    return start + (i * length) // size, start + ((i + 1) * length + size - 1) // size


def normalize(pixels: np.ndarray) -> np.ndarray:
    """RGB 0..255 float32 -> network input ``(pixel - 127.5) * (1 / 128)``, in place."""
    pixels -= np.float32(IMAGE_MEAN)
    pixels *= np.float32(IMAGE_SCALE)
    return pixels


def _bin_means(sums: np.ndarray, bin_h: np.ndarray, bin_w: np.ndarray, network_input: bool) -> np.ndarray:
    """(..., h, w, 4) uint32 bin sums -> (..., h, w, 3) float32 means: sum / bin height / bin
    width, in that order and in float32, as PyTorch's adaptive average pooling divides;
    then ``normalize``d if ``network_input``. bin_h: (..., h) and bin_w: (..., w) pixel
    counts. The result is a view of a (..., h, w, 4) array: every pass runs on contiguous
    4-channel data (several times faster than on 3-channel views)."""
    out = sums.astype(np.float32)
    out /= bin_h.astype(np.float32)[..., :, None, None]
    out /= bin_w.astype(np.float32)[..., None, :, None]
    if network_input:
        normalize(out)
    return out[..., :3]


def resize_area(sat: np.ndarray, height: int, width: int, network_input: bool = False) -> np.ndarray:
    """Whole image (given by its (H + 1, W + 1, 4) summed-area table) -> (height, width, 3)
    float32 0..255, equal to ``torch.nn.functional.interpolate(img, (height, width),
    mode="area")`` (bin sum / bin height / bin width in float32); ``normalize``d with
    ``network_input``."""
    h_in, w_in = sat.shape[0] - 1, sat.shape[1] - 1
    ylo, yhi = area_bins(np.zeros(1), np.array([h_in]), height)
    xlo, xhi = area_bins(np.zeros(1), np.array([w_in]), width)
    rows = np.take(sat, yhi[0], axis=0)  # (height, W + 1, 4), contiguous row copies
    rows -= np.take(sat, ylo[0], axis=0)
    packed = rows.view(np.complex128)[..., 0]  # (height, W + 1), one 16-byte item per entry
    s = take_entries(packed, xhi[0], axis=1)
    s -= take_entries(packed, xlo[0], axis=1)
    return _bin_means(s, yhi[0] - ylo[0], xhi[0] - xlo[0], network_input)


def crop_resize_area(ii: IntegralImages, image: np.ndarray, y0: np.ndarray, y1: np.ndarray,
                     x0: np.ndarray, x1: np.ndarray, size: int, network_input: bool = False) -> np.ndarray:
    """Crops rows [y0, y1) x cols [x0, x1) (0-based, inside image ``image[k]``, non-empty),
    each area-resampled to (size, size) like ``resize_area`` -> (N, size, size, 3) float32
    0..255 (``normalize``d with ``network_input``). All crops of all images in four
    vectorised gathers."""
    ylo, yhi = area_bins(y0, y1 - y0, size)
    xlo, xhi = area_bins(x0, x1 - x0, size)
    stride = ii.strides[image][:, None]
    base = ii.offsets[image][:, None]
    row_hi = (base + yhi * stride)[:, :, None]
    row_lo = (base + ylo * stride)[:, :, None]
    xh, xl = xhi[:, None, :], xlo[:, None, :]
    s = ii.gather(row_hi + xh)
    s -= ii.gather(row_lo + xh)
    s -= ii.gather(row_hi + xl)
    s += ii.gather(row_lo + xl)
    return _bin_means(s, yhi - ylo, xhi - xlo, network_input)


def band_table(image: np.ndarray, y0: int, y1: int, x0: int = 0, x1: int | None = None) -> np.ndarray:
    """Summed-area table ((y1 - y0 + 1, x1 - x0 + 1, 4) uint32, as ``IntegralImages.sat``) of
    rows [y0, y1) x cols [x0, x1) of an RGB uint8 image: differences of its entries equal the
    whole image's table's for rectangles inside the region."""
    region = np.ascontiguousarray(image[y0:y1, x0:x1])
    out = np.empty((region.shape[0] + 1, region.shape[1] + 1, 4), np.uint32)
    cv2.integral(cv2.cvtColor(region, cv2.COLOR_RGB2RGBA), sum=out.view(np.int32), sdepth=cv2.CV_32S)
    return out


class BandedImages:
    """What the cascade reads from ``IntegralImages``, for images too large for a summed-area
    table of the whole image (16 bytes per pixel: 1.7 GB at 108 MP): crops are resampled from
    tables of just the rows and columns they cover, up to ``max_pixels`` pixels of image per
    table (a crop larger than that is summed separably, bins of rows then of columns). The
    same integer bin sums, so the same crops as ``crop_resize_area``; memory O(max_pixels)."""

    def __init__(self, images: Sequence[np.ndarray], max_pixels: int) -> None:
        self.images = images
        self.shapes = [im.shape[:2] for im in images]
        self.max_pixels = int(max_pixels)

    def crops(self, image: np.ndarray, y0: np.ndarray, y1: np.ndarray, x0: np.ndarray, x1: np.ndarray,
              size: int, network_input: bool = False) -> np.ndarray:
        """As ``crop_resize_area(ii, image, y0, y1, x0, x1, size, network_input)``."""
        n = len(y0)
        out = np.empty((n, size, size, 3), np.float32)
        order = np.lexsort((y0, image))
        k = 0
        while k < n:
            i = int(image[order[k]])
            lo, hi, clo, chi = int(y0[order[k]]), int(y1[order[k]]), int(x0[order[k]]), int(x1[order[k]])
            if (hi - lo) * (chi - clo) > self.max_pixels:  # one huge crop
                ylo, yhi = area_bins(np.array([lo]), np.array([hi - lo]), size)
                out[order[k]] = area_rows(self.images[i], ylo[0], yhi[0], clo, chi, size, network_input)
                k += 1
                continue
            end = k + 1
            while end < n and int(image[order[end]]) == i:
                j = order[end]
                nlo, nhi = lo, max(hi, int(y1[j]))
                nclo, nchi = min(clo, int(x0[j])), max(chi, int(x1[j]))
                if (nhi - nlo) * (nchi - nclo) > self.max_pixels:
                    break
                hi, clo, chi = nhi, nclo, nchi
                end += 1
            group = order[k:end]
            sat = band_table(self.images[i], lo, hi, clo, chi)
            ii = IntegralImages.of_table(sat)
            out[group] = crop_resize_area(ii, np.zeros(len(group), np.int64), y0[group] - lo, y1[group] - lo,
                                          x0[group] - clo, x1[group] - clo, size, network_input)
            k = end
        return out


def area_rows(image: np.ndarray, ylo: np.ndarray, yhi: np.ndarray, x0: int, x1: int, width: int,
              network_input: bool = False) -> np.ndarray:
    """Area-resampled rows without a summed-area table: output row i averages image rows
    [ylo[i], yhi[i]) of columns [x0, x1), resampled to ``width`` columns (``area_bins``).
    Sums rows then columns in uint32 (exact integers, as the table's differences), then the
    same float32 division: equal to the matching rows of ``resize_area`` /
    ``crop_resize_area``. Memory: O(len(ylo) * (x1 - x0)). Returns (len(ylo), width, 3)."""
    xlo, xhi = area_bins(np.array([0]), np.array([x1 - x0]), width)
    region = image[:, x0:x1]
    cum = np.zeros((len(ylo), x1 - x0 + 1, 4), np.uint32)
    for k, (a, b) in enumerate(zip(ylo.tolist(), yhi.tolist())):
        np.cumsum(region[a:b].sum(axis=0, dtype=np.uint32), axis=0, dtype=np.uint32, out=cum[k, 1:, :3])
    sums = np.take(cum, xhi[0], axis=1)
    sums -= np.take(cum, xlo[0], axis=1)
    return _bin_means(sums, np.asarray(yhi) - np.asarray(ylo), xhi[0] - xlo[0], network_input)


# ----------------------------------------------------------------------------- pyramid


def pyramid_scales(height: int, width: int, min_face_size: float, factor: float) -> list[float]:
    """Scales 12 / min_face_size * factor**k while min(height, width) * scale >= 12
    (the reference's running products, so level sizes match it exactly)."""
    scale = PNET_CELL / float(min_face_size)
    min_side = min(height, width) * scale
    scales = []
    while min_side >= PNET_CELL:
        scales.append(scale)
        scale *= factor
        min_side *= factor
    return scales


def level_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """Pyramid level (h, w) in pixels for ``scale``."""
    return int(height * scale + 1), int(width * scale + 1)


def pnet_output_size(n: int) -> int:
    """P-Net output cells along a side of n >= 12 input pixels: ceil((n - 2) / 2) - 4."""
    return (n - 1) // 2 - 4


@dataclass(frozen=True)
class Piece:
    """A band of rows of one pyramid level, placed on a P-Net canvas.

    image / level: indices; row0: first level row of the band (even); rows x cols: band
    size in pixels; canvas, y, x: placement (y, x even); out_row0: first P-Net output row
    of the level that this band yields, out_rows: how many.
    """

    image: int
    level: int
    row0: int
    rows: int
    cols: int
    canvas: int
    y: int
    x: int
    out_row0: int
    out_rows: int


def split_rows(height: int, width: int, max_pixels: int) -> list[tuple[int, int, int, int]]:
    """Split a level of (height, width) px into row bands of <= max_pixels (when possible)
    whose P-Net outputs together are exactly those of the whole level.

    Bands overlap by 10 rows (P-Net's 12-row window minus its stride) and inner bands have
    an even height. Returns (row0, rows, out_row0, out_rows) per band.
    """
    total_out = pnet_output_size(height)
    band = max(PNET_CELL + 2, (max_pixels // max(width, 1)) // 2 * 2)
    if height <= band:
        return [(0, height, 0, total_out)]
    out: list[tuple[int, int, int, int]] = []
    row0, out_row0 = 0, 0
    while True:
        rows = min(band, height - row0)
        if row0 + rows >= height:
            out.append((row0, height - row0, out_row0, total_out - out_row0))
            return out
        n_out = (rows - PNET_CELL) // PNET_STRIDE + 1
        out.append((row0, rows, out_row0, n_out))
        out_row0 += n_out
        row0 += n_out * PNET_STRIDE


def pack_pieces(sizes: Sequence[tuple[int, int]], width: int, max_height: int
                ) -> list[tuple[int, int, int]]:
    """Skyline packing of (rows, cols) rectangles, each rounded up to even sizes, into
    canvases ``width`` wide and at most ``max_height`` tall (a rectangle that alone is
    bigger gets its own canvas). Returns (canvas, y, x) per rectangle, y and x even."""
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i][0], -sizes[i][1]))
    result: list[tuple[int, int, int]] = [(0, 0, 0)] * len(sizes)
    canvas = 0
    skyline: list[list[int]] = [[0, width, 0]]  # segments [x, w, top]
    used = False
    for i in order:
        h = sizes[i][0] + (sizes[i][0] & 1)
        w = sizes[i][1] + (sizes[i][1] & 1)
        best: tuple[int, int, int] | None = None  # (top, x, segment index)
        for s, (sx, _, _) in enumerate(skyline):
            if sx + w > width and best is not None:
                break
            top, covered, j = 0, 0, s
            while covered < w and j < len(skyline):
                top = max(top, skyline[j][2])
                covered = skyline[j][0] + skyline[j][1] - sx
                j += 1
            if best is None or top < best[0]:
                best = (top, sx, s)
        assert best is not None
        top, x, _ = best
        if used and top + h > max_height:
            canvas += 1
            skyline = [[0, max(width, w), 0]]
            top, x = 0, 0
        result[i] = (canvas, top, x)
        used = True
        # Raise the skyline over [x, x + w) to top + h.
        new: list[list[int]] = []
        for sx, sw, st in skyline:
            end = sx + sw
            if end <= x or sx >= x + w:
                new.append([sx, sw, st])
                continue
            if sx < x:
                new.append([sx, x - sx, st])
            if end > x + w:
                new.append([x + w, end - (x + w), st])
        new.append([x, w, top + h])
        new.sort()
        merged: list[list[int]] = []
        for seg in new:
            if merged and merged[-1][2] == seg[2] and merged[-1][0] + merged[-1][1] == seg[0]:
                merged[-1][1] += seg[1]
            else:
                merged.append(seg)
        skyline = merged
    return result


# ----------------------------------------------------------------------------- box maths


def square_boxes(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) xyxy -> squares with side max(w, h) (w = x2 - x1), same centre (float32)."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out = np.empty_like(boxes)
    out[:, 0] = boxes[:, 0] + w * np.float32(0.5) - side * np.float32(0.5)
    out[:, 1] = boxes[:, 1] + h * np.float32(0.5) - side * np.float32(0.5)
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def regress_boxes(boxes: np.ndarray, reg: np.ndarray, inclusive: bool) -> np.ndarray:
    """Apply (dx1, dy1, dx2, dy2) offsets in units of the box size; size = x2 - x1, plus 1
    when ``inclusive`` (the reference uses +1 after R-Net and O-Net, not after P-Net)."""
    one = np.float32(1.0 if inclusive else 0.0)
    w = boxes[:, 2] - boxes[:, 0] + one
    h = boxes[:, 3] - boxes[:, 1] + one
    wh = np.stack([w, h, w, h], axis=1)
    return boxes + reg * wh


def crop_windows(boxes: np.ndarray, width: np.ndarray | int, height: np.ndarray | int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Reference cropping: truncate to ints, clip to [1, size] (1-based inclusive), crop
    0-based rows [y1 - 1, y2) and cols [x1 - 1, x2). Returns (y0, y1, x0, x1, ok) with
    ok marking non-empty crops."""
    b = np.trunc(boxes).astype(np.int64)
    x0 = np.maximum(b[:, 0], 1) - 1
    y0 = np.maximum(b[:, 1], 1) - 1
    x1 = np.minimum(b[:, 2], width)
    y1 = np.minimum(b[:, 3], height)
    ok = (x1 > x0) & (y1 > y0)
    return y0, y1, x0, x1, ok


# ----------------------------------------------------------------------------- NMS


# ----------------------------------------------------------------------------- detector


_TASK = threading.local()
"""``serial`` is True in a worker thread running a whole-cascade task: nested ``_map`` calls
then run in that thread."""


@contextmanager
def _restore_threads() -> Iterator[None]:
    """Restore torch's thread count afterwards (worker threads set theirs to 1, which also
    changes MKL's process-wide count)."""
    n = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(n)


class MTCNNDetector(Detector):
    """MTCNN cascade. Options (all keyword, all in pixels / probabilities):

    min_face_size: smallest face searched, px (default 20); factor: pyramid step (0.709);
    thresholds: (P-Net, R-Net, O-Net) probability thresholds (0.6, 0.7, 0.7); a call's
        ``score_threshold`` replaces the O-Net threshold;
    nms_threshold: final "min"-mode NMS overlap (0.7);
    pnet_max_pixels: canvas size bound for one P-Net call, px; rnet_batch / onet_batch: crops
        per R-Net / O-Net call. The defaults keep each call's activations cache-sized: on a
        2-core CPU, 0.3 MP canvases ran P-Net 1.5x faster than 1.5 MP ones, and chunks of
        256 / 64 crops R-Net 1.8x and O-Net 2.2x faster than 1024 / 256 (single thread);
    workers: threads running independent pieces of work side by side (default: torch's
        thread count at call time; see ``_map``);
    images_per_task: images per whole-cascade task when a batch is spread over the workers
        image by image (see ``detect_arrays_raw``);
    target_size / max_size: rescale each image first (area resampling) so its short side is
        target_size px unless its long side would exceed max_size (``retinaface.scale_for``;
        None: original size, the default); boxes and landmarks are mapped back to original
        pixels, min_face_size is in rescaled pixels;
    max_table_pixels: above this many pixels per cascade call, the pyramid levels, P-Net
        maps and crop tables are computed band by band from the image (``BandedImages``,
        ``_pnet_hits_banded``, ``area_rows``) instead of from whole-image tables (16 bytes per pixel) and
        whole levels: the same faces, memory bounded (docs/memory.md).
    """

    name = "mtcnn"
    default_batch_size = 8

    def __init__(
        self,
        runner: MTCNNRunner,
        min_face_size: float = 20.0,
        factor: float = 0.709,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        nms_threshold: float = 0.7,
        pnet_max_pixels: int = 300_000,
        rnet_batch: int = 256,
        onet_batch: int = 64,
        workers: int | None = None,
        images_per_task: int = 1,
        target_size: int | None = None,
        max_size: int | None = None,
        max_table_pixels: int = 16_000_000,
    ) -> None:
        if min_face_size <= 0:
            raise ValueError(f"min_face_size must be > 0, got {min_face_size}")
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        if len(thresholds) != 3:
            raise ValueError(f"thresholds must be 3 probabilities (P-, R-, O-Net), got {thresholds}")
        self.runner = runner
        self.min_face_size = float(min_face_size)
        self.factor = float(factor)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.score_threshold = self.thresholds[2]
        self.nms_threshold = float(nms_threshold)
        self.pnet_max_pixels = int(pnet_max_pixels)
        self.rnet_batch = max(1, int(rnet_batch))
        self.onet_batch = max(1, int(onet_batch))
        self.workers = None if workers is None else max(1, int(workers))
        self.images_per_task = max(1, int(images_per_task))
        self.target_size = target_size
        self.max_size = max_size
        self.max_table_pixels = int(max_table_pixels)
        self._pool: ThreadPoolExecutor | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pool": None}  # picklable (the thread pool is recreated)

    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``[fn(x) for x in items]``, spread over ``workers`` threads (default: torch's
        thread count) that each run torch single-threaded.

        The cascade is made of independent pieces of work (integral images, pyramid levels,
        P-Net canvases, chunks of crops with their R-/O-Net call); numpy, OpenCV and torch
        release the GIL, so running whole pieces side by side keeps every core busy without
        the per-operation thread synchronisation of intra-op parallelism, and each core
        works in its own cache. (Measured on 2 cores: R-Net and O-Net chunks 3-5x faster
        than with 2 intra-op threads.)
        """
        n = self._n_workers()
        if n == 1 or len(items) < 2:  # n is 1 inside a whole-cascade task
            return [fn(x) for x in items]
        if self._pool is None or self._pool._max_workers != n:
            # torch.set_num_threads(1) in a worker sets that thread's OpenMP count (and
            # process-wide MKL / new-thread defaults, restored by _restore_threads).
            self._pool = ThreadPoolExecutor(n, thread_name_prefix="facesieve-mtcnn",
                                            initializer=torch.set_num_threads, initargs=(1,))
        return list(self._pool.map(fn, items))

    def _n_workers(self) -> int:
        """Worker threads: ``workers``, default torch's thread count; 1 inside a task (below)."""
        if getattr(_TASK, "serial", False):
            return 1
        return self.workers or max(1, torch.get_num_threads())

    def _chunks(self, n_items: int, chunk: int) -> list[np.ndarray]:
        """Split range(n_items) into equal pieces of <= chunk, a multiple of the worker count
        of them when there is enough work (>= 16 items per worker), so that no worker is
        left alone with the last piece."""
        n = self._n_workers()
        parts = max(-(-n_items // chunk), 1)
        if n > 1 and n_items >= 16 * n:
            parts = -(-parts // n) * n
        return np.array_split(np.arange(n_items), parts)

    # -------------------------------------------------------------------- stage 1

    def pnet_maps(self, images: Sequence[np.ndarray], ii: IntegralImages | None = None
                  ) -> tuple[list[tuple[int, float]], list[np.ndarray], list[np.ndarray]]:
        """P-Net over every pyramid level of every image, in as few network calls as the
        ``pnet_max_pixels`` bound allows (levels, cut into row bands when too big, packed
        onto canvases). Returns the levels as (image index, scale), and per level the face
        probability map (H', W') and regression map (4, H', W'), each equal to running
        P-Net on that level alone."""
        if ii is None:
            with _restore_threads():
                return self.pnet_maps(images, IntegralImages(images, self._map))
        levels: list[tuple[int, float, int, int]] = []  # (image, scale, h, w)
        for i, im in enumerate(images):
            h, w = im.shape[:2]
            for s in pyramid_scales(h, w, self.min_face_size, self.factor):
                levels.append((i, s, *level_size(h, w, s)))
        probs = [np.empty((pnet_output_size(h), pnet_output_size(w)), np.float32) for _, _, h, w in levels]
        regs = [np.empty((4, pnet_output_size(h), pnet_output_size(w)), np.float32) for _, _, h, w in levels]
        if not levels:
            return [], probs, regs
        # Canvas width: room for the two largest levels of an image side by side.
        width = 0
        for i in range(len(images)):
            ws = [w + (w & 1) for img_i, _, _, w in levels if img_i == i]
            width = max(width, sum(ws[:2]))
        # Canvas bound: pnet_max_pixels, or less so that every worker gets a canvas.
        n = self._n_workers()
        max_pixels = self.pnet_max_pixels
        if n > 1:
            total = sum(h * w for _, _, h, w in levels)
            max_pixels = min(max_pixels, max(int(1.1 * total / n), 50_000))
        bands = [(li, *band) for li, (_, _, h, w) in enumerate(levels)
                 for band in split_rows(h, w, max_pixels)]
        places = pack_pieces([(b[2], levels[b[0]][3]) for b in bands], width,
                             max(PNET_CELL + 2, max_pixels // width))
        pieces = [Piece(levels[li][0], li, row0, rows, levels[li][3], c, y, x, out_row0, out_rows)
                  for (li, row0, rows, out_row0, out_rows), (c, y, x) in zip(bands, places)]
        order = sorted(range(len(levels)), key=lambda k: -levels[k][2] * levels[k][3])  # big first
        resized = dict(zip(order, self._map(
            lambda k: resize_area(ii.sat(levels[k][0]), levels[k][2], levels[k][3], network_input=True), order)))
        by_canvas: dict[int, list[Piece]] = {}
        for p in pieces:
            by_canvas.setdefault(p.canvas, []).append(p)

        def run_canvas(on: list[Piece]) -> None:
            ch = max(p.y + p.rows + (p.rows & 1) for p in on)
            cw = max(p.x + p.cols + (p.cols & 1) for p in on)
            canvas = np.zeros((1, ch, cw, 3), np.float32)
            edge = np.full((1, 1, ch - 2, cw - 2), EDGE_VALUE, np.float32)
            for p in on:
                canvas[0, p.y:p.y + p.rows, p.x:p.x + p.cols] = resized[p.level][p.row0:p.row0 + p.rows]
                edge[0, 0, p.y:p.y + p.rows - 2, p.x:p.x + p.cols - 2] = 0.0
            prob, reg = self.runner.pnet(canvas.transpose(0, 3, 1, 2), edge)
            for p in on:  # pieces own disjoint rows of the level maps
                oy, ox, n, w_out = p.y // 2, p.x // 2, p.out_rows, pnet_output_size(p.cols)
                probs[p.level][p.out_row0:p.out_row0 + n] = prob[0, oy:oy + n, ox:ox + w_out]
                regs[p.level][:, p.out_row0:p.out_row0 + n] = reg[0, :, oy:oy + n, ox:ox + w_out]

        self._map(run_canvas, list(by_canvas.values()))
        return [(i, s) for i, s, _, _ in levels], probs, regs

    def _pnet_hits_banded(self, images: Sequence[np.ndarray]
                          ) -> tuple[list[tuple[int, float]], list[tuple[np.ndarray, ...]]]:
        """P-Net cells scoring >= thresholds[0] on every pyramid level, computed one row band
        of a level at a time (``split_rows``), each band resampled from a table of just the
        image rows it reads: memory O(pnet_max_pixels) instead of whole levels, tables and
        maps. Returns the levels as (image index, scale) and per level (rows, cols, scores,
        regressions (N, 4)) in row-major order: what thresholding ``pnet_maps`` gives
        (bands are exact, ``split_rows``; rows resampled by ``area_rows``)."""
        levels: list[tuple[int, float]] = []
        tasks = []
        for i, im in enumerate(images):
            h, w = im.shape[:2]
            for scale in pyramid_scales(h, w, self.min_face_size, self.factor):
                lh, lw = level_size(h, w, scale)
                # bands of <= pnet_max_pixels level pixels and <= 2 MP of image row sums
                band_px = min(self.pnet_max_pixels, lw * max(PNET_CELL + 2, 2_000_000 // w))
                tasks += [(len(levels), i, lh, lw, band) for band in split_rows(lh, lw, band_px)]
                levels.append((i, scale))

        def run(task: tuple[int, int, int, int, tuple[int, int, int, int]]) -> tuple[np.ndarray, ...]:
            _, i, lh, lw, (row0, rows, out_row0, out_rows) = task
            image = images[i]
            ylo, yhi = area_bins(np.zeros(1), np.array([image.shape[0]]), lh)
            pixels = area_rows(image, ylo[0, row0:row0 + rows], yhi[0, row0:row0 + rows], 0, image.shape[1], lw,
                               network_input=True)
            ch, cw = rows + (rows & 1), lw + (lw & 1)
            canvas = np.zeros((1, ch, cw, 3), np.float32)
            canvas[0, :rows, :lw] = pixels
            edge = np.full((1, 1, ch - 2, cw - 2), EDGE_VALUE, np.float32)
            edge[0, 0, :rows - 2, :lw - 2] = 0.0
            prob, reg = self.runner.pnet(canvas.transpose(0, 3, 1, 2), edge)
            w_out = pnet_output_size(lw)
            p, r = prob[0, :out_rows, :w_out], reg[0, :, :out_rows, :w_out]
            y, x = np.nonzero(p >= self.thresholds[0])
            return y + out_row0, x, p[y, x], r[:, y, x].T

        parts: list[list[tuple[np.ndarray, ...]]] = [[] for _ in levels]
        for task, out in zip(tasks, self._map(run, tasks)):
            parts[task[0]].append(out)
        hits = [tuple(np.concatenate(a) for a in zip(*ps)) if ps else
                (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros((0, 4), np.float32))
                for ps in parts]
        return levels, hits

    def _stage_pnet(self, images: Sequence[np.ndarray], ii: IntegralImages | BandedImages
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All pyramid levels of all images through P-Net. Returns the R-Net candidates:
        image index (N,), boxes (N, 4) float32 in reference coordinates (after NMS per level
        and per image, regression and squaring), P-Net scores (N,)."""
        if isinstance(ii, BandedImages):
            levels, hits = self._pnet_hits_banded(images)
        else:
            levels, probs, regs = self.pnet_maps(images, ii)
            hits = []
            for p, r in zip(probs, regs):
                y, x = np.nonzero(p >= self.thresholds[0])
                hits.append((y, x, p[y, x], r[:, y, x].T))
            del probs, regs
        counts = np.array([len(h[0]) for h in hits], np.int64)
        if not counts.sum():
            return np.zeros(0, np.int64), np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        lvl = np.repeat(np.arange(len(levels)), counts)
        img_idx = np.array([i for i, _ in levels], np.int64)[lvl]
        scale = np.array([s for _, s in levels], np.float32)[lvl]
        gy = np.concatenate([h[0] for h in hits]).astype(np.float32)
        gx = np.concatenate([h[1] for h in hits]).astype(np.float32)
        score = np.concatenate([h[2] for h in hits])
        reg = np.concatenate([h[3] for h in hits])
        # Window of cell (gy, gx), float32 as the reference computes it.
        stride, cell = np.float32(PNET_STRIDE), np.float32(PNET_CELL)
        boxes = np.stack([
            np.floor((stride * gx + 1) / scale), np.floor((stride * gy + 1) / scale),
            np.floor((stride * gx + cell) / scale), np.floor((stride * gy + cell) / scale),
        ], axis=1).astype(np.float32)
        keep = batched_nms(boxes, score, lvl, 0.5)
        keep = keep[np.argsort(lvl[keep], kind="stable")]  # by level, then score (as the reference)
        img_idx, boxes, score, reg = img_idx[keep], boxes[keep], score[keep], reg[keep]
        keep = batched_nms(boxes, score, img_idx, 0.7)
        # P-Net's regression uses sizes without the +1 of the later stages.
        boxes = square_boxes(regress_boxes(boxes[keep], reg[keep], inclusive=False))
        return img_idx[keep], boxes, score[keep]

    # -------------------------------------------------------------------- crops

    def _crop_net(self, ii: IntegralImages | BandedImages, img_idx: np.ndarray, boxes: np.ndarray, size: int
                  ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """Reference crops of ``boxes`` (reference coordinates) of images ``img_idx``,
        area-resampled to size x size, normalised and run through R-Net (24) or O-Net (48),
        chunk by chunk. Returns the (N,) bool mask of boxes with a non-empty crop and the
        network's outputs for those boxes, in box order."""
        hw = np.array(ii.shapes, np.int64).reshape(-1, 2)[img_idx]
        y0, y1, x0, x1, ok = crop_windows(boxes, hw[:, 1], hw[:, 0])
        sel = np.nonzero(ok)[0]
        if not len(sel):
            shapes = [(0,), (0, 4)] + ([(0, 10)] if size == 48 else [])
            return ok, tuple(np.zeros(shape, np.float32) for shape in shapes)
        net = self.runner.rnet if size == 24 else self.runner.onet

        def run(part: np.ndarray) -> tuple[np.ndarray, ...]:
            k = sel[part]
            if isinstance(ii, BandedImages):
                crops = ii.crops(img_idx[k], y0[k], y1[k], x0[k], x1[k], size, network_input=True)
            else:
                crops = crop_resize_area(ii, img_idx[k], y0[k], y1[k], x0[k], x1[k], size, network_input=True)
            return net(crops.transpose(0, 3, 1, 2))

        outs = self._map(run, self._chunks(len(sel), self.rnet_batch if size == 24 else self.onet_batch))
        return ok, tuple(np.concatenate(parts) for parts in zip(*outs))

    # -------------------------------------------------------------------- cascade

    def _stage_rnet(self, ii: IntegralImages | BandedImages, img_idx: np.ndarray, boxes: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """R-Net on the P-Net candidates -> O-Net candidates (image index, squared boxes in
        reference coordinates, R-Net scores), after threshold, NMS 0.7 and regression."""
        ok, (prob, reg) = self._crop_net(ii, img_idx, boxes, 24)
        img_idx, boxes = img_idx[ok], boxes[ok]
        keep = prob > self.thresholds[1]
        img_idx, boxes, prob, reg = img_idx[keep], boxes[keep], prob[keep], reg[keep]
        keep = batched_nms(boxes, prob, img_idx, 0.7)
        boxes = square_boxes(regress_boxes(boxes[keep], reg[keep], inclusive=True))
        return img_idx[keep], boxes, prob[keep]

    def _stage_onet(self, ii: IntegralImages | BandedImages, img_idx: np.ndarray, boxes: np.ndarray,
                    threshold: float, nms_threshold: float
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """O-Net on the R-Net candidates -> faces: image index, boxes (reference
        coordinates), scores, landmarks (N, 5, 2) 0-based px; final "min"-mode NMS."""
        ok, (prob, reg, lm) = self._crop_net(ii, img_idx, boxes, 48)
        img_idx, boxes = img_idx[ok], boxes[ok]
        keep = prob > threshold
        img_idx, boxes, prob, reg, lm = img_idx[keep], boxes[keep], prob[keep], reg[keep], lm[keep]
        one = np.float32(1.0)
        # Landmarks are relative to the O-Net input box (before its regression).
        size = np.stack([boxes[:, 2] - boxes[:, 0] + one, boxes[:, 3] - boxes[:, 1] + one], axis=1)
        landmarks = size[:, None, :] * lm.reshape(-1, 2, 5).transpose(0, 2, 1) + boxes[:, None, :2] - one
        boxes = regress_boxes(boxes, reg, inclusive=True)
        keep = batched_nms(boxes, prob, img_idx, nms_threshold, mode="min", offset=1.0)
        return img_idx[keep], boxes[keep], prob[keep], landmarks[keep]

    def detect_arrays_raw(self, images: Sequence[np.ndarray], score_threshold: float | None = None,
                          nms_threshold: float | None = None
                          ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Run the cascade on RGB uint8 (H, W, 3) arrays. Returns per image (boxes (N, 4)
        float32 xyxy px, scores (N,), landmarks (N, 5, 2) (x, y) px),
        sorted by decreasing score. score_threshold: O-Net threshold (default thresholds[2]).

        With several workers and at least two images per worker, the images are cut into
        tasks of ``images_per_task`` images (largest first) and each worker runs whole
        cascades on tasks, one after another, single-threaded: no worker waits for the
        others between stages. (Measured on 2 cores, chunks of 8 dev images, OpenVINO:
        12% faster than running each stage's pieces side by side, which leaves a core idle
        at every stage boundary; tasks of 1 image 4% faster than tasks of 2.) Smaller
        batches run stage by stage with the pieces of each stage side by side. Results do
        not depend on how the images are grouped.
        """
        images = image_arrays(images)  # checked: TypeError / ImageError, never rows of one image
        t2 = self.thresholds[2] if score_threshold is None else float(score_threshold)
        nt = self.nms_threshold if nms_threshold is None else float(nms_threshold)
        n = self._n_workers()
        if n == 1 or len(images) < 2 * n:
            with _restore_threads():
                return self._cascade(images, t2, nt)
        order = sorted(range(len(images)), key=lambda i: -images[i].shape[0] * images[i].shape[1])
        k = self.images_per_task
        tasks = [order[j:j + k] for j in range(0, len(order), k)]

        def run(task: list[int]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
            _TASK.serial = True
            try:
                return self._cascade([images[i] for i in task], t2, nt)
            finally:
                _TASK.serial = False

        results: list[Any] = [None] * len(images)
        with _restore_threads():
            for task, out in zip(tasks, self._map(run, tasks)):
                for i, r in zip(task, out):
                    results[i] = r
        return results

    def _tables(self, images: Sequence[np.ndarray]) -> IntegralImages | BandedImages:
        """Whole-image summed-area tables (16 bytes per pixel), or above ``max_table_pixels``
        pixels in all the banded stand-in (same results, memory bounded by the bands)."""
        if sum(im.shape[0] * im.shape[1] for im in images) > self.max_table_pixels:
            return BandedImages(images, self.max_table_pixels // 4)
        return IntegralImages(images, self._map)

    def _detect_big(self, images: Sequence[np.ndarray]) -> bool:
        return sum(im.shape[0] * im.shape[1] for im in images) > 4_000_000

    def _cascade(self, images: Sequence[np.ndarray], t2: float, nt: float
                 ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The three stages over ``images`` (see ``detect_arrays_raw``)."""
        ii = self._tables(images)
        img_idx, boxes, _ = self._stage_pnet(images, ii)
        if len(boxes):
            img_idx, boxes, _ = self._stage_rnet(ii, img_idx, boxes)
        out_img, out_boxes = np.zeros(0, np.int64), np.zeros((0, 4), np.float32)
        out_scores, out_lms = np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
        if len(boxes):
            out_img, out_boxes, out_scores, out_lms = self._stage_onet(ii, img_idx, boxes, t2, nt)
        return [(out_boxes[out_img == i], out_scores[out_img == i], out_lms[out_img == i])
                for i in range(len(images))]

    def proposals(self, images: Sequence[np.ndarray], stage: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """Candidates entering ``stage`` ("rnet": P-Net's output; "onet": R-Net's output) for
        RGB uint8 (H, W, 3) arrays: per image, squared boxes (N, 4) float64 xyxy px (the
        convention of ``Face.box``) and the previous stage's scores (N,), decreasing. For
        mining training samples and measuring stage recall."""
        if stage not in ("rnet", "onet"):
            raise ValueError(f"proposals are for 'rnet' or 'onet', got {stage!r}")
        images = image_arrays(images)
        with _restore_threads():
            ii = self._tables(images)
            img_idx, boxes, scores = self._stage_pnet(images, ii)
            if stage == "onet" and len(boxes):
                img_idx, boxes, scores = self._stage_rnet(ii, img_idx, boxes)
        boxes = boxes.astype(np.float64)
        return [(boxes[img_idx == i], scores[img_idx == i].astype(np.float64)) for i in range(len(images))]

    def _detect_arrays(self, images: Sequence[np.ndarray], score_threshold: float,
                       nms_threshold: float) -> list[list[Face]]:
        factors = [1.0] * len(images)
        if self.target_size is not None or self.max_size is not None:
            from facesieve.detectors.retinaface import scale_for

            factors = [scale_for(im.shape[0], im.shape[1], self.target_size, self.max_size) for im in images]
            images = [im if f == 1.0 else cv2.resize(
                im, (max(1, round(im.shape[1] * f)), max(1, round(im.shape[0] * f))), interpolation=cv2.INTER_AREA)
                for im, f in zip(images, factors)]
        out = []
        for (boxes, scores, lms), f in zip(self.detect_arrays_raw(images, score_threshold, nms_threshold), factors):
            check_outputs_finite(getattr(self, "weights_source", "MTCNN weights"), boxes=boxes, scores=scores,
                                 landmarks=lms)
            if f != 1.0:
                boxes, lms = boxes / np.float32(f), lms / np.float32(f)
            out.append(faces_from_arrays(boxes, scores, lms, detector=self.name))
        if self._detect_big(images):
            from facesieve.detectors.retinaface import release_freed_memory

            release_freed_memory()  # hand the freed tables and levels back to the OS
        return out


def build(name: str = "mtcnn", weights: str | None = None, device: str = "cpu", backend: str = "torch",
          **options) -> MTCNNDetector:
    """``facesieve.load("mtcnn", weights=None | dir with det1-3.npy | .pt, device, **options)``.

    Default weights: the original MTCNN weights from the PyPI ``mtcnn`` package, converted
    and cached at first use. backend: "torch", or another ``facesieve.backends`` name
    (options ``threads``, ``half``, ``backend_options`` go to its runner).
    ``score_threshold`` sets the O-Net threshold unless ``thresholds`` is given. Other
    options: see ``MTCNNDetector``.
    """
    if name != "mtcnn":
        raise ValueError(f"unknown MTCNN model {name!r}")
    nets = MTCNNNets()
    state = load_mtcnn_state_dict(weights)
    load_into(nets, state, source=str(weights or "mtcnn package weights"))
    verify_weights("mtcnn", nets.eval(), state, weights, "mtcnn")  # damaged weights: refuse
    score_threshold = options.pop("score_threshold", None)
    if score_threshold is not None and "thresholds" not in options:
        options["thresholds"] = (0.6, 0.7, float(score_threshold))
    runner_options = {k: options.pop(k) for k in ("threads", "half", "backend_options") if k in options}
    runner = mtcnn_runner(nets, backend, device, **runner_options)
    if backend != "torch" or runner_options.get("half"):
        # graph runners are made for `threads` single-threaded pieces of work side by side
        # (half-precision torch on CUDA: one piece at a time)
        options.setdefault("workers", 1 if backend == "torch" else parallel_workers(runner_options.get("threads")))
    detector = MTCNNDetector(runner, **options)
    detector.weights_source = describe_weights(None, str(weights or "mtcnn"))
    return detector
