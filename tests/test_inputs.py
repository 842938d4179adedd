"""The inputs people pass to detect / detect_batch: arrays (RGB or OpenCV's BGR), torch
tensors, floats, and the mistakes (a normalised tensor, one array given to detect_batch,
wrong containers, shapes, dtypes, NaN) -- each either the same faces as the plain RGB uint8
array of the same pixels, or a clear error naming what was expected.

Real detectors on examples/astronaut.jpg (one face at about x 170-275, y 55-180 of 512x512);
the "same pixels" of every variant are checked independently (cv2.imread vs PIL) first.
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import facesieve
from facesieve.io import ImageError, ImageTypeError, load_image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def rgb(example_image) -> np.ndarray:
    return np.asarray(Image.open(example_image).convert("RGB"))


@pytest.fixture(scope="module")
def bgr(example_image, rgb) -> np.ndarray:
    a = cv2.imread(str(example_image))  # what an OpenCV user has
    assert np.array_equal(a[:, :, ::-1], rgb)  # the same pixels, channels reversed
    return a


@pytest.fixture(scope="module", params=["retinaface-mnet025", "mtcnn"])
def detector(request):
    return facesieve.load(request.param)


@pytest.fixture(scope="module")
def reference(detector, rgb):
    faces = detector.detect(rgb)
    assert len(faces) == 1 and faces[0].score > 0.9  # the astronaut
    x1, y1, x2, y2 = faces[0].box
    assert 160 < x1 < 190 and 50 < y1 < 70 and 260 < x2 < 285 and 165 < y2 < 185
    return faces


# ------------------------------------------------------------------- channel order


def test_bgr_array_with_channel_order_bgr_gives_the_same_faces(detector, reference, rgb, bgr):
    assert detector.detect(bgr, channel_order="bgr") == reference
    assert detector.detect(bgr, channel_order="BGR") == reference
    # BGRA (cv2.IMREAD_UNCHANGED of a PNG with alpha): alpha dropped, colours right
    bgra = np.dstack([bgr, np.full(bgr.shape[:2], 255, np.uint8)])
    assert detector.detect(bgra, channel_order="bgr") == reference
    # without the option the swapped colours give other numbers: the option matters
    assert detector.detect(bgr) != reference
    # a per-call option overrides the detector's default, and files ignore it
    det_bgr = facesieve.load(detector.name, channel_order="bgr")
    assert det_bgr.channel_order == "bgr"
    assert det_bgr.detect(bgr) == reference
    assert det_bgr.detect(rgb, channel_order="rgb") == reference
    assert det_bgr.detect_batch([bgr, bgr], batch_size=2) == [reference, reference]


def test_channel_order_applies_to_arrays_not_files(detector, reference, example_image, rgb):
    assert detector.detect(example_image, channel_order="bgr") == detector.detect(example_image)
    assert detector.detect(Image.fromarray(rgb), channel_order="bgr") == reference


def test_unknown_channel_order_is_refused(detector, rgb):
    with pytest.raises(ValueError, match="channel_order must be 'rgb' or 'bgr', got 'hsv'"):
        detector.detect(rgb, channel_order="hsv")
    with pytest.raises(ValueError, match="channel_order"):
        facesieve.load(detector.name, channel_order="gbr")


@pytest.mark.parametrize("name,backend", [("retinaface-mnet025", "onnxruntime"), ("retinaface-mnet025", "openvino"),
                                          ("mtcnn", "onnxruntime"), ("mtcnn", "openvino")])
def test_graph_backends_take_the_same_inputs(name, backend, rgb, bgr):
    det = facesieve.load(name, backend=backend, channel_order="bgr")
    ref = det.detect(rgb, channel_order="rgb")
    assert len(ref) == 1
    assert det.detect(bgr) == ref
    assert det.detect(torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255, channel_order="rgb") == ref
    with pytest.raises(TypeError, match="detect_batch takes a sequence of images"):
        det.detect_batch(bgr)


# ------------------------------------------------------------------- torch tensors


def test_tensors_give_the_same_faces_as_the_array(detector, reference, rgb, bgr):
    hwc = torch.from_numpy(rgb.copy())
    chw_float = hwc.permute(2, 0, 1).float() / 255  # torchvision's to_tensor convention
    assert torch.equal(torch.round(chw_float * 255).to(torch.uint8).permute(1, 2, 0), hwc)  # same pixels
    assert detector.detect(hwc) == reference
    assert detector.detect(chw_float) == reference
    assert detector.detect(chw_float.double()) == reference
    assert detector.detect(hwc.permute(2, 0, 1)) == reference  # uint8 CHW (torchvision.io.read_image)
    assert detector.detect(hwc.float()) == reference  # HWC float in [0, 255] (facenet-pytorch)
    assert detector.detect(chw_float.requires_grad_()) == reference  # a graph leaf: detached
    assert detector.detect(torch.from_numpy(bgr.copy()), channel_order="bgr") == reference
    # a batch tensor (N, 3, H, W) is N images
    assert detector.detect_batch(torch.stack([chw_float.detach()] * 2)) == [reference, reference]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_tensor_is_moved_to_the_cpu(detector, reference, rgb):
    assert detector.detect(torch.from_numpy(rgb.copy()).cuda()) == reference


# ------------------------------------------------------------------- float arrays


def test_float_arrays_in_0_1_and_0_255_give_the_same_faces(detector, reference, rgb):
    assert detector.detect(rgb / 255.0) == reference
    assert detector.detect((rgb / 255.0).astype(np.float32)) == reference
    assert detector.detect(rgb.astype(np.float32)) == reference
    assert detector.detect(rgb.astype(np.int64)) == reference
    assert detector.detect(rgb.astype(np.uint16) * 257) == reference  # 16-bit image


def _imagenet_normalised(rgb: np.ndarray) -> np.ndarray:
    return ((rgb / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)).astype(np.float32)


def test_a_normalised_image_is_refused_not_read_as_0_255(detector, rgb):
    x = _imagenet_normalised(rgb)
    lo, hi = float(x.min()), float(x.max())
    assert lo < -2.0 and hi > 2.5  # the values a torchvision pipeline hands over
    for image, name in [(x, "<array>"), (torch.from_numpy(x).permute(2, 0, 1), "<tensor>")]:
        with pytest.raises(ImageError) as e:
            detector.detect(image)
        msg = str(e.value)
        assert msg.startswith(f"{name}: float image values span [{lo:.4g}, {hi:.4g}]")
        assert "expected [0, 1] or [0, 255]" in msg and "mean/std" in msg
        with pytest.raises(ImageError, match="expected"):
            detector.detect_batch([rgb, image])


@pytest.mark.parametrize("bad,match", [
    (np.full((8, 8, 3), 300.0), r"float image values span \[300, 300\]"),
    (np.full((8, 8, 3), -0.5), r"float image values span \[-0.5, -0.5\]"),
    (np.full((8, 8, 3), 256, np.int32), r"int32 image values span \[256, 256\]; expected \[0, 255\]"),
    (np.full((8, 8, 3), -1, np.int16), r"int16 image values span \[-1, -1\]"),
    (np.where(np.eye(8)[:, :, None], np.nan, 0.5) * np.ones(3), "NaN or infinite"),
    (np.full((8, 8, 3), np.inf, np.float32), "NaN or infinite"),
    (np.zeros((0, 5, 3), np.uint8), r"image has no pixels \(shape \(0, 5, 3\)\)"),
    (np.zeros((5, 0), np.uint8), "image has no pixels"),
    (np.zeros((8, 8, 2), np.uint8), r"expected an image array of shape \(H, W\), \(H, W, 3\) or \(H, W, 4\), got \(8, 8, 2\)"),
    (np.zeros((3, 8, 9), np.uint8), r"channels-first \(C, H, W\)\? pass array.transpose\(1, 2, 0\)"),
    (np.zeros((2, 8, 8, 3), np.uint8), "a stack of images\\? pass them to detect_batch"),
    (np.zeros(8, np.uint8), r"got \(8,\)"),
    (np.zeros((8, 8, 3), np.complex64), "unsupported image dtype complex64"),
    (np.full((8, 8, 3), None, object), "unsupported image dtype object"),
    (torch.zeros(5, 8, 9), r"\(C, H, W\) or \(H, W, C\) with C in 1, 3, 4, got \(5, 8, 9\)"),
    (torch.zeros(1, 3, 8, 8), "a batch\\? pass it to detect_batch"),
    (torch.full((3, 8, 8), float("nan")), "NaN or infinite"),
])
def test_impossible_arrays_raise_image_error(detector, bad, match):
    with pytest.raises(ImageError, match=match):
        detector.detect(bad)


@pytest.mark.parametrize("bad", [[[0, 1], [2, 3]], b"\xff\xd8\xff", None, {"image": 1}, 3.0])
def test_objects_that_are_not_images_raise_a_type_error(detector, bad):
    with pytest.raises(ImageTypeError) as e:
        detector.detect(bad)
    assert isinstance(e.value, TypeError) and isinstance(e.value, ValueError)
    assert "expected a path, a PIL.Image, a numpy array or a torch.Tensor" in str(e.value)
    assert str(e.value).startswith(f"<{type(bad).__name__}>: ")


# ------------------------------------------------------------------- detect_batch(one image)


def test_detect_batch_on_one_image_raises_instead_of_iterating(detector, rgb, example_image):
    calls = []
    real = detector._detect_arrays
    detector._detect_arrays = lambda *a: calls.append(1) or real(*a)  # counts network calls
    try:
        for one, kind in [(rgb, "numpy array of shape (512, 512, 3)"), (rgb[:, :, 0], "numpy array of shape (512, 512)"),
                          (torch.from_numpy(rgb.copy()), "tensor of shape (512, 512, 3)"),
                          (str(example_image), "str"), (example_image, type(example_image).__name__),
                          (Image.fromarray(rgb), "Image"), (b"abc", "bytes")]:
            with pytest.raises(TypeError) as e:
                detector.detect_batch(one)
            assert str(e.value).startswith(f"detect_batch takes a sequence of images, got one {kind}")
            assert "detect_batch([image])" in str(e.value)
        with pytest.raises(TypeError, match="got int"):
            detector.detect_batch(7)
        assert calls == []  # refused before any work
    finally:
        del detector._detect_arrays
    # what is accepted: any iterable of images, and a 4-D stack
    assert detector.detect_batch(iter([rgb])) == [detector.detect(rgb)]
    assert detector.detect_batch(np.stack([rgb, rgb])) == [detector.detect(rgb)] * 2
    assert detector.detect_batch([]) == []


# ------------------------------------------------------------------- box convention


def test_boxes_cut_by_the_border_and_clip_boxes(rgb):
    """Faces cut by the border: the raw boxes reach outside the image (reference convention);
    clip_boxes clamps them, and Face.crop always gives the visible face."""
    cases = [("retinaface-mnet025", rgb[:150], 3, 150.0), ("mtcnn", rgb[100:], 1, 0.0)]
    for name, image, coord, border in cases:
        image = np.ascontiguousarray(image)
        h, w = image.shape[:2]
        raw = facesieve.load(name).detect(image)
        assert len(raw) == 1
        box = raw[0].box
        assert box[coord] > h if coord == 3 else box[coord] < 0, box  # outside the image
        for clipped in (facesieve.load(name, clip_boxes=True).detect(image)[0],
                        facesieve.load(name).detect(image, clip_boxes=True)[0], raw[0].clipped(w, h)):
            expect = (min(max(box[0], 0), w), min(max(box[1], 0), h), min(max(box[2], 0), w), min(max(box[3], 0), h))
            assert clipped.box == expect and clipped.box[coord] == border
            lm = clipped.landmarks
            assert lm.min() >= 0 and (lm[:, 0] <= w).all() and (lm[:, 1] <= h).all()
            assert clipped.score == raw[0].score
        crop = raw[0].crop(image)
        x1, y1, x2, y2 = (int(np.floor(box[0])), int(np.floor(max(box[1], 0))),
                          int(np.ceil(box[2])), int(np.ceil(min(box[3], h))))
        assert crop.shape == (y2 - y1, x2 - x1, 3) and np.shares_memory(crop, image)
        assert np.array_equal(crop, image[y1:y2, x1:x2])
    # what a user would cut with the raw MTCNN box (y1 < 0) is empty: the reason for crop()
    raw = facesieve.load("mtcnn").detect(np.ascontiguousarray(rgb[100:]))[0]
    x1, y1, x2, y2 = (int(v) for v in raw.box)
    assert rgb[100:][y1:y2, x1:x2].size == 0


def test_cli_clip_boxes(tmp_path, rgb):
    from facesieve.cli import main

    Image.fromarray(np.ascontiguousarray(rgb[100:])).save(tmp_path / "cut.png")
    for flag, out in [([], tmp_path / "raw"), (["--clip-boxes"], tmp_path / "clipped")]:
        assert main(["detect", str(tmp_path / "cut.png"), "--model", "mtcnn", "--out", str(out), "-q", *flag]) == 0
    raw = json.loads((tmp_path / "raw" / "cut.json").read_text())["faces"][0]
    clipped = json.loads((tmp_path / "clipped" / "cut.json").read_text())["faces"][0]
    assert raw["box"][1] < 0 and clipped["box"] == [raw["box"][0], 0.0, *raw["box"][2:]]


# ------------------------------------------------------------------- load_image directly


def test_load_image_paths_name_the_os_cause(tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        load_image(tmp_path / "none.jpg")
    (tmp_path / "d.jpg").mkdir()
    with pytest.raises(ImageError, match="d.jpg: is a directory, not an image file"):
        load_image(tmp_path / "d.jpg")
    (tmp_path / "f").write_text("x")
    with pytest.raises(ImageError, match="file not found \\(a parent is not a directory\\)"):
        load_image(tmp_path / "f" / "x.jpg")


@pytest.mark.parametrize("model,options,name", [
    ("retinaface-mnet025", {"max_size": 0}, "max_size"),
    ("retinaface-mnet025", {"target_size": -10}, "target_size"),
    ("retinaface-mnet025", {"score_threshold": -0.5}, "score_threshold"),
    ("retinaface-mnet025", {"score_threshold": 1.5}, "score_threshold"),
    ("retinaface-mnet025", {"nms_threshold": -1}, "nms_threshold"),
    ("mtcnn", {"thresholds": (-1, 0.7, 0.7)}, "thresholds"),
    ("mtcnn", {"score_threshold": float("nan")}, "score_threshold"),
])
def test_impossible_options_are_refused_at_load(model, options, name):
    """A threshold outside [0, 1] or a size < 1 would silently keep every box or none."""
    with pytest.raises(ValueError, match=name):
        facesieve.load(model, backend="torch", **options)


def test_impossible_per_call_options_are_refused(example_image):
    det = facesieve.load("retinaface-mnet025", backend="torch")
    for kw, name in (({"score_threshold": -3}, "score_threshold"), ({"nms_threshold": 2}, "nms_threshold"),
                     ({"batch_size": 0}, "batch_size")):
        with pytest.raises(ValueError, match=name):
            det.detect_batch([str(example_image)], **kw)
    assert len(det.detect(str(example_image), score_threshold=0.5)) == 1  # valid values still work
