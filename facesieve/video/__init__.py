"""Video face extraction: sampled frames -> MTCNN -> RetinaFace fallback -> oversampling -> crops.

Modules: ``config`` (VideoConfig), ``frame_index`` (packet index, frame choice, seek points),
``sampling`` (VideoReader: decoding), ``errors`` (VideoError), ``fallback``
(primary -> fallback detector chain, oversampling), ``pipeline`` (decode thread, batching,
crops), ``outdir`` (atomic per-video directories), ``results`` / ``manifest`` (records and
their files), ``job`` (VideoFaceExtractor), ``extract`` (extract_video), ``ray_engine``
(run_ray).

    >>> from facesieve.video import VideoConfig, extract_video
    >>> summary = extract_video("clips/", "faces_out", VideoConfig(frames=32))
"""
from facesieve.align import ARCFACE_TEMPLATE, align_face, box_crop, similarity_transform
from facesieve.video.config import VideoConfig
from facesieve.video.fallback import Cascade, FallbackDetector, FallbackStats, FrameFaces, oversample
from facesieve.video.extract import extract_video
from facesieve.video.job import VideoFaceExtractor, expand_video_inputs
from facesieve.video.results import ExtractedFrame, RunSummary, VideoResult, VideoRunSummary
from facesieve.video.ray_engine import RayRunSummary, run_ray
from facesieve.video.sampling import SampledFrame, VideoError, VideoInfo, VideoReader

__all__ = [
    "ARCFACE_TEMPLATE",
    "Cascade",
    "ExtractedFrame",
    "FallbackDetector",
    "FallbackStats",
    "FrameFaces",
    "RayRunSummary",
    "RunSummary",
    "SampledFrame",
    "VideoConfig",
    "VideoError",
    "VideoFaceExtractor",
    "VideoInfo",
    "VideoReader",
    "VideoResult",
    "VideoRunSummary",
    "align_face",
    "box_crop",
    "expand_video_inputs",
    "extract_video",
    "oversample",
    "run_ray",
    "similarity_transform",
]
