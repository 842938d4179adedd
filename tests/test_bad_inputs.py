"""Bad and unusual image files, end to end: loader -> Detector -> `facesieve detect` outputs.

Each input gets a correct result or a clear per-file error naming the file; a batch with a
mix goes on, reports the bad ones and exits 1; the output dir only ever holds complete files.
Fake-detector tests use a bright rectangle as the "face" (see test_cli_detect); tests marked
``real`` run the RetinaFace detector on examples/astronaut.jpg, whose face we checked lies
at about x 170-255, y 60-170 of the 512x512 image.
"""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest
from PIL import Image

import facesieve
import facesieve.io
from facesieve.cli import main
from facesieve.io import ImageError, load_image
from test_cli_detect import BrightBoxDetector

W, H = 64, 48
BOX = (5, 8, 30, 20)  # x1, y1, x2, y2 of the bright rectangle: asymmetric, so every flip/rotation moves it
ASTRONAUT_FACE = (170.0, 60.0, 255.0, 170.0)


def marker_rgb(w: int = W, h: int = H, box=BOX, fg=255, bg=30) -> np.ndarray:
    a = np.full((h, w, 3), bg, np.uint8)
    a[box[1] : box[3], box[0] : box[2]] = fg
    return a


def _save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def _png16(path: Path) -> Path:
    g = np.full((H, W), 20000, np.uint16)
    g[BOX[1] : BOX[3], BOX[0] : BOX[2]] = 65535
    cv2.imwrite(str(path), g)
    return path


def _png16_rgb(path: Path) -> Path:
    cv2.imwrite(str(path), marker_rgb().astype(np.uint16) * 257)  # 16-bit BGR (grey: order moot)
    return path


def _palette_transparent(path: Path) -> Path:
    idx = np.zeros((H, W), np.uint8)
    idx[BOX[1] : BOX[3], BOX[0] : BOX[2]] = 1
    img = Image.fromarray(idx, mode="P")
    img.putpalette([30, 30, 30, 255, 255, 255] + [0] * 762)
    return _save(img, path, transparency=0)


def _rgba(path: Path) -> Path:
    a = np.dstack([marker_rgb(), np.zeros((H, W), np.uint8)])
    a[BOX[1] : BOX[3], BOX[0] : BOX[2], 3] = 255
    return _save(Image.fromarray(a, "RGBA"), path)


def _truncated_jpeg(path: Path) -> Path:
    rng = np.random.default_rng(0)
    full = path.with_name("full.bin")
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(full, format="JPEG")
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    full.unlink()
    return path


