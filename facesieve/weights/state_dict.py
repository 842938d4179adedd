"""Reading a state dict from a torch checkpoint file: the one ``torch.load`` of ``weights/``."""
from __future__ import annotations

import os
from typing import Any, Sequence

import torch

StateDict = dict[str, torch.Tensor]


class NotAStateDict(ValueError):
    """The file loaded, but holds no state dict (of tensors, when that was asked for)."""


def read_state_dict(
    path: str | os.PathLike,
    unwrap: Sequence[str] = ("state_dict", "model"),
    prefix: str | None = None,
    tensors_only: bool = True,
) -> StateDict:
    """The state dict in a ``.pt`` / ``.pth`` file, loaded on the CPU with
    ``weights_only=True`` (no code in the file runs).

    unwrap: keys of a training checkpoint whose dict value is the state dict, tried in
        order (the first present one is used); the plain dict otherwise.
    prefix: if any key starts with it (e.g. ``"pnet."`` in a whole-cascade state dict), keep
        only those keys, without it.
    tensors_only: every value must be a tensor.

    Raises what ``torch.load`` raises for a missing or unreadable file (callers name the file
    and the cause in their own error), and NotAStateDict (a ValueError) when the content is
    not a dict (of tensors).
    """
    obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        for k in unwrap:
            if isinstance(obj.get(k), dict):
                obj = obj[k]
                break
    if not isinstance(obj, dict) or (tensors_only and not all(isinstance(v, torch.Tensor) for v in obj.values())):
        raise NotAStateDict(f"{path}: not a state dict{' of tensors' if tensors_only else ''}")
    if prefix is not None and any(k.startswith(prefix) for k in obj):
        obj = {k[len(prefix):]: v for k, v in obj.items() if k.startswith(prefix)}
    return obj
