"""Detectors: pre-processing, batching, decoding and NMS around the pure networks."""
from facesieve.detectors.base import Detector

__all__ = ["Detector"]
