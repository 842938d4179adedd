"""OpenVINO runner: an exported ONNX graph compiled by OpenVINO's CPU plugin.

OpenVINO fuses MTCNN's per-channel PReLU into its convolutions (ONNX Runtime runs PReLU
as a separate op with layout reorders around it), which makes the MTCNN stages 2-2.5x
faster here. Results are float32 (the bf16 default of some CPUs is switched off).
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facesieve.backends.cores import available_cores


@dataclass(frozen=True)
class OvOptions:
    """OpenVINO CPU settings.

    threads: inference threads in all; None = the cores this process may use.
    hint: "LATENCY" (one stream, all threads on one request) or "THROUGHPUT".
    per_thread: every calling thread compiles its own copy of the model (``threads``
        threads each) instead of sharing one compiled model. For callers that run many
        small inferences from their own worker threads (MTCNN): with a shared model, the
        requests are handed to OpenVINO's stream threads and the caller waits; with a copy
        per thread, one-thread inference ran ~20% faster here (no hand-over, no idle core).
    pin_threads: pin worker threads to cores; off by default so that several processes
        on one machine do not pin to the same cores.
    runtime_cache: entries of the CPU plugin's per-input-shape cache of prepared kernels
        (``CPU_RUNTIME_CACHE_CAPACITY``, OpenVINO's default 5000). Every new input shape of a
        dynamic-shape model adds an entry; with the default, MTCNN given photos of changing
        sizes grew 1 MB per photo without a plateau (450 MB -> 1.05 GB over 600 photos);
        with 16 it levels off (within 40 MB). Repeated shapes (video frames) still hit it.
    """

    threads: int | None = None
    hint: str = "LATENCY"
    per_thread: bool = False
    pin_threads: bool = False
    runtime_cache: int = 16

    def config(self) -> dict[str, object]:
        return {
            "INFERENCE_NUM_THREADS": int(self.threads or available_cores()),
            "PERFORMANCE_HINT": self.hint,
            "INFERENCE_PRECISION_HINT": "f32",
            "ENABLE_CPU_PINNING": bool(self.pin_threads),
            "CPU_RUNTIME_CACHE_CAPACITY": int(self.runtime_cache),
        }


class OvRunner:
    """Run an ONNX graph with OpenVINO: ``runner(*inputs)`` -> tuple of output arrays.

    Dynamic input shapes stay dynamic (one compilation). An infer request is not thread
    safe, so each calling thread gets its own request on the shared compiled model (with
    ``OvOptions(per_thread=True)``: on its own compiled copy, the main thread excepted).
    Outputs are copies (safe to keep across calls).
    """

    backend = "openvino"

    def __init__(self, model: str | os.PathLike, options: OvOptions | None = None) -> None:
        from facesieve.optional import require

        ov = require("openvino", 'backend="openvino"', "openvino")

        self.options = options or OvOptions()
        self.model_path = Path(model)
        self._core = ov.Core()
        self._model = self._core.read_model(str(self.model_path))
        self.compiled = self._compile()
        self.n_inputs = len(self.compiled.inputs)
        self.outputs = list(range(len(self.compiled.outputs)))  # by position: valid for every copy
        self._local = threading.local()
        self._lock = threading.Lock()

    def _compile(self):
        return self._core.compile_model(self._model, "CPU", self.options.config())

    def _request(self):
        local = self._local
        req = getattr(local, "request", None)
        if req is None:
            if self.options.per_thread and threading.current_thread() is not threading.main_thread():
                with self._lock:  # compile_model on one Core from several threads at once: serialised
                    compiled = self._compile()
            else:
                with self._lock:
                    if self.compiled is None:  # after release()
                        self.compiled = self._compile()
                    compiled = self.compiled
            req = local.request = compiled.create_infer_request()
        return req

    def __call__(self, *inputs: np.ndarray) -> tuple[np.ndarray, ...]:
        if len(inputs) != self.n_inputs:
            raise ValueError(f"graph takes {self.n_inputs} inputs, got {len(inputs)}")
        feed = {i: np.ascontiguousarray(x, dtype=np.float32) for i, x in enumerate(inputs)}
        # share_inputs: OpenVINO reads the (contiguous) arrays in place instead of copying them
        result = self._request().infer(feed, share_inputs=True, share_outputs=False)
        return tuple(np.asarray(result[o]) for o in self.outputs)

    def release(self) -> None:
        """Give back the memory of the largest input seen: the compiled model (with dynamic
        shapes) keeps the intermediate buffers of its largest inference until it is freed
        (RetinaFace: 350 MB after a 12-MP image). Drops every thread's infer request and the
        compiled model; the next call recompiles (~80 ms for RetinaFace here). Calls running
        in other threads finish on their own request."""
        with self._lock:
            self._local = threading.local()
            self.compiled = None

    def __repr__(self) -> str:
        return f"OvRunner({self.model_path.name}, threads={self.options.threads or available_cores()})"


def openvino_available() -> bool:
    from facesieve.optional import installed

    return installed("openvino")