def _huge_header_png(path: Path) -> Path:
    """A PNG whose header claims 20000 x 10000 px (200 MP): must be refused before decoding."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    ihdr = struct.pack(">IIBBBBB", 20000, 10000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


# name -> (make file in dir, expected): expected is a reason substring (error) or the box (x1, y1, x2, y2)
CASES: dict[str, tuple[Callable[[Path], Path], object]] = {
    "missing.jpg": (lambda p: p, "file not found"),
    "empty.jpg": (lambda p: (p.write_bytes(b""), p)[1], "file is empty (0 bytes)"),
    "truncated.jpg": (_truncated_jpeg, "image file is truncated or corrupt"),
    "text.jpg": (lambda p: (p.write_text("this is not a JPEG\n"), p)[1], "not a recognised image format"),
    "huge_header.png": (_huge_header_png, "image too large"),
    "gray.png": (lambda p: _save(Image.fromarray(marker_rgb()).convert("L"), p), BOX),
    "gray.jpg": (lambda p: _save(Image.fromarray(marker_rgb()).convert("L"), p, quality=95), BOX),
    "rgba.png": (_rgba, BOX),
    "gray16.png": (_png16, BOX),
    "rgb16.png": (_png16_rgb, BOX),
    "palette_transparent.png": (_palette_transparent, BOX),
    "cmyk.jpg": (lambda p: _save(Image.fromarray(marker_rgb()).convert("CMYK"), p, quality=95), BOX),
    "one_pixel.png": (lambda p: _save(Image.new("RGB", (1, 1), (255, 255, 255)), p), (0, 0, 1, 1)),
}


def make_case(tmp: Path, name: str) -> tuple[Path, object]:
    maker, expected = CASES[name]
    path = maker(tmp / name)
    if name != "missing.jpg":
        assert path.exists()
    return path, expected


@pytest.fixture
def fake(monkeypatch) -> BrightBoxDetector:
    det = BrightBoxDetector()
    monkeypatch.setattr(facesieve, "load", lambda *a, **k: det)
    return det


def assert_complete_outputs(out: Path) -> None:
    """Only finished files: no temp files, every JSON parses, every JPEG decodes."""
    names = [p.name for p in out.iterdir()]
    assert not [n for n in names if n.startswith(".tmp-")], names
    for p in out.iterdir():
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".jsonl":
            [json.loads(line) for line in p.read_text().splitlines()]
        elif p.suffix == ".jpg":
            assert cv2.imread(str(p)) is not None, p


@pytest.mark.parametrize("name", list(CASES))
def test_each_input_gives_a_result_or_an_error_naming_the_file(tmp_path, fake, name):
    path, expected = make_case(tmp_path, name)
    det = facesieve.load()
    if isinstance(expected, str):
        with pytest.raises(ImageError) as e:
            det.detect(path)
        assert e.value.path == str(path) and str(e.value).startswith(f"{path}: ") and expected in str(e.value)
        return
    faces = det.detect(path)
    assert [f.box for f in faces] == [tuple(float(v) for v in expected)]
    # the CLI on the single file agrees
    out = tmp_path / "out"
    assert main(["detect", str(path), "--out", str(out), "-q"]) == 0
    rec = json.loads((out / f"{path.stem}.json").read_text())
    assert rec["faces"][0]["box"] == list(expected)
    assert_complete_outputs(out)


def test_colour_modes_keep_their_colours(tmp_path):
    red = np.zeros((H, W, 3), np.uint8)
    red[..., 0] = 220
    for mode, ext in [("CMYK", "jpg"), ("RGBA", "png"), ("P", "png")]:
        p = tmp_path / f"red_{mode}.{ext}"
        Image.fromarray(red).convert(mode).save(p, quality=95) if ext == "jpg" else Image.fromarray(red).convert(mode).save(p)
        r, g, b = load_image(p)[H // 2, W // 2].astype(int)
        assert r > 200 and g < 25 and b < 25, (mode, r, g, b)


def _orient(a: np.ndarray, tag: int) -> np.ndarray:
    """How a viewer displays stored pixels ``a`` carrying EXIF Orientation ``tag`` (EXIF 2.3, 0x0112)."""
    return {
        1: lambda x: x,
        2: lambda x: x[:, ::-1],
        3: lambda x: x[::-1, ::-1],
        4: lambda x: x[::-1],
        5: lambda x: x.transpose(1, 0, 2),
        6: lambda x: np.rot90(x, -1),
        7: lambda x: x.transpose(1, 0, 2)[::-1, ::-1],
        8: lambda x: np.rot90(x, 1),
    }[tag](a)


def _save_with_orientation(a: np.ndarray, path: Path, tag: int) -> Path:
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = tag
    img.save(path, exif=exif, quality=95)
    return path


@pytest.mark.parametrize("tag", range(1, 9))
def test_exif_orientation_detections_are_in_the_displayed_frame(tmp_path, fake, tag):
    stored = marker_rgb()
    path = _save_with_orientation(stored, tmp_path / f"o{tag}.jpg", tag)
    shown = _orient(stored, tag)
    ys, xs = np.nonzero(shown[..., 0] > 200)
    expected = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
    out = tmp_path / "out"
    assert main(["detect", str(path), "--out", str(out), "-q"]) == 0
    rec = json.loads((out / f"o{tag}.json").read_text())
    assert (rec["width"], rec["height"]) == (shown.shape[1], shown.shape[0])
    assert rec["faces"][0]["box"] == expected
    assert cv2.imread(str(out / f"o{tag}.jpg")).shape == shown.shape


def test_mixed_batch_goes_on_reports_bad_files_and_exits_1(tmp_path, fake, capsys):
    src = tmp_path / "in"
    src.mkdir()
    made = {name: make_case(src, name) for name in CASES}
    out = tmp_path / "out"
    rc = main(["detect", str(src), str(src / "missing.jpg"), "--out", str(out), "--batch-size", "4"])
    assert rc == 1
    summary = json.loads((out / "summary.json").read_text())
    bad = {str(p): exp for p, exp in made.values() if isinstance(exp, str)}
    assert {f["image"]: f["error"] for f in summary["failed"]}.keys() == bad.keys()
    for f in summary["failed"]:
        assert bad[f["image"]] in f["error"]
    good = {str(p): exp for p, exp in made.values() if not isinstance(exp, str)}
    assert summary["processed"] == len(good) and summary["faces"] == len(good)
    written = {e["image"]: e for e in summary["images"]}
    assert written.keys() == good.keys()
    assert written[str(src / "gray.jpg")]["json"] == "gray.json" and written[str(src / "gray.png")]["json"] == "gray-2.json"
    for path, box in good.items():
        rec = json.loads((out / written[path]["json"]).read_text())
        assert rec["image"] == path and rec["faces"][0]["box"] == list(box)
        assert (out / written[path]["annotated"]).is_file()
    assert_complete_outputs(out)
    err = capsys.readouterr().err
    for path in bad:
        assert f"failed: {path}: " in err


def test_failed_write_and_interrupt_leave_no_partial_files(tmp_path, fake, monkeypatch):
    imgs = []
    for k in range(4):
        p = tmp_path / f"{k}.png"
        Image.fromarray(marker_rgb(w=W + k)).save(p)
        imgs.append(str(p))
    import facesieve.viz

    real_encode = facesieve.viz.encode_jpeg

    def flaky_encode(image, quality=90):
        if image.shape[1] == W + 1:
            raise OSError(28, "No space left on device")
        return real_encode(image, quality)

    real_write_text = facesieve.io.atomic_write_text

    def flaky_write_text(path, text):  # image 2: its JPEG is written, then its JSON fails
        if Path(path).name == "2.json":
            raise OSError(28, "No space left on device")
        real_write_text(path, text)

    monkeypatch.setattr(facesieve.viz, "encode_jpeg", flaky_encode)
    monkeypatch.setattr(facesieve.io, "atomic_write_text", flaky_write_text)
    out = tmp_path / "out"
    assert main(["detect", *imgs, "--out", str(out), "-q"]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == [{"image": imgs[k], "error": "cannot write output: No space left on device"}
                                 for k in (1, 2)]
    assert sorted(p.name for p in out.iterdir()) == ["0.jpg", "0.json", "3.jpg", "3.json", "summary.json"]

    # Ctrl-C in the middle of a --jsonl run: no detections.jsonl, no temp file, exit 130
    monkeypatch.setattr(facesieve.viz, "encode_jpeg", real_encode)
    calls = []

    def interrupt(images, score_threshold, nms_threshold):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return BrightBoxDetector._detect_arrays(fake, images, score_threshold, nms_threshold)

    monkeypatch.setattr(fake, "_detect_arrays", interrupt)
    out2 = tmp_path / "out2"
    assert main(["detect", *imgs, "--out", str(out2), "--jsonl", "--batch-size", "2", "-q"]) == 130
    assert len(calls) == 2
    assert sorted(p.name for p in out2.iterdir()) == ["0.jpg", "1.jpg", "summary.json"]
    summary2 = json.loads((out2 / "summary.json").read_text())
    assert summary2["complete"] is False and summary2["interrupted"] == "SIGINT"
    assert [e["image"] for e in summary2["images"]] == imgs[:2] and summary2["processed"] == 2
    assert_complete_outputs(out2)


# ---------------------------------------------------------------- the real detector


@pytest.fixture(scope="module")
def real_detector():
    try:
        return facesieve.load("retinaface-mnet025")
    except ModuleNotFoundError as e:
        if e.name == "facesieve.detectors.retinaface":
            pytest.skip("RetinaFace detector not in the tree yet")
        raise


def _on_astronaut_face(box, scale: float = 1.0, dx: float = 0.0, dy: float = 0.0) -> bool:
    """Box centre inside the known face region, and box of a face's size."""
    fx1, fy1, fx2, fy2 = (v * scale for v in ASTRONAUT_FACE)
    cx, cy = (box[0] + box[2]) / 2 - dx, (box[1] + box[3]) / 2 - dy
    w = box[2] - box[0]
    return fx1 < cx < fx2 and fy1 < cy < fy2 and 0.5 * (fx2 - fx1) < w < 1.6 * (fx2 - fx1)


