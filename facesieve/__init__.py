"""facesieve: face detection (RetinaFace, MTCNN) with landmarks, batching and evaluation.

    >>> import facesieve
    >>> det = facesieve.load("retinaface-mnet025")
    >>> faces = det.detect("photo.jpg")      # list[Face]: box xyxy, score, 5x2 landmarks
"""
from facesieve.api import DEFAULT_MODEL, available_models, load
from facesieve.detectors.base import Detector
from facesieve.io.images import ImageError, ImageTypeError, load_image
from facesieve.optional import MissingDependencyError
from facesieve.types import LANDMARK_NAMES, Face, FaceArrays, faces_to_arrays

__version__ = "0.1.0"
"""The one place the version is defined (pyproject.toml reads it: dynamic version)."""

_VIDEO_NAMES = ("extract_video", "VideoConfig", "VideoFaceExtractor", "VideoResult", "RunSummary")


def __getattr__(name: str):
    # The video API pulls in PyAV; import it only when asked for.
    if name in _VIDEO_NAMES:
        import facesieve.video as video

        return getattr(video, name)
    raise AttributeError(f"module 'facesieve' has no attribute {name!r}")

__all__ = [
    "DEFAULT_MODEL",
    "Detector",
    "Face",
    "FaceArrays",
    "ImageError",
    "ImageTypeError",
    "LANDMARK_NAMES",
    "MissingDependencyError",
    "available_models",
    "faces_to_arrays",
    "load",
    "load_image",
    *_VIDEO_NAMES,
]
