"""Label readers/writers: RetinaFace label.txt, our JSON Lines, WIDER FACE gt text."""
from __future__ import annotations

import numpy as np
import pytest

from facesieve.data.labels import (
    ImageLabels,
    LabelFormatError,
    format_label_txt,
    load_box_dataset,
    read_jsonl,
    read_label_txt,
    write_jsonl,
    write_label_txt,
)

LABEL_TXT = """# 0--Parade/a.jpg
449 330 122 149 488.906 373.643 0.0 542.089 376.442 0.0 515.031 412.83 0.0 485.556 425.893 0.0 538.357 431.491 0.0 0.82
10 20 30 40 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0
# 1--Handshaking/b.jpg 1024 768
5 6 7 8
# 2--Demonstration/empty.jpg
"""


def test_read_label_txt_boxes_landmarks_and_missing(tmp_path):
    p = tmp_path / "label.txt"
    p.write_text(LABEL_TXT)
    items = read_label_txt(p)
    assert [it.path for it in items] == ["0--Parade/a.jpg", "1--Handshaking/b.jpg", "2--Demonstration/empty.jpg"]
    a = items[0]
    np.testing.assert_allclose(a.boxes, [[449, 330, 571, 479], [10, 20, 40, 60]])
    assert a.has_landmarks.tolist() == [True, False]
    np.testing.assert_allclose(a.landmarks[0, 0], [488.906, 373.643], rtol=1e-6)
    np.testing.assert_allclose(a.landmarks[0, 4], [538.357, 431.491], rtol=1e-6)
    assert a.scores[0] == pytest.approx(0.82)
    assert items[1].has_landmarks.tolist() == [False]
    np.testing.assert_allclose(items[1].boxes, [[5, 6, 12, 14]])
    assert len(items[2]) == 0


def test_label_txt_round_trip(tmp_path):
    p = tmp_path / "label.txt"
    p.write_text(LABEL_TXT)
    items = read_label_txt(p)
    out = tmp_path / "out" / "label.txt"
    write_label_txt(out, items)
    again = read_label_txt(out)
    for x, y in zip(items, again):
        assert x.path == y.path
        np.testing.assert_allclose(x.boxes, y.boxes, atol=1e-3)
        np.testing.assert_allclose(x.landmarks, y.landmarks, atol=1e-3)
        assert x.has_landmarks.tolist() == y.has_landmarks.tolist()
    # a face without landmarks is written with -1 in all 16 trailing fields
    line = format_label_txt([items[0]]).splitlines()[2]
    assert line.split()[4:] == ["-1"] * 16
    assert not list(out.parent.glob(".tmp-*"))


@pytest.mark.parametrize("bad,msg", [("10 20 30\n", "face line before"), ("# x.jpg\n1 2 3\n", "expected 4"),
                                     ("# x.jpg\n1 2 a 4\n", "non-numeric")])
def test_read_label_txt_errors_name_the_line(tmp_path, bad, msg):
    p = tmp_path / "label.txt"
    p.write_text(bad)
    with pytest.raises(LabelFormatError, match=msg):
        read_label_txt(p)


def test_jsonl_round_trip_and_ignore(tmp_path):
    p = tmp_path / "faces.jsonl"
    p.write_text(
        '{"image": "x.jpg", "faces": [{"box": [1, 2, 11, 22], "landmarks": [[1,2],[3,4],[5,6],[7,8],[9,10]]},'
        ' {"box": [0, 0, 5, 5], "landmarks": null}, {"box": [3, 3, 4, 4], "ignore": true}]}\n\n'
        '{"image": "y.jpg", "faces": []}\n'
    )
    items = read_jsonl(p)
    assert len(items) == 2 and len(items[0]) == 2 and len(items[1]) == 0
    assert items[0].has_landmarks.tolist() == [True, False]
    write_jsonl(tmp_path / "again.jsonl", items)
    again = read_jsonl(tmp_path / "again.jsonl")
    np.testing.assert_allclose(again[0].boxes, items[0].boxes)
    np.testing.assert_allclose(again[0].landmarks[0], np.arange(1, 11).reshape(5, 2))
    assert again[0].has_landmarks.tolist() == [True, False]
    (tmp_path / "bad.jsonl").write_text('{"faces": []}\n')
    with pytest.raises(LabelFormatError, match="bad.jsonl:1"):
        read_jsonl(tmp_path / "bad.jsonl")


def test_load_box_dataset_detects_formats(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "label.txt").write_text(LABEL_TXT)
    ds = load_box_dataset(tmp_path)
    assert ds.root == tmp_path / "images" and len(ds) == 3 and ds.num_landmark_faces == 1
    gt = tmp_path / "w" / "wider_face_train_bbx_gt.txt"
    gt.parent.mkdir()
    gt.write_text("e/a.jpg\n3\n1 2 10 20 0 0 0 0 0 0 \n5 5 10 10 0 0 0 1 0 0 \n7 7 0 9 0 0 0 0 0 0 \ne/b.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \n")
    ds = load_box_dataset(gt)
    # the invalid face and the zero-width face are dropped; boxes become xyxy
    np.testing.assert_allclose(ds.items[0].boxes, [[1, 2, 11, 22]])
    assert len(ds.items[1]) == 0 and ds.root == gt.parent
    assert len(load_box_dataset(gt, keep_invalid=True).items[0]) == 2


def test_image_labels_defaults():
    it = ImageLabels("a.jpg", [[0, 0, 1, 1], [2, 2, 4, 4]])
    assert it.landmarks.shape == (2, 5, 2) and not it.has_landmarks.any()
    assert len(it.subset(np.array([False, True]))) == 1


def test_wider_train_mini_loads(wider_train_mini):
    ds = load_box_dataset(wider_train_mini)
    assert len(ds) == 300 and ds.num_faces > 1500
    assert ds.image_path(0).is_file()
