"""Frame sampling with PyAV: pick frames by time, decode only what those frames need.

A cheap first pass reads the packet index of the video stream (no decoding): exact
frame count, presentation timestamps (variable frame rates included) and keyframes.
Targets are chosen on that index; the decode pass then

* seeks to the keyframe before a target whenever a keyframe lies between the current
  position and the target (the frames in between are never decoded),
* discards non-reference frames that are not targets (``skip_frame=NONREF`` set per
  packet, so B-frames nobody needs are not decoded),
* stops as soon as the last target frame is out.

Frames come out as upright RGB (display-matrix rotation applied) with a downscaled
copy for the detector. All sizes are pixels, all times seconds. The packet index, the
frame choice and the seek points are in ``frame_index``; this module decodes.
"""
from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from facesieve.video.errors import VideoError
from facesieve.video.errors import require_av as _av
from facesieve.video.frame_index import choose_frames, read_index, seek_points

MAX_VIDEO_PIXELS = 36_000_000
"""Largest frame accepted by default (pixels, coded size): a little above 8K UHD (7680x4320)."""


@dataclass(frozen=True)
class VideoInfo:
    """What the packet index says about a video stream.

    width/height: coded frame size in pixels (before display rotation).
    fps: average frame rate (frames / s); duration: seconds from the first frame's
    timestamp to the end of the last frame; frame_count: frames in the stream.
    """

    path: str
    codec: str
    width: int
    height: int
    fps: float
    duration: float
    frame_count: int
    keyframes: int
    time_base: Fraction


@dataclass
class SampledFrame:
    """One decoded frame.

    index: frame number in presentation order (0-based); timestamp: seconds since the
    first frame; pts: raw presentation timestamp (stream time base).
    image: upright full-resolution RGB uint8 (H, W, 3).
    detect_image: RGB uint8 copy whose long side is at most the reader's
        ``detect_max_side`` (the same array as ``image`` when no downscaling is needed).
    detect_scale: detect_image pixels per image pixel (<= 1); divide detector
        coordinates by it to get full-resolution pixels.
    rotation: display rotation applied, degrees counter-clockwise.
    """

    index: int
    timestamp: float
    pts: int | None
    image: np.ndarray
    detect_image: np.ndarray
    detect_scale: float
    rotation: int = 0


@dataclass
class DecodeStats:
    """Work done by one decode pass: packets sent to the decoder, frames it output, seeks."""

    packets_sent: int = 0
    frames_decoded: int = 0
    seeks: int = 0
    seconds: float = 0.0


