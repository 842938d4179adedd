"""WIDER FACE readers: the bbx_gt text format, the official .mat files and data-dir discovery."""
from __future__ import annotations

import numpy as np
import pytest

from facesieve.data.widerface import (
    WiderFaceDataError,
    format_bbx_gt,
    image_key,
    list_images,
    locate_data_dir,
    parse_bbx_gt,
    read_bbx_gt,
    read_eval_mats,
)

SAMPLE = (
    "0--Parade/0_Parade_a.jpg\r\n"
    "2\r\n"
    "449 330 122 149 0 0 0 0 0 0 \r\n"
    "361 98 263 339 2 1 0 1 2 1 \r\n"
    "1--Handshaking/1_H_b.jpg\n"
    "0\n"
    "0 0 0 0 0 0 0 0 0 0 \n"
    "\n"
    "1--Handshaking/1_H_c.jpg\n"
    "0\n"  # no placeholder line: tolerated
    "2--Demonstration/2_D_d.jpg\n"
    "1\n"
    "78 221 7 8\n"  # box only, no attributes
)


def test_parse_bbx_gt_sample():
    anns = parse_bbx_gt(SAMPLE)
    assert [a.path for a in anns] == [
        "0--Parade/0_Parade_a.jpg",
        "1--Handshaking/1_H_b.jpg",
        "1--Handshaking/1_H_c.jpg",
        "2--Demonstration/2_D_d.jpg",
    ]
    np.testing.assert_array_equal(anns[0].boxes, [[449, 330, 122, 149], [361, 98, 263, 339]])
    np.testing.assert_array_equal(anns[0].attributes[1], [2, 1, 0, 1, 2, 1])
    assert anns[0].invalid.tolist() == [False, True]
    assert anns[1].boxes.shape == (0, 4) and anns[2].boxes.shape == (0, 4)
    np.testing.assert_array_equal(anns[3].attributes, np.zeros((1, 6)))
    assert anns[0].key == "0--Parade/0_Parade_a"


def test_format_parse_round_trip():
    anns = parse_bbx_gt(SAMPLE)
    text = format_bbx_gt(anns)
    assert "1--Handshaking/1_H_b.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \n" in text
    assert "449 330 122 149 0 0 0 0 0 0 \n" in text
    again = parse_bbx_gt(text)
    assert [a.path for a in again] == [a.path for a in anns]
    for a, b in zip(anns, again):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.attributes, b.attributes)


@pytest.mark.parametrize(
    "text, msg",
    [
        ("0--Parade/a.jpg\n3\n1 2 3 4 0 0 0 0 0 0\n", "declares 3 faces"),
        ("0--Parade/a.jpg\nmany\n", "bad face count"),
        ("0--Parade/a.jpg\n1\n1 2 x 4\n", "bad line"),
        ("0--Parade/a.jpg\n", "no face-count line"),
    ],
)
def test_parse_bbx_gt_errors(text, msg):
    with pytest.raises(WiderFaceDataError, match=msg):
        parse_bbx_gt(text)


def test_image_key_variants():
    for p in ("images/0--Parade/0_P_1.jpg", "0--Parade/0_P_1.jpg", "0--Parade/0_P_1", "/x/pred/0--Parade/0_P_1.txt"):
        assert image_key(p) == "0--Parade/0_P_1"
    assert image_key("0_P_1.jpg") == "0_P_1"


def test_locate_data_dir_errors(tmp_path):
    with pytest.raises(WiderFaceDataError, match="data directory not found"):
        locate_data_dir(tmp_path / "missing")
    with pytest.raises(WiderFaceDataError, match="no images/ folder"):
        locate_data_dir(tmp_path)
    (tmp_path / "images").mkdir()
    with pytest.raises(WiderFaceDataError, match="no ground truth"):
        locate_data_dir(tmp_path)
    (tmp_path / "wider_face_val_bbx_gt.txt").write_text("0--P/a.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n")
    (tmp_path / "wider_val_dev.txt").write_text("images/0--P/a.jpg\n")
    with pytest.raises(WiderFaceDataError, match="1 listed image"):
        list_images(tmp_path)


def test_real_text_gt_matches_mat_files(wider_val_dev):
    anns = read_bbx_gt(wider_val_dev / "wider_face_val_bbx_gt.txt")
    assert len(anns) == 500 and sum(len(a.boxes) for a in anns) == 8177
    listed = list_images(wider_val_dev)
    assert listed == sorted(a.path for a in anns) and listed == sorted(listed)
    mats = read_eval_mats(wider_val_dev / "ground_truth", [a.key for a in anns])
    assert len(mats) == 500
    for a in anns:
        m = mats[a.key]
        np.testing.assert_array_equal(a.boxes, m.boxes, err_msg=a.key)
        np.testing.assert_array_equal(a.attributes, m.attributes, err_msg=a.key)
        # hard keeps a superset of medium, which keeps a superset of easy
        assert not (m.keep["easy"] & ~m.keep["medium"]).any() and not (m.keep["medium"] & ~m.keep["hard"]).any()
    assert sum(int(m.keep["hard"].sum()) for m in mats.values()) == 6616


def test_read_eval_mats_unknown_key(wider_val_dev):
    with pytest.raises(WiderFaceDataError, match="not in wider_face_val.mat"):
        read_eval_mats(wider_val_dev / "ground_truth", ["0--Parade/no_such_image"])


def test_train_mini_text_only_dir(wider_train_mini):
    d = locate_data_dir(wider_train_mini)
    assert d.mat_dir is None and d.gt_text.name == "wider_face_train_bbx_gt.txt"
    anns = read_bbx_gt(d.gt_text)
    assert list_images(wider_train_mini) == sorted(a.path for a in anns)
    # declared counts equal the parsed boxes: count lines are the lines right after each path line
    lines = d.gt_text.read_text().splitlines()
    declared = [int(lines[i + 1]) for i, ln in enumerate(lines) if ln.strip().endswith(".jpg")]
    assert [len(a.boxes) for a in anns] == declared
