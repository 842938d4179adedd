"""The Detector interface every model implements.

Data flows one way: image -> RGB uint8 array -> tensor batch -> network ->
decode -> NMS -> list[Face] in original image pixels.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterable, Sequence

import numpy as np

from facesieve.io.images import ImageInput, load_image
from facesieve.types import Face


class Detector(ABC):
    """Base class. Subclasses implement ``_detect_arrays``.

    Attributes:
        name: registry name of the model (e.g. "retinaface-mnet025", "mtcnn").
        device: torch device string the network runs on.
        score_threshold / nms_threshold: defaults used when a call passes None.
    """

    name: str = ""
    score_threshold: float = 0.5
    nms_threshold: float = 0.4
    default_batch_size: int = 8

    def detect(
        self,
        image: ImageInput,
        score_threshold: float | None = None,
        nms_threshold: float | None = None,
    ) -> list[Face]:
        """Detect faces in one image (RGB uint8 HxWx3 array, PIL.Image or path)."""
        return self.detect_batch(
            [image], batch_size=1, score_threshold=score_threshold, nms_threshold=nms_threshold
        )[0]

    def detect_batch(
        self,
        images: Iterable[ImageInput],
        batch_size: int | None = None,
        score_threshold: float | None = None,
        nms_threshold: float | None = None,
    ) -> list[list[Face]]:
        """Detect faces in many images (sizes may differ); one list of Faces per image.

        Images are grouped ``batch_size`` at a time into one padded tensor per batch.
        Results equal one-by-one ``detect`` calls. Raises ImageError for an image that
        cannot be loaded (batch jobs that must go past bad files load them first).
        """
        arrays = [load_image(im) for im in images]
        bs = max(1, int(batch_size or self.default_batch_size))
        st = self.score_threshold if score_threshold is None else float(score_threshold)
        nt = self.nms_threshold if nms_threshold is None else float(nms_threshold)
        out: list[list[Face]] = []
        for start in range(0, len(arrays), bs):
            out.extend(self._detect_arrays(arrays[start : start + bs], st, nt))
        return out

    @abstractmethod
    def _detect_arrays(
        self, images: Sequence[np.ndarray], score_threshold: float, nms_threshold: float
    ) -> list[list[Face]]:
        """Detect in a batch of RGB uint8 (H, W, 3) arrays; boxes in each image's pixels."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
