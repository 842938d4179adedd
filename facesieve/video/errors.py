"""The video package's error type and its lazy PyAV import."""
from __future__ import annotations


class VideoError(RuntimeError):
    """A video cannot be used. ``path`` names the file, ``reason`` says what is wrong."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def require_av():
    """The ``av`` module (PyAV); MissingDependencyError naming ``facesieve[video]`` without it."""
    from facesieve.optional import require

    return require("av", "video decoding (facesieve video, extract_video)", "video")  # lazily: `--help` stays cheap