def test_real_demo_finds_the_astronaut(tmp_path, real_detector, example_image, monkeypatch, capsys):
    """What `make demo` runs, in-process (the model loaded once per module)."""
    monkeypatch.setattr(facesieve, "load", lambda *a, **k: real_detector)
    out = tmp_path / "demo_out"
    assert main(["detect", str(example_image), "--out", str(out)]) == 0
    rec = json.loads((out / "astronaut.json").read_text())
    assert rec["model"] == "retinaface-mnet025" and (rec["width"], rec["height"]) == (512, 512)
    best = max(rec["faces"], key=lambda f: f["score"])
    assert best["score"] > 0.9 and _on_astronaut_face(best["box"]) and len(best["landmarks"]) == 5
    assert cv2.imread(str(out / "astronaut.jpg")).shape == (512, 512, 3)
    assert "1 image processed, 1 face found, 0 failed" in capsys.readouterr().out
    assert_complete_outputs(out)


@pytest.mark.parametrize("tag", [6, 8])
def test_real_detector_exif_rotated_face_lands_on_the_face(tmp_path, real_detector, example_image, tag):
    upright = np.asarray(Image.open(example_image).convert("RGB"))
    # store the pixels so that applying the tag shows the upright photo
    inverse = {3: lambda x: x[::-1, ::-1], 6: lambda x: np.rot90(x, 1), 8: lambda x: np.rot90(x, -1)}[tag]
    stored = np.ascontiguousarray(inverse(upright))
    assert np.array_equal(_orient(stored, tag), upright)
    path = _save_with_orientation(stored, tmp_path / f"astronaut_o{tag}.jpg", tag)
    faces = real_detector.detect(path)
    assert faces and _on_astronaut_face(max(faces, key=lambda f: f.score).box)
    lm = max(faces, key=lambda f: f.score).landmarks
    if lm is not None:  # upright frame: eyes above the mouth, left eye left of the right eye
        assert lm[0, 0] < lm[1, 0] and lm[:2, 1].max() < lm[3:, 1].min()


