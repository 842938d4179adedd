"""Post-processing speed-ups keep results bit-identical: sparse greedy NMS vs the per-box loop."""
from __future__ import annotations

import numpy as np
import pytest

from facesieve.ops import boxes as B


def _loop(boxes: np.ndarray, scores: np.ndarray, t: float, offset: float) -> np.ndarray:
    order = np.argsort(-scores, kind="stable")
    return order[B._greedy_loop(boxes[order], t, "union", offset)]


def _random_case(rng: np.random.Generator, n: int, trial: int) -> tuple[np.ndarray, np.ndarray]:
    scale = float(rng.choice([5.0, 50.0, 300.0]))
    xy = rng.uniform(0, scale * 4, (n, 2))
    wh = np.exp(rng.uniform(0, np.log(scale), (n, 2)))
    if trial % 3 == 0:  # integer pixels: exact ties in IoU
        xy, wh = np.round(xy), np.round(wh)
    if trial % 5 == 0:  # dense clusters, as detector candidates around a face
        xy = xy[rng.integers(0, max(1, n // 10), n)] + rng.normal(0, 1.5, (n, 2))
    scores = rng.uniform(0, 1, n)
    if trial % 4 == 0:  # tied scores: order must stay stable
        scores = np.round(scores, 1)
    return np.concatenate([xy, xy + wh], 1), scores


def test_sparse_nms_equals_loop_on_random_boxes():
    rng = np.random.default_rng(7)
    for trial in range(200):
        n = int(rng.integers(B.SPARSE_NMS_MIN_BOXES + 1, 500))
        boxes, scores = _random_case(rng, n, trial)
        t = float(rng.choice([0.05, 0.3, 0.4, 0.5, 0.7, 0.95]))
        offset = float(rng.choice([0.0, 1.0]))
        np.testing.assert_array_equal(
            B.nms(boxes, scores, t, offset=offset), _loop(boxes, scores, t, offset), err_msg=f"trial {trial}"
        )


def test_sparse_nms_resolves_long_chains():
    # each box overlaps the next with IoU 0.6 (the one after with 0.33): a chain as long as the input;
    # greedy keeps every other box
    n = 300
    x = np.arange(n) * 0.25
    boxes = np.stack([x, np.zeros(n), x + 1.0, np.ones(n)], 1)
    scores = np.linspace(1, 0, n)
    keep = B.nms(boxes, scores, 0.5)
    np.testing.assert_array_equal(keep, _loop(boxes, scores, 0.5, 0.0))
    np.testing.assert_array_equal(keep, np.arange(0, n, 2))


def test_sparse_nms_falls_back_on_degenerate_and_piled_boxes():
    rng = np.random.default_rng(3)
    boxes, scores = _random_case(rng, 200, 1)
    boxes[::7, 2] = boxes[::7, 0]  # zero width (offset 0): the sparse bounds do not hold
    assert B._greedy_sparse(boxes[np.argsort(-scores, kind="stable")], 0.4, 0.0) is None
    np.testing.assert_array_equal(B.nms(boxes, scores, 0.4), _loop(boxes, scores, 0.4, 0.0))
    piled = np.tile([[10.0, 10.0, 50.0, 50.0]], (3000, 1))  # 4.5 M candidate pairs
    s = rng.uniform(0, 1, 3000)
    assert B._greedy_sparse(piled, 0.4, 0.0) is None
    assert B.nms(piled, s, 0.4).tolist() == [int(np.argmax(s))]


@pytest.mark.parametrize("offset", [0.0, 1.0])
def test_nms_small_inputs_unchanged(offset):
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [2, 2, 6, 6], [50, 50, 60, 60]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    np.testing.assert_array_equal(B.nms(boxes, scores, 0.5, offset=offset), _loop(boxes, scores, 0.5, offset))
