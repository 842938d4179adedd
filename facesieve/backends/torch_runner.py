"""PyTorch runner: a module called on numpy NCHW batches, on CPU or CUDA (optionally float16)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn


def resolve_device(device: str | torch.device) -> torch.device:
    """torch.device for ``device``; raises RuntimeError for a CUDA device this machine lacks."""
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {str(device)!r} requested but CUDA is not available (torch {torch.__version__})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(f"device {str(device)!r} requested but only {torch.cuda.device_count()} CUDA device(s)")
    return dev


class TorchRunner:
    """Run ``module`` on float32 NCHW numpy inputs; return its outputs as float32 numpy arrays.

    module: returns a tensor or a tuple/list of tensors (None entries stay None).
    device: "cpu", "cuda", "cuda:1", ... (checked here: a missing GPU fails at construction).
    half: float16 weights and inputs; CUDA only (CPU float16 convolutions are slow or missing).
        Outputs are converted back to float32.
    The module is put in eval mode and moved to the device (in place). Thread safe:
    calls only read the module. The number of CPU threads is torch's process-wide setting
    (``torch.set_num_threads``), left to the caller.
    """

    backend = "torch"

    def __init__(self, module: nn.Module, device: str | torch.device = "cpu", half: bool = False) -> None:
        self.device = resolve_device(device)
        if half and self.device.type != "cuda":
            raise ValueError("half precision (float16) is only supported on CUDA devices")
        self.dtype = torch.float16 if half else torch.float32
        self.module = module.eval().to(device=self.device, dtype=self.dtype)

    def __call__(self, *inputs: np.ndarray | None, **kwargs) -> tuple[np.ndarray | None, ...]:
        return self.run(self.module, *inputs, **kwargs)

    def run(self, fn: Callable[..., object], *inputs: np.ndarray | None, **kwargs) -> tuple[np.ndarray | None, ...]:
        """Call ``fn`` (the module, or a function of it) on the inputs as tensors on this runner's device."""
        tensors = [None if a is None else self.to_tensor(a) for a in inputs]
        with torch.inference_mode():
            out = fn(*tensors, **kwargs)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return tuple(None if o is None else o.detach().float().cpu().numpy() for o in outs)

    def to_tensor(self, array: np.ndarray) -> torch.Tensor:
        """numpy -> tensor on this runner's device and dtype (no copy on CPU float32)."""
        t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        return t.to(device=self.device, dtype=self.dtype)

    def __repr__(self) -> str:
        return f"TorchRunner({type(self.module).__name__}, device={str(self.device)!r}, dtype={self.dtype})"
