"""Top-level entry point: ``facesieve.load(name) -> Detector``."""
from __future__ import annotations

import importlib

from facesieve.detectors.base import Detector, check_detector_options

DEFAULT_MODEL = "retinaface-mnet025"

# model name -> (module, factory). A factory has the signature
#   build(name: str, weights: str | None, device: str, **options) -> Detector
_FACTORIES: dict[str, tuple[str, str]] = {
    "retinaface-mnet025": ("facesieve.detectors.retinaface", "build"),
    "retinaface-r50": ("facesieve.detectors.retinaface", "build"),
    "mtcnn": ("facesieve.detectors.mtcnn", "build"),
}


def available_models() -> list[str]:
    """The model names ``load`` accepts, sorted (e.g. ["mtcnn", "retinaface-mnet025",
    "retinaface-r50"]). Cheap: imports no model code and reads no weights."""
    return sorted(_FACTORIES)


def load(name: str = DEFAULT_MODEL, weights: str | None = None, device: str = "cpu", **options) -> Detector:
    """Build a detector.

    name: model name (see ``available_models()``); picks architecture and default weights
        (shipped with facesieve: no download, no network).
    weights: optional checkpoint path, registered weights name or http(s) URL overriding the
        default weights.
    device: torch device ("cpu", "cuda", "cuda:1").
    options: model-specific settings (e.g. score_threshold, nms_threshold, backend).
        score_threshold: a face's minimum probability, 0..1. nms_threshold: overlap above
        which the lower-scoring of two boxes is dropped, 0..1 -- RetinaFace: intersection
        over union (default 0.4); MTCNN: intersection over the *smaller* box's area
        (the final O-Net NMS, default 0.7), not IoU. backend:
        "auto" (default): the model's fastest installed CPU backend, all giving the same faces
        (RetinaFace: onnxruntime, then openvino; MTCNN: openvino; ``facesieve.backends.CPU_PREFERENCE``),
        torch when none is installed and on CUDA; or "torch", "onnxruntime", "openvino".
        Every model also takes channel_order ("rgb" default, or "bgr" for OpenCV arrays: the
        colour order of array / tensor inputs; files and PIL images are always decoded in
        true colour) and clip_boxes (False default: boxes and landmarks as the reference
        detectors give them, possibly reaching outside the image; True: clamped to it).
        Both are defaults that each ``detect`` / ``detect_batch`` call may override.

    The detector's ``detect(image)`` / ``detect_batch(images)`` take paths, PIL images,
    numpy arrays ((H, W, 3) uint8 RGB by default) and torch tensors ((3, H, W) float in
    [0, 1] or (H, W, 3) uint8, any device); they return ``Face`` objects with xyxy boxes
    and (x, y) landmarks in original-image pixels, and raise ImageError (a ValueError)
    naming the input for anything that is not a usable image (see ``Detector.detect``).

    Raises ValueError (unknown model / backend / option / channel_order), ``facesieve.weights.WeightsError``
    (weights missing, unreadable, damaged or of another model) and
    ``facesieve.MissingDependencyError`` (an ImportError: an explicitly requested backend
    whose extra is not installed; the message names it, e.g. ``pip install "facesieve[onnx]"``).
    """
    from facesieve.io.images import check_channel_order

    channel_order = check_channel_order(options.pop("channel_order", "rgb"))
    clip_boxes = bool(options.pop("clip_boxes", False))
    try:
        module_name, attr = _FACTORIES[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available_models())}") from None
    from facesieve.backends import resolve_backend

    options["backend"] = resolve_backend(options.get("backend", "auto"), name, device)
    factory = getattr(importlib.import_module(module_name), attr)
    detector = factory(name, weights=weights, device=device, **options)
    detector.channel_order, detector.clip_boxes = channel_order, clip_boxes
    check_detector_options(detector)
    return detector
