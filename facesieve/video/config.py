"""The settings of a video face-extraction run, validated in one place."""
from __future__ import annotations

import warnings
from dataclasses import InitVar, asdict, dataclass, field
from typing import Any

from facesieve.backends import BACKENDS
from facesieve.video import manifest as mf
from facesieve.video.sampling import MAX_VIDEO_PIXELS

_UNSET: Any = object()
_MARKER_KEYS = {"max_size": "detect_max_side", "fallback_max_size": "fallback_max_side"}


@dataclass
class VideoConfig:
    """Settings of a video face-extraction run (pixels, seconds, probabilities).

    Sampling: ``frames`` = N, the face frames wanted per video. Frames are taken at the
    centres of N equal time slices, unless ``every`` (every k-th frame) or ``fps``
    (frames per second of video) is set; N then only sets the oversampling target
    (None: no target).
    Cascade: ``primary`` runs on every sampled frame; ``fallback`` on frames where the
    primary found fewer than ``min_faces`` faces scoring >= ``confident_score``.
    ``max_size`` / ``fallback_max_size``: long side (pixels) of the image each detector
    sees (1080p at 960 is detected at half size; boxes are mapped back; None: full
    size); the CLI's ``--max-size`` / ``--fallback-max-size``, the ``max_size`` of
    ``facesieve detect`` and of the detectors. The former keywords ``detect_max_side`` /
    ``fallback_max_side`` are still accepted (DeprecationWarning). A RetinaFace fallback also runs its coarser passes for large faces
    when the frame's short side is still above 640 px (see README, "Image size and scale").
    ``min_face_size``: MTCNN's smallest face, in detector-input pixels (None: its default).
    ``primary_options`` / ``fallback_options``: extra ``facesieve.load`` options.
    ``backend``: detector runtime (one of ``facesieve.backends.BACKENDS``); "auto" picks
    OpenVINO on the CPU (about 2-3x faster than torch for these models) and torch on CUDA.
    ``oversample``: duplicate face frames (spread evenly, flagged) up to N.
    Crops: ``crop`` "aligned" (5-point similarity to the ArcFace template, box crop when a
    face has no landmarks), "box" (``margin`` x box size added per side, square) or
    "none"; ``crop_size`` output side; ``keep`` "all", "largest" or "best" per frame.
    ``image_format`` "jpg" or "png". ``parquet``: also write manifest.parquet.
    ``max_pixels``: larger videos fail with a clear error instead of exhausting memory.
    ``fast_decode``: skip H.264/HEVC deblocking (~25% less decoding; pixels off by ~1 level).
    ``validate()`` (run by VideoFaceExtractor) raises ValueError naming the first bad setting.
    """

    frames: int | None = 32
    every: int | None = None
    fps: float | None = None
    primary: str = "mtcnn"
    fallback: str | None = "retinaface-mnet025"
    min_faces: int = 1
    confident_score: float = 0.9
    max_size: int | None = 960
    fallback_max_size: int | None = 960
    min_face_size: float | None = None
    primary_options: dict[str, Any] = field(default_factory=dict)
    fallback_options: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    backend: str = "auto"
    batch_size: int = 8
    oversample: bool = True
    crop: str = "aligned"
    crop_size: int = 112
    margin: float = 0.2
    keep: str = "all"
    image_format: str = "jpg"
    jpeg_quality: int = 95
    parquet: bool = False
    max_pixels: int = MAX_VIDEO_PIXELS
    fast_decode: bool = False
    decode_threads: int = 0
    queue_frames: int = 16
    detect_max_side: InitVar[Any] = _UNSET  # deprecated spelling of max_size
    fallback_max_side: InitVar[Any] = _UNSET  # deprecated spelling of fallback_max_size

    def __post_init__(self, detect_max_side: Any, fallback_max_side: Any) -> None:
        renamed = []
        for old, new, value in (("detect_max_side", "max_size", detect_max_side),
                                ("fallback_max_side", "fallback_max_size", fallback_max_side)):
            if value is not _UNSET:
                renamed.append(f"{old}= is deprecated, use {new}=")
                setattr(self, new, value)
        if renamed:
            warnings.warn(f"VideoConfig: {'; '.join(renamed)}", DeprecationWarning, stacklevel=3)

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting."""
        if self.every is not None and self.fps is not None:
            raise ValueError("give at most one of every= and fps=")
        if self.every is None and self.fps is None and self.frames is None:
            raise ValueError("frames= is needed unless every= or fps= is given")
        if self.frames is not None and self.frames < 1:
            raise ValueError(f"frames must be >= 1, got {self.frames}")
        if self.every is not None and self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.crop not in ("aligned", "box", "none"):
            raise ValueError(f"crop must be 'aligned', 'box' or 'none', got {self.crop!r}")
        if self.keep not in ("all", "largest", "best"):
            raise ValueError(f"keep must be 'all', 'largest' or 'best', got {self.keep!r}")
        if self.image_format not in ("jpg", "png"):
            raise ValueError(f"image_format must be 'jpg' or 'png', got {self.image_format!r}")
        if self.crop_size < 8:
            raise ValueError(f"crop_size must be >= 8 pixels, got {self.crop_size}")
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")
        for name in ("max_size", "fallback_max_size"):
            v = getattr(self, name)
            if v is not None and v < 32:
                raise ValueError(f"{name} must be >= 32 pixels or None, got {v}")
        if self.min_faces < 1:
            raise ValueError(f"min_faces must be >= 1, got {self.min_faces}")
        if self.backend not in ("auto", *BACKENDS):
            raise ValueError(f"backend must be one of {('auto', *BACKENDS)}, got {self.backend!r}")
        if self.parquet and not mf.parquet_available():
            raise ValueError('parquet=True (--parquet) needs: pip install "facesieve[parquet]"')

    def output_settings(self) -> dict[str, Any]:
        """The settings that change a video's outputs (stored in its completion marker).

        The size keys keep their first names (``detect_max_side``, ``fallback_max_side``) so
        that markers written before the rename still match and their videos are skipped.
        """
        d = asdict(self)
        for k in ("device", "backend", "batch_size", "max_pixels", "decode_threads", "queue_frames", "parquet"):
            d.pop(k)
        return {_MARKER_KEYS.get(k, k): v for k, v in d.items()}


# The deprecated keywords are __init__ arguments only: reading cfg.detect_max_side must not
# quietly return the sentinel (AttributeError instead; the value is cfg.max_size).
del VideoConfig.detect_max_side, VideoConfig.fallback_max_side
