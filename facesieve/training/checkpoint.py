"""Checkpoints (atomic) and the distributed / device helpers every trainer shares."""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facesieve.io.atomic import atomic_open


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """torch.save ``state`` to ``path`` via a temp file + rename (never half-written)."""
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a training checkpoint (tensors, numbers, strings, lists and dicts only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state() -> dict[str, Any]:
    """Python / numpy / torch RNG states, in a form ``weights_only`` loading accepts."""
    np_state = np.random.get_state()
    return {
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "numpy_keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        "numpy_pos": int(np_state[2]),
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate((state["python_version"], tuple(state["python"]), None))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass
class DistInfo:
    """Process-group facts: world_size 1 and rank 0 when not launched by torchrun."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched with torchrun (WORLD_SIZE > 1).

    Returns the DistInfo and the device this process trains on: ``cuda:LOCAL_RANK``
    when CUDA is used, else ``device``. Uses NCCL on CUDA and Gloo on CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), torch.device(device)
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda") and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistInfo(world, rank, local), torch.device(f"cuda:{local}" if use_cuda else device)


def cleanup_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside a DistributedDataParallel wrapper."""
    return model.module if hasattr(model, "module") else model


def run_path(run_dir: str | os.PathLike, *parts: str) -> Path:
    return Path(run_dir).joinpath(*parts)


@dataclass
class TrainState:
    """Progress of a training run, saved in checkpoints and summary.json.

    elapsed_s: wall seconds trained; stopped_by: why the run ended ("", "max_iters", ...);
    last: latest smoothed losses; val: latest held-out metrics (trainers that have them).
    """

    iteration: int = 0
    epoch: int = 0
    elapsed_s: float = 0.0
    stopped_by: str = ""
    last: dict[str, float] = field(default_factory=dict)
    val: dict[str, float] = field(default_factory=dict)
