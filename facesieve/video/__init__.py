"""Video face extraction: sampled frames -> MTCNN -> RetinaFace fallback -> oversampling -> crops.

    >>> from facesieve.video import VideoConfig, extract_video
    >>> summary = extract_video("clips/", "faces_out", VideoConfig(frames=32))
"""
from facesieve.video.align import ARCFACE_TEMPLATE, align_face, box_crop, similarity_transform
from facesieve.video.cascade import Cascade, FrameFaces, oversample
from facesieve.video.job import (
    ExtractedFrame,
    RunSummary,
    VideoConfig,
    VideoFaceExtractor,
    VideoResult,
    expand_video_inputs,
    extract_video,
)
from facesieve.video.ray_engine import RayRunSummary, run_ray
from facesieve.video.sampling import SampledFrame, VideoError, VideoInfo, VideoReader

__all__ = [
    "ARCFACE_TEMPLATE",
    "Cascade",
    "ExtractedFrame",
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
    "align_face",
    "box_crop",
    "expand_video_inputs",
    "extract_video",
    "oversample",
    "run_ray",
    "similarity_transform",
]
