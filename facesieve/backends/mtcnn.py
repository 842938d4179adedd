"""MTCNN runners for every backend: the runner contract (``MTCNNRunner``) that the detector
(``facesieve.detectors.mtcnn``) calls, its torch runner and the exported-graph runner."""
from __future__ import annotations

from typing import Callable, Protocol

import numpy as np
import torch

from facesieve.backends import require_backend
from facesieve.nets.mtcnn import MTCNNNets, face_probability

from facesieve.nets.constants import MTCNN_STAGES as STAGES


class MTCNNRunner(Protocol):
    """The three network calls. Inputs float32 NCHW, RGB, (pixel - 127.5) / 128."""

    def pnet(self, x: np.ndarray, edge: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x (N, 3, H, W), edge (N, 1, H - 2, W - 2) (see ``PNet.forward``) ->
        face probability (N, H', W') and box regression (N, 4, H', W')."""

    def rnet(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x (N, 3, 24, 24) -> probability (N,), box regression (N, 4)."""

    def onet(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """x (N, 3, 48, 48) -> probability (N,), box regression (N, 4), landmarks (N, 10)."""


class TorchMTCNNRunner:
    """``MTCNNRunner`` on the PyTorch modules (float32): inference mode, channels-last memory
    layout (on CPU several times faster than NCHW for these small-channel convolutions and
    pools). ``nets`` is put in eval mode and moved to ``device`` in place.
    """

    def __init__(self, nets: MTCNNNets, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.nets = nets.eval().to(self.device, memory_format=torch.channels_last)

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).to(self.device).contiguous(memory_format=torch.channels_last)

    @staticmethod
    def _numpy(*outputs: torch.Tensor) -> tuple[np.ndarray, ...]:
        return tuple(t.contiguous().cpu().numpy() for t in outputs)

    def pnet(self, x: np.ndarray, edge: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            out = self.nets.pnet(self._tensor(x), torch.from_numpy(edge).to(self.device))
            prob, box = self._numpy(face_probability(out.score), out.box)
        return prob, box

    def rnet(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            out = self.nets.rnet(self._tensor(x))
            prob, box = self._numpy(face_probability(out.score), out.box)
        return prob, box

    def onet(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with torch.inference_mode():
            out = self.nets.onet(self._tensor(x), landmarks=True)
            assert out.landmarks is not None
            prob, box, landmarks = self._numpy(face_probability(out.score), out.box, out.landmarks)
        return prob, box, landmarks


class GraphMTCNNRunner:
    """The three stages as exported graphs (``facesieve.export.mtcnn``), one runner each.

    stages: stage name -> callable ``(*inputs) -> outputs`` (an ``OrtRunner`` or ``OvRunner``).
    P-Net runs on one big packed canvas per call, R-Net / O-Net on batches of crops.
    """

    def __init__(self, stages: dict[str, Callable[..., tuple[np.ndarray, ...]]], backend: str) -> None:
        self.stages = stages
        self.backend = backend

    def pnet(self, x: np.ndarray, edge: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.stages["pnet"](x, edge)  # type: ignore[return-value]

    def rnet(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.stages["rnet"](x)  # type: ignore[return-value]

    def onet(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.stages["onet"](x)  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"GraphMTCNNRunner({self.backend})"


def mtcnn_runner(
    nets: MTCNNNets,
    backend: str = "torch",
    device: str = "cpu",
    threads: int | None = None,
    half: bool = False,
    backend_options: object | None = None,
) -> MTCNNRunner:
    """An ``MTCNNRunner`` for ``backend``.

    torch: ``TorchMTCNNRunner`` (float32), or float16 on CUDA with
        ``half=True`` (guarded: fails without CUDA);
    onnxruntime / openvino: CPU float32 on the cached exported graphs, made for the
        detector's worker threads (``facesieve.detectors.mtcnn.workers.Workers``): ``threads`` pieces of work
        (default: the available cores) run side by side, each single-threaded: one-thread
        ONNX Runtime sessions (called concurrently), or a one-thread OpenVINO model compiled
        per worker thread. (Measured on 2 cores: faster than splitting every call over 2
        threads, because the cascade's calls are small and the crop resampling between
        them runs in parallel too.)
        ``backend_options`` (``OrtOptions`` / ``OvOptions``) overrides every session setting.
    """
    require_backend(backend)  # unknown: ValueError; packages missing: MissingDependencyError
    if backend == "torch":
        if half:
            from facesieve.backends.torch_runner import TorchRunner
            from facesieve.export.mtcnn import stage_graph

            return GraphMTCNNRunner({s: TorchRunner(stage_graph(nets, s), device, half=True) for s in STAGES}, "torch")
        return TorchMTCNNRunner(nets, device)
    if half:
        raise ValueError("half precision is a torch-backend option (CUDA); ONNX backends run float32 on the CPU")
    if str(device) != "cpu":
        raise ValueError(f"the {backend} backend runs on the CPU; got device={device!r}")
    from facesieve.export.mtcnn import mtcnn_graph_paths

    paths = mtcnn_graph_paths(nets)
    if backend == "onnxruntime":
        from facesieve.backends.ort_runner import OrtOptions, OrtRunner

        opts = backend_options or OrtOptions(threads=1)
        return GraphMTCNNRunner({s: OrtRunner(paths[s], opts) for s in STAGES}, backend)
    from facesieve.backends.openvino_runner import OvOptions, OvRunner

    opts = backend_options or OvOptions(threads=1, per_thread=True)
    return GraphMTCNNRunner({s: OvRunner(paths[s], opts) for s in STAGES}, backend)


def parallel_workers(threads: int | None) -> int:
    """Worker threads of a graph-backend MTCNN detector: ``threads``, default the available cores."""
    from facesieve.backends import available_cores

    return max(1, int(threads or available_cores()))
