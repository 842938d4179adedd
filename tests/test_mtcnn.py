"""MTCNN: weights conversion, exact building blocks, and agreement with facenet-pytorch.

facenet-pytorch (same original weights, independent code) is the reference: its networks are
compared here; its whole cascade's outputs on the dev set (written by facenet-pytorch itself,
../shared/data/wider_val_dev/reference_predictions) in test_reference_accuracy.py. (Running its
cascade here would need benchmarks/_shims/torchvision, whose NMS is facesieve's own.)
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import facesieve
from facesieve.detectors.mtcnn import (
    EDGE_VALUE,
    IntegralImages,
    MTCNNDetector,
    crop_resize_area,
    pack_pieces,
    pnet_output_size,
    pyramid_scales,
    resize_area,
    split_rows,
)
from facesieve.nets.mtcnn import MTCNNNets, face_probability
from facesieve.ops import batched_nms, nms
from facesieve.weights.cache import sha256_file
from facesieve.weights.mtcnn import LZ4_SHA256, load_into, load_mtcnn_state_dict, mtcnn_package_weights

ROOT = Path(__file__).resolve().parents[1]

# Dev images used for the reference comparison: crowded, sparse and portrait ones.
DEV_IMAGES = [
    "0--Parade/0_Parade_Parade_0_43.jpg",
    "0--Parade/0_Parade_Parade_0_429.jpg",
    "0--Parade/0_Parade_Parade_0_194.jpg",
    "0--Parade/0_Parade_marchingband_1_439.jpg",
]


def _facenet_mtcnn():
    spec = importlib.util.spec_from_file_location("bench_mtcnn", ROOT / "benchmarks" / "bench_mtcnn.py")
    if "facenet_pytorch" not in sys.modules and importlib.util.find_spec("facenet_pytorch") is None:
        pytest.skip("facenet-pytorch is not installed")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_mtcnn", mod)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod.load_facenet_mtcnn()


@pytest.fixture(scope="module")
def nets() -> MTCNNNets:
    m = MTCNNNets()
    load_into(m, load_mtcnn_state_dict())
    return m.eval()


@pytest.fixture(scope="module")
def detector() -> MTCNNDetector:
    return facesieve.load("mtcnn")


@pytest.fixture(scope="module")
def dev_images(wider_val_dev) -> list[np.ndarray]:
    return [facesieve.load_image(wider_val_dev / "images" / p) for p in DEV_IMAGES]


# ----------------------------------------------------------------------------- weights


def test_package_weights_are_the_pinned_files():
    paths = mtcnn_package_weights()
    assert {n: sha256_file(p) for n, p in paths.items()} == LZ4_SHA256
    entry = facesieve.weights.get_weights("mtcnn")
    import hashlib

    h = hashlib.sha256(b"".join(paths[n].read_bytes() for n in ("pnet", "rnet", "onet")))
    assert entry.origin_sha256 == h.hexdigest() and entry.license == "MIT"
    assert entry.preprocessing.channel_order == "RGB" and entry.preprocessing.mean == (127.5,) * 3


def test_lz4_and_npy_sources_convert_to_the_same_weights(shared_weights):
    a = load_mtcnn_state_dict()
    b = load_mtcnn_state_dict(shared_weights)
    assert set(a) == set(b) and len(a) == 13 + 16 + 21  # P-, R-, O-Net tensors
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the untrained landmark heads of P-Net and R-Net are not in the released weights
    assert "pnet.landmarks.weight" not in a and "onet.landmarks.weight" in a


def test_nets_match_facenet_pytorch_modules(nets):
    """Kernel layout and FC flatten order: our converted nets == facenet-pytorch's nets
    (its own weight files and its permute-before-flatten code)."""
    ref = _facenet_mtcnn()(device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        x = torch.randn(2, 3, 31, 44, generator=g)
        out, r = nets.pnet(x), ref.pnet(x)
        torch.testing.assert_close(out.box, r[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(face_probability(out.score), r[1][:, 1], atol=1e-6, rtol=0)
        x = torch.randn(5, 3, 24, 24, generator=g)
        out, r = nets.rnet(x), ref.rnet(x)
        torch.testing.assert_close(out.box, r[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(face_probability(out.score), r[1][:, 1], atol=1e-6, rtol=0)
        x = torch.randn(5, 3, 48, 48, generator=g)
        out, r = nets.onet(x), ref.onet(x)
        torch.testing.assert_close(out.box, r[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(out.landmarks, r[1], atol=1e-5, rtol=0)
        torch.testing.assert_close(face_probability(out.score), r[2][:, 1], atol=1e-6, rtol=0)


def test_landmark_heads_on_every_net(nets):
    x = torch.zeros(1, 3, 48, 48)
    with torch.no_grad():
        assert nets.pnet(x[..., :12, :12], landmarks=True).landmarks.shape == (1, 10, 1, 1)
        assert nets.rnet(x[..., :24, :24], landmarks=True).landmarks.shape == (1, 10)
        assert nets.onet(x).landmarks.shape == (1, 10)


def test_channels_last_prelu_view_is_exact():
    from facesieve.nets.mtcnn import prelu

    m = torch.nn.PReLU(10)
    m.weight.data = torch.linspace(-1.2, 1.0, 10)
    x = torch.randn(2, 10, 7, 9)
    for t in (x, x.contiguous(memory_format=torch.channels_last), x[:, :, :, :5]):
        assert torch.equal(prelu(m, t), m(t))
    y = prelu(m, x.contiguous(memory_format=torch.channels_last).requires_grad_())
    y.sum().backward()  # differentiable (training)


def test_channels_last_max_pool_is_exact():
    from facesieve.nets.mtcnn import max_pool

    pool = torch.nn.MaxPool2d(2, 2, ceil_mode=True)
    for shape in ((2, 10, 8, 12), (1, 10, 7, 12), (1, 3, 9, 9)):
        x = torch.randn(shape)
        for t in (x, x.contiguous(memory_format=torch.channels_last)):
            assert torch.equal(max_pool(pool, t), pool(t))


def test_bad_weights_are_reported(tmp_path):
    with pytest.raises(facesieve.weights.WeightsError, match="det1.npy"):
        load_mtcnn_state_dict(tmp_path)
    torch.save({"pnet.conv1.weight": torch.zeros(1)}, tmp_path / "x.pt")
    with pytest.raises(facesieve.weights.WeightsError):
        facesieve.load("mtcnn", weights=str(tmp_path / "x.pt"))


# ----------------------------------------------------------------------------- exact blocks


@pytest.mark.parametrize("shape,size", [((37, 53), (24, 24)), ((13, 9), (24, 24)), ((700, 1024), (421, 615))])
def test_area_resize_equals_torch_area_interpolation(shape, size):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(img).permute(2, 0, 1)[None].float(), size=size, mode="area")[0].permute(1, 2, 0).numpy()
    ii = IntegralImages([img])
    assert np.array_equal(resize_area(ii.sat(0), *size), ref)


def test_crops_equal_torch_area_interpolation_of_slices():
    rng = np.random.default_rng(2)
    imgs = [rng.integers(0, 256, (60, 80, 3), dtype=np.uint8), rng.integers(0, 256, (33, 20, 3), dtype=np.uint8)]
    ii = IntegralImages(imgs)
    image = np.array([0, 1, 0, 1])
    y0, y1 = np.array([0, 3, 10, 0]), np.array([60, 9, 57, 33])
    x0, x1 = np.array([0, 2, 41, 19]), np.array([80, 20, 80, 20])
    out = crop_resize_area(ii, image, y0, y1, x0, x1, 24)
    for k in range(4):
        sl = torch.from_numpy(imgs[image[k]][y0[k]:y1[k], x0[k]:x1[k]]).permute(2, 0, 1)[None].float()
        ref = torch.nn.functional.interpolate(sl, size=(24, 24), mode="area")[0].permute(1, 2, 0).numpy()
        assert np.array_equal(out[k], ref)


def test_integral_table_wraps_exactly_on_huge_images():
    img = np.full((9000, 1000, 3), 255, np.uint8)  # total 2.3e9 > 2**31
    ii = IntegralImages([img])
    out = crop_resize_area(ii, np.array([0]), np.array([0]), np.array([9000]), np.array([0]), np.array([1000]), 48)
    assert np.all(out == 255.0)


def test_pack_pieces_places_without_overlap():
    rng = np.random.default_rng(3)
    sizes = [(int(h), int(w)) for h, w in rng.integers(13, 300, (40, 2))]
    places = pack_pieces(sizes, 600, 700)
    occupied: dict[int, np.ndarray] = {}
    for (h, w), (c, y, x) in zip(sizes, places):
        assert y % 2 == 0 and x % 2 == 0 and x + w <= 600
        grid = occupied.setdefault(c, np.zeros((4000, 600), bool))
        h2, w2 = h + h % 2, w + w % 2  # pieces take even sizes
        assert not grid[y:y + h2, x:x + w2].any()
        grid[y:y + h2, x:x + w2] = True
    assert max(c for c, _, _ in places) >= 1  # 40 pieces do not fit one 600x700 canvas


def test_split_rows_bands_cover_every_output_once():
    for height in (13, 14, 100, 101, 999):
        bands = split_rows(height, 50, 50 * 30)
        outs = [(o0, n) for _, _, o0, n in bands]
        assert outs[0][0] == 0 and sum(n for _, n in outs) == pnet_output_size(height)
        for (a0, an), (b0, _) in zip(outs, outs[1:]):
            assert a0 + an == b0
        for row0, rows, out0, n in bands:
            assert row0 == 2 * out0 and row0 + rows <= height and row0 % 2 == 0
            assert n == pnet_output_size(rows)


@pytest.mark.parametrize("max_pixels", [1500, 1_500_000])
def test_packed_pnet_equals_pnet_on_each_level(nets, max_pixels):
    """Levels packed onto canvases (edge map; with 1500 px also cut into row bands and
    spread over many canvases) give each level's own P-Net output, odd sizes included."""
    rng = np.random.default_rng(4)
    imgs = [rng.integers(0, 256, (75, 61, 3), dtype=np.uint8), rng.integers(0, 256, (40, 90, 3), dtype=np.uint8)]
    det = MTCNNDetector(facesieve.detectors.mtcnn.TorchMTCNNRunner(nets), min_face_size=12)
    det.pnet_max_pixels = max_pixels
    calls = []
    pnet = det.runner.pnet
    det.runner.pnet = lambda x, edge: calls.append(x.shape) or pnet(x, edge)
    levels, probs, regs = det.pnet_maps(imgs)
    assert len(levels) == len(pyramid_scales(75, 61, 12, 0.709)) + len(pyramid_scales(40, 90, 12, 0.709)) == 9
    assert len(calls) == 1 if max_pixels > 100_000 else len(calls) > 5
    with torch.no_grad():
        for (i, s), prob, reg in zip(levels, probs, regs):
            h, w = imgs[i].shape[:2]
            size = (int(h * s + 1), int(w * s + 1))
            lvl = torch.nn.functional.interpolate(torch.from_numpy(imgs[i]).permute(2, 0, 1)[None].float(), size,
                                                  mode="area")
            out = nets.pnet((lvl - 127.5) * 0.0078125)
            np.testing.assert_allclose(prob, face_probability(out.score)[0].numpy(), atol=2e-6)
            np.testing.assert_allclose(reg, out.box[0].numpy(), atol=2e-5)
    assert EDGE_VALUE < -1000


