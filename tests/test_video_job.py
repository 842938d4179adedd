"""The batch job end to end: real clips and detectors, oversampling, bad inputs, resuming, CLI."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pytest

from facesieve.detectors.base import Detector
from facesieve.types import Face
from facesieve.video import VideoConfig, VideoFaceExtractor, expand_video_inputs, extract_video
from facesieve.align import ARCFACE_TEMPLATE
from facesieve.video.manifest import read_jsonl

from test_video_sampling import make_bad_videos


class FakeDetector(Detector):
    """A face in the middle of the k-th image it sees when ``has_face(k)``; ``fail(k)`` may raise."""

    def __init__(self, name="fake", has_face=lambda k: True, fail=lambda k: None):
        self.name = name
        self.has_face = has_face
        self.fail = fail
        self.calls = 0

    def _detect_arrays(self, images: Sequence[np.ndarray], score_threshold, nms_threshold):
        out = []
        for im in images:
            k = self.calls
            self.calls += 1
            self.fail(k)
            h, w = im.shape[:2]
            s = min(h, w) / 3
            x, y = w / 2 - s / 2, h / 2 - s / 2
            lm = (ARCFACE_TEMPLATE / 112 * s + [x, y]).astype(np.float32)
            out.append([Face((x, y, x + s, y + s), 0.99, lm)] if self.has_face(k) else [])
        return out


def _tmp_leftovers(out: Path) -> list[Path]:
    return list(out.glob(".tmp-*"))


@pytest.fixture(scope="module")
def detectors():
    import facesieve

    return facesieve.load("mtcnn"), facesieve.load("retinaface-mnet025")


# --------------------------------------------------------------------------- real run
def test_real_clip_manifest_crops_and_resume(tmp_path, videos_dir, detectors, example_image):
    mtcnn, retina = detectors
    out = tmp_path / "out"
    clip = videos_dir / "hamilton_short_clip.mp4"
    cfg = VideoConfig(frames=6)
    s = extract_video([clip], out, cfg, primary=mtcnn, fallback=retina)
    assert (s.done, s.failed, s.exit_code) == (1, 0, 0)
    assert json.loads((out / "summary.json").read_text())["faces"] == s.faces > 0
    rows = read_jsonl(out / "hamilton_short_clip" / "manifest.jsonl")
    face_rows = [r for r in rows if r["face_index"] is not None]
    assert sorted({r["sample"] for r in face_rows}) == list(range(6))
    for r in face_rows:
        assert r["detector"] in ("mtcnn", "retinaface-mnet025") and r["crop_kind"] == "aligned"
        assert r["timestamp"] == pytest.approx(r["frame_index"] / 29.97, abs=1e-3)
        x1, y1, x2, y2 = r["box"]
        assert -20 < x1 < x2 < 660 and -20 < y1 < y2 < 380
        crop = cv2.imread(str(out / r["crop"]))
        assert crop.shape == (112, 112, 3)
    # the crops really show faces: the best face of each sample, re-detected in its padded crop
    best = {}
    for r in face_rows:
        if r["face_index"] == 0:
            best[r["sample"]] = r
    found = 0
    for r in best.values():
        crop = cv2.cvtColor(cv2.imread(str(out / r["crop"])), cv2.COLOR_BGR2RGB)
        padded = cv2.copyMakeBorder(cv2.resize(crop, (224, 224)), 112, 112, 112, 112, cv2.BORDER_CONSTANT)
        faces = retina.detect(padded)
        found += any(f.score > 0.8 and abs((f.box[0] + f.box[2]) / 2 - 224) < 40 for f in faces)
    assert found >= len(best) - 1, f"only {found} of {len(best)} best-face crops re-detect as faces"
    assert (out / "hamilton_short_clip" / "done.json").exists() and not _tmp_leftovers(out)

    # re-run: skipped without running a detector; overwrite: redone
    boom = FakeDetector(fail=lambda k: (_ for _ in ()).throw(AssertionError("detector used")))
    s2 = extract_video([clip], out, cfg, primary=boom, fallback=boom)
    assert [v.status for v in s2.videos] == ["skipped"] and boom.calls == 0
    s3 = extract_video([clip], out, VideoConfig(frames=6, fallback=None), overwrite=True, primary=FakeDetector())
    assert [v.status for v in s3.videos] == ["done"]
    rows = read_jsonl(out / "hamilton_short_clip" / "manifest.jsonl")
    assert {r["detector"] for r in rows} == {"fake"} and not _tmp_leftovers(out)


def test_forced_fallback_on_a_real_clip(tmp_path, videos_dir, detectors):
    """A primary that never finds anything: every frame goes to RetinaFace, which finds the anchor."""
    _, retina = detectors
    blind = FakeDetector("blind", has_face=lambda k: False)
    s = extract_video(videos_dir / "ffpp_youtube_634.mp4", tmp_path, VideoConfig(frames=3, keep="largest"),
                      primary=blind, fallback=retina)
    v = s.videos[0]
    assert v.status == "done" and blind.calls == 3
    assert v.detection.fallback_frames == 3 and v.detection.kept == {"retinaface-mnet025": 3}
    for fr in v.frames:
        assert fr.detector == "retinaface-mnet025" and fr.tried == ("blind", "retinaface-mnet025")
        assert len(fr.faces) == 1 and 150 < fr.faces[0].height < 400  # anchor face ~255 px (README)
    assert s.to_dict()["fallback_share"] == 1.0


# --------------------------------------------------------------------------- oversampling
def test_oversampling_fills_exactly_to_n(tmp_path, videos_dir):
    det = FakeDetector(has_face=lambda k: k % 3 == 0)  # faces on 4 of 10 sampled frames
    s = extract_video(videos_dir / "hamilton_short_clip.mp4", tmp_path, VideoConfig(frames=10, fallback=None),
                      primary=det)
    v = s.videos[0]
    assert len(v.frames) == 10 and sum(1 for f in v.frames if f.faces) == 4
    assert len(v.samples) == 10 and sum(dup for _, dup in v.samples) == 6
    rows = read_jsonl(tmp_path / "hamilton_short_clip" / "manifest.jsonl")
    samples = [r for r in rows if r["sample"] is not None]
    assert [r["sample"] for r in samples] == list(range(10))
    assert sum(r["oversampled"] for r in samples) == 6
    originals = {r["frame_index"]: r["crop"] for r in samples if not r["oversampled"]}
    for r in samples:
        assert r["crop"] == originals[r["frame_index"]]  # duplicates reuse the original crop
    assert len(list((tmp_path / "hamilton_short_clip" / "crops").iterdir())) == 4
    no_face = [r for r in rows if r["sample"] is None]
    assert len(no_face) == 6 and all(r["box"] is None and r["detectors_tried"] == ["fake"] for r in no_face)
    # without oversampling: the 4 face frames only
    s = extract_video(videos_dir / "hamilton_short_clip.mp4", tmp_path / "b",
                      VideoConfig(frames=10, oversample=False, fallback=None),
                      primary=FakeDetector(has_face=lambda k: k % 3 == 0))
    assert len(s.videos[0].samples) == 4


def test_real_oversampling_on_the_selfie_pan(tmp_path, videos_dir, detectors):
    """The camera pans to a wall for ~1/4 of the clip: those frames have no face, the rest are
    oversampled to N."""
    mtcnn, retina = detectors
    s = extract_video(videos_dir / "selfie_pan_my_video.mp4", tmp_path, VideoConfig(frames=12),
                      primary=mtcnn, fallback=retina)
    v = s.videos[0]
    n_face = sum(1 for f in v.frames if f.faces)
    assert 4 <= n_face < 12 and len(v.samples) == 12
    assert sum(dup for _, dup in v.samples) == 12 - n_face


# --------------------------------------------------------------------------- bad input
def test_bad_inputs_fail_alone_and_leave_nothing_half_written(tmp_path, videos_dir):
    bad = make_bad_videos(tmp_path, videos_dir)
    out = tmp_path / "out"
    inputs = [str(videos_dir / "hamilton_short_clip.mp4")] + [str(p) for p, _ in bad.values()]
    s = extract_video(inputs, out, VideoConfig(frames=3, fallback=None), primary=FakeDetector())
    status = {Path(v.path).name: (v.status, v.error) for v in s.videos}
    assert status.pop("hamilton_short_clip.mp4") == ("done", None)
    assert s.exit_code == 1 and s.failed == len(bad) - 1  # the directory input is walked, not failed
    for name, (path, reason) in bad.items():
        if name == "directory":
            continue
        st, err = status[path.name]
        assert st == "failed" and reason in err, (name, err)
        vdir = out / next(v.video_id for v in s.videos if v.path == str(path))
        assert not (vdir / "done.json").exists() and not (vdir / "crops").exists()
        (row,) = read_jsonl(vdir / "manifest.jsonl")
        assert reason in row["error"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["failed"] == s.failed
    assert all(v["error"] for v in summary["per_video"] if v["status"] == "failed")
    assert not _tmp_leftovers(out)


def test_detector_error_fails_only_that_video(tmp_path, videos_dir):
    def fail(k):
        if k == 1:
            raise RuntimeError("simulated detector crash")

    clips = [videos_dir / "hamilton_short_clip.mp4", videos_dir / "ffpp_youtube_004.mp4"]
    s = extract_video(clips, tmp_path, VideoConfig(frames=2, batch_size=1, fallback=None),
                      primary=FakeDetector(fail=fail))
    assert [v.status for v in s.videos] == ["failed", "done"]
    assert "simulated detector crash" in s.videos[0].error
    assert not (tmp_path / "hamilton_short_clip" / "crops").exists() and not _tmp_leftovers(tmp_path)


def test_interrupted_run_leaves_nothing_and_resumes(tmp_path, videos_dir):
    def interrupt(k):
        if k == 3:
            raise KeyboardInterrupt

    clip = videos_dir / "hamilton_short_clip.mp4"
    with pytest.raises(KeyboardInterrupt):
        extract_video(clip, tmp_path, VideoConfig(frames=6, batch_size=2, fallback=None),
                      primary=FakeDetector(fail=interrupt))
    assert not (tmp_path / "hamilton_short_clip").exists() and not _tmp_leftovers(tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text())["complete"] is False
    s = extract_video(clip, tmp_path, VideoConfig(frames=6, batch_size=2, fallback=None), primary=FakeDetector())
    assert s.done == 1 and (tmp_path / "hamilton_short_clip" / "done.json").exists()


# --------------------------------------------------------------------------- outputs, inputs, CLI
def test_parquet_manifest_equals_jsonl(tmp_path, videos_dir):
    pq = pytest.importorskip("pyarrow.parquet")
    extract_video(videos_dir / "hamilton_short_clip.mp4", tmp_path, VideoConfig(frames=4, parquet=True, fallback=None),
                  primary=FakeDetector(has_face=lambda k: k != 1))
    vdir = tmp_path / "hamilton_short_clip"
    table = pq.read_table(vdir / "manifest.parquet").to_pylist()
    rows = read_jsonl(vdir / "manifest.jsonl")
    assert len(table) == len(rows) == 4 + 1  # 3 face frames + 1 oversampled, 1 frame without face
    for a, b in zip(table, rows):
        assert a.keys() == b.keys()
        for k in a:
            if isinstance(b[k], float):
                assert a[k] == pytest.approx(b[k])
            elif k in ("box", "landmarks") and b[k] is not None:
                np.testing.assert_allclose(np.array(a[k], float), np.array(b[k], float))
            else:
                assert a[k] == b[k], k


def test_in_memory_extract_box_crops(videos_dir):
    cfg = VideoConfig(frames=3, crop="box", crop_size=64, margin=0.25, fallback=None)
    ex = VideoFaceExtractor(cfg, primary=FakeDetector())
    r = ex.extract(videos_dir / "hamilton_short_clip.mp4")
    assert r.status == "done" and (r.width, r.height) == (640, 360)
    assert len(r.frames) == 3 and all(f.crops[0].shape == (64, 64, 3) for f in r.frames)
    assert all(f.crop_kinds == ["box"] and f.crop_paths == [] for f in r.frames)
    bad = ex.extract("/nonexistent/clip.mp4")
    assert bad.status == "failed" and bad.error == "file not found"


def test_expand_video_inputs(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.mp4").write_bytes(b"1")
    (tmp_path / "a" / "y.MOV").write_bytes(b"1")
    (tmp_path / "a" / "notes.txt").write_text("")
    (tmp_path / "a" / ".hidden.mp4").write_bytes(b"1")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.mp4").write_bytes(b"1")
    (tmp_path / "z.mkv").write_bytes(b"1")
    paths, unmatched = expand_video_inputs(
        [tmp_path, str(tmp_path / "a" / "*.mp4"), str(tmp_path / "nothing*.mp4"), tmp_path / "missing.avi",
         tmp_path / "a" / "notes.txt"],
        exclude=[tmp_path / "out"],
    )
    names = [p.name for p in paths]
    assert names == ["x.mp4", "y.MOV", "z.mkv", "missing.avi", "notes.txt"]
    assert unmatched == [str(tmp_path / "nothing*.mp4")]


def test_video_ids_disambiguate_equal_stems(tmp_path):
    from facesieve.video.job import video_ids

    ids = video_ids([tmp_path / "a" / "clip.mp4", tmp_path / "b" / "clip.mp4", tmp_path / "c.mp4"])
    assert ids[2] == "c" and ids[0] != ids[1] and all(i.startswith("clip-") for i in ids[:2])
    assert video_ids([tmp_path / "a" / "clip.mp4", tmp_path / "b" / "clip.mp4"]) == ids[:2]  # stable


def test_cli(tmp_path, videos_dir, capsys):
    from facesieve.cli import main

    out = tmp_path / "out"
    rc = main(["video", str(videos_dir / "hamilton_short_clip.mp4"), "--frames", "2", "--fallback", "none",
               "--out", str(out), "-q"])
    assert rc == 0 and (out / "hamilton_short_clip" / "done.json").exists()
    rc = main(["video", str(videos_dir / "hamilton_short_clip.mp4"), str(tmp_path / "missing.mp4"), "--frames", "2",
               "--fallback", "none", "--out", str(out), "-q"])
    assert rc == 1 and "FAILED" in capsys.readouterr().err
    assert main(["video", str(tmp_path / "none*.mp4"), "--out", str(out), "-q"]) == 2
    with pytest.raises(SystemExit):
        main(["video", "x.mp4", "--out", str(out), "--every", "2", "--fps", "3"])


def test_max_size_keywords_old_spelling_warns_and_markers_keep_their_keys():
    with pytest.warns(DeprecationWarning, match="detect_max_side"):
        old = VideoConfig(detect_max_side=640, fallback_max_side=1280)
    assert (old.max_size, old.fallback_max_size) == (640, 1280)
    assert old == VideoConfig(max_size=640, fallback_max_size=1280)
    with pytest.raises(AttributeError):
        old.detect_max_side  # noqa: B018  (the value is max_size; no silent sentinel)
    # done.json markers written before the rename hold these keys: a re-run must still match them
    settings = VideoConfig(max_size=640).output_settings()
    assert settings["detect_max_side"] == 640 and settings["fallback_max_side"] == 960
    assert "max_size" not in settings and "fallback_max_size" not in settings
    with pytest.raises(ValueError, match="max_size must be >= 32"):
        VideoConfig(max_size=16).validate()
