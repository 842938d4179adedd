"""Only ``to_tensor``, the single function facenet-pytorch's ``extract_face`` uses."""
from __future__ import annotations

import numpy as np
import torch


def to_tensor(pic: np.ndarray) -> torch.Tensor:
    """(H, W, C) array -> (C, H, W) float tensor; uint8 is scaled to [0, 1]."""
    a = np.asarray(pic)
    t = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))
    return t.float().div(255) if a.dtype == np.uint8 else t.float()
