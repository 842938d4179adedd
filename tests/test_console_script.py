"""The installed ``facesieve`` console script, run as a user runs it (a subprocess): exit codes
of every command for success, usage errors and partial failures, and runs killed with SIGKILL
that leave nothing half-written and complete when re-run.

Exit codes (facesieve/cli): 0 success; 1 some inputs failed, the rest was done; 2 usage error.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script() -> str:
    """The console script pip installed beside this interpreter (the real entry point, not
    ``python -m``); else the one on PATH."""
    beside = Path(sys.executable).parent / "facesieve"
    found = str(beside) if beside.is_file() else shutil.which("facesieve")
    if found is None:
        pytest.fail("the facesieve console script is not installed (pip install -e .)")
    return found


def _env(tmp_path: Path) -> dict[str, str]:
    # this checkout's code, a private weights cache
    return {**os.environ, "PYTHONPATH": str(ROOT), "FACESIEVE_CACHE": str(tmp_path / "cache")}


def fs(tmp_path: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([_script(), *map(str, args)], capture_output=True, text=True, env=_env(tmp_path),
                          timeout=timeout, cwd=tmp_path)


def _ok(r: subprocess.CompletedProcess, code: int) -> None:
    assert r.returncode == code, f"exit {r.returncode} (expected {code})\nstdout: {r.stdout[-2000:]}\nstderr: {r.stderr[-2000:]}"


def test_the_script_is_the_package_entry_point():
    text = Path(_script()).read_text(errors="replace")
    assert "facesieve.cli" in text and "main" in text


def test_top_level_and_models(tmp_path):
    r = fs(tmp_path, "--version")
    _ok(r, 0)
    assert r.stdout.startswith("facesieve ")
    _ok(fs(tmp_path), 2)  # no command
    _ok(fs(tmp_path, "no-such-command"), 2)
    r = fs(tmp_path, "models")
    _ok(r, 0)
    assert "retinaface-mnet025" in r.stdout and "mtcnn" in r.stdout
    r = fs(tmp_path, "models", "--json")
    _ok(r, 0)
    assert "retinaface-mnet025" in json.dumps(json.loads(r.stdout))
    _ok(fs(tmp_path, "models", "--bogus"), 2)


def test_detect_exit_codes(tmp_path, example_image):
    out = tmp_path / "out"
    r = fs(tmp_path, "detect", example_image, "--out", out)
    _ok(r, 0)
    rec = json.loads((out / "astronaut.json").read_text())
    assert len(rec["faces"]) == 1 and (out / "astronaut.jpg").is_file()
    _ok(fs(tmp_path, "detect", "--out", out), 2)  # no input
    _ok(fs(tmp_path, "detect", example_image, "--out", out, "--score-threshold", "abc"), 2)
    _ok(fs(tmp_path, "detect", example_image, "--out", out, "--model", "nope"), 2)
    _ok(fs(tmp_path, "detect", tmp_path / "missing-*.jpg", "--out", out), 2)  # nothing matched
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    out2 = tmp_path / "out2"
    r = fs(tmp_path, "detect", example_image, bad, "--out", out2)
    _ok(r, 1)  # partial failure: the good image is done, the bad one named
    assert "bad.jpg" in r.stdout + r.stderr and json.loads((out2 / "astronaut.json").read_text())["faces"]


def test_eval_exit_codes(tmp_path, wider_val_dev):
    pred = tmp_path / "pred"
    r = fs(tmp_path, "eval", "widerface", wider_val_dev, "--model", "retinaface-mnet025", "--limit", "2",
           "--out", pred)
    _ok(r, 0)
    ap = json.loads((pred / "ap.json").read_text())
    assert 0 < ap["hard"] <= 1
    r = fs(tmp_path, "eval", "widerface", wider_val_dev, "--predictions",
           wider_val_dev / "reference_predictions" / "facenet-mtcnn-default")
    _ok(r, 0)
    assert "80.6" in r.stdout  # easy AP 80.62 (reference README)
    _ok(fs(tmp_path, "eval", "widerface", tmp_path / "no-such-dir", "--model", "mtcnn"), 2)
    _ok(fs(tmp_path, "eval", "widerface", wider_val_dev), 2)  # neither --model nor --predictions
    _ok(fs(tmp_path, "eval"), 2)


def _good_clip(videos_dir: Path) -> Path:
    return videos_dir / "hamilton_short_clip.mp4"


def test_video_exit_codes(tmp_path, videos_dir):
    out = tmp_path / "v"
    r = fs(tmp_path, "video", _good_clip(videos_dir), "--out", out, "--frames", "2")
    _ok(r, 0)
    assert (out / "hamilton_short_clip").is_dir()
    _ok(fs(tmp_path, "video", _good_clip(videos_dir)), 2)  # no --out
    _ok(fs(tmp_path, "video", tmp_path / "none-*.mp4", "--out", out), 2)  # nothing matched
    _ok(fs(tmp_path, "video", _good_clip(videos_dir), "--out", out, "--frames", "0"), 2)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\0" * 5000)
    r = fs(tmp_path, "video", _good_clip(videos_dir), broken, "--out", tmp_path / "v2", "--frames", "2")
    _ok(r, 1)  # the good clip done, the broken one failed and named
    assert "broken.mp4" in r.stderr and (tmp_path / "v2" / "hamilton_short_clip").is_dir()


def test_label_exit_codes(tmp_path, example_image):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    shutil.copy(example_image, root / "images" / "a.jpg")
    (root / "images" / "b.jpg").write_text("not an image")
    (root / "gt.jsonl").write_text('{"image": "images/a.jpg", "faces": [{"box": [170, 60, 255, 170]}]}\n')
    r = fs(tmp_path, "label", "--data", root / "gt.jsonl", "--out", tmp_path / "l1" / "label.txt")
    _ok(r, 0)
    text = (tmp_path / "l1" / "label.txt").read_text()
    assert text.startswith("# images/a.jpg") and len(text.splitlines()) == 2
    # one unreadable image: labels written for the rest, exit 1
    with open(root / "gt.jsonl", "a") as f:
        f.write('{"image": "images/b.jpg", "faces": [{"box": [1, 1, 20, 20]}]}\n')
    r = fs(tmp_path, "label", "--data", root / "gt.jsonl", "--out", tmp_path / "l2" / "label.txt")
    _ok(r, 1)
    assert "b.jpg" in r.stderr and (tmp_path / "l2" / "label.txt").is_file()
    _ok(fs(tmp_path, "label", "--out", tmp_path / "l3.txt"), 2)  # no --data
    _ok(fs(tmp_path, "label", "--data", tmp_path / "nope", "--out", tmp_path / "l3.txt"), 2)


@pytest.mark.parametrize("model", ["retinaface", "mtcnn"])
def test_train_usage_errors(tmp_path, model):
    _ok(fs(tmp_path, "train", model, "--out", tmp_path / "r"), 2)  # no --data
    _ok(fs(tmp_path, "train", model, "--data", tmp_path / "nope", "--out", tmp_path / "r"), 2)
    _ok(fs(tmp_path, "train"), 2)


def test_export_exit_codes(tmp_path):
    r = fs(tmp_path, "export", "retinaface-mnet025", "--out", tmp_path / "m.onnx")
    _ok(r, 0)
    import onnx

    onnx.checker.check_model(onnx.load(str(tmp_path / "m.onnx")))
    _ok(fs(tmp_path, "export", "retinaface-mnet025"), 2)  # no --out
    _ok(fs(tmp_path, "export", "nope", "--out", tmp_path / "x.onnx"), 2)
    _ok(fs(tmp_path, "export", "retinaface-mnet025", "--out", tmp_path / "y.onnx", "--weights",
           tmp_path / "missing.pth"), 2)
    assert not (tmp_path / "y.onnx").exists()


# ----------------------------------------------------------------------------- SIGKILL


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"finished (exit {proc.returncode}) before it could be killed")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError("never reached the point to kill at")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL


def _visible(d: Path) -> list[Path]:
    return [p for p in d.rglob("*") if p.is_file() and not any(part.startswith(".tmp-") for part in p.relative_to(d).parts)]


def test_detect_jsonl_killed_then_rerun(tmp_path, wider_val_dev):
    from facesieve.data.widerface import image_paths, list_images

    images = [str(p) for p in image_paths(wider_val_dev, list_images(wider_val_dev)[:24])]
    out = tmp_path / "out"
    args = [_script(), "detect", *images, "--out", str(out), "--jsonl"]
    proc = subprocess.Popen(args, env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(proc, lambda: out.is_dir() and len(list(out.glob("*.jpg"))) >= 3)
    # nothing half-written: no detections.jsonl yet (it is renamed into place at the end), every
    # annotated image decodes whole, summary.json (if there) parses
    assert not (out / "detections.jsonl").exists()
    for p in _visible(out):
        if p.suffix == ".jpg":
            assert cv2.imread(str(p)) is not None and p.read_bytes()[-2:] == b"\xff\xd9", p
        elif p.suffix == ".json":
            json.loads(p.read_text())  # parses: whole
    r = subprocess.run(args, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    _ok(r, 0)
    lines = (out / "detections.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["image"] for line in lines) == sorted(images)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processed"] == 24 and not summary["failed"] and summary.get("complete", True) is True
    assert len(list(out.glob("*.jpg"))) == 24


def test_video_killed_then_rerun(tmp_path, videos_dir):
    clips = [str(videos_dir / n) for n in ("hamilton_short_clip.mp4", "ffpp_youtube_004.mp4", "dfdc_widuwuoiur.mp4")]
    out = tmp_path / "v"
    args = [_script(), "video", *clips, "--out", str(out), "--frames", "6", "--backend", "onnxruntime"]
    proc = subprocess.Popen(args, env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # kill in the middle of a video: its temp folder exists from the start of its processing until it
    # is published (waiting for crops inside it raced: they are written and published within ms)
    _kill_when(proc, lambda: out.is_dir() and any(True for _ in out.glob(".tmp-*")))
    # published video folders are complete; every crop anywhere (even in a temp folder) decodes whole
    for d in out.iterdir():
        if d.is_dir() and not d.name.startswith(".tmp-"):
            assert (d / "manifest.jsonl").is_file(), d
    for crop in out.rglob("crops/*.jpg"):
        assert cv2.imread(str(crop)) is not None and crop.read_bytes()[-2:] == b"\xff\xd9", crop
    r = subprocess.run(args, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    _ok(r, 0)
    assert not list(out.glob(".tmp-*"))  # stale temp folders cleaned up
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True and summary["failed"] == 0
    for clip in clips:
        d = out / Path(clip).stem
        rows = [json.loads(x) for x in (d / "manifest.jsonl").read_text().splitlines()]
        assert rows and all((out / c).is_file() for row in rows for c in row.get("crop_paths", [])), clip
