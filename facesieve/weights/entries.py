"""The pretrained weights facesieve knows. Measured metrics are filled from our runs."""
from __future__ import annotations

from facesieve.weights.registry import Preprocessing, WeightsEntry, register  # noqa: F401

# RetinaFace entries: added with the RetinaFace converters.
# MTCNN entries: added with the MTCNN converters.
