"""Face as a value: ==, exact dict / JSON round trip with extra, clipping and cropping
geometry, and faces_to_arrays for vectorised users."""
from __future__ import annotations

import json

import numpy as np
import pytest

import facesieve
from facesieve import Face, faces_to_arrays


def _face(seed: int = 0, **kw) -> Face:
    rng = np.random.default_rng(seed)
    x1, y1 = rng.uniform(-20, 300, 2)
    args = dict(box=(float(x1), float(y1), float(x1 + rng.uniform(5, 90)), float(y1 + rng.uniform(5, 90))),
                score=float(rng.uniform(0.5, 1)),
                landmarks=rng.uniform(-20, 400, (5, 2)).astype(np.float32), detector="retinaface-mnet025")
    args.update(kw)
    return Face(**args)


def test_faces_compare_by_value():
    a, b = _face(), _face()
    assert a == b and not (a != b)  # numpy landmarks no longer make == raise
    assert a != _face(1)
    lm = a.landmarks.copy()
    lm[4, 1] += 0.5
    assert a != _face(landmarks=lm)
    assert a != _face(landmarks=None) and _face(landmarks=None) == _face(landmarks=None)
    assert a != _face(detector="mtcnn") and a != _face(score=a.score / 2)
    assert a != _face(extra={"track": 1}) and _face(extra={"track": 1}) == _face(extra={"track": 1})
    assert _face(extra={"emb": np.arange(3)}) == _face(extra={"emb": np.arange(3)})
    assert _face(extra={"emb": np.arange(3)}) != _face(extra={"emb": np.arange(1, 4)})
    assert a != "face" and a in [_face(1), _face()]
    with pytest.raises(TypeError):
        hash(a)  # mutable value type


@pytest.mark.parametrize("seed", range(20))
def test_dict_and_json_round_trip_is_exact(seed):
    extra = {"track_id": seed, "tags": ["a", "b"], "quality": {"blur": 0.25}}
    f = _face(seed, extra=extra)
    d = f.to_dict()
    assert Face.from_dict(d) == f
    g = Face.from_dict(json.loads(json.dumps(d)))  # through JSON text
    assert g == f and g.box == f.box and np.array_equal(g.landmarks, f.landmarks) and g.extra == extra
    assert g.landmarks.dtype == np.float32 and g.landmarks.shape == (5, 2)
    no_lm = _face(seed, landmarks=None, detector="")
    assert Face.from_dict(json.loads(json.dumps(no_lm.to_dict()))) == no_lm


def test_rounded_dict_is_what_the_cli_writes():
    f = Face((1.23456, -9.87654, 30.5, 40.0004), 0.123456789, np.arange(10, dtype=np.float32).reshape(5, 2) / 3)
    d = f.to_dict(decimals=3)
    assert d["box"] == [1.235, -9.877, 30.5, 40.0] and d["score"] == 0.123457
    assert d["landmarks"][1] == [0.667, 1.0]


def test_extra_keys_may_not_shadow_the_fields():
    with pytest.raises(ValueError, match=r"extra key\(s\) \['score'\] clash"):
        _face(extra={"score": 2}).to_dict()


def test_from_dict_errors():
    with pytest.raises(KeyError):
        Face.from_dict({"score": 0.5})
    with pytest.raises(ValueError, match="needs 4 numbers"):
        Face.from_dict({"box": [1, 2, 3], "score": 0.5})


def test_clipped_geometry():
    f = Face((-10.0, 5.0, 30.0, 70.0), 0.9, np.array([[-3, 10], [20, 10], [10, 30], [0, 69], [35, 75]], np.float32),
             "m", {"k": 1})
    c = f.clipped(32, 64)
    assert c.box == (0.0, 5.0, 30.0, 64.0) and c.score == 0.9 and c.detector == "m" and c.extra == {"k": 1}
    assert c.landmarks.tolist() == [[0, 10], [20, 10], [10, 30], [0, 64], [32, 64]]
    assert f.box == (-10.0, 5.0, 30.0, 70.0) and f.landmarks[0, 0] == -3  # the original is untouched
    inside = Face((1.0, 2.0, 3.0, 4.0), 0.5)
    assert inside.clipped(10, 10) == inside
    outside = Face((50.0, 50.0, 60.0, 60.0), 0.5).clipped(10, 10)
    assert outside.box == (10.0, 10.0, 10.0, 10.0) and outside.area == 0


def test_crop_geometry():
    img = np.arange(10 * 12).reshape(10, 12)
    assert np.array_equal(Face((2.5, 1.2, 5.1, 4.0), 1.0).crop(img), img[1:4, 2:6])
    assert np.array_equal(Face((-4.0, -3.0, 3.0, 2.0), 1.0).crop(img), img[0:2, 0:3])  # cut by the corner
    assert np.array_equal(Face((10.5, 8.0, 15.0, 13.0), 1.0).crop(img), img[8:10, 10:12])
    assert Face((20.0, 20.0, 30.0, 30.0), 1.0).crop(img).size == 0  # wholly outside


def test_faces_to_arrays():
    faces = [_face(0), _face(1, landmarks=None), _face(2)]
    boxes, scores, lms = faces_to_arrays(faces)
    assert boxes.shape == (3, 4) and scores.shape == (3,) and lms.shape == (3, 5, 2)
    assert boxes.dtype == scores.dtype == lms.dtype == np.float32
    for i, f in enumerate(faces):
        assert boxes[i].tolist() == [float(np.float32(v)) for v in f.box] and scores[i] == np.float32(f.score)
    assert np.array_equal(lms[0], faces[0].landmarks) and np.isnan(lms[1]).all()
    r = facesieve.faces_to_arrays([])
    assert r.boxes.shape == (0, 4) and r.scores.shape == (0,) and r.landmarks.shape == (0, 5, 2)


def test_detector_faces_round_trip(example_image):
    for name in ("retinaface-mnet025", "mtcnn"):
        faces = facesieve.load(name).detect(example_image, score_threshold=0.3)
        assert faces
        assert [Face.from_dict(json.loads(json.dumps(f.to_dict()))) for f in faces] == faces
        boxes, scores, lms = faces_to_arrays(faces)
        assert np.allclose(boxes, [f.box for f in faces]) and np.array_equal(lms, np.stack([f.landmarks for f in faces]))


def test_crop_of_a_pil_image_equals_the_array_crop(example_image):
    from PIL import Image

    from facesieve.types import Face

    img = Image.open(example_image)
    arr = np.asarray(img.convert("RGB"))
    face = Face(box=(-5.5, 10.2, 120.7, 90.0), score=0.9)  # reaches outside the image on the left
    pil = face.crop(img.convert("RGB"))
    assert pil.size == (121, 80)  # x 0..121 (ceil 120.7), y 10..90 (floor 10.2)
    np.testing.assert_array_equal(np.asarray(pil), arr[10:90, 0:121])
    np.testing.assert_array_equal(face.crop(arr), arr[10:90, 0:121])
