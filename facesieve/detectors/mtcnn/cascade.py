"""The MTCNN cascade: ``MTCNNDetector`` (P-Net -> R-Net -> O-Net over a batch) and its
``facesieve.load`` factory ``build``; see the package docstring (``facesieve.detectors.mtcnn``)."""
from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np

from facesieve.backends.mtcnn import MTCNNRunner, mtcnn_runner, parallel_workers
from facesieve.detectors.base import Detector, image_arrays, release_freed_memory
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
    crop_resize_area,
    resize_area,
)
from facesieve.detectors.mtcnn.workers import Workers, restore_torch_threads
from facesieve.nets.constants import MTCNN_STAGES
from facesieve.nets.mtcnn import MTCNNNets
from facesieve.ops.boxes import batched_nms, crop_windows, regress_boxes, square_boxes
from facesieve.types import Face, faces_from_arrays
from facesieve.weights.checks import check_outputs_finite, describe_weights, verify_weights
from facesieve.weights.mtcnn import load_into, load_mtcnn_state_dict


class MTCNNDetector(Detector):
    """MTCNN cascade. Options (all keyword, all in pixels / probabilities):

    min_face_size: smallest face searched, px (default 20); factor: pyramid step (0.709);
    thresholds: (P-Net, R-Net, O-Net) probability thresholds (0.6, 0.7, 0.7); a call's
        ``score_threshold`` replaces the O-Net threshold;
    nms_threshold: final "min"-mode NMS overlap: intersection over the smaller box's area
        (with the +1-pixel convention), not IoU (0.7);
    pnet_max_pixels: canvas size bound for one P-Net call, px; rnet_batch / onet_batch: crops
        per R-Net / O-Net call. The defaults keep each call's activations cache-sized: on a
        2-core CPU, 0.3 MP canvases ran P-Net 1.5x faster than 1.5 MP ones, and chunks of
        256 / 64 crops R-Net 1.8x and O-Net 2.2x faster than 1024 / 256 (single thread);
    workers: threads running independent pieces of work side by side (default: torch's
        thread count at call time; see ``Workers``);
    images_per_task: images per whole-cascade task when a batch is spread over the workers
        image by image (see ``detect_arrays_raw``);
    target_size / max_size: rescale each image first (area resampling) so its short side is
        target_size px unless its long side would exceed max_size (``retinaface_scales.scale_for``;
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
        self._workers = Workers(workers)  # the threads running pieces of work side by side
        self.images_per_task = max(1, int(images_per_task))
        self.target_size = target_size
        self.max_size = max_size
        self.max_table_pixels = int(max_table_pixels)

    @property
    def workers(self) -> int | None:
        """Worker threads (None: torch's thread count at call time); see ``Workers``."""
        return self._workers.count

    @workers.setter
    def workers(self, count: int | None) -> None:
        self._workers = Workers(count)

    # -------------------------------------------------------------------- stage 1

    def pnet_maps(self, images: Sequence[np.ndarray], ii: IntegralImages | None = None
                  ) -> tuple[list[tuple[int, float]], list[np.ndarray], list[np.ndarray]]:
        """P-Net over every pyramid level of every image, in as few network calls as the
        ``pnet_max_pixels`` bound allows (levels, cut into row bands when too big, packed
        onto canvases). Returns the levels as (image index, scale), and per level the face
        probability map (H', W') and regression map (4, H', W'), each equal to running
        P-Net on that level alone."""
        if ii is None:
            with restore_torch_threads():
                return self.pnet_maps(images, IntegralImages(images, self._workers.map))
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
        n = self._workers.n()
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
        resized = dict(zip(order, self._workers.map(
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

        self._workers.map(run_canvas, list(by_canvas.values()))
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
        for task, out in zip(tasks, self._workers.map(run, tasks)):
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

        chunk = self.rnet_batch if size == 24 else self.onet_batch
        outs = self._workers.map(run, self._workers.chunks(len(sel), chunk))
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
        n = self._workers.n()
        if n == 1 or len(images) < 2 * n:
            with restore_torch_threads():
                return self._cascade(images, t2, nt)
        order = sorted(range(len(images)), key=lambda i: -images[i].shape[0] * images[i].shape[1])
        k = self.images_per_task
        tasks = [order[j:j + k] for j in range(0, len(order), k)]

        def run(task: list[int]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
            with self._workers.serial():
                return self._cascade([images[i] for i in task], t2, nt)

        results: list[Any] = [None] * len(images)
        with restore_torch_threads():
            for task, out in zip(tasks, self._workers.map(run, tasks)):
                for i, r in zip(task, out):
                    results[i] = r
        return results

    def _tables(self, images: Sequence[np.ndarray]) -> IntegralImages | BandedImages:
        """Whole-image summed-area tables (16 bytes per pixel), or above ``max_table_pixels``
        pixels in all the banded stand-in (same results, memory bounded by the bands)."""
        if sum(im.shape[0] * im.shape[1] for im in images) > self.max_table_pixels:
            return BandedImages(images, self.max_table_pixels // 4)
        return IntegralImages(images, self._workers.map)

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
        if stage not in MTCNN_STAGES[1:]:
            raise ValueError(f"proposals are for 'rnet' or 'onet', got {stage!r}")
        images = image_arrays(images)
        with restore_torch_threads():
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
            from facesieve.detectors.retinaface_scales import scale_for

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
