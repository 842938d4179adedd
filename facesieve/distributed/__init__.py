"""Running facesieve's corpus jobs on Ray: connecting to (or starting) a Ray instance.

Ray is an optional dependency (``pip install "facesieve[ray]"``) imported only here and
only when ``--engine ray`` / ``engine="ray"`` is used. The engines themselves live next
to the jobs they scale: ``facesieve.video.ray_engine`` (videos: a pool of detector
actors) and ``facesieve.distributed.images`` (image corpora: Ray Data ``map_batches``).

    >>> from facesieve.distributed import ray_session
    >>> with ray_session(address=None, num_cpus=2) as ray:   # a local instance
    ...     ray.cluster_resources()["CPU"]
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
from types import ModuleType
from typing import Iterator

RAY_INSTALL_HINT = 'pip install "facesieve[ray]"'
"""What to install for ``--engine ray``."""

LOCAL_OBJECT_STORE_BYTES = 256 * 2**20
"""Object store of a local instance started by facesieve: only per-video results and
image batches travel through it (the crops are written by the workers), so 256 MiB is
plenty and leaves the memory to the detectors."""


class RayUnavailable(RuntimeError):
    """Ray is not installed (the message says what to install)."""


def require_ray() -> ModuleType:
    """Import and return ``ray``; raise RayUnavailable (one line naming the extra) if missing."""
    try:
        import ray
    except ImportError as e:
        raise RayUnavailable(f"--engine ray needs Ray, which is not installed: {RAY_INSTALL_HINT}") from e
    return ray


def cluster_cpus(ray: ModuleType, available: bool = False) -> int:
    """CPUs of the connected Ray cluster (all nodes; with ``available`` those not in use by
    other jobs right now), at least 1."""
    res = ray.available_resources() if available else ray.cluster_resources()
    return max(1, int(res.get("CPU", 1)))


def error_line(e: BaseException) -> str:
    """One line from a Ray error's (many-line, colour-coded) message: the exception raised in
    the worker when it carries a traceback (e.g. "FileNotFoundError: ..." from loading the
    models), else its first line ("The actor died unexpectedly ...")."""
    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(e)).splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    if len(lines) > 1 and re.match(r"[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b", lines[-1]):
        return lines[-1][:500]
    return lines[0][:500]


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail fast (ConnectionError) when a "host:port" / "ray://host:port" address does not
    accept connections: Ray itself keeps retrying for minutes. "auto" is left to Ray."""
    import socket

    hostport = address[len("ray://"):] if address.startswith("ray://") else address
    if address == "auto" or ":" not in hostport or "://" in hostport:
        return
    host, _, port = hostport.rpartition(":")
    try:
        port_n = int(port)
    except ValueError:
        raise ConnectionError(
            f"bad Ray address {address!r}: expected 'auto', 'host:port' or 'ray://host:port'") from None
    try:
        socket.create_connection((host.strip("[]"), port_n), timeout=timeout).close()
    except OSError as e:
        raise ConnectionError(f"cannot reach the Ray cluster at {address!r}: {e.strerror or e}") from e


@contextlib.contextmanager
def ray_session(
    address: str | None = None,
    num_cpus: int | None = None,
    object_store_memory: int | None = LOCAL_OBJECT_STORE_BYTES,
) -> Iterator[ModuleType]:
    """Connect to Ray for the duration of a job and yield the ``ray`` module.

    address: None starts a private local instance on this machine (``num_cpus`` CPUs,
        default all cores; no dashboard; ``object_store_memory`` bytes of object store),
        shut down on exit. "auto" joins the cluster this machine belongs to (``ray start``),
        "ray://host:10001" connects through Ray Client; "host:port" is a head's GCS address.
        The cluster's nodes need facesieve (and the weights) installed.
    If Ray is already initialised by the caller, that session is used and left running.
    Raises RayUnavailable when Ray is not installed, ConnectionError when the cluster
    cannot be reached.
    """
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    # No runtime_env downloads (uv / pip) on the workers: they run this environment.
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    kwargs: dict = dict(logging_level=logging.WARNING, log_to_driver=True)
    if address is None:
        from facesieve.backends import available_cores

        kwargs.update(
            address="local",
            num_cpus=int(num_cpus or available_cores()),
            include_dashboard=False,
            object_store_memory=object_store_memory,
        )
    else:
        _check_reachable(address)
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except ConnectionError as e:
        raise ConnectionError(f"cannot reach the Ray cluster at {address!r}: {e}") from e
    except Exception as e:
        if address is None:
            raise
        raise ConnectionError(f"cannot reach the Ray cluster at {address!r}: {type(e).__name__}: {e}") from e
    try:
        yield ray
    finally:
        ray.shutdown()


__all__ = ["LOCAL_OBJECT_STORE_BYTES", "RAY_INSTALL_HINT", "RayUnavailable", "cluster_cpus", "error_line",
           "ray_session", "require_ray"]
