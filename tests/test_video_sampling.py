"""Frame sampling on real clips (checked against a plain full decode) and on synthetic bad videos."""
from __future__ import annotations

import hashlib
from pathlib import Path

import av
import numpy as np
import pytest

from facesieve.video.sampling import VideoError, VideoReader, choose_frames


def _reference_md5(path: Path, indices: set[int]) -> tuple[dict[int, str], int]:
    """Plain PyAV decode of every frame: md5 of the RGB pixels of the frames at ``indices``
    (presentation order), and the number of frames."""
    out = {}
    n = 0
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for i, f in enumerate(c.decode(s)):
            if i in indices:
                out[i] = hashlib.md5(f.to_ndarray(format="rgb24").tobytes()).hexdigest()
            n += 1
    return out, n


def _md5(a: np.ndarray) -> str:
    return hashlib.md5(np.ascontiguousarray(a).tobytes()).hexdigest()


# --------------------------------------------------------------------------- choosing
def test_choose_frames_even_centres_every_and_fps():
    t = [i / 10 for i in range(100)]  # 10 fps, 10 s
    assert choose_frames(t, 10.0, frames=4) == [12, 37, 62, 87]  # centres of four 2.5 s slices
    assert choose_frames(t, 10.0, frames=1) == [50]
    assert choose_frames(t, 10.0, frames=500) == list(range(100))  # fewer frames than asked
    assert choose_frames(t, 10.0, every=30) == [0, 30, 60, 90]
    assert choose_frames(t, 10.0, fps=0.5) == [0, 20, 40, 60, 80]
    with pytest.raises(ValueError, match="exactly one"):
        choose_frames(t, 10.0, frames=3, every=2)
    with pytest.raises(ValueError):
        choose_frames(t, 10.0, frames=0)


def test_choose_frames_variable_frame_rate_is_by_time_not_by_index():
    # 50 frames in the first second, then 1 frame per second for 9 s
    t = [i / 50 for i in range(50)] + [1.0 + i for i in range(9)]
    idx = choose_frames(t, 10.0, frames=5)  # centres 1, 3, 5, 7, 9 s
    assert [t[i] for i in idx] == [1.0, 3.0, 5.0, 7.0, 9.0]
    # a dense burst cannot take more than its share of the samples
    assert sum(t[i] < 1.0 for i in choose_frames(t, 10.0, frames=10)) == 1


# --------------------------------------------------------------------------- real clips
@pytest.mark.parametrize(
    "name,rule",
    [
        ("hamilton_short_clip.mp4", {"frames": 12}),  # keyframe every ~60 frames: seeks
        ("ffpp_youtube_004.mp4", {"every": 25}),  # B-frames: non-reference frames skipped
        ("selfie_pan_my_video.mp4", {"fps": 2.0}),  # variable frame rate, portrait phone clip
    ],
)
def test_sampled_frames_equal_a_full_decode(videos_dir, name, rule):
    path = videos_dir / name
    with VideoReader(path, detect_max_side=320) as r:
        idx = r.choose(**rule)
        got = list(r.read(idx))
        stats = r.stats
        count = r.info.frame_count
    ref, n = _reference_md5(path, set(idx))
    assert count == n
    assert [f.index for f in got] == idx
    for f in got:
        assert _md5(f.image) == ref[f.index], f"frame {f.index} differs from the full decode"
        assert max(f.detect_image.shape[:2]) == 320
        assert f.detect_scale == pytest.approx(320 / max(f.image.shape[:2]), rel=0.01)
    ts = [f.timestamp for f in got]
    assert ts == sorted(ts) and ts[0] >= 0
    assert stats.frames_decoded < n, "decoded every frame: no skipping or seeking happened"
    if name.startswith("hamilton"):
        assert stats.seeks >= 1


def test_clip_facts_and_timestamps(videos_dir):
    with VideoReader(videos_dir / "hamilton_short_clip.mp4") as r:
        info = r.info
        ts = r.timestamps
    assert (info.width, info.height, info.frame_count, info.codec) == (640, 360, 275, "h264")
    assert info.fps == pytest.approx(29.97, abs=0.01)
    assert info.duration == pytest.approx(9.18, abs=0.02)  # README: stream duration 9.18 s
    assert ts[0] == 0 and np.all(np.diff(ts) > 0)
    assert np.median(np.diff(ts)) == pytest.approx(1 / 29.97, rel=1e-3)


