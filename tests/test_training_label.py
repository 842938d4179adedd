"""`facesieve label`: detections matched to ground-truth boxes give landmarks; the rest stay without."""
from __future__ import annotations

import numpy as np
from PIL import Image

from facesieve.data.autolabel import annotate_dataset, label_image, match_boxes
from facesieve.data.labels import BoxDataset, ImageLabels, load_box_dataset, read_jsonl, read_label_txt
from facesieve.types import Face


def test_match_boxes_one_to_one_with_threshold():
    gt = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [100, 100, 110, 110]], float)
    det = np.array([[21, 0, 31, 10], [1, 0, 11, 10], [0, 0, 9, 10], [104, 104, 114, 114]], float)
    # gt0 could take det1 (IoU .818) or det2 (IoU .9): Hungarian picks the better total;
    # gt2 vs det3: IoU 36/164 = .22 < .5 -> unmatched
    assert match_boxes(gt, det, 0.5).tolist() == [2, 0, -1]
    assert match_boxes(gt, np.zeros((0, 4))).tolist() == [-1, -1, -1]


def _face(box, score=0.9, lm=True):
    pts = np.array(box[:2], np.float32) + np.arange(10, dtype=np.float32).reshape(5, 2) if lm else None
    return Face(tuple(float(v) for v in box), score, pts)


def test_label_image_copies_matched_landmarks_only():
    item = ImageLabels("a.jpg", [[0, 0, 10, 10], [50, 50, 70, 70]])
    out = label_image(item, [_face([1, 0, 11, 10], 0.8), _face([200, 200, 220, 220])])
    assert out.has_landmarks.tolist() == [True, False]
    np.testing.assert_allclose(out.landmarks[0], np.array([1, 0]) + np.arange(10).reshape(5, 2))
    assert out.scores[0] == np.float32(0.8) and out.scores[1] == -1
    np.testing.assert_array_equal(out.boxes, item.boxes)  # GT boxes untouched
    # a detection without landmarks cannot label a face
    assert not label_image(item, [_face([0, 0, 10, 10], lm=False)]).has_landmarks.any()


class FakeDetector:
    name = "fake"

    def detect(self, image, score_threshold=None):
        return [_face([10, 10, 30, 30], 0.95)]


def _dataset(tmp_path):
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    items = [ImageLabels("a.png", [[11, 10, 31, 30], [0, 0, 5, 5]]), ImageLabels("missing.png", [[0, 0, 4, 4]])]
    return BoxDataset(tmp_path / "images", items)


def test_annotate_dataset_counts_and_bad_images(tmp_path):
    errors = []
    items, stats = annotate_dataset(_dataset(tmp_path), FakeDetector(), on_error=errors.append)
    assert (stats.images, stats.faces, stats.labelled, stats.failed_images) == (2, 3, 1, 1)
    assert items[0].has_landmarks.tolist() == [True, False] and not items[1].has_landmarks.any()
    assert len(errors) == 1 and "missing.png" in errors[0]


def test_cli_label_writes_label_txt_and_jsonl(tmp_path, monkeypatch):
    import facesieve.api
    from facesieve.cli import main

    ds = _dataset(tmp_path)
    (tmp_path / "gt.jsonl").write_text('{"image": "images/a.png", "faces": [{"box": [11, 10, 31, 30]}]}\n')
    monkeypatch.setattr(facesieve.api, "load", lambda *a, **k: FakeDetector())
    out = tmp_path / "out" / "label.txt"
    assert main(["label", "--data", str(tmp_path / "gt.jsonl"), "--out", str(out), "--no-progress"]) == 0
    items = read_label_txt(out)
    assert items[0].path == "images/a.png" and items[0].has_landmarks.tolist() == [True]
    assert (out.parent / "images").is_symlink()
    assert load_box_dataset(out).image_path(0).is_file()  # label.txt + images/ link form a dataset
    out2 = tmp_path / "out2" / "faces.jsonl"
    assert main(["label", "--data", str(tmp_path / "gt.jsonl"), "--out", str(out2), "--no-progress"]) == 0
    again = read_jsonl(out2)
    assert (out2.parent / again[0].path).resolve() == (tmp_path / "images" / "a.png").resolve()
    assert ds.root.is_dir()
