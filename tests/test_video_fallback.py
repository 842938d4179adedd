"""Fallback-chain decisions and oversampling, with fake detectors (exact expectations) and a real hard frame."""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np
import pytest

from facesieve.detectors.base import Detector
from facesieve.types import Face
from facesieve.video.fallback import FallbackDetector, oversample
from facesieve.video.sampling import SampledFrame


class ScriptedDetector(Detector):
    """Returns, for the k-th image it sees, ``script(k, image)`` faces in that image's pixels."""

    def __init__(self, name: str, script):
        self.name = name
        self.script = script
        self.seen: list[tuple[int, int]] = []  # (h, w) of every image received

    def _detect_arrays(self, images: Sequence[np.ndarray], score_threshold, nms_threshold):
        out = []
        for im in images:
            k = len(self.seen)
            self.seen.append(im.shape[:2])
            out.append(list(self.script(k, im)))
        return out


def _face(x: float, y: float, s: float, score: float) -> Face:
    lm = np.array([[x + 0.3 * s, y + 0.4 * s], [x + 0.7 * s, y + 0.4 * s], [x + 0.5 * s, y + 0.6 * s],
                   [x + 0.35 * s, y + 0.8 * s], [x + 0.65 * s, y + 0.8 * s]], np.float32)
    return Face((x, y, x + s, y + s), score, lm)


def _frames(n: int, h: int = 1080, w: int = 1920, detect_side: int = 960) -> list[SampledFrame]:
    s = detect_side / max(h, w)
    return [
        SampledFrame(i, i / 10, i, np.zeros((h, w, 3), np.uint8),
                     np.zeros((round(h * s), round(w * s), 3), np.uint8), s)
        for i in range(n)
    ]


# --------------------------------------------------------------------------- oversampling
@pytest.mark.parametrize("k,n", [(1, 5), (3, 8), (7, 32), (31, 32), (5, 5), (9, 4)])
def test_oversample_fills_exactly_to_n_and_spreads_duplicates(k, n):
    ids = [10 * i for i in range(k)]
    out = oversample(ids, n)
    assert len(out) == max(n, k)
    assert [i for i, dup in out if not dup] == ids  # every original once, in order, unflagged
    if k < n:
        assert sum(dup for _, dup in out) == n - k
        copies = Counter(i for i, _ in out)
        assert max(copies.values()) - min(copies.values()) <= 1  # spread evenly
        for pos, (i, dup) in enumerate(out):  # a duplicate follows its original
            if dup:
                assert out[pos - 1][0] == i
    assert oversample([], n) == []


def test_oversample_extra_copies_are_spread_over_the_sequence():
    out = oversample(list(range(10)), 13)  # three ids get a second copy
    twice = sorted(i for i, c in Counter(i for i, _ in out).items() if c == 2)
    assert twice == [1, 5, 8]  # one per third of the sequence, not the first three


# --------------------------------------------------------------------------- fallback chain
def test_fallback_runs_only_where_the_primary_finds_too_little():
    # primary: a confident face on even frames, nothing on odd frames
    primary = ScriptedDetector("fast", lambda k, im: [_face(100, 100, 50, 0.99)] if k % 2 == 0 else [])
    fallback = ScriptedDetector("strong", lambda k, im: [_face(200, 120, 60, 0.97)])
    c = FallbackDetector(primary, fallback, min_faces=1, confident_score=0.9, batch_size=3)
    res = c.detect(_frames(6))
    assert [r.detector for r in res] == ["fast", "strong"] * 3
    assert [r.tried for r in res] == [("fast",), ("fast", "strong")] * 3
    assert len(fallback.seen) == 3 and c.stats.fallback_frames == 3
    assert c.stats.sent == Counter({"fast": 6, "strong": 3})
    assert c.stats.kept == Counter({"fast": 3, "strong": 3})


def test_low_scores_and_min_faces_trigger_the_fallback():
    weak = ScriptedDetector("fast", lambda k, im: [_face(10, 10, 40, 0.6)])
    two = ScriptedDetector("strong", lambda k, im: [_face(10, 10, 40, 0.95), _face(300, 10, 40, 0.93)])
    res = FallbackDetector(weak, two, min_faces=1, confident_score=0.9).detect(_frames(2))
    assert [r.detector for r in res] == ["strong", "strong"] and len(res[0].faces) == 2
    # min_faces=3: neither reaches it; the fallback found more confident faces -> kept
    one = ScriptedDetector("fast", lambda k, im: [_face(10, 10, 40, 0.99)])
    res = FallbackDetector(one, two, min_faces=3).detect(_frames(1))
    assert res[0].detector == "strong" and res[0].tried == ("fast", "strong")
    # fallback finding nothing keeps the primary's (weak) faces
    none = ScriptedDetector("strong", lambda k, im: [])
    res = FallbackDetector(weak, none).detect(_frames(1))
    assert res[0].detector == "fast" and res[0].faces[0].score == 0.6
    # neither finds anything
    empty = ScriptedDetector("fast", lambda k, im: [])
    res = FallbackDetector(empty, none).detect(_frames(1))
    assert res[0].detector is None and res[0].faces == [] and res[0].tried == ("fast", "strong")


def test_boxes_are_mapped_back_to_full_resolution():
    """Detectors see 960-wide (primary) and 1280-wide (fallback) copies of a 1920x1080
    frame; the faces come back in 1920x1080 pixels."""
    primary = ScriptedDetector("fast", lambda k, im: [])
    fallback = ScriptedDetector("strong", lambda k, im: [_face(im.shape[1] / 4, im.shape[0] / 4, 64, 0.99)])
    c = FallbackDetector(primary, fallback, primary_max_side=960, fallback_max_side=1280)
    res = c.detect(_frames(1))
    assert primary.seen == [(540, 960)] and fallback.seen == [(720, 1280)]
    f = res[0].faces[0]
    np.testing.assert_allclose(f.box, (480, 270, 480 + 96, 270 + 96), atol=1e-6)
    np.testing.assert_allclose(f.landmarks[0], (480 + 0.3 * 96, 270 + 0.4 * 96), atol=1e-4)
    assert f.detector == "strong"


def test_real_low_light_frame_needs_the_fallback(videos_dir):
    """dfdc_abofeumbvv_lowlight frame 37: MTCNN finds no face in the dim room, RetinaFace does."""
    import facesieve
    from facesieve.video.sampling import VideoReader

    with VideoReader(videos_dir / "dfdc_abofeumbvv_lowlight.mp4", detect_max_side=960) as r:
        frames = list(r.read([37]))
    c = FallbackDetector(facesieve.load("mtcnn"), facesieve.load("retinaface-mnet025"))
    res = c.detect(frames)[0]
    assert res.tried == ("mtcnn", "retinaface-mnet025")
    assert res.detector == "retinaface-mnet025"
    face = res.faces[0]
    assert face.score > 0.9
    # the speaker's face is ~140 px tall in the 1080p frame (README); boxes are in 1080p pixels
    assert 80 < face.height < 220 and 0 <= face.box[0] < face.box[2] <= 1920
