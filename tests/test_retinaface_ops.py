"""Anchors and box coding: synthetic geometry with hand-computed answers."""
from __future__ import annotations

import math
from itertools import product

import numpy as np
import pytest
import torch

from facesieve.ops.anchors import AnchorGenerator
from facesieve.ops.box_coder import BoxCoder


def _reference_priors(height: int, width: int) -> np.ndarray:
    """biubug6's PriorBox loop, written out: normalised (cx, cy, w, h)."""
    out = []
    for sizes, step in zip(((16, 32), (64, 128), (256, 512)), (8, 16, 32)):
        for i, j in product(range(math.ceil(height / step)), range(math.ceil(width / step))):
            for s in sizes:
                out.append([(j + 0.5) * step / width, (i + 0.5) * step / height, s / width, s / height])
    return np.array(out)


def test_anchor_values_by_hand():
    a = AnchorGenerator()(16, 24)
    # stride 8: 2x3 cells, stride 16: 1x2, stride 32: 1x1; 2 sizes each
    assert a.shape == (18, 4) and a.dtype == np.float32
    np.testing.assert_array_equal(a[:3], [[4, 4, 16, 16], [4, 4, 32, 32], [12, 4, 16, 16]])
    np.testing.assert_array_equal(a[6], [4, 12, 16, 16])  # second row starts after 3 cells * 2 sizes
    np.testing.assert_array_equal(a[12:14], [[8, 8, 64, 64], [8, 8, 128, 128]])
    np.testing.assert_array_equal(a[16:], [[16, 16, 256, 256], [16, 16, 512, 512]])


@pytest.mark.parametrize("hw", [(37, 53), (64, 64), (1, 1), (101, 17)])
def test_anchors_are_biubug6_priors_in_pixels(hw):
    h, w = hw
    ref = _reference_priors(h, w) * [w, h, w, h]
    gen = AnchorGenerator()
    np.testing.assert_allclose(gen(h, w), ref, rtol=1e-6, atol=1e-4)
    assert gen.num_anchors(h, w) == len(ref)


def test_anchors_cached_and_read_only():
    gen = AnchorGenerator()
    a = gen(40, 60)
    assert gen(40, 60) is a and AnchorGenerator()(40, 60) is a
    with pytest.raises(ValueError):
        a[0, 0] = 1.0


def test_valid_mask_selects_the_smaller_images_anchors():
    gen = AnchorGenerator()
    mask = gen.valid_mask(40, 48, 17, 20)
    assert mask.shape == (gen.num_anchors(40, 48),) and mask.sum() == gen.num_anchors(17, 20)
    np.testing.assert_array_equal(gen(40, 48)[mask], gen(17, 20))


def test_decode_known_values():
    coder = BoxCoder((0.1, 0.2))
    anchors = np.array([[10, 20, 16, 16]] * 3, np.float32)
    loc = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [0, 0, math.log(2) / 0.2, 0]], np.float32)
    np.testing.assert_allclose(
        coder.decode_boxes(loc, anchors),
        [[2, 12, 18, 28], [3.6, 12, 19.6, 28], [-6, 12, 26, 28]],
        atol=1e-5,
    )
    pred = np.zeros((1, 10), np.float32)
    pred[0, 4:6] = [1, -1]  # third point (nose)
    pts = coder.decode_landmarks(pred, anchors[:1])
    np.testing.assert_allclose(pts[0].reshape(5, 2), [[10, 20], [10, 20], [11.6, 18.4], [10, 20], [10, 20]], atol=1e-6)


def test_encode_decode_are_inverses():
    rng = np.random.default_rng(0)
    coder = BoxCoder()
    anchors = np.column_stack([rng.uniform(0, 500, (200, 2)), rng.uniform(8, 300, (200, 2))])
    xy = rng.uniform(-50, 600, (200, 2))
    boxes = np.column_stack([xy, xy + rng.uniform(1, 400, (200, 2))])
    t = coder.encode_boxes(torch.from_numpy(boxes), torch.from_numpy(anchors))
    assert t.dtype == torch.float64
    np.testing.assert_allclose(coder.decode_boxes(t.numpy(), anchors), boxes, rtol=1e-9, atol=1e-7)
    loc = rng.normal(0, 2, (200, 4))
    back = coder.encode_boxes(torch.from_numpy(coder.decode_boxes(loc, anchors)), torch.from_numpy(anchors))
    np.testing.assert_allclose(back.numpy(), loc, atol=1e-7)

    points = rng.uniform(-50, 600, (200, 5, 2))
    tl = coder.encode_landmarks(torch.from_numpy(points), torch.from_numpy(anchors))
    assert tl.shape == (200, 10)
    np.testing.assert_allclose(coder.decode_landmarks(tl.numpy(), anchors), points.reshape(200, 10), atol=1e-7)


def test_encode_known_values_and_batch_dims():
    coder = BoxCoder((0.1, 0.2))
    anchors = torch.tensor([[[10.0, 20.0, 16.0, 16.0]]])  # (1, 1, 4): leading dims are kept
    t = coder.encode_boxes(torch.tensor([[[3.6, 12.0, 19.6, 28.0]]]), anchors)
    np.testing.assert_allclose(t.numpy(), [[[1, 0, 0, 0]]], atol=1e-5)
    lm = coder.encode_landmarks(torch.tensor([[[11.6, 18.4] * 5]]), anchors)
    np.testing.assert_allclose(lm.numpy(), [[[1, -1] * 5]], atol=1e-5)
