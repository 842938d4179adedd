"""`facesieve detect`, path expansion and drawing, against a fake detector with known answers.

The fake "face" is the bounding box of the bright pixels (all channels > 200) of an image,
so every expected box is computed from the pixels we put there.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pytest
from PIL import Image

import facesieve
from facesieve.cli import main
from facesieve.cli.detect import assign_stems
from facesieve.detectors.base import Detector
from facesieve.io.paths import expand_inputs
from facesieve.types import LANDMARK_NAMES, Face
from facesieve.viz import LANDMARK_COLORS, draw_faces, encode_jpeg, line_thickness


class BrightBoxDetector(Detector):
    """Finds one 'face': the box around pixels brighter than 200 in every channel."""

    name = "bright-box"

    def __init__(self, fail_on_width: int | None = None):
        self.batches: list[list[tuple[int, int]]] = []
        self.fail_on_width = fail_on_width

    def _detect_arrays(self, images: Sequence[np.ndarray], score_threshold: float, nms_threshold: float):
        self.batches.append([im.shape[:2] for im in images])
        if any(im.shape[1] == self.fail_on_width for im in images):
            raise RuntimeError("simulated network failure")
        out = []
        for im in images:
            ys, xs = np.nonzero((im > 200).all(axis=2))
            if len(xs) == 0:
                out.append([])
                continue
            x1, y1, x2, y2 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
            cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
            lms = np.array([[cx - w / 4, cy - h / 6], [cx + w / 4, cy - h / 6], [cx, cy],
                            [cx - w / 5, cy + h / 4], [cx + w / 5, cy + h / 4]], np.float32)
            out.append([Face((x1, y1, x2, y2), 0.9, lms, self.name)])
        return out


def make_image(path: Path, size=(64, 48), box=(10, 8, 30, 28), **save) -> tuple[float, ...]:
    """Dark (W, H) image with a white rectangle at box (x1, y1, x2, y2); returns the box."""
    w, h = size
    a = np.full((h, w, 3), 30, np.uint8)
    x1, y1, x2, y2 = box
    a[y1:y2, x1:x2] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path, **save)
    return tuple(float(v) for v in box)


@pytest.fixture
def fake(monkeypatch) -> BrightBoxDetector:
    det = BrightBoxDetector()
    calls = []

    def load(name=facesieve.DEFAULT_MODEL, weights=None, device="cpu", **options):
        calls.append((name, weights, device))
        return det

    monkeypatch.setattr(facesieve, "load", load)
    det.load_calls = calls  # type: ignore[attr-defined]
    return det


def out_files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*"))


def test_detect_one_image_writes_annotated_jpeg_json_and_summary(tmp_path, fake, capsys):
    img = tmp_path / "in" / "face.png"
    box = make_image(img, size=(80, 60), box=(20, 10, 50, 40), format="PNG")
    out = tmp_path / "out"
    rc = main(["detect", str(img), "--out", str(out), "--weights", "w.pth", "--device", "cpu"])
    assert rc == 0
    assert fake.load_calls == [("retinaface-mnet025", "w.pth", "cpu")]
    assert out_files(out) == ["face.jpg", "face.json", "summary.json"]
    rec = json.loads((out / "face.json").read_text())
    assert rec["image"] == str(img) and (rec["width"], rec["height"]) == (80, 60)
    assert rec["model"] == "bright-box" and len(rec["faces"]) == 1
    assert rec["faces"][0]["box"] == list(box) and len(rec["faces"][0]["landmarks"]) == 5
    annotated = cv2.imread(str(out / "face.jpg"))
    assert annotated.shape == (60, 80, 3)
    # the green box edge is drawn on the left side of the face box (BGR: G high, R low)
    b, g, r = annotated[25, 20].astype(int)
    assert g > 180 and r < 100 and b < 100
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processed"] == 1 and summary["faces"] == 1 and summary["failed"] == []
    assert summary["images"] == [{"image": str(img), "faces": 1, "annotated": "face.jpg", "json": "face.json"}]
    text = capsys.readouterr().out
    assert "1 image processed, 1 face found, 0 failed" in text and "summary.json" in text


def test_directories_recurse_globs_expand_sorted_and_deduplicated(tmp_path):
    root = tmp_path / "photos"
    for rel in ["b.jpg", "a.PNG", "sub/c.jpeg", "sub/deeper/d.webp", "notes.txt", ".hidden.jpg", ".cache/e.jpg"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    res = expand_inputs([root, str(root / "*.jpg"), str(root / "b.jpg"), str(tmp_path / "none*.png")])
    assert [p.relative_to(root).as_posix() for p in res.paths] == ["a.PNG", "b.jpg", "sub/c.jpeg", "sub/deeper/d.webp"]
    assert res.unmatched == [str(tmp_path / "none*.png")]
    rec = expand_inputs([str(tmp_path / "**" / "*.jpeg")])
    assert [p.name for p in rec.paths] == ["c.jpeg"]
    # explicit files are kept as given even when missing or not image-named, to be reported per file
    res = expand_inputs([str(root / "notes.txt"), str(root / "missing.jpg")])
    assert [p.name for p in res.paths] == ["notes.txt", "missing.jpg"] and res.unmatched == []


def test_output_dir_inside_input_dir_is_not_rescanned(tmp_path, fake):
    root = tmp_path / "photos"
    make_image(root / "a.png")
    out = root / "detected"
    assert main(["detect", str(root), "--out", str(out), "-q"]) == 0
    assert main(["detect", str(root), "--out", str(out), "-q"]) == 0
    assert json.loads((out / "summary.json").read_text())["inputs"] == 1
    # ...but naming the output dir explicitly does use it
    assert [p.name for p in expand_inputs([out], exclude=[out]).paths] == ["a.jpg"]


def test_name_clashes_are_resolved_deterministically(tmp_path, fake):
    paths = [tmp_path / "a" / "x.png", tmp_path / "b" / "x.jpg", tmp_path / "c" / "x-2.png",
             tmp_path / "d" / "X.png", tmp_path / "e" / "summary.png"]
    for i, p in enumerate(paths):
        make_image(p, size=(40 + i, 40))
    assert assign_stems(paths, tmp_path / "out") == ["x", "x-3", "x-2", "X-4", "summary-2"]
    out = tmp_path / "out"
    assert main(["detect", *map(str, paths), "--out", str(out), "-q"]) == 0
    for p, stem in zip(paths, ["x", "x-3", "x-2", "X-4", "summary-2"]):
        rec = json.loads((out / f"{stem}.json").read_text())
        assert rec["image"] == str(p) and rec["width"] == 40 + paths.index(p)
        assert (out / f"{stem}.jpg").is_file()
    assert json.loads((out / "summary.json").read_text())["processed"] == 5


def test_outputs_never_overwrite_inputs(tmp_path, fake):
    src = tmp_path / "a.jpg"
    make_image(src)
    before = src.read_bytes()
    assert main(["detect", str(src), "--out", str(tmp_path), "-q"]) == 0
    assert src.read_bytes() == before
    assert json.loads((tmp_path / "a-2.json").read_text())["image"] == str(src)
    assert (tmp_path / "a-2.jpg").is_file()


def test_jsonl_and_no_draw(tmp_path, fake):
    imgs = [tmp_path / f"i{k}.png" for k in range(3)]
    for k, p in enumerate(imgs):
        make_image(p, box=(k, k, 10 + k, 10 + k))
    out = tmp_path / "out"
    assert main(["detect", *map(str, imgs), "--out", str(out), "--jsonl", "--no-draw", "-q"]) == 0
    assert out_files(out) == ["detections.jsonl", "summary.json"]
    lines = [json.loads(s) for s in (out / "detections.jsonl").read_text().splitlines()]
    assert [r["image"] for r in lines] == list(map(str, imgs))
    assert [r["faces"][0]["box"] for r in lines] == [[k, k, 10 + k, 10 + k] for k in range(3)]


def test_batches_skip_bad_files_and_cap_padded_pixels(tmp_path, fake, capsys, monkeypatch):
    monkeypatch.setattr("facesieve.cli.detect.MAX_BATCH_PIXELS", 30_000)
    imgs = []
    for k in range(7):
        p = tmp_path / f"{k}.png"
        make_image(p, size=(50 + k, 40))
        imgs.append(p)
    (tmp_path / "3.png").write_text("not an image")
    big = tmp_path / "big.png"
    make_image(big, size=(200, 180), box=(100, 20, 140, 30))  # 2 x 36000 px > 30000 px batch budget
    out = tmp_path / "out"
    rc = main(["detect", *map(str, imgs[:5]), str(big), *map(str, imgs[5:]), "--out", str(out), "--batch-size", "3"])
    assert rc == 1
    # the bad file is skipped without breaking its batch; the huge image runs alone
    assert fake.batches == [[(40, 50), (40, 51), (40, 52)], [(40, 54)], [(180, 200)], [(40, 55), (40, 56)]]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == [{"image": str(tmp_path / "3.png"), "error": "not a recognised image format"}]
    assert summary["processed"] == 7 and summary["faces"] == 7
    assert json.loads((out / "big.json").read_text())["faces"][0]["box"] == [100, 20, 140, 30]
    captured = capsys.readouterr()
    assert f"failed: {tmp_path / '3.png'}: not a recognised image format" in captured.err
    assert "7 images processed, 7 faces found, 1 failed" in captured.out


def test_a_detection_failure_is_isolated_to_its_image(tmp_path, monkeypatch):
    det = BrightBoxDetector(fail_on_width=52)
    monkeypatch.setattr(facesieve, "load", lambda *a, **k: det)
    imgs = [tmp_path / f"{k}.png" for k in range(4)]
    for k, p in enumerate(imgs):
        make_image(p, size=(50 + k, 40))
    out = tmp_path / "out"
    assert main(["detect", *map(str, imgs), "--out", str(out), "--batch-size", "4", "-q"]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == [{"image": str(imgs[2]),
                                  "error": "detection failed: RuntimeError: simulated network failure"}]
    assert sorted(p.name for p in out.glob("*.json")) == ["0.json", "1.json", "3.json", "summary.json"]


def test_usage_errors_exit_2(tmp_path, fake, monkeypatch, capsys):
    out = tmp_path / "out"
    assert main(["detect", str(tmp_path / "*.jpg"), "--out", str(out)]) == 2
    assert "no images found" in capsys.readouterr().err and not out.exists()
    (tmp_path / "empty_dir").mkdir()
    assert main(["detect", str(tmp_path / "empty_dir"), "--out", str(out)]) == 2
    img = tmp_path / "a.png"
    make_image(img)
    for bad in (["--score-threshold", "1.5"], ["--batch-size", "0"], ["--model", "nope"]):
        with pytest.raises(SystemExit) as e:
            main(["detect", str(img), *bad])
        assert e.value.code == 2

    (tmp_path / "file").write_text("x")
    assert main(["detect", str(img), "--out", str(tmp_path / "file")]) == 2
    assert "cannot create output directory" in capsys.readouterr().err

    def broken_load(*a, **k):
        raise FileNotFoundError("weights file not found: /x.pth")

    monkeypatch.setattr(facesieve, "load", broken_load)
    assert main(["detect", str(img), "--out", str(out), "--weights", "/x.pth"]) == 2
    assert "cannot load model 'retinaface-mnet025': weights file not found: /x.pth" in capsys.readouterr().err


def test_unmatched_glob_among_good_inputs_exits_1(tmp_path, fake):
    img = tmp_path / "a.png"
    make_image(img)
    out = tmp_path / "out"
    assert main(["detect", str(img), str(tmp_path / "*.gif"), "--out", str(out), "-q"]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processed"] == 1
    assert summary["failed"] == [{"image": str(tmp_path / "*.gif"), "error": "no images matched"}]


def test_quiet_prints_nothing_on_success(tmp_path, fake, capsys):
    img = tmp_path / "a.png"
    make_image(img)
    assert main(["detect", str(img), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_thresholds_reach_the_detector(tmp_path, monkeypatch):
    seen = []

    class Spy(BrightBoxDetector):
        def _detect_arrays(self, images, score_threshold, nms_threshold):
            seen.append((score_threshold, nms_threshold))
            return super()._detect_arrays(images, score_threshold, nms_threshold)

    monkeypatch.setattr(facesieve, "load", lambda *a, **k: Spy())
    img = tmp_path / "a.png"
    make_image(img)
    main(["detect", str(img), "--out", str(tmp_path / "o"), "-q", "--score-threshold", "0.7", "--nms-threshold", "0.3"])
    main(["detect", str(img), "--out", str(tmp_path / "o"), "-q"])
    assert seen == [(0.7, 0.3), (Spy.score_threshold, Spy.nms_threshold)]


def test_draw_faces_box_score_and_landmark_colours():
    img = np.full((300, 400, 3), 40, np.uint8)
    lms = np.array([[150, 120], [250, 120], [200, 160], [160, 200], [240, 200]], np.float32)
    face = Face((100.0, 80.0, 300.0, 260.0), 0.87, lms, "m")
    drawn = draw_faces(img, [face])
    assert (img == 40).all(), "input must not be modified"
    assert drawn.shape == img.shape and drawn.dtype == np.uint8
    for name, (x, y) in zip(LANDMARK_NAMES, lms.astype(int)):
        assert tuple(drawn[y, x]) == LANDMARK_COLORS[name]
    assert len(set(LANDMARK_COLORS.values())) == 5
    assert np.abs(drawn[170, 100].astype(int) - (0, 255, 0)).max() < 10  # left box edge
    label = drawn[60:80, 100:140]  # score label just above the box: green fill with dark text
    assert ((label == (0, 255, 0)).all(axis=2)).mean() > 0.4 and (label.sum(axis=2) < 100).any()
    assert (drawn[60:80, 100:140] != draw_faces(img, [face], show_scores=False)[60:80, 100:140]).any()
    # box at the top edge: label goes inside, nothing breaks for faces off the image or NaN
    edge = draw_faces(img, [Face((0.0, 0.0, 50.0, 50.0), 0.5), Face((-50.0, 290.0, 900.0, 900.0), 0.5),
                            Face((float("nan"), 0.0, 1.0, 1.0), 0.5)])
    assert np.abs(edge[25, 0].astype(int) - (0, 255, 0)).max() < 10


def test_line_thickness_scales_with_image_size():
    assert line_thickness(512, 512) == 2
    assert line_thickness(9000, 12000) > 25
    big = draw_faces(np.zeros((4000, 4000, 3), np.uint8), [Face((1000.0, 1000.0, 3000.0, 3000.0), 0.9)], show_scores=False)
    small = draw_faces(np.zeros((200, 200, 3), np.uint8), [Face((50.0, 50.0, 150.0, 150.0), 0.9)], show_scores=False)
    assert (big[2000, 960:1040, 1] > 128).sum() >= 10 and (small[100, 40:60, 1] > 128).sum() <= 2
    # a small face in a big image keeps a thin line (<= 1/12 of its side)
    tiny = draw_faces(np.zeros((4000, 4000, 3), np.uint8), [Face((1000.0, 1000.0, 1024.0, 1024.0), 0.9)], show_scores=False)
    assert (tiny[1012, 990:1010, 1] > 128).sum() <= 3


def test_encode_jpeg_keeps_rgb_order():
    img = np.zeros((32, 32, 3), np.uint8)
    img[..., 0] = 255  # pure red in RGB
    dec = cv2.imdecode(np.frombuffer(encode_jpeg(img), np.uint8), cv2.IMREAD_COLOR)  # BGR
    assert dec[16, 16, 2] > 240 and dec[16, 16, 0] < 15


def test_console_entry_point_runs(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "facesieve", "detect", str(tmp_path / "none.*")],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert r.returncode == 2 and "no images found" in r.stderr
