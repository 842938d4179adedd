"""CPU cores available to this process (the default thread count of every backend)."""
from __future__ import annotations

import os


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else os.cpu_count())."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)
