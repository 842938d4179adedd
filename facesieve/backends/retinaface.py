"""RetinaFace runners: the network call of ``RetinaFaceDetector.forward``, on every backend.

``TorchRetinaFaceRunner`` runs the float32 torch model; ``GraphRetinaFaceRunner`` an exported
graph (ONNX Runtime, OpenVINO, float16 torch on CUDA). A runner is called as
``runner(batch, image_sizes=None) -> (loc, conf, landmarks)`` with
the detector's preprocessed (B, 3, H, W) float32 batch; outputs as ``forward``: loc
(B, A, 4), conf (B, A, 2) softmax probabilities, landmarks (B, A, 10) for the anchors of
an H x W input. Exported graphs have no padding mask, so a padded batch is run one
image size at a time on the unpadded crops and scattered back into the padded anchor
layout (the detector then masks the padding anchors as usual): results equal one-by-one
calls. Detectors built with a graph backend avoid padding altogether (max_pad_ratio 1).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from facesieve.backends import require_backend
from facesieve.nets.backbones import zero_padding_region
from facesieve.ops.anchors import AnchorGenerator

Outputs = tuple[np.ndarray, np.ndarray, np.ndarray]


def torch_memory_format(device: torch.device) -> torch.memory_format:
    """CPU: channels-last, about 2x faster oneDNN convolutions and less memory (the detector
    builds its batch NHWC). CUDA: NCHW; channels-last made cuDNN compile kernels for every
    new shape."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


class TorchRetinaFaceRunner:
    """The float32 torch network call. ``model`` is put in eval mode and moved to ``device``
    (in place, in ``torch_memory_format(device)``).

    Called as ``runner(batch, image_sizes=None) -> (loc, conf, landmarks)``: batch (B, 3, H, W)
    float32 with any strides; a padded batch (``image_sizes`` smaller than H x W) runs with
    the padding zeroed inside the network (``zero_padding_region``), so results equal
    one-by-one calls. On CUDA the convolutions run in IEEE fp32, not TF32, so that padded
    batches and single images give the same scores.
    """

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.memory_format = torch_memory_format(self.device)
        self.model = model.eval().to(self.device, memory_format=self.memory_format)

    def __call__(self, batch: np.ndarray, image_sizes: Sequence[tuple[int, int]] | None = None) -> Outputs:
        x = torch.from_numpy(batch).to(self.device).contiguous(memory_format=self.memory_format)
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

    def __repr__(self) -> str:
        return f"TorchRetinaFaceRunner({self.device})"


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


class GraphRetinaFaceRunner:
    """Adapts a graph runner (``OrtRunner``, ``OvRunner``, float16 ``TorchRunner``) to ``forward``.

    layout: the graph's input layout; the detector fills an NCHW batch directly for an
        "nchw" runner, so the graph gets it without a transposing copy.
    merged_heads: the graph returns one (B, A, 16) ``head`` output ([loc, conf logits,
        landmarks], ``RetinaFaceGraph(merged_heads=True)``); split here into views, with
        the two-class softmax as 1 / (1 + exp(l0 - l1)).
    """

    def __init__(self, run: Callable[..., tuple[np.ndarray, ...]], backend: str, layout: str = "nchw",
                 merged_heads: bool = False, anchors: AnchorGenerator | None = None) -> None:
        self.run = run
        self.backend = backend
        self.layout = layout
        self.merged_heads = merged_heads
        self.anchors = anchors or AnchorGenerator()

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        x = batch.transpose(0, 2, 3, 1) if self.layout == "nhwc" else batch
        out = self.run(np.ascontiguousarray(x, dtype=np.float32))  # no copy when already laid out so
        if not self.merged_heads:
            return out
        head = out[0]
        with np.errstate(over="ignore"):
            face = (1.0 / (1.0 + np.exp(head[..., 4] - head[..., 5]))).astype(np.float32)
        return head[..., :4], np.stack([1.0 - face, face], axis=-1), head[..., 6:]

    def __call__(self, batch: np.ndarray, image_sizes: Sequence[tuple[int, int]] | None = None) -> Outputs:
        hp, wp = batch.shape[2], batch.shape[3]
        if image_sizes is None or all(tuple(s) == (hp, wp) for s in image_sizes):
            loc, conf, landmarks = self._run(batch)
            return loc, conf, landmarks
        n_anchors = self.anchors.num_anchors(hp, wp)
        outs = [np.zeros((batch.shape[0], n_anchors, k), np.float32) for k in (4, 2, 10)]
        groups: dict[tuple[int, int], list[int]] = {}
        for k, size in enumerate(image_sizes):
            groups.setdefault((int(size[0]), int(size[1])), []).append(k)
        for (h, w), idx in groups.items():
            valid = self.anchors.valid_mask(hp, wp, h, w)
            for out, part in zip(outs, self._run(batch[idx, :, :h, :w])):
                out[np.ix_(idx, np.flatnonzero(valid))] = part
        return outs[0], outs[1], outs[2]

    def release(self) -> None:
        """Give back memory the backend keeps from its largest call (``OvRunner.release``)."""
        release = getattr(self.run, "release", None)
        if release is not None:
            release()

    def __repr__(self) -> str:
        return f"GraphRetinaFaceRunner({self.run!r})"


def retinaface_runner(
    model: nn.Module,
    backend: str = "torch",
    device: str = "cpu",
    threads: int | None = None,
    half: bool = False,
    backend_options: object | None = None,
    anchors: AnchorGenerator | None = None,
) -> TorchRetinaFaceRunner | GraphRetinaFaceRunner:
    """The runner of ``RetinaFaceDetector.forward`` for ``backend``.

    torch: ``TorchRetinaFaceRunner`` (float32 on ``device``); torch + half: float16 on CUDA
    (guarded: fails without CUDA);
    onnxruntime / openvino: CPU float32 on the cached exported graph (``threads`` per call,
    default all available cores; ``backend_options`` = ``OrtOptions`` / ``OvOptions``).
    """
    require_backend(backend)  # unknown: ValueError; packages missing: MissingDependencyError
    if backend == "torch":
        if not half:
            return TorchRetinaFaceRunner(model, device)
        from facesieve.backends.torch_runner import TorchRunner
        from facesieve.export.retinaface import RetinaFaceGraph

        return GraphRetinaFaceRunner(TorchRunner(RetinaFaceGraph(model), device, half=True), "torch", anchors=anchors)
    if half:
        raise ValueError("half precision is a torch-backend option (CUDA); ONNX backends run float32 on the CPU")
    if str(device) != "cpu":
        raise ValueError(f"the {backend} backend runs on the CPU; got device={device!r}")
    from facesieve.export.retinaface import retinaface_graph_path

    path = retinaface_graph_path(model, "nchw", merged_heads=True)
    if backend == "onnxruntime":
        from facesieve.backends.ort_runner import OrtOptions, OrtRunner

        # no arena: it would keep the largest call's memory (docs/memory.md)
        run = OrtRunner(path, backend_options or OrtOptions(threads=threads, arena=False))
    else:
        from facesieve.backends.openvino_runner import OvOptions, OvRunner

        run = OvRunner(path, backend_options or OvOptions(threads=threads))
    return GraphRetinaFaceRunner(run, backend, "nchw", merged_heads=True, anchors=anchors)
