"""The packet index of a video stream, the frames a sampling rule picks on it, and where
the decoder can seek (the "what to decode" half of ``sampling``; no decoding here).

Frame index = position in presentation order; all times in seconds since the first frame.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Sequence

from facesieve.video.errors import VideoError, require_av


@dataclass
class Packet:
    """One packet of the video stream (= one coded frame)."""

    order: int  # position in decode (file) order
    pts: int | None
    dts: int | None
    keyframe: bool
    duration: int


@dataclass
class PacketIndex:
    """The packet index of a video stream: what choosing and seeking need, read without decoding."""

    packets: list[Packet]  # decode order
    by_pts: list[Packet] = field(default_factory=list)  # presentation order (= frame index)
    has_pts: bool = True
    pts_order: dict = field(default_factory=dict)  # pts -> decode-order position (when has_pts)


def choose_frames(
    pts_seconds: Sequence[float],
    duration: float,
    frames: int | None = None,
    every: int | None = None,
    fps: float | None = None,
) -> list[int]:
    """Frame indices to sample, ascending and unique.

    pts_seconds: presentation time of each frame (seconds since the first frame, ascending).
    frames=N: N times at the centres of N equal slices of ``duration``; each takes the
        frame shown at that time (fewer than N when the video has fewer frames).
    every=k: frames 0, k, 2k, ...
    fps=f: the frames shown at times 0, 1/f, 2/f, ...
    Exactly one of the three must be given.
    """
    given = [x is not None for x in (frames, every, fps)]
    if sum(given) != 1:
        raise ValueError("give exactly one of frames=, every=, fps=")
    n = len(pts_seconds)
    if n == 0:
        return []
    if every is not None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        return list(range(0, n, int(every)))
    if fps is not None:
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        count = max(1, int(math.floor(duration * fps + 1e-9)))
        times = [j / fps for j in range(count)]
    else:
        assert frames is not None
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        if frames >= n:
            return list(range(n))
        times = [(i + 0.5) * duration / frames for i in range(frames)]
    out: list[int] = []
    for t in times:
        i = max(0, bisect.bisect_right(pts_seconds, t + 1e-9) - 1)
        if not out or out[-1] != i:
            out.append(i)
    return out


def read_index(path: str, container, stream) -> PacketIndex:
    """Demux ``stream`` of an open PyAV ``container`` once, without decoding.

    Raises VideoError (naming ``path``) for a corrupt packet or a demuxing failure.
    """
    av = require_av()
    packets: list[Packet] = []
    declared = int(stream.frames or 0)
    try:
        for pkt in container.demux(stream):
            if pkt.size == 0:
                continue
            if pkt.is_corrupt:
                of = f" of {declared}" if declared else ""
                raise VideoError(path, f"damaged or truncated file: frame {len(packets)}{of} is corrupt")
            packets.append(
                Packet(len(packets), pkt.pts, pkt.dts, bool(pkt.is_keyframe), int(pkt.duration or 0))
            )
    except av.error.FFmpegError as e:
        raise VideoError(path, f"damaged or truncated file: reading failed after {len(packets)} frames ({e})") from e
    has_pts = bool(packets) and all(p.pts is not None for p in packets)
    if has_pts:
        by_pts = sorted(packets, key=lambda p: p.pts)  # type: ignore[arg-type,return-value]
        # duplicated timestamps make frame matching ambiguous: use decode order
        if len({p.pts for p in packets}) != len(packets):
            has_pts, by_pts = False, list(packets)
    else:
        by_pts = list(packets)
    pts_order = {p.pts: p.order for p in packets} if has_pts else {}
    return PacketIndex(packets, by_pts, has_pts, pts_order)


def seek_points(index: PacketIndex, stream) -> list[int]:
    """Decode-order positions the demuxer can seek to: the container index's keyframes
    (e.g. MP4 sync samples) when it has an index, else packets flagged as keyframes."""
    packets = index.packets
    flagged = [p.order for p in packets if p.keyframe]
    try:
        entries = stream.index_entries
        index_ts = {e.timestamp for e in entries if e.is_keyframe}
    except Exception:  # pragma: no cover - older PyAV without index_entries
        index_ts = set()
    if index_ts:
        points = [p.order for p in packets if p.keyframe and (p.dts in index_ts or p.pts in index_ts)]
        if points:
            return points if points[0] == 0 else [0] + points
    return flagged if flagged and flagged[0] == 0 else [0] + flagged
