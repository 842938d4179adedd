"""RetinaFace detector: preprocessing, padded batching, anchor decoding and NMS around ``nets.retinaface``.

Flow per batch: RGB uint8 images -> the scales each image is run at (``pass_factors``:
the original size or ``target_size`` / ``max_size``, plus with ``multiscale`` coarser
passes for large faces) -> each pass cut into overlapping tiles when it is larger than
``max_batch_pixels`` -> channel order and mean of the weights -> zero-padded
(bottom/right) NCHW float32 tensors of at most ``max_batch_pixels`` -> ``forward`` (the
only call into the network) -> per image and pass: keep anchors of its own area (and of
the tile's core) with face probability > score_threshold, decode only those, map back to
original pixels, NMS -> passes merged (``merge_passes``). Batched results equal
one-by-one results (the padding is masked inside the network, see
``nets.backbones.zero_padding_region``); tiled results equal untiled ones (see ``tiles``).

The scale and tiling plan (constants, ``pass_factors``, ``plan_tiles``, ``merge_passes``) is
in ``facesieve.detectors.retinaface_scales``; weights resolution in ``facesieve.weights.resolve``.

Scale policy (``multiscale=True``, the default of ``facesieve.load``): the network's
anchors stop at 512 px and it was trained on 640-px crops; a face much larger than that
(a portrait in a phone photo) comes back as several partial "faces". So besides the pass
at the base scale (original size unless ``target_size`` / ``max_size`` say otherwise),
which finds the small faces, coarser passes run at 1/2, 1/4, ... of it until the image's
short side is at most ``MULTISCALE_SHORT_SIDE`` (640) px, where even a face filling the
frame is small enough to be seen whole. Each pass keeps the faces of the sizes it sees
well: up to ``PASS_MAX_FACE`` (362) px at its own scale, except the coarsest pass, and
above half that over ``PASS_OVERLAP`` (145 px), except the base pass, so every face size
is some pass's job and a face near a boundary found by two passes is merged by NMS; a
face of a finer pass lying mostly inside a larger, higher-scoring face of a coarser pass (a
part of it) is dropped. Images whose short side is <= 640 px at the base scale run one pass, as
before. ``multiscale=False`` runs the base pass alone: the WIDER FACE protocol (its AP
is measured at the original size).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from facesieve.backends.retinaface import TorchRetinaFaceRunner, torch_memory_format
from facesieve.detectors.base import Detector, release_freed_memory
from facesieve.detectors.retinaface_scales import (
    TILE_MARGIN,
    merge_passes,
    pass_factors,
    plan_tiles,
    scale_for,
)
from facesieve.nets.retinaface import RetinaFace
from facesieve.ops.anchors import AnchorGenerator
from facesieve.ops.box_coder import BoxCoder
from facesieve.ops.boxes import nms
from facesieve.types import Face, faces_from_arrays
from facesieve.weights import retinaface as rfw
from facesieve.weights.checks import check_outputs_finite
from facesieve.weights.registry import Preprocessing, WeightsEntry
from facesieve.weights.resolve import BACKBONES, load_weights  # noqa: F401 - load_weights re-exported

TRIM_ABOVE_PIXELS = 4_000_000
"""After a call that ran more than this many network-input pixels, freed memory is handed
back to the OS (``release_freed_memory``)."""


@dataclass(frozen=True)
class _Job:
    """One network input: tile [y0, y1) x [x0, x1) of image ``image``'s pass ``level``.

    source: uint8 RGB at the pass's scale, or float32 already preprocessed; or, with
    ``resize`` != 1, the original image resized by ``_fill`` (whole image only).
    core: (y0, y1, x0, x1) in pass pixels: the anchors this tile answers for (None: all).
    factor: pass pixels per original pixel (boxes are divided by it).
    """

    image: int
    level: int
    source: np.ndarray
    resize: float
    y0: int
    y1: int
    x0: int
    x1: int
    core: tuple[int, int, int, int] | None
    factor: float


class RetinaFaceDetector(Detector):
    """RetinaFace with boxes, scores and 5 landmarks.

    model: a loaded RetinaFace (folded or not; eval mode is set here).
    preprocessing: channel order / mean / std the weights expect.
    score_threshold: keep faces with probability > this (default 0.5).
    nms_threshold: IoU above which NMS suppresses (default 0.4).
    nms_offset: +1 "inclusive pixel" box convention in NMS, as biubug6's py_cpu_nms (default 1.0).
    target_size / max_size: the base scale: rescale each image so its short side is
        target_size pixels, unless the long side would exceed max_size (then long side =
        max_size); either may be None. Default: original size. Results are in original pixels.
    multiscale: also run coarser passes for faces too large for the anchors (see the module
        doc; default True). False: the base scale alone (the WIDER FACE protocol).
    pre_nms_top_k: keep only the k best candidates of an image and pass before NMS (None: all).
    batch_size: images per ``detect_batch`` chunk.
    max_batch_pixels / max_pad_ratio: a chunk is split into padded tensors of at most
        max_batch_pixels whose padded area is at most max_pad_ratio times the images' own
        area; a pass larger than max_batch_pixels is cut into overlapping tiles of at most
        that size (``tiles``). Results do not depend on the split. This bounds memory: one
        network call takes about 45 (torch, onnxruntime) to 65 (openvino) bytes per input
        pixel, so the default 8.4 MP stays near 0.5 GB whatever the image size
        (docs/memory.md).
    runner: the network call (``facesieve.backends.retinaface``), called as
        ``runner(batch, image_sizes)`` with ``forward``'s arguments, returning its outputs;
        None: ``TorchRetinaFaceRunner(model, device)`` (float32 torch).
    """

    def __init__(
        self,
        name: str,
        model: RetinaFace,
        preprocessing: Preprocessing,
        device: str | torch.device = "cpu",
        weights: WeightsEntry | None = None,
        score_threshold: float = 0.5,
        nms_threshold: float = 0.4,
        nms_offset: float = 1.0,
        target_size: int | None = None,
        max_size: int | None = None,
        multiscale: bool = True,
        pre_nms_top_k: int | None = None,
        batch_size: int = 8,
        max_batch_pixels: int = 1 << 23,
        max_pad_ratio: float = 1.5,
        runner: Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        if preprocessing.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {preprocessing.channel_order!r}")
        self.name = name
        self.device = torch.device(device)
        if runner is None:  # float32 torch (moves the model to device, in place)
            runner = TorchRetinaFaceRunner(model, self.device)
        self.model = model.eval().to(self.device, memory_format=torch_memory_format(self.device))
        self.preprocessing = preprocessing
        self.weights = weights
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.nms_offset = float(nms_offset)
        self.target_size = target_size
        self.max_size = max_size
        self.multiscale = bool(multiscale)
        self.pre_nms_top_k = pre_nms_top_k
        self.default_batch_size = int(batch_size)
        min_tile = (2 * TILE_MARGIN + 64) ** 2
        if int(max_batch_pixels) < min_tile:
            raise ValueError(f"max_batch_pixels must be >= {min_tile} (tiles need {TILE_MARGIN} px of context), "
                             f"got {max_batch_pixels}")
        self.max_batch_pixels = int(max_batch_pixels)
        self.max_pad_ratio = float(max_pad_ratio)
        self.runner = runner  # the network call (facesieve.backends.retinaface)
        self.anchor_generator = AnchorGenerator()
        self.box_coder = BoxCoder((0.1, 0.2))

    # ------------------------------------------------------------------ network call

    def forward(
        self, batch: np.ndarray, image_sizes: Sequence[tuple[int, int]] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run the network on a preprocessed batch.

        batch: (B, 3, H, W) float32, channel order and mean of ``self.preprocessing``; any
            strides (the detector passes an NCHW view of an NHWC buffer, channels-last).
        image_sizes: (h, w) of each image's valid top-left area if the batch is padded
            (None: every image fills the tensor).
        Returns numpy float32 loc (B, A, 4), conf (B, A, 2) softmax probabilities
        [background, face], landmarks (B, A, 10), anchors as ``AnchorGenerator(H, W)``.
        On CUDA the convolutions run in IEEE fp32, not TF32, so that padded batches and
        single images give the same scores.
        """
        return self.runner(batch, image_sizes)

    # ------------------------------------------------------------------ pre / post

    def scale_factor(self, height: int, width: int) -> float:
        """Resize factor for a height x width image (biubug6 test_widerface rule; 1.0 by default)."""
        return scale_for(height, width, self.target_size, self.max_size)

    def _fill(self, out: np.ndarray, image: np.ndarray, factor: float, channels_first: bool = False) -> tuple[int, int]:
        """Write one preprocessed image into out at the top-left; return its (h, w).

        out: (H, W, 3), or (3, H, W) with ``channels_first`` (what an NCHW graph runner reads).
        """
        pp = self.preprocessing
        bgr = pp.channel_order == "BGR"
        mean = np.asarray(pp.mean, np.float32)
        if factor == 1.0:
            # one SIMD pass: channel swap / split in uint8, then uint8 - mean -> float32 straight
            # into out (numpy's cast of the reversed-stride view plus a second pass took ~7x longer)
            h, w = image.shape[:2]
            if channels_first:
                planes = cv2.split(image)[::-1] if bgr else cv2.split(image)
                pairs = [(planes[c], out[c, :h, :w], float(mean[c])) for c in range(3)]
            else:
                src = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if bgr else image
                pairs = [(src, out[:h, :w], (*(float(m) for m in mean), 0.0))]
            for src, view, m in pairs:
                if view.flags.c_contiguous:
                    cv2.subtract(src, m, dst=view, dtype=cv2.CV_32F)
                else:
                    view[...] = cv2.subtract(src, m, dtype=cv2.CV_32F)
        else:
            # float resize as the reference (cv2 on the float32 BGR image), one channel at a time
            src = image[:, :, ::-1] if bgr else image  # views, no copy
            h, w = self._net_size(image.shape[0], image.shape[1], factor)
            exact = (h, w) == (round(image.shape[0] * factor), round(image.shape[1] * factor))
            for c in range(3):
                channel = np.ascontiguousarray(src[:, :, c], dtype=np.float32)
                if exact:
                    channel = cv2.resize(channel, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
                else:  # would round to 0 pixels: 1 pixel instead
                    channel = cv2.resize(channel, (w, h), interpolation=cv2.INTER_LINEAR)
                if channels_first:
                    out[c, :h, :w] = channel - mean[c]
                else:
                    out[:h, :w, c] = channel - mean[c]
        if any(s != 1.0 for s in pp.std):
            std = np.asarray(pp.std, np.float32)
            if channels_first:
                out[:, :h, :w] /= std[:, None, None]
            else:
                out[:h, :w] /= std
        return h, w

    def _net_size(self, height: int, width: int, factor: float) -> tuple[int, int]:
        if factor == 1.0:
            return height, width
        # cv2.resize with fx/fy rounds to nearest (half to even, as Python's round)
        return max(1, round(height * factor)), max(1, round(width * factor))

    def _groups(self, sizes: Sequence[tuple[int, int]]) -> list[list[int]]:
        """Split image indices into padded tensors (largest images first; see class doc)."""
        order = sorted(range(len(sizes)), key=lambda i: -sizes[i][0] * sizes[i][1])
        groups: list[list[int]] = []
        cur: list[int] = []
        hmax = wmax = area = 0
        for i in order:
            h, w = sizes[i]
            nh, nw, na = max(hmax, h), max(wmax, w), area + h * w
            padded = nh * nw * (len(cur) + 1)
            if cur and (padded > self.max_batch_pixels or padded > self.max_pad_ratio * na):
                groups.append(cur)
                cur, hmax, wmax, area = [], 0, 0, 0
                nh, nw, na = h, w, h * w
            cur.append(i)
            hmax, wmax, area = nh, nw, na
        if cur:
            groups.append(cur)
        return groups

    def pass_factors(self, height: int, width: int) -> list[float]:
        """Scales (pass pixels per original pixel) a height x width image is run at, finest
        first (``retinaface_scales.pass_factors``: ``scale_factor``, then with ``multiscale``
        halves of it; see the module doc)."""
        return pass_factors(height, width, self.scale_factor(height, width), self.multiscale)

    def tiles(self, height: int, width: int) -> list[tuple[int, int, int, int, tuple[int, int, int, int] | None]]:
        """Cut a height x width pass into tiles of at most ``max_batch_pixels`` pixels
        (``retinaface_scales.plan_tiles``)."""
        return plan_tiles(height, width, self.max_batch_pixels)

    def _jobs(self, index: int, image: np.ndarray) -> list[_Job]:
        """The network inputs of one image: its passes, each whole or in tiles."""
        h, w = image.shape[:2]
        jobs: list[_Job] = []
        for level, f in enumerate(self.pass_factors(h, w)):
            resize = 1.0
            if f == 1.0:
                source = image
            elif level == 0:  # the base scale: the reference's float resize (WIDER protocol)
                source, resize = image, f
            else:  # coarser passes: area-resampled uint8 (anti-aliased)
                nh, nw = self._net_size(h, w, f)
                source = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
            nh, nw = self._net_size(h, w, resize) if resize != 1.0 else source.shape[:2]
            parts = self.tiles(nh, nw)
            if len(parts) > 1 and resize != 1.0:  # materialise the resized pass once, then cut it
                prepared = np.empty((nh, nw, 3), np.float32)
                self._fill(prepared, image, resize)
                source, resize = prepared, 1.0
            jobs += [_Job(index, level, source, resize, y0, y1, x0, x1, core, f) for y0, y1, x0, x1, core in parts]
        return jobs

    def _fill_job(self, out: np.ndarray, job: _Job, channels_first: bool) -> tuple[int, int]:
        if job.resize != 1.0:
            return self._fill(out, job.source, job.resize, channels_first)
        tile = job.source[job.y0:job.y1, job.x0:job.x1]
        if tile.dtype != np.float32:
            return self._fill(out, tile, 1.0, channels_first)
        h, w = tile.shape[:2]
        if channels_first:
            out[:, :h, :w] = tile.transpose(2, 0, 1)
        else:
            out[:h, :w] = tile
        return h, w

    def _detect_arrays(
        self, images: Sequence[np.ndarray], score_threshold: float, nms_threshold: float
    ) -> list[list[Face]]:
        jobs = [job for i, im in enumerate(images) for job in self._jobs(i, im)]
        net_sizes = [
            self._net_size(j.source.shape[0], j.source.shape[1], j.resize) if j.resize != 1.0
            else (j.y1 - j.y0, j.x1 - j.x0) for j in jobs
        ]
        found: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        nchw = getattr(self.runner, "layout", None) == "nchw"
        for group in self._groups(net_sizes):
            hp = max(net_sizes[i][0] for i in group)
            wp = max(net_sizes[i][1] for i in group)
            # NHWC buffer, passed as a channels-last NCHW view; 0 = padding after mean subtraction
            alloc = np.empty if all(net_sizes[i] == (hp, wp) for i in group) else np.zeros  # zeros: padding
            if nchw:  # the runner's graph reads NCHW: fill it directly, no transposing copy
                batch = alloc((len(group), 3, hp, wp), np.float32)
                sizes = [self._fill_job(batch[k], jobs[i], True) for k, i in enumerate(group)]
            else:
                batch = alloc((len(group), hp, wp, 3), np.float32)
                sizes = [self._fill_job(batch[k], jobs[i], False) for k, i in enumerate(group)]
                batch = batch.transpose(0, 3, 1, 2)
            loc, conf, landmarks = self.forward(batch, sizes)
            del batch
            check_outputs_finite(f"weights {self.weights.name if self.weights else self.name!r}", scores=conf)
            anchors = self.anchor_generator(hp, wp)
            for k, i in enumerate(group):
                job = jobs[i]
                found.setdefault((job.image, job.level), []).append(self._candidates(
                    loc[k], conf[k, :, 1], landmarks[k], anchors, (hp, wp), sizes[k], job, score_threshold))
            del loc, conf, landmarks
        results: list[list[Face]] = []
        for i in range(len(images)):
            passes = []
            for level in range(len({j.level for j in jobs if j.image == i})):
                parts = found.get((i, level), [])
                boxes, scores, points = (np.concatenate(a) for a in zip(*parts))
                passes.append(self._nms(boxes, scores, points, nms_threshold))
            if len(passes) > 1:
                factors = self.pass_factors(*images[i].shape[:2])
                boxes, scores, points = self.merge_passes(passes, factors, nms_threshold)
            else:
                boxes, scores, points = passes[0]
            results.append(faces_from_arrays(boxes, scores, points, detector=self.name))
        if sum(h * w for h, w in net_sizes) > TRIM_ABOVE_PIXELS:
            release = getattr(self.runner, "release", None)
            if release is not None:  # OpenVINO keeps its largest inference's buffers
                release()
            release_freed_memory()
        return results

    def _candidates(
        self,
        loc: np.ndarray,
        scores: np.ndarray,
        landmarks: np.ndarray,
        anchors: np.ndarray,
        padded: tuple[int, int],
        size: tuple[int, int],
        job: _Job,
        score_threshold: float,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One job: (A, 4) loc, (A,) face probabilities, (A, 10) landmarks -> candidates
        scoring > score_threshold among the anchors of its own area and core: boxes (N, 4)
        and landmarks (N, 10) in original pixels, scores (N,)."""
        keep = scores > score_threshold
        if size != padded:
            keep &= self.anchor_generator.valid_mask(padded[0], padded[1], size[0], size[1])
        idx = np.flatnonzero(keep)
        if job.core is not None and idx.size:
            cy0, cy1, cx0, cx1 = job.core
            cx = anchors[idx, 0] + job.x0
            cy = anchors[idx, 1] + job.y0
            idx = idx[(cx >= cx0) & (cx < cx1) & (cy >= cy0) & (cy < cy1)]
        with np.errstate(over="ignore", invalid="ignore"):
            boxes = self.box_coder.decode_boxes(loc[idx], anchors[idx])
            points = self.box_coder.decode_landmarks(landmarks[idx], anchors[idx])
        check_outputs_finite(f"weights {self.weights.name if self.weights else self.name!r}",
                             boxes=boxes, landmarks=points)
        if job.x0 or job.y0:
            boxes = boxes + np.array([job.x0, job.y0] * 2, boxes.dtype)
            points = points + np.array([job.x0, job.y0] * 5, points.dtype)
        scale = job.resize if job.resize != 1.0 else job.factor
        return boxes / scale, scores[idx], points / scale

    def _nms(self, boxes: np.ndarray, scores: np.ndarray, points: np.ndarray, nms_threshold: float
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k and NMS of one pass's candidates -> kept (boxes, scores, landmarks), best first."""
        if self.pre_nms_top_k is not None and scores.size > self.pre_nms_top_k:
            top = np.argsort(-scores, kind="stable")[: self.pre_nms_top_k]
            boxes, scores, points = boxes[top], scores[top], points[top]
        kept = nms(boxes, scores, nms_threshold, offset=self.nms_offset)
        return boxes[kept], scores[kept], points[kept]

    def merge_passes(
        self,
        passes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
        factors: Sequence[float],
        nms_threshold: float,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Merge the faces of several passes run at ``factors`` (``retinaface_scales.merge_passes``,
        NMS with this detector's ``nms_offset``)."""
        return merge_passes(passes, factors, nms_threshold, self.nms_offset)


# ---------------------------------------------------------------------- factory


def build(
    name: str, weights: str | None = None, device: str = "cpu", weights_sha256: str | None = None,
    backend: str = "torch", threads: int | None = None, half: bool = False, backend_options: object | None = None,
    **options,
) -> RetinaFaceDetector:
    """``facesieve.load`` factory for "retinaface-mnet025" and "retinaface-r50".

    backend: "torch" (default), "onnxruntime" or "openvino" (CPU, exported graph cached
    beside the converted weights); threads: their threads per call (default: available
    cores); half: float16 on CUDA (torch backend); see ``facesieve.backends.retinaface``.
    options: RetinaFaceDetector settings (score_threshold, nms_threshold, nms_offset,
    target_size, max_size, pre_nms_top_k, batch_size, ...).
    """
    if name not in BACKBONES:
        raise ValueError(f"not a RetinaFace model: {name!r}; known: {', '.join(BACKBONES)}")
    entry, state = load_weights(name, weights, weights_sha256)
    model = rfw.load_state(RetinaFace(BACKBONES[name]), state)
    from facesieve.weights.checks import verify_weights

    verify_weights("retinaface", model, state, weights, entry.name, entry.preprocessing)  # damaged weights: refuse
    from facesieve.backends.retinaface import retinaface_runner

    runner = retinaface_runner(model, backend, device, threads, half, backend_options)
    if backend != "torch":
        options.setdefault("max_pad_ratio", 1.0)  # graphs have no padding mask: batch equal sizes only
    return RetinaFaceDetector(name, model, entry.preprocessing, device=device, weights=entry, runner=runner, **options)
