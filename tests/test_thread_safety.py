"""One detector object used from 8 threads at once gives the results of sequential calls."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

import facesieve
from facesieve.io.images import load_image
from facesieve.weights.cache import WeightsError

THREADS = 8


@pytest.fixture(scope="module")
def images(wider_val_dev) -> list[np.ndarray]:
    """4 small real images of different sizes (so batches are padded on the torch backend), each
    with faces for both models at this size (measured: RetinaFace 5/5/5/3 faces at score > 0.3,
    MTCNN 2/4/5/3), so every comparison below compares real detections, not two empty lists."""
    from facesieve.data.widerface import image_paths, list_images

    rels = [list_images(wider_val_dev)[i] for i in (0, 2, 4, 5)]
    out = []
    for k, p in enumerate(image_paths(wider_val_dev, rels)):
        im = load_image(p)
        out.append(cv2.resize(im, (im.shape[1] // 3 - 8 * k, im.shape[0] // 3), interpolation=cv2.INTER_AREA))
    return out


def _arrays(faces) -> np.ndarray:
    """(N, 15): box, score, 5 landmarks."""
    return np.array([[*f.box, f.score, *np.asarray(f.landmarks).ravel()] for f in faces]).reshape(len(faces), 15)


def _check_concurrent(det, images: list[np.ndarray], **kw) -> None:
    single = [_arrays(det.detect(im, **kw)) for im in images]
    batched = [_arrays(f) for f in det.detect_batch(images, batch_size=3, **kw)]
    assert all(len(a) >= 2 for a in single) and [len(a) for a in batched] == [len(a) for a in single]

    def job(seed: int) -> list[tuple[int, str, np.ndarray]]:
        order = np.random.default_rng(seed).permutation(len(images))
        out = [(int(i), "single", _arrays(det.detect(images[i], **kw))) for i in order]
        faces = det.detect_batch([images[i] for i in order], batch_size=3, **kw)
        return out + [(int(i), "batch", _arrays(f)) for i, f in zip(order, faces)]

    with ThreadPoolExecutor(THREADS) as pool:
        results = [r for rs in pool.map(job, range(THREADS)) for r in rs]
    assert len(results) == THREADS * 2 * len(images)
    for i, kind, got in results:
        ref = single[i] if kind == "single" else batched[i]
        assert got.shape == ref.shape, f"image {i} ({kind}): {len(got)} faces instead of {len(ref)}"
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4, err_msg=f"image {i} ({kind})")


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
@pytest.mark.parametrize("model", ["retinaface-mnet025", "mtcnn"])
def test_one_detector_from_8_threads(model, backend, images):
    try:
        det = facesieve.load(model, backend=backend, threads=1)
    except WeightsError as e:
        pytest.skip(f"weights unavailable: {e}")
    except ImportError as e:
        pytest.skip(f"{backend} not installed: {e}")
    kw = {"score_threshold": 0.3} if model.startswith("retinaface") else {}
    _check_concurrent(det, images, **kw)