@pytest.mark.parametrize("mode", ["L", "CMYK", "I;16"])  # RGBA, P: exact checks above
def test_real_detector_on_other_colour_modes(tmp_path, real_detector, example_image, mode):
    rgb = Image.open(example_image).convert("RGB")
    if mode == "I;16":
        path = tmp_path / "astronaut16.png"
        cv2.imwrite(str(path), cv2.cvtColor(np.asarray(rgb), cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
    else:
        path = tmp_path / f"astronaut_{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
        rgb.convert(mode).save(path)
    faces = real_detector.detect(path)
    assert faces and _on_astronaut_face(max(faces, key=lambda f: f.score).box)


def test_real_detector_bad_file_and_tiny_image(tmp_path, real_detector):
    bad = tmp_path / "holiday.jpg"
    bad.write_text("not an image")
    with pytest.raises(ImageError, match="holiday.jpg: not a recognised image format"):
        real_detector.detect(bad)
    with pytest.raises(ImageError, match="nope.png: file not found"):
        real_detector.detect(tmp_path / "nope.png")
    for size in [(1, 1), (3, 2), (1, 40)]:
        Image.new("RGB", size, (128, 128, 128)).save(tmp_path / "tiny.png")
        assert real_detector.detect(tmp_path / "tiny.png") == []


@pytest.mark.slow
def test_real_detector_very_large_image_via_cli(tmp_path, real_detector, example_image, monkeypatch):
    """12000 x 9000 photo (108 MP): the astronaut scaled x2 at (7000, 5000), among other files.

    (At x2 the face is ~200 px: the default detector runs at the original resolution, and
    its anchors go up to 512 px.)"""
    monkeypatch.setattr(facesieve, "load", lambda *a, **k: real_detector)
    src = tmp_path / "in"
    src.mkdir()
    big = np.full((9000, 12000, 3), 90, np.uint8)
    face = cv2.resize(np.asarray(Image.open(example_image).convert("RGB")), (1024, 1024), interpolation=cv2.INTER_LINEAR)
    big[5000:6024, 7000:8024] = face
    Image.fromarray(big).save(src / "large.jpg", quality=85)
    del big, face
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    Image.open(example_image).save(src / "small.jpg")
    out = tmp_path / "out"
    assert main(["detect", str(src), "--out", str(out), "-q"]) == 1
    rec = json.loads((out / "large.json").read_text())
    assert (rec["width"], rec["height"]) == (12000, 9000)
    best = max(rec["faces"], key=lambda f: f["score"])
    assert _on_astronaut_face(best["box"], scale=2.0, dx=7000, dy=5000), best
    assert cv2.imread(str(out / "large.jpg")).shape == (9000, 12000, 3)
    summary = json.loads((out / "summary.json").read_text())
    assert [f["image"] for f in summary["failed"]] == [str(src / "broken.jpg")] and summary["processed"] == 2
    assert_complete_outputs(out)
