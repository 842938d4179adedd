"""Training building blocks on constructed cases with known answers: augmentation (mirror
landmark swap, crops), anchor matching, hard negative mining, OHEM, MTCNN sample classes."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from facesieve.data.transforms import (
    LANDMARK_FLIP_ORDER,
    RetinaFaceAugment,
    Sample,
    crop,
    hflip,
    pad_to_square,
    photometric_distort,
    random_square_crop,
    to_chw_tensor_array,
)
from facesieve.training.losses import (
    LANDMARK,
    NEGATIVE,
    PART,
    POSITIVE,
    MTCNNLossWeights,
    hard_negative_mask,
    masked_l2,
    mtcnn_loss,
    multibox_loss,
    ohem_cross_entropy,
)
from facesieve.training.matcher import box_iou_torch, match_anchors
from facesieve.training.mtcnn_samples import (
    SampleSet,
    balance,
    box_targets,
    classify_iou,
    crop_resize,
    landmark_samples,
    landmark_targets,
    mirror_samples,
    random_samples_for_image,
    samples_from_candidates,
)

# A face in a 100x60 image: eyes at y=20, left eye (smaller x) at x=30, right eye at x=50.
FACE_LM = np.array([[[30, 20], [50, 20], [40, 30], [32, 40], [48, 40]]], np.float32)


def _sample(w: int = 100, h: int = 60) -> Sample:
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :10] = 255  # a white stripe on the left edge
    return Sample(img, np.array([[20, 10, 60, 50]], np.float32), FACE_LM.copy(), np.array([True]))


# ---------------------------------------------------------------- augmentation


def test_hflip_moves_points_and_swaps_left_right_landmarks():
    s = hflip(_sample())
    np.testing.assert_allclose(s.boxes, [[40, 10, 80, 50]])  # x -> 100 - x
    # old right eye (50, 20) -> x=50 is now the left eye (smaller x); old left eye (30) -> 70
    np.testing.assert_allclose(s.landmarks[0], [[50, 20], [70, 20], [60, 30], [52, 40], [68, 40]])
    lm = s.landmarks[0]
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]  # left_eye/mouth_left keep the smaller x
    assert s.image[:, -10:].min() == 255 and s.image[:, :10].max() == 0
    twice = hflip(s)
    np.testing.assert_allclose(twice.landmarks, FACE_LM)
    assert LANDMARK_FLIP_ORDER == (1, 0, 2, 4, 3)


def test_crop_keeps_faces_by_centre_and_clips():
    img = np.zeros((100, 100, 3), np.uint8)
    boxes = np.array([[10, 10, 30, 30], [40, 40, 80, 80], [85, 85, 99, 99]], np.float32)
    lms = np.zeros((3, 5, 2), np.float32) + boxes[:, None, :2]
    s = crop(Sample(img, boxes, lms, np.ones(3, bool)), (0, 0, 70, 70))
    # face 2's centre (60, 60) is inside -> kept and clipped to the crop; face 3's is outside
    np.testing.assert_allclose(s.boxes, [[10, 10, 30, 30], [40, 40, 70, 70]])
    assert s.image.shape == (70, 70, 3)


def test_random_square_crop_scales_and_face_inside():
    rng = np.random.default_rng(0)
    s = _sample(200, 120)
    sides = set()
    for _ in range(50):
        c = random_square_crop(s, rng)
        assert c is not None and c.image.shape[0] == c.image.shape[1]
        sides.add(c.image.shape[0])
        assert len(c.boxes) == 1 and c.boxes.min() >= 0 and c.boxes.max() <= c.image.shape[0]
    assert sides <= {int(f * 120) for f in (0.3, 0.45, 0.6, 0.8, 1.0)}
    assert max(sides) == 120  # the 40 px face fits only in the larger crops (0.45*120=54 can too)
    # no face fits entirely in any crop -> None
    big = Sample(np.zeros((50, 400, 3), np.uint8), np.array([[0, 0, 300, 50]]), np.zeros((1, 5, 2)), np.zeros(1, bool))
    assert random_square_crop(big, rng, max_tries=20) is None


def test_pad_to_square():
    s = pad_to_square(_sample(100, 60), (1, 2, 3))
    assert s.image.shape == (100, 100, 3) and tuple(s.image[99, 99]) == (1, 2, 3)


def test_photometric_distort_changes_what_its_docstring_says():
    """Each change happens with probability 1/2 and within its documented range."""
    gray = np.full((8, 8, 3), 128, np.uint8)
    means = []
    for seed in range(200):
        out = photometric_distort(gray, np.random.default_rng(seed))
        assert out.shape == gray.shape and out.dtype == np.uint8
        # saturation and hue leave a gray pixel gray; brightness +-32 then contrast x0.5..1.5
        # (either order) keeps it within [(128 - 32) * 0.5, (128 + 32) * 1.5] = [48, 240]
        assert np.ptp(out.astype(int), axis=2).max() <= 1 and 47 <= out.min() and out.max() <= 241
        means.append(out.mean())
    changed = np.abs(np.array(means) - 128) > 1
    # brightness or contrast applied: 1 - 1/4 of the seeds (+-5 sigma of a binomial of 200)
    assert 0.75 - 0.15 < changed.mean() < 0.75 + 0.15, changed.mean()
    assert min(means) < 80 and max(means) > 180  # both directions, most of the range

    # a saturated colour: hue moved (shift of 1..18 of 180) on about half the seeds
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 200
    hue = []
    for seed in range(200):
        out = photometric_distort(red, np.random.default_rng(seed))
        h = cv2.cvtColor(out[:1, :1], cv2.COLOR_RGB2HSV)[0, 0, 0].astype(int)
        hue.append(min(h, 180 - h))  # distance from red (hue 0) on the hue circle
    hue = np.array(hue)
    assert hue.max() <= 19 and 0.5 - 0.15 < (hue >= 2).mean() < 0.5 + 0.15, hue


def test_retinaface_augment_output_normalised():
    aug = RetinaFaceAugment(image_size=64)
    rng = np.random.default_rng(3)
    for _ in range(10):
        out = aug(_sample(), rng)
        assert out.image.shape == (64, 64, 3)
        assert out.boxes.min() >= 0 and out.boxes.max() <= 1.0 + 1e-6
        lm = out.landmarks[0]
        assert lm[0, 0] < lm[1, 0]  # left eye stays left of right eye whether mirrored or not


def test_to_chw_bgr_mean():
    img = np.zeros((2, 3, 3), np.uint8)
    img[..., 0] = 200  # R
    x = to_chw_tensor_array(img, mean=(104, 117, 123))
    assert x.shape == (3, 2, 3)
    np.testing.assert_allclose(x[:, 0, 0], [-104, -117, 200 - 123])


# ---------------------------------------------------------------- matching


def test_match_threshold_and_forced_best_anchor():
    anchors = torch.tensor([[0, 0, 10, 10], [0, 0, 20, 20], [50, 50, 60, 60], [100, 100, 110, 110]], dtype=torch.float)
    gt = torch.tensor([[0, 0, 12, 12], [48, 48, 64, 64]], dtype=torch.float)
    m = match_anchors(anchors, gt, iou_threshold=0.5)
    # anchor0 IoU(g0)=100/144=.69 -> pos; anchor1 IoU(g0)=144/400=.36 -> neg at .5;
    # g1's best anchor is anchor2 (IoU 100/256=.39 < .5) -> forced positive
    assert m.positive.tolist() == [True, False, True, False]
    assert m.matched_gt[0] == 0 and m.matched_gt[2] == 1
    assert m.iou[2] == 2.0
    m35 = match_anchors(anchors, gt, iou_threshold=0.35)
    assert m35.positive.tolist() == [True, True, True, False]


def test_match_unreachable_face_and_empty():
    anchors = torch.tensor([[0, 0, 100, 100], [200, 200, 300, 300]], dtype=torch.float)
    tiny = torch.tensor([[0, 0, 4, 4]], dtype=torch.float)  # best IoU .0016 < 0.2: not forced
    assert not match_anchors(anchors, tiny).positive.any()
    empty = match_anchors(anchors, torch.zeros((0, 4)))
    assert not empty.positive.any() and empty.matched_gt.shape == (2,)


def test_match_shared_best_anchor_goes_to_later_face():
    anchors = torch.tensor([[0, 0, 10, 10], [30, 30, 40, 40]], dtype=torch.float)
    gt = torch.tensor([[0, 0, 9, 9], [0, 0, 11, 11]], dtype=torch.float)
    m = match_anchors(anchors, gt)
    assert m.matched_gt[0] == 1 and m.positive.tolist() == [True, False]


def test_box_iou_torch_matches_numpy():
    from facesieve.ops.boxes import box_iou

    rng = np.random.default_rng(0)
    a = rng.uniform(0, 50, (5, 2)); a = np.concatenate([a, a + rng.uniform(1, 20, (5, 2))], 1)
    b = rng.uniform(0, 50, (4, 2)); b = np.concatenate([b, b + rng.uniform(1, 20, (4, 2))], 1)
    np.testing.assert_allclose(box_iou_torch(torch.tensor(a), torch.tensor(b)).numpy(), box_iou(a, b), rtol=1e-6)


# ---------------------------------------------------------------- RetinaFace loss


def test_hard_negative_mask_picks_hardest_per_image():
    bg = torch.tensor([[0.1, 0.9, 0.5, 0.7, 0.3, 5.0], [0.2, 0.1, 0.8, 0.4, 0.6, 0.0]])
    pos = torch.tensor([[False, False, False, False, False, True], [False] * 6])
    neg = hard_negative_mask(bg, pos, neg_pos_ratio=2)
    # image 0: one positive -> 2 hardest negatives (0.9, 0.7), the positive's own loss never counts
    assert neg[0].tolist() == [False, True, False, True, False, False]
    # image 1: no positive -> no negative
    assert not neg[1].any()
    many = hard_negative_mask(bg[:1], pos[:1], neg_pos_ratio=100)
    assert int(many.sum()) == 5  # capped by the number of non-positive anchors (A - 1)


def test_multibox_loss_terms_known_values():
    b, a = 1, 4
    conf = torch.zeros(b, a, 2)
    conf[0, 1] = torch.tensor([0.0, 3.0])  # a confident "face" on a negative anchor: the hardest
    loc_p = torch.zeros(b, a, 4)
    loc_t = torch.zeros(b, a, 4)
    loc_t[0, 0] = torch.tensor([0.5, 0, 0, 0])  # smooth-L1 0.5*0.5^2 = 0.125
    lm_p = torch.zeros(b, a, 10)
    lm_t = torch.full((b, a, 10), 2.0)  # smooth-L1 per coordinate 2 - 0.5 = 1.5
    pos = torch.tensor([[True, False, False, False]])
    lm_pos = torch.tensor([[False, False, False, False]])
    out = multibox_loss(loc_p, conf, lm_p, loc_t, lm_t, pos, lm_pos, neg_pos_ratio=1, loc_weight=2.0)
    assert out.loc.item() == pytest.approx(0.125)
    assert out.landmark.item() == 0.0  # no positive has landmarks
    ce_pos = np.log(2.0)  # logits (0, 0)
    ce_neg = -np.log(np.exp(0) / (np.exp(0) + np.exp(3)))
    assert out.conf.item() == pytest.approx(ce_pos + ce_neg, rel=1e-5)
    assert out.total.item() == pytest.approx(2 * 0.125 + ce_pos + ce_neg, rel=1e-5)
    out2 = multibox_loss(loc_p, conf, lm_p, loc_t, lm_t, pos, pos, neg_pos_ratio=1)
    assert out2.landmark.item() == pytest.approx(15.0)  # 10 coords * 1.5 / 1 landmark positive


# ---------------------------------------------------------------- MTCNN loss


def test_ohem_keeps_hardest_70_percent():
    logits = torch.zeros(12, 2)
    labels = torch.tensor([0] * 5 + [1] * 5 + [PART, LANDMARK])
    # per-sample losses: make them 1..10 by putting margins on the right class
    losses = torch.arange(1, 11, dtype=torch.float)
    for i in range(10):
        # CE with logits (0, z) for class c: choose z so that CE == losses[i]
        p = torch.exp(-losses[i])  # prob of the true class
        z = torch.log(p / (1 - p))
        logits[i] = torch.tensor([0.0, z]) if labels[i] == 1 else torch.tensor([z, 0.0])
    got = ohem_cross_entropy(logits, labels, keep_ratio=0.7)
    assert got.item() == pytest.approx(np.mean(np.arange(4, 11)), rel=1e-4)  # top 7 of 10
    none = ohem_cross_entropy(logits[10:], labels[10:])
    assert none.item() == 0.0


def test_masked_l2_and_mtcnn_loss_weights():
    pred = torch.zeros(4, 4)
    tgt = torch.ones(4, 4)
    assert masked_l2(pred, tgt, torch.tensor([True, False, True, False])).item() == pytest.approx(4.0)
    assert masked_l2(pred, tgt, torch.zeros(4, dtype=torch.bool)).item() == 0.0
    labels = torch.tensor([NEGATIVE, POSITIVE, PART, LANDMARK])
    logits = torch.zeros(4, 2)
    out = mtcnn_loss(logits, pred, torch.zeros(4, 10), labels, tgt, torch.ones(4, 10), MTCNNLossWeights.for_stage("onet"))
    assert out["box"].item() == pytest.approx(4.0)  # positive and part
    assert out["landmark"].item() == pytest.approx(10.0)  # landmark sample only
    assert out["total"].item() == pytest.approx(np.log(2) + 0.5 * 4 + 1.0 * 10, rel=1e-5)
    assert MTCNNLossWeights.for_stage("pnet") == MTCNNLossWeights(1.0, 0.5, 0.5)


# ---------------------------------------------------------------- MTCNN samples


def test_classify_iou_bands():
    got = classify_iou(np.array([0.0, 0.29, 0.3, 0.39, 0.4, 0.64, 0.65, 1.0]))
    assert got.tolist() == [NEGATIVE, NEGATIVE, -1, -1, PART, PART, POSITIVE, POSITIVE]


def test_samples_from_candidates_classes_and_targets():
    img = np.zeros((100, 100, 3), np.uint8)
    gt = np.array([[20, 20, 60, 60]], np.float64)
    cands = np.array([
        [20, 20, 60, 60],   # IoU 1 -> positive, zero offsets
        [24, 20, 64, 60],   # IoU 36*40/(2*1600-1440) = .818 -> positive
        [35, 20, 75, 60],   # IoU 25/55 = .4545 -> part
        [70, 70, 90, 90],   # IoU 0 -> negative
        [32, 20, 72, 60],   # IoU 28/52 = .538 -> part
        [40, 20, 80, 60],   # IoU 20/60 = .333 -> discarded
    ], np.float64)
    s = samples_from_candidates(img, gt, cands, 12)
    assert s.labels.tolist() == [POSITIVE, POSITIVE, PART, NEGATIVE, PART]
    np.testing.assert_allclose(s.boxes[0], 0, atol=1e-7)
    np.testing.assert_allclose(s.boxes[1], [-0.1, 0, -0.1, 0], atol=1e-6)
    np.testing.assert_allclose(s.boxes[3], 0)
    assert s.images.shape == (5, 12, 12, 3)


def test_box_and_landmark_targets_invert():
    crops = np.array([[10, 10, 50, 50]], np.float64)
    gt = np.array([[14, 6, 46, 58]], np.float64)
    t = box_targets(crops, gt)
    np.testing.assert_allclose(crops + t * 40, gt, atol=1e-5)
    lm = FACE_LM.astype(np.float64)
    lt = landmark_targets(crops, lm).reshape(1, 5, 2)
    np.testing.assert_allclose(crops[:, None, :2] + lt * 40, lm, atol=1e-5)


def test_mirror_samples_targets_follow_the_image():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (1, 10, 10, 3), dtype=np.uint8)
    boxes = np.array([[0.1, 0.2, -0.3, 0.05]], np.float32)
    lms = np.array([[0.3, 0.4, 0.7, 0.4, 0.5, 0.6, 0.35, 0.8, 0.65, 0.8]], np.float32)
    mi, mb, ml = mirror_samples(img, boxes, lms)
    np.testing.assert_array_equal(mi[0], img[0, :, ::-1])
    np.testing.assert_allclose(mb, [[0.3, 0.2, -0.1, 0.05]])
    # left eye of the mirrored crop is the old right eye (0.7) mirrored: 1 - 0.7 = 0.3
    np.testing.assert_allclose(ml.reshape(5, 2), [[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]], atol=1e-6)
    # the box round trip: crop [0,10] side 10, face from offsets; mirrored face == mirrored box
    face = np.array([0 + 0.1 * 10, 0.2 * 10, 10 - 0.3 * 10, 10 + 0.05 * 10])
    mface = np.array([0 + mb[0, 0] * 10, mb[0, 1] * 10, 10 + mb[0, 2] * 10, 10 + mb[0, 3] * 10])
    np.testing.assert_allclose(mface[[0, 2]], 10 - face[[2, 0]], atol=1e-5)


def test_random_samples_and_balance():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    gt = np.array([[40, 30, 90, 90]], np.float32)
    lms = np.zeros((1, 5, 2), np.float32) + [[50, 50], [80, 50], [65, 65], [55, 80], [75, 80]]
    s = random_samples_for_image(img, gt, lms, np.array([True]), 12, rng)
    c = s.counts()
    assert c["negative"] > 0 and c["positive"] > 0 and c["part"] > 0 and c["landmark"] > 0
    # every positive's / part's box target really describes a crop of IoU >= 0.65 / 0.4..0.65
    # with its face: re-derive the face in crop units (crop = unit square, face = square + t)
    for label, lo, hi in ((POSITIVE, 0.65, 1.0), (PART, 0.4, 0.65)):
        t = s.boxes[s.labels == label].astype(np.float64)
        face = np.column_stack([t[:, 0], t[:, 1], 1 + t[:, 2], 1 + t[:, 3]])
        iw = np.clip(np.minimum(face[:, 2], 1) - np.maximum(face[:, 0], 0), 0, None)
        ih = np.clip(np.minimum(face[:, 3], 1) - np.maximum(face[:, 1], 0), 0, None)
        inter = iw * ih
        iou = inter / (1 + (face[:, 2] - face[:, 0]) * (face[:, 3] - face[:, 1]) - inter)
        assert len(iou) and np.all(iou >= lo - 1e-4) and np.all(iou < hi + 1e-4), (label, iou.min(), iou.max())
    lm_t = s.landmarks[s.labels == LANDMARK].reshape(-1, 5, 2)
    assert len(lm_t) and np.all((lm_t > -0.25) & (lm_t < 1.25))  # landmarks inside the face, crop IoU >= .65
    big = SampleSet.concat([s] * 3, 12)
    b = balance(big, rng, (3, 1, 1, 2))
    cb = b.counts()
    unit = min(cb["positive"], cb["part"], cb["negative"] / 3, cb["landmark"] / 2)
    assert cb["negative"] <= round(3 * unit) + 1 and cb["landmark"] <= round(2 * unit) + 1
    assert min(cb.values()) > 0


def test_landmark_samples_iou_and_crop_resize_padding():
    rng = np.random.default_rng(1)
    img = np.full((50, 50, 3), 7, np.uint8)
    gt = np.array([[10, 10, 40, 40]], np.float64)
    lms = np.zeros((1, 5, 2)) + 25
    s = landmark_samples(img, gt, lms, 24, 5, rng)
    assert len(s) > 0 and set(s.labels.tolist()) == {LANDMARK}
    out = crop_resize(img, np.array([[-10, -10, 10, 10]]), 4)
    assert out[0, 0, 0, 0] == 0 and out[0, -1, -1, 0] == 7  # outside reads 0, inside keeps pixels


def test_sample_set_save_load(tmp_path):
    s = SampleSet(np.ones((2, 12, 12, 3), np.uint8), np.array([0, 1], np.int8), np.zeros((2, 4), np.float32),
                  np.zeros((2, 10), np.float32))
    s.save(tmp_path / "s.npz")
    t = SampleSet.load(tmp_path / "s.npz")
    assert t.labels.tolist() == [0, 1] and t.images.shape == (2, 12, 12, 3)
