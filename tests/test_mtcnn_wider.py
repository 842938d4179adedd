"""MTCNN on the whole WIDER FACE dev set (slow) and on a huge image."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import facesieve
from facesieve.evaluation.widerface import evaluate_detector

# facenet-pytorch 2.6.0 MTCNN (same original weights, min face 20, factor 0.709, thresholds
# 0.6/0.7/0.7) on exactly these 500 images, official protocol: the APs its own predictions give
# (../shared/data/wider_val_dev/reference_predictions/README.md). In CI,
# test_reference_accuracy checks the same per face on 100 of these images.
REFERENCE_AP = {"easy": 0.8062, "medium": 0.7799, "hard": 0.4498}


@pytest.mark.slow
def test_wider_dev_ap_matches_facenet_pytorch(wider_val_dev):
    det = facesieve.load("mtcnn", backend="auto")
    # every face the cascade returns: O-Net threshold 0.7 and final NMS 0.7, as the reference
    r = evaluate_detector(det, wider_val_dev, score_threshold=0.7, nms_threshold=0.7, batch_size=8, progress=False)
    for setting, ap in REFERENCE_AP.items():
        assert abs(r[setting] - ap) <= 0.001, (setting, r[setting], ap)


def test_huge_image_with_bounded_pnet_canvases(example_image):
    img = np.asarray(Image.open(example_image).convert("RGB").resize((6000, 6000), Image.BILINEAR))
    det = facesieve.load("mtcnn", min_face_size=60, pnet_max_pixels=1_000_000)
    sizes = []
    pnet = det.runner.pnet
    det.runner.pnet = lambda x, edge: sizes.append(x.shape[2] * x.shape[3]) or pnet(x, edge)
    faces = det.detect(img)
    small = facesieve.load("mtcnn").detect(np.asarray(Image.open(example_image).convert("RGB")))
    assert len(sizes) >= 3 and max(sizes) <= 1_100_000  # level 0 (1200 x 1200 px) cut into bands
    assert len(faces) >= 1 and small
    # the astronaut's face, found at both sizes (boxes scale with the image)
    scale = 6000 / Image.open(example_image).size[0]
    best = max(small, key=lambda f: f.score)
    big = max(faces, key=lambda f: f.score)
    np.testing.assert_allclose(np.array(big.box) / scale, best.box, atol=0.1 * best.width)
