"""ONNX Runtime runner: an exported graph in a session tuned for low-latency CPU inference."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facesieve.backends.cores import available_cores

_OPT_LEVELS = ("disable", "basic", "extended", "all")


@dataclass(frozen=True)
class OrtOptions:
    """ONNX Runtime session settings.

    threads: intra-op threads (one op split across them); None = the cores this process
        may use. Run N detectors in N processes with threads = cores // N.
    optimization: graph optimisation level; "all" adds the NCHWc layout transforms that
        make the CPU convolutions about twice as fast as "extended" here.
    spinning: worker threads busy-wait between ops: lower latency per call, but they burn
        CPU while waiting; turn off when many sessions/processes share the cores.
    arena: reuse buffers across calls through ORT's CPU memory arena. The arena keeps its
        peak size until the session is freed (4.4 GB after one 108-MP RetinaFace call);
        RetinaFace's runner turns it off (its tensors are large; no speed difference measured),
        MTCNN's many small calls keep it (its RSS levels off).
    memory_pattern: pre-plan buffers from the first call's shapes; only pays with fixed
        input shapes (off: image sizes vary).
    denormals_as_zero: flush denormal floats to zero (no effect on detections, avoids slow paths).
    providers: execution providers in priority order.
    """

    threads: int | None = None
    optimization: str = "all"
    spinning: bool = True
    arena: bool = True
    memory_pattern: bool = False
    denormals_as_zero: bool = True
    providers: tuple[str, ...] = ("CPUExecutionProvider",)

    def __post_init__(self) -> None:
        if self.optimization not in _OPT_LEVELS:
            raise ValueError(f"optimization must be one of {_OPT_LEVELS}, got {self.optimization!r}")
        if self.threads is not None and int(self.threads) < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")

    def session_options(self):
        """An ``onnxruntime.SessionOptions`` with these settings."""
        from facesieve.optional import require

        ort = require("onnxruntime", 'backend="onnxruntime"', "onnx")

        so = ort.SessionOptions()
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.optimization]
        so.intra_op_num_threads = int(self.threads or available_cores())
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.enable_cpu_mem_arena = self.arena
        so.enable_mem_pattern = self.memory_pattern
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spinning else "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        so.add_session_config_entry("session.set_denormal_as_zero", "1" if self.denormals_as_zero else "0")
        so.log_severity_level = 3  # errors only
        return so


class OrtRunner:
    """Run an ONNX graph: ``runner(*inputs)`` -> tuple of output arrays (graph output order).

    model: path of an .onnx file, or its bytes.
    options: session settings (defaults: all optimisations, threads = available cores).
    Inputs are matched to the graph inputs by position; float32 C-contiguous arrays are
    passed without a copy. ``InferenceSession.run`` is thread safe, so one runner may be
    called from several threads at once.
    """

    backend = "onnxruntime"

    def __init__(self, model: str | os.PathLike | bytes, options: OrtOptions | None = None) -> None:
        from facesieve.optional import require

        ort = require("onnxruntime", 'backend="onnxruntime"', "onnx")

        self.options = options or OrtOptions()
        source = model if isinstance(model, bytes) else str(Path(model))
        self.session = ort.InferenceSession(
            source, self.options.session_options(), providers=list(self.options.providers)
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.model_path = None if isinstance(model, bytes) else Path(model)

    def __call__(self, *inputs: np.ndarray) -> tuple[np.ndarray, ...]:
        if len(inputs) != len(self.input_names):
            raise ValueError(f"graph takes {len(self.input_names)} inputs {self.input_names}, got {len(inputs)}")
        feed = {n: np.ascontiguousarray(x, dtype=np.float32) for n, x in zip(self.input_names, inputs)}
        return tuple(self.session.run(None, feed))

    def __repr__(self) -> str:
        src = self.model_path.name if self.model_path else "<bytes>"
        return f"OrtRunner({src}, threads={self.options.threads or available_cores()})"
