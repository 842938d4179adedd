"""Geometry and I/O building blocks, checked on synthetic cases with known answers."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facesieve.io import ImageError, atomic_write_text, load_image
from facesieve.ops import batched_nms, box_iou, nms
from facesieve.types import Face


def test_box_iou_known_values():
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30]], float)
    np.testing.assert_allclose(box_iou(a, b)[0], [50 / 150, 1.0, 0.0])


def test_nms_union_and_min_modes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [2, 2, 6, 6], [50, 50, 60, 60]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    # IoU(0,1)=81/119 > 0.5 suppressed; box 2 lies inside box 0: IoU 0.16 but min-overlap 1.0
    assert nms(boxes, scores, 0.5).tolist() == [0, 2, 3]
    assert nms(boxes, scores, 0.5, mode="min").tolist() == [0, 3]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_batched_nms_keeps_groups_apart():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], float)
    keep = batched_nms(boxes, np.array([0.9, 0.8, 0.7]), np.array([0, 1, 0]), 0.5)
    assert sorted(keep.tolist()) == [0, 1]


def test_face_dict_round_trip():
    f = Face((1.0, 2.0, 30.5, 40.25), 0.9, np.arange(10, dtype=np.float32).reshape(5, 2), "m")
    g = Face.from_dict(f.to_dict())
    assert g.box == f.box and g.score == pytest.approx(0.9) and np.allclose(g.landmarks, f.landmarks)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "LA", "1"])
def test_load_image_modes(tmp_path, mode):
    rgb = np.zeros((8, 9, 3), np.uint8)
    rgb[:, :, 0] = 200
    img = Image.fromarray(rgb).convert(mode) if mode != "I;16" else Image.fromarray(
        (np.full((8, 9), 40000)).astype(np.uint16))
    ext = "tiff" if mode in ("CMYK", "I;16") else "png"
    path = tmp_path / f"x.{ext}"
    img.save(path)
    out = load_image(path)
    assert out.shape == (8, 9, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    # expected RGB of the red (200, 0, 0) image after each mode's conversion, derived by hand:
    # L / LA: ITU-R 601 luma 0.299 * 200 = 59.8; P: web palette, dithered between (204, 0, 0) and
    # (153, 0, 0) to a mean red of 200;
    # CMYK: lossless for this colour; I;16: 40000 / 257 = 155.6 on every channel
    expected = {"L": (60, 60, 60), "LA": (60, 60, 60), "RGBA": (200, 0, 0),
                "CMYK": (200, 0, 0), "I;16": (156, 156, 156)}
    if mode == "1":  # dithered black and white: gray pixels whose mean is the luma 59.8
        assert set(np.unique(out).tolist()) <= {0, 255} and (out == out[..., :1]).all()
        assert abs(out.mean() - 59.8) < 20
    elif mode == "P":
        assert set(out[..., 0].ravel().tolist()) <= {153, 204} and not out[..., 1:].any()
        assert abs(out[..., 0].mean() - 200) < 3
    else:
        np.testing.assert_allclose(out.reshape(-1, 3).astype(int), np.tile(expected[mode], (72, 1)), atol=1)


def test_load_image_applies_exif_rotation(tmp_path):
    a = np.zeros((10, 20, 3), np.uint8)
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif)
    assert load_image(path).shape == (20, 10, 3)


def test_load_image_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(ImageError, match="nope.jpg: file not found"):
        load_image(missing)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty.jpg: file is empty"):
        load_image(empty)
    text = tmp_path / "notes.jpg"
    text.write_text("hello, not an image")
    with pytest.raises(ImageError, match="notes.jpg: not a recognised image"):
        load_image(text)
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ImageError, match="trunc.jpg"):
        load_image(trunc)
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((4, 4, 5), np.uint8))


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_text(target, "old")

    class Boom(Exception):
        pass

    from facesieve.io import atomic_open

    with pytest.raises(Boom):
        with atomic_open(target, "w") as f:
            f.write("half")
            raise Boom
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_write_uses_umask_mode(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        import importlib

        import facesieve.io.atomic as atomic

        importlib.reload(atomic)
        target = tmp_path / "perm.txt"
        atomic.atomic_write_text(target, "x")
        assert (target.stat().st_mode & 0o777) == 0o644
    finally:
        os.umask(old)


def test_top_level_api_exports_video_lazily():
    import facesieve
    import facesieve.video

    assert facesieve.extract_video is facesieve.video.extract_video
    assert facesieve.VideoConfig is facesieve.video.VideoConfig
    with pytest.raises(AttributeError):
        facesieve.no_such_name  # noqa: B018