def _nms_by_coordinate_shift(boxes, scores, groups, thr, mode, offset):
    """Independent reference: shift each group far apart, then one plain NMS."""
    span = float(boxes.max() - min(boxes.min(), 0.0)) + 1.0 + offset if len(boxes) else 0.0
    return nms(boxes + (groups * span)[:, None], scores, thr, mode=mode, offset=offset)


def test_batched_nms_equals_nms_on_shifted_groups():
    rng = np.random.default_rng(5)
    for trial in range(150):
        n = int(rng.integers(0, 200))
        xy = rng.uniform(0, 200, (n, 2))
        wh = rng.uniform(1, 60, (n, 2))
        if trial % 3 == 0:
            xy, wh = np.round(xy), np.round(wh)
        boxes = np.concatenate([xy, xy + wh], 1)
        scores = rng.random(n) if trial % 4 else np.round(rng.random(n), 1)  # with ties
        groups = rng.integers(0, 3, n)
        mode, offset, thr = ("union", "min")[trial % 2], (0.0, 1.0)[(trial // 2) % 2], (0.3, 0.5, 0.7)[trial % 3]
        expected = _nms_by_coordinate_shift(boxes, scores, groups, thr, mode, offset)
        assert np.array_equal(batched_nms(boxes, scores, groups, thr, mode=mode, offset=offset), expected)


# ----------------------------------------------------------------------------- detector


def test_batched_equals_single_with_faceless_and_tiny_images(detector, dev_images):
    blank = np.full((300, 200, 3), 128, np.uint8)
    tiny = np.zeros((11, 40, 3), np.uint8)
    one = np.zeros((1, 1, 3), np.uint8)
    batch = [blank, dev_images[1], tiny, one, dev_images[3]]
    got = detector.detect_batch(batch, batch_size=5)
    assert [len(f) for f in got[:1] + got[2:4]] == [0, 0, 0]
    for img, faces in zip(batch, got):
        single = detector.detect(img)
        assert len(single) == len(faces)
        np.testing.assert_allclose(np.reshape([f.box for f in single], (-1, 4)),
                                   np.reshape([f.box for f in faces], (-1, 4)), atol=1e-3)
    faces = got[1]
    assert faces and all(f.detector == "mtcnn" and f.landmarks.shape == (5, 2) for f in faces)
    # landmarks sit in their box: eyes above the mouth corners
    for f in faces:
        lm = f.landmarks
        assert f.box[0] - 2 < lm[:, 0].mean() < f.box[2] + 2 and lm[:2, 1].mean() < lm[3:, 1].mean()
    assert detector.detect_batch([]) == []


def test_score_threshold_is_the_onet_threshold(dev_images):
    det = facesieve.load("mtcnn", score_threshold=0.95)
    assert det.thresholds == (0.6, 0.7, 0.95) and det.score_threshold == 0.95
    default = facesieve.load("mtcnn")
    all_faces = default.detect(dev_images[0])
    strict = default.detect(dev_images[0], score_threshold=0.95)
    assert len(strict) == sum(f.score > 0.95 for f in all_faces) < len(all_faces)
    assert facesieve.load("mtcnn", score_threshold=0.9, thresholds=(0.5, 0.6, 0.8)).thresholds == (0.5, 0.6, 0.8)


def test_npy_weights_give_the_same_detections(shared_weights, detector, example_image):
    det = facesieve.load("mtcnn", weights=str(shared_weights))
    a, b = det.detect(example_image), detector.detect(example_image)
    assert len(a) == len(b) >= 1
    np.testing.assert_allclose([f.box for f in a], [f.box for f in b], atol=1e-3)


def test_worker_threads_give_the_same_faces_and_restore_torch_threads(dev_images):
    threads = torch.get_num_threads()
    one = facesieve.load("mtcnn", workers=1).detect_batch(dev_images[1:3])
    two = facesieve.load("mtcnn", workers=2).detect_batch(dev_images[1:3])
    assert torch.get_num_threads() == threads
    for a, b in zip(one, two):
        assert len(a) == len(b) >= 1
        np.testing.assert_allclose([f.box for f in a], [f.box for f in b], atol=1e-3)


def test_images_spread_over_workers_give_the_same_faces(dev_images, example_image):
    # 5 images on 2 workers: whole-cascade tasks of 1 and 2 images (largest first), an image
    # twice, and a tiny image with no face; results in input order, equal to one worker
    images = [dev_images[0], example_image, dev_images[1], np.zeros((10, 14, 3), np.uint8), dev_images[0]]
    threads = torch.get_num_threads()
    one = facesieve.load("mtcnn", workers=1).detect_batch(images)
    for per_task in (1, 2):
        spread = facesieve.load("mtcnn", workers=2, images_per_task=per_task).detect_batch(images)
        assert torch.get_num_threads() == threads
        assert [len(f) for f in spread] == [len(f) for f in one]
        assert len(one[3]) == 0 and all(len(f) >= 1 for k, f in enumerate(one) if k != 3)
        for a, b in zip(one, spread):
            np.testing.assert_array_equal([f.box for f in a], [f.box for f in b])
            np.testing.assert_array_equal([f.landmarks for f in a], [f.landmarks for f in b])


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="min_face_size"):
        facesieve.load("mtcnn", min_face_size=0)
    with pytest.raises(ValueError, match="thresholds"):
        facesieve.load("mtcnn", thresholds=(0.6, 0.7))