def test_selfie_vfr_timestamps_are_the_stream_times(videos_dir):
    with VideoReader(videos_dir / "selfie_pan_my_video.mp4", detect_max_side=256) as r:
        ts = r.timestamps
        f = next(iter(r.read([100])))
        assert r.info.frame_count == 138 and r.info.duration == pytest.approx(7.84, abs=0.02)
    assert f.timestamp == pytest.approx(ts[100])
    assert f.image.shape == (1920, 1080, 3)  # portrait, upright


def test_rotation_metadata_is_applied(tmp_path):
    """A 64x32 clip tagged 'rotate 90 degrees counter-clockwise' comes out 32x64, with the
    white top-left marker moved where that rotation puts it (bottom-left)."""
    path = tmp_path / "rot.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 32, "yuv420p"
        s.set_display_rotation(90)
        for _ in range(5):
            img = np.zeros((32, 64, 3), np.uint8)
            img[:8, :8] = 255
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    with VideoReader(path) as r:
        f = next(iter(r.read([2])))
    assert f.rotation == 90 and f.image.shape == (64, 32, 3)
    assert f.image[-8:, :8].mean() > 200 and f.image[:8, :8].mean() < 50


# --------------------------------------------------------------------------- bad inputs
def _mux_silence(c: "av.container.OutputContainer") -> None:
    """Add a mono AAC stream with 10 frames of silence to an open output container."""
    a = c.add_stream("aac", rate=16000)
    a.layout = "mono"
    for i in range(10):
        fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        fr.sample_rate, fr.pts = 16000, i * 1024
        for p in a.encode(fr):
            c.mux(p)
    for p in a.encode():
        c.mux(p)


def _write_audio_only(path: Path) -> None:
    with av.open(str(path), "w") as c:
        _mux_silence(c)


def _write_zero_frame_video(path: Path) -> None:
    """Matroska with a declared video track that never gets a frame (plus some audio)."""
    with av.open(str(path), "w") as c:
        v = c.add_stream("mpeg4", rate=25)
        v.width, v.height, v.pix_fmt = 64, 64, "yuv420p"
        _mux_silence(c)


def make_bad_videos(tmp_path: Path, videos_dir: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, expected error substring)."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, np.uint8).tobytes())
    (bad / "empty.mp4").write_bytes(b"")
    data = (videos_dir / "dfdc_lynaeydofd_real.mp4").read_bytes()
    (bad / "trunc_moov_at_end.mp4").write_bytes(data[: len(data) // 2])  # index lost
    data = (videos_dir / "selfie_pan_my_video.mp4").read_bytes()
    (bad / "trunc_moov_at_start.mp4").write_bytes(data[: len(data) // 2])  # frames lost
    _write_audio_only(bad / "audio_only.m4a")
    _write_zero_frame_video(bad / "zero_frames.mkv")
    return {
        "random": (bad / "random.mp4", "not a readable video"),
        "empty": (bad / "empty.mp4", "empty"),
        "trunc_moov_at_end": (bad / "trunc_moov_at_end.mp4", "not a readable video"),
        "trunc_moov_at_start": (bad / "trunc_moov_at_start.mp4", "truncated"),
        "audio_only": (bad / "audio_only.m4a", "no video stream (streams found: audio)"),
        "zero_frames": (bad / "zero_frames.mkv", "no frames"),
        "missing": (bad / "missing.mp4", "file not found"),
        "directory": (tmp_path, "is a directory"),
    }


def test_bad_videos_give_clear_errors(tmp_path, videos_dir):
    for name, (path, reason) in make_bad_videos(tmp_path, videos_dir).items():
        with pytest.raises(VideoError) as e:
            VideoReader(path)
        assert reason in e.value.reason, (name, e.value.reason)
        assert e.value.path == str(path)


def test_huge_resolution_is_refused_before_decoding(videos_dir):
    with pytest.raises(VideoError, match=r"640x360 is more than max_pixels=100000"):
        VideoReader(videos_dir / "hamilton_short_clip.mp4", max_pixels=100_000)
