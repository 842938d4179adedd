"""MTCNN runners (``facesieve.detectors.mtcnn.MTCNNRunner``) for every backend."""
from __future__ import annotations

from typing import Callable

import numpy as np

from facesieve.backends import require_backend
from facesieve.nets.mtcnn import MTCNNNets

from facesieve.nets.constants import MTCNN_STAGES as STAGES


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
):
    """An ``MTCNNRunner`` for ``backend``.

    torch: the detector's ``TorchMTCNNRunner`` (float32), or float16 on CUDA with
        ``half=True`` (guarded: fails without CUDA);
    onnxruntime / openvino: CPU float32 on the cached exported graphs, made for the
        detector's worker threads (``MTCNNDetector._map``): ``threads`` pieces of work
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
        from facesieve.detectors.mtcnn import TorchMTCNNRunner

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
