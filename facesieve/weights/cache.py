"""On-disk cache for downloaded and converted weights.

Location: ``$FACESIEVE_CACHE`` if set, else the user cache dir (e.g. ~/.cache/facesieve).
Every write is atomic (temp file + rename), so a killed process never leaves a
half-written checkpoint that a later run would trust.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

import torch

from facesieve.io.atomic import atomic_open
from facesieve.weights.state_dict import read_state_dict

CACHE_ENV = "FACESIEVE_CACHE"


class WeightsError(RuntimeError):
    """Weights could not be found, fetched, verified or converted."""


def cache_dir() -> Path:
    """Root of facesieve's cache (created on demand)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        root = Path(env).expanduser()
    else:
        from platformdirs import user_cache_dir

        root = Path(user_cache_dir("facesieve"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def download(url: str, sha256: str | None = None, dest: str | os.PathLike | None = None,
             timeout: float = 60.0) -> Path:
    """Fetch ``url`` into the cache (or ``dest``), verify sha256, return the path.

    The cache file is named after the URL (a digest of it plus its file name), whether or
    not a checksum is given, so one URL is fetched once. An existing file with the right
    checksum (any, without one) is reused without network access; one with another
    checksum is fetched again. The download goes to a temp file that is renamed into place
    only after the checksum matches and the size equals the announced Content-Length, so a
    failed, cut-short or corrupted download never shadows a good one.

    Raises WeightsError (naming the URL) on a network error, a truncated body or a checksum
    mismatch; nothing is left in the cache then.
    """
    if dest is None:
        name = Path(urllib.request.url2pathname(url.split("?")[0])).name or "download"
        dest = cache_dir() / "downloads" / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{name}"
    dest = Path(dest)
    if dest.exists() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{dest.name}.", dir=dest.parent)
    try:
        h = hashlib.sha256()
        got = 0
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, os.fdopen(fd, "wb") as out:
                length = resp.headers.get("Content-Length")
                while True:
                    block = resp.read(1 << 20)
                    if not block:
                        break
                    got += len(block)
                    h.update(block)
                    out.write(block)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            raise WeightsError(f"could not download {url}: {e!r}") from e
        # a connection closed early ends the read without an error: check the announced size
        if length is not None and length.strip().isdigit() and got != int(length):
            raise WeightsError(
                f"could not download {url}: got {got} bytes of the {int(length)} announced (connection cut short?)"
            )
        if sha256 is not None and h.hexdigest() != sha256:
            raise WeightsError(
                f"checksum mismatch for {url}: expected sha256 {sha256}, got {h.hexdigest()}"
            )
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def cached_state_dict(key: str, build: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Return the state dict cached under ``key``; build and store it on first use.

    ``key`` must change whenever the source or the converter changes (include the
    source checksum and a converter version in it).
    """
    path = cache_dir() / "converted" / f"{key}.pt"
    if path.exists():
        try:
            return read_state_dict(path, unwrap=(), tensors_only=False)
        except Exception:  # corrupt cache entry: rebuild it
            path.unlink(missing_ok=True)
    state = build()
    with atomic_open(path, "wb") as f:
        torch.save(state, f)
    return state


def clear_cache() -> None:
    """Delete everything facesieve cached."""
    shutil.rmtree(cache_dir(), ignore_errors=True)
