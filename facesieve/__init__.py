"""facesieve: face detection (RetinaFace, MTCNN) with landmarks, batching and evaluation.

    >>> import facesieve
    >>> det = facesieve.load("retinaface-mnet025")
    >>> faces = det.detect("photo.jpg")      # list[Face]: box xyxy, score, 5x2 landmarks
"""
from facesieve.api import DEFAULT_MODEL, available_models, load
from facesieve.detectors.base import Detector
from facesieve.io.images import ImageError, load_image
from facesieve.types import LANDMARK_NAMES, Face

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "Detector",
    "Face",
    "ImageError",
    "LANDMARK_NAMES",
    "available_models",
    "load",
    "load_image",
]
