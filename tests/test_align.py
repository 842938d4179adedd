"""Similarity estimation, aligned and box crops: synthetic cases with known answers and a real face."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from facesieve.types import Face
from facesieve.align import (
    ARCFACE_TEMPLATE,
    align_face,
    box_crop,
    select_faces,
    similarity_transform,
    transform_points,
)


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    r = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.hstack([r, [[tx], [ty]]])


@pytest.mark.parametrize("angle,scale", [(0.0, 1.0), (23.0, 0.37), (-140.0, 2.5)])
def test_similarity_transform_recovers_known_transform(angle, scale):
    m = _similarity(angle, scale, 12.5, -40.0)
    src = np.random.default_rng(0).uniform(0, 500, size=(5, 2))
    est = similarity_transform(src, transform_points(m, src))
    np.testing.assert_allclose(est, m, atol=1e-9)


def test_similarity_transform_is_least_squares_and_never_reflects():
    src = ARCFACE_TEMPLATE.copy()
    mirrored = src * [-1, 1]  # a reflection cannot be produced by a similarity
    m = similarity_transform(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0
    noisy = transform_points(_similarity(10, 1.3, 5, 6), src) + np.random.default_rng(1).normal(0, 0.5, (5, 2))
    m = similarity_transform(src, noisy)
    resid = np.linalg.norm(transform_points(m, src) - noisy, axis=1)
    assert resid.mean() < 1.0  # the fit absorbs the transform, leaving only the noise
    with pytest.raises(ValueError, match="degenerate"):
        similarity_transform(np.ones((5, 2)), src)
    with pytest.raises(ValueError, match="NaN"):
        similarity_transform(np.full((5, 2), np.nan), src)


def _dot_centroids(img: np.ndarray, points: np.ndarray, radius: int) -> np.ndarray:
    """Centroid of the bright pixels near each expected point."""
    gray = img.astype(np.float64).mean(axis=2)
    out = []
    for x, y in points:
        x0, y0 = int(x) - radius, int(y) - radius
        win = gray[max(y0, 0): y0 + 2 * radius + 1, max(x0, 0): x0 + 2 * radius + 1]
        ys, xs = np.nonzero(win > 128)
        assert len(xs), f"no dot near {(x, y)}"
        out.append([xs.mean() + max(x0, 0), ys.mean() + max(y0, 0)])
    return np.array(out)


@pytest.mark.parametrize("size,angle,scale", [(112, 0, 1.0), (112, 30, 2.2), (224, -65, 0.8), (112, 12, 9.0)])
def test_align_face_puts_landmarks_on_the_template(size, angle, scale):
    """Dots drawn at a rotated/scaled template in a big image land on the template in the crop
    (scale 9 exercises the anti-aliasing pre-shrink)."""
    m = _similarity(angle, scale, 900, 700)
    lms = transform_points(m, ARCFACE_TEMPLATE - 56)
    img = np.zeros((1600, 1900, 3), np.uint8)
    for x, y in lms:
        cv2.circle(img, (int(round(x)), int(round(y))), max(2, int(2.5 * scale)), (255, 255, 255), -1, cv2.LINE_AA)
    crop, mat = align_face(img, lms, size=size)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    want = ARCFACE_TEMPLATE * size / 112
    np.testing.assert_allclose(transform_points(mat, lms), want, atol=1e-6)
    found = _dot_centroids(crop, want, radius=int(6 * size / 112))
    assert np.abs(found - want).max() < 1.0 * size / 112


def test_box_crop_margin_square_and_black_outside():
    img = np.full((100, 200, 3), 200, np.uint8)
    img[40:60, 90:110] = (255, 0, 0)  # red 20x20 square = the "face"
    crop, m = box_crop(img, (90, 40, 110, 60), margin=0.5, size=80)
    assert crop.shape == (80, 80, 3)
    # the 20 px box widened by 10 px per side = 40 px -> 80 px: the red square is the centre 40x40
    assert (crop[22:58, 22:58] == (255, 0, 0)).all()
    assert (crop[:18] != (255, 0, 0)).any(axis=2).all()
    np.testing.assert_allclose(transform_points(m, [[90, 40], [110, 60]]), [[20, 20], [60, 60]])
    # a box at the corner: what lies outside the image is black
    crop, _ = box_crop(img, (0, 0, 20, 20), margin=0.5, size=40)
    assert (crop[:8, :8] == 0).all() and (crop[20:30, 20:30] == 200).all()
    # non-square, native size
    crop, _ = box_crop(img, (10, 10, 50, 30), margin=0.0, size=None, square=False)
    assert crop.shape == (20, 40, 3)


def test_select_faces():
    faces = [Face((0, 0, 10, 10), 0.9), Face((0, 0, 50, 50), 0.6), Face((0, 0, 20, 20), 0.99)]
    assert [f.score for f in select_faces(faces, "all")] == [0.99, 0.9, 0.6]
    assert select_faces(faces, "largest")[0].score == 0.6
    assert select_faces(faces, "best")[0].score == 0.99
    assert select_faces([], "largest") == []
    with pytest.raises(ValueError, match="keep"):
        select_faces(faces, "first")


def test_aligned_crop_of_a_real_face_has_its_landmarks_on_the_template(videos_dir):
    """A real frame: align on RetinaFace's landmarks, re-detect on the crop (padded so the
    face is not cut by the border): the re-detected landmarks sit on the template."""
    import facesieve
    from facesieve.video.sampling import VideoReader

    with VideoReader(videos_dir / "dfdc_lynaeydofd_real.mp4", detect_max_side=960) as r:
        frame = next(iter(r.read([20])))
    det = facesieve.load("retinaface-mnet025")
    faces = det.detect(frame.detect_image)
    assert len(faces) >= 1
    face = max(faces, key=lambda f: f.score)
    lms = face.landmarks / frame.detect_scale  # full-resolution pixels
    crop, _ = align_face(frame.image, lms, size=224)
    pad = 112
    padded = cv2.copyMakeBorder(crop, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    again = det.detect(padded)
    assert again, "no face found in the aligned crop"
    best = max(again, key=lambda f: f.score)
    assert best.score > 0.9
    err = np.linalg.norm(best.landmarks - pad - ARCFACE_TEMPLATE * 2, axis=1)
    assert err.max() < 12.0, err  # 224 px crop: within ~5% of the face width