def _open_error(path: str, e: BaseException) -> VideoError:
    av = _av()
    if isinstance(e, FileNotFoundError):
        return VideoError(path, "file not found")
    if isinstance(e, IsADirectoryError):
        return VideoError(path, "is a directory, not a video file")
    if isinstance(e, PermissionError):
        return VideoError(path, "permission denied")
    if isinstance(e, av.error.EOFError):
        return VideoError(path, "file ends before any video data (empty or truncated)")
    if isinstance(e, av.error.InvalidDataError):
        return VideoError(path, "not a readable video (corrupt, truncated, or not a video container)")
    return VideoError(path, f"cannot open video: {e}")


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate an (H, W, C) image ``rotation`` degrees counter-clockwise (multiples of 90)."""
    k = int(round(rotation / 90.0)) % 4
    return image if k == 0 else np.ascontiguousarray(np.rot90(image, k))


class VideoReader:
    """Random-access sampled reading of one video file's first video stream.

    >>> with VideoReader("clip.mp4", detect_max_side=960) as r:
    ...     idx = r.choose(frames=32)
    ...     for f in r.read(idx): ...

    Opening reads the packet index; raises VideoError for a missing / unreadable file,
    no video stream, zero frames, a truncated stream or a frame above ``max_pixels``.
    detect_max_side: long side (pixels) of ``SampledFrame.detect_image``; None keeps full size.
    threads: decoder threads (0 = FFmpeg's automatic choice).
    fast: trade exactness for speed (H.264/HEVC deblocking skipped): frames differ from a
        normal decode by about 1 grey level on average, invisible to the detectors.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        detect_max_side: int | None = None,
        max_pixels: int = MAX_VIDEO_PIXELS,
        threads: int = 0,
        fast: bool = False,
    ):
        self.path = str(path)
        self.detect_max_side = detect_max_side
        self.stats = DecodeStats()
        av = _av()
        p = Path(self.path)
        if p.is_dir():
            raise VideoError(self.path, "is a directory, not a video file")
        if p.exists() and p.stat().st_size == 0:
            raise VideoError(self.path, "file is empty (0 bytes)")
        try:
            self._container = av.open(self.path, mode="r")
        except Exception as e:  # av raises many FFmpegError subclasses and OSErrors
            raise _open_error(self.path, e) from e
        try:
            self._setup(max_pixels, threads, fast)
        except BaseException:
            self._container.close()
            raise

    def _setup(self, max_pixels: int, threads: int, fast: bool) -> None:
        c = self._container
        if not c.streams.video:
            kinds = sorted({s.type for s in c.streams}) or ["none"]
            raise VideoError(self.path, f"no video stream (streams found: {', '.join(kinds)})")
        s = c.streams.video[0]
        self._stream = s
        w, h = int(s.codec_context.width or 0), int(s.codec_context.height or 0)
        if w <= 0 or h <= 0:
            raise VideoError(self.path, "video stream has no frame size (corrupt header?)")
        if w * h > max_pixels:
            raise VideoError(
                self.path, f"frame size {w}x{h} is more than max_pixels={max_pixels} (raise max_pixels to allow it)"
            )
        self._index = read_index(self.path, self._container, self._stream)
        pk = self._index.by_pts
        if not pk:
            raise VideoError(self.path, "video stream has no frames")
        declared = int(s.frames or 0)
        if declared and len(pk) < declared:
            raise VideoError(
                self.path, f"file is truncated: only {len(pk)} of {declared} frames can be read"
            )
        tb = s.time_base or Fraction(1, 1)
        self._tb = Fraction(tb)
        if self._index.has_pts:
            t0 = pk[0].pts
            self._t0 = t0
            times = [float((p.pts - t0) * self._tb) for p in pk]  # type: ignore[operator]
            last = pk[-1].duration * self._tb if pk[-1].duration else None
            if not last:
                last = Fraction(1, 1) / Fraction(s.average_rate) if s.average_rate else Fraction(0)
            duration = times[-1] + float(last)
        else:  # no timestamps at all: fall back to the nominal rate
            rate = float(s.average_rate or s.guessed_rate or 25)
            self._t0 = 0
            times = [i / rate for i in range(len(pk))]
            duration = len(pk) / rate
        self._times = times
        fps = (len(pk) / duration) if duration > 0 else float(s.average_rate or 0)
        self.info = VideoInfo(
            path=self.path,
            codec=s.codec_context.name,
            width=w,
            height=h,
            fps=float(s.average_rate) if s.average_rate else fps,
            duration=duration,
            frame_count=len(pk),
            keyframes=sum(p.keyframe for p in self._index.packets),
            time_base=self._tb,
        )
        s.thread_type = "AUTO"
        if threads:
            s.codec_context.thread_count = int(threads)
        if fast:  # no deblocking, FFmpeg's non-exact speed-ups: small pixel drift, ~30% less decoding
            s.codec_context.options = {"skip_loop_filter": "all"}
            s.codec_context.flags2 |= _av().codec.context.Flags2.fast

    # -- public -----------------------------------------------------------------
    @property
    def timestamps(self) -> list[float]:
        """Presentation time of every frame, seconds since the first frame."""
        return list(self._times)

    def choose(self, frames: int | None = None, every: int | None = None, fps: float | None = None) -> list[int]:
        """Frame indices for a sampling rule (see ``choose_frames``)."""
        return choose_frames(self._times, self.info.duration, frames=frames, every=every, fps=fps)

    def read(self, indices: Sequence[int]) -> Iterator[SampledFrame]:
        """Decode the frames at ``indices`` (presentation order), yielded in ascending order.

        Raises VideoError when the decoder fails or a requested frame never comes out.
        """
        import time

        wanted = sorted(set(int(i) for i in indices))
        if not wanted:
            return
        n = len(self._index.by_pts)
        if wanted[0] < 0 or wanted[-1] >= n:
            raise ValueError(f"frame indices must be in [0, {n}), got {wanted[0]}..{wanted[-1]}")
        gen = self._read_seeking(wanted) if self._index.has_pts else self._read_sequential(wanted)
        while True:  # time the decoding only, not the consumer's work between frames
            t = time.perf_counter()
            try:
                frame = next(gen)
            except StopIteration:
                self.stats.seconds += time.perf_counter() - t
                return
            self.stats.seconds += time.perf_counter() - t
            yield frame

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- decoding ---------------------------------------------------------------
    def _make(self, frame, index: int) -> SampledFrame:
        rotation = int(getattr(frame, "rotation", 0) or 0)
        image = _upright(frame.to_ndarray(format="rgb24"), rotation)
        h, w = image.shape[:2]
        scale = 1.0
        det = image
        m = self.detect_max_side
        if m and max(h, w) > m:
            scale = m / max(h, w)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            det = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            scale = size[0] / w  # exact ratio actually used along x (y differs by < 1 px)
        pts = frame.pts
        if self._index.has_pts and pts is not None:
            ts = float((pts - self._t0) * self._tb)
        else:
            ts = self._times[index]
        return SampledFrame(index, ts, pts, image, det, scale, rotation)

    def _decode(self, packet, needed: bool):
        cc = self._stream.codec_context
        cc.skip_frame = "DEFAULT" if needed else "NONREF"
        if packet is not None:
            self.stats.packets_sent += 1
        frames = cc.decode(packet)
        self.stats.frames_decoded += len(frames)
        return frames

    def _read_seeking(self, wanted: list[int]) -> Iterator[SampledFrame]:
        av = _av()
        packets = self._index.packets
        by_pts = self._index.by_pts
        key_orders = seek_points(self._index, self._stream)
        pts_to_index = {p.pts: i for i, p in enumerate(by_pts)}
        targets = {by_pts[i].pts for i in wanted}
        target_orders = sorted(by_pts[i].order for i in wanted)
        remaining = set(targets)
        cc = self._stream.codec_context
        demux = None
        pos = -1  # decode-order position of the last packet sent
        can_seek = True
        sought = -1  # keyframe of the last seek (never seek twice for the same one)
        try:
            while remaining:
                t = bisect.bisect_right(target_orders, pos)
                if t == len(target_orders):  # all target packets sent: drain the decoder
                    for fr in self._decode(None, True):
                        yield from self._emit(fr, remaining, pts_to_index)
                    break
                key = key_orders[max(0, bisect.bisect_right(key_orders, target_orders[t]) - 1)]
                if demux is None or (can_seek and key > pos + 1 and key != sought):
                    if demux is not None:  # drain what is in flight, then jump
                        for fr in self._decode(None, True):
                            yield from self._emit(fr, remaining, pts_to_index)
                        cc.flush_buffers()
                        self.stats.seeks += 1
                    # seek timestamps are presentation times; landing before the keyframe is
                    # harmless (we decode forward), landing after it would lose frames
                    sought = key
                    self._container.seek(packets[key].pts, backward=True, any_frame=False, stream=self._stream)
                    demux = self._container.demux(self._stream)
                    first = self._next_packet(demux)
                    if first is not None and self._order_of(first) <= pos:
                        can_seek = False  # the demuxer went back: seeking only costs here
                    if first is not None and self._order_of(first) > key:
                        # the demuxer landed past the keyframe: restart from the top, no more seeks
                        can_seek = False
                        cc.flush_buffers()
                        self._container.seek(0, backward=True, any_frame=False, stream=self._stream)
                        demux = self._container.demux(self._stream)
                        first = self._next_packet(demux)
                    pkt = first
                else:
                    pkt = self._next_packet(demux)
                if pkt is None:  # end of file
                    for fr in self._decode(None, True):
                        yield from self._emit(fr, remaining, pts_to_index)
                    break
                pos = self._order_of(pkt)
                for fr in self._decode(pkt, pkt.pts in targets):
                    yield from self._emit(fr, remaining, pts_to_index)
        except av.error.FFmpegError as e:
            raise VideoError(self.path, f"decoding failed: {e}") from e
        finally:
            try:
                cc.flush_buffers()
            except Exception:  # pragma: no cover - best effort reset
                pass
        if remaining:
            missing = sorted(pts_to_index[p] for p in remaining)
            more = "..." if len(missing) > 5 else ""
            raise VideoError(self.path, f"frames {missing[:5]}{more} could not be decoded (damaged file?)")

    @staticmethod
    def _next_packet(demux):
        for pkt in demux:
            if pkt.size:
                return pkt
        return None

    def _order_of(self, pkt) -> int:
        """Decode-order position of a demuxed packet (matched on its presentation timestamp)."""
        return self._index.pts_order.get(pkt.pts, -1)

    def _emit(self, frame, remaining: set, pts_to_index: dict) -> Iterator[SampledFrame]:
        if frame.pts in remaining:
            remaining.discard(frame.pts)
            yield self._make(frame, pts_to_index[frame.pts])

    def _read_sequential(self, wanted: list[int]) -> Iterator[SampledFrame]:
        """Streams without usable timestamps: decode from the start, count output frames."""
        av = _av()
        want = set(wanted)
        last = wanted[-1]
        i = -1
        self._container.seek(0, backward=True, any_frame=False, stream=self._stream)
        self._stream.codec_context.flush_buffers()
        try:
            for pkt in self._container.demux(self._stream):
                frames = self._decode(pkt if pkt.size else None, True)
                for fr in frames:
                    i += 1
                    if i in want:
                        want.discard(i)
                        yield self._make(fr, i)
                if i >= last:
                    break
        except av.error.FFmpegError as e:
            raise VideoError(self.path, f"decoding failed: {e}") from e
        if want:
            raise VideoError(self.path, f"frames {sorted(want)[:5]} could not be decoded")
