"""The worker threads of an MTCNN detector: independent pieces of work side by side, each
thread running torch single-threaded."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch


@contextmanager
def restore_torch_threads() -> Iterator[None]:
    """Restore torch's thread count afterwards (worker threads set theirs to 1, which also
    changes MKL's process-wide count)."""
    n = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(n)


class Workers:
    """``count`` threads (None: torch's thread count at call time) that each run torch
    single-threaded; owned by one detector.

    The cascade is made of independent pieces of work (integral images, pyramid levels,
    P-Net canvases, chunks of crops with their R-/O-Net call); numpy, OpenCV and torch
    release the GIL, so running whole pieces side by side keeps every core busy without
    the per-operation thread synchronisation of intra-op parallelism, and each core
    works in its own cache. (Measured on 2 cores: R-Net and O-Net chunks 3-5x faster
    than with 2 intra-op threads.)

    Inside ``serial()`` (a worker running a whole-cascade task) this thread's nested ``map``
    calls run in the thread itself.
    """

    def __init__(self, count: int | None = None) -> None:
        self.count = None if count is None else max(1, int(count))
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        return {"count": self.count}  # picklable (pool and thread state are recreated)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["count"])  # type: ignore[misc]

    def n(self) -> int:
        """Worker threads: ``count``, default torch's thread count; 1 inside ``serial()``."""
        if getattr(self._local, "serial", False):
            return 1
        return self.count or max(1, torch.get_num_threads())

    @contextmanager
    def serial(self) -> Iterator[None]:
        """Within the block, ``map`` calls made by this thread run in it, one by one."""
        self._local.serial = True
        try:
            yield
        finally:
            self._local.serial = False

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``[fn(x) for x in items]``, spread over ``n()`` threads."""
        n = self.n()
        if n == 1 or len(items) < 2:  # n is 1 inside a whole-cascade task
            return [fn(x) for x in items]
        if self._pool is None or self._pool._max_workers != n:
            # torch.set_num_threads(1) in a worker sets that thread's OpenMP count (and
            # process-wide MKL / new-thread defaults, restored by restore_torch_threads).
            self._pool = ThreadPoolExecutor(n, thread_name_prefix="facesieve-mtcnn",
                                            initializer=torch.set_num_threads, initargs=(1,))
        return list(self._pool.map(fn, items))

    def chunks(self, n_items: int, chunk: int) -> list[np.ndarray]:
        """Split range(n_items) into equal pieces of <= chunk, a multiple of the worker count
        of them when there is enough work (>= 16 items per worker), so that no worker is
        left alone with the last piece."""
        n = self.n()
        parts = max(-(-n_items // chunk), 1)
        if n > 1 and n_items >= 16 * n:
            parts = -(-parts // n) * n
        return np.array_split(np.arange(n_items), parts)
