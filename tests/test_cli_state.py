"""Runs that never leave misleading state: interrupted / killed `facesieve detect` runs,
image-like files that cannot be decoded, non-UTF-8 file names on a strict UTF-8 stdout,
errors that name the real OS cause, output directories that follow the umask,
`facesieve label` with unreadable images, and the COCO output read back independently.

Signals and encodings are tested on real processes (``python -m facesieve``).
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import facesieve
from facesieve.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(extra)
    return env


# A `facesieve detect` process whose model takes 0.3 s per image and finds one face at
# (1, 1, 5, 5): slow enough to be interrupted in the middle of a run.
SLOW_DETECT = textwrap.dedent("""
    import sys, time
    import facesieve
    from facesieve.cli import main
    from facesieve.detectors.base import Detector
    from facesieve.types import Face

    class Slow(Detector):
        name = "slow"
        def _detect_arrays(self, images, score_threshold, nms_threshold):
            time.sleep(0.3)
            return [[Face((1.0, 1.0, 5.0, 5.0), 0.9)] for _ in images]

    facesieve.load = lambda *a, **k: Slow()
    sys.exit(main(["detect", *sys.argv[1:]]))
""")


def _images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        p = folder / f"img{k:02d}.png"
        Image.fromarray(np.full((16, 16 + k, 3), 40 + k, np.uint8)).save(p)
        paths.append(p)
    return paths


@pytest.mark.parametrize("sig,rc,name", [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM"),
                                         (signal.SIGKILL, -9, None)])
def test_interrupted_run_replaces_the_old_summary_with_an_incomplete_one(tmp_path, sig, rc, name):
    _images(tmp_path / "in", 30)
    out = tmp_path / "out"
    out.mkdir()
    stale = {"complete": True, "processed": 99, "inputs": 99, "failed": [], "images": []}
    (out / "summary.json").write_text(json.dumps(stale))  # what a previous run left
    proc = subprocess.Popen([sys.executable, "-c", SLOW_DETECT, str(tmp_path / "in"), "--out", str(out),
                             "--batch-size", "1", "-q"], env=_env(), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not (out / "img01.json").exists():  # two images done
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() else "timeout"
            time.sleep(0.05)
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == rc
    finally:
        if proc.poll() is None:
            proc.kill()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and summary["inputs"] == 30
    done = sorted(p.stem for p in out.glob("img*.json"))
    assert 2 <= len(done) < 30
    if name is None:  # SIGKILL: nothing could run; the summary written at the start remains
        assert summary["interrupted"] is None and summary["processed"] == 0
    else:
        assert summary["interrupted"] == name and summary["processed"] == len(done)
        assert [Path(e["image"]).stem for e in summary["images"]] == done
        assert ("terminated" if name == "SIGTERM" else "interrupted") in proc.stderr.read()
    assert not list(out.glob(".tmp-*"))


def test_a_finished_run_says_complete(tmp_path):
    _images(tmp_path / "in", 2)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-c", SLOW_DETECT, str(tmp_path / "in"), "--out", str(out), "-q"],
                       env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["complete"] is True and s["interrupted"] is None and s["processed"] == 2


def test_model_load_failure_leaves_no_stale_summary(tmp_path):
    _images(tmp_path / "in", 1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text(json.dumps({"complete": True, "processed": 5}))
    (tmp_path / "wdir").mkdir()
    assert main(["detect", str(tmp_path / "in"), "--out", str(out), "--weights", str(tmp_path / "wdir"), "-q"]) == 2
    s = json.loads((out / "summary.json").read_text())
    assert s["complete"] is False and s["processed"] == 0 and "is a directory" in s["error"]


# ------------------------------------------------------------------ image-like files


def _heic_like(path: Path) -> Path:
    """The first bytes of an ISO-BMFF HEIC file (ftyp box, brand heic), then junk: what
    Pillow without a HEIF plugin sees of an iPhone photo."""
    path.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200))
    return path


def test_every_image_like_file_is_processed_or_reported(tmp_path, example_image, capsys):
    from PIL import features

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(example_image, src / "a.jpg")
    _heic_like(src / "IMG_0001.HEIC")
    _heic_like(src / "b.heif")
    _heic_like(src / "renamed_heic.jpg")  # HEIC content under a .jpg name
    (src / "c.dng").write_bytes(b"II*\x00" + bytes(100))  # camera raw (TIFF-like header)
    (src / "notes.txt").write_text("not an image")  # not image-like: not picked up
    expected_ok = ["a.jpg"]
    if features.check("avif"):  # this Pillow decodes AVIF: it must be processed
        Image.open(example_image).save(src / "d.avif")
        expected_ok.append("d.avif")
    out = tmp_path / "out"
    assert main(["detect", str(src), "--out", str(out), "--no-draw", "-q"]) == 1
    s = json.loads((out / "summary.json").read_text())
    assert sorted(Path(e["image"]).name for e in s["images"]) == sorted(expected_ok)
    failed = {Path(f["image"]).name: f["error"] for f in s["failed"]}
    assert set(failed) == {"IMG_0001.HEIC", "b.heif", "renamed_heic.jpg", "c.dng"}
    heif_plugin = importlib.util.find_spec("pillow_heif") is not None  # then our junk fails to decode
    for n in ("IMG_0001.HEIC", "b.heif", "renamed_heic.jpg"):
        assert heif_plugin or failed[n] == "HEIC/HEIF image: this Pillow cannot decode it; pip install pillow-heif"
    assert failed["c.dng"].startswith("camera raw image: not supported; convert it to JPEG")
    assert s["inputs"] == len(expected_ok) + 4 and s["complete"] is True
    assert heif_plugin or "failed: " + str(src / "IMG_0001.HEIC") + ": HEIC/HEIF image" in capsys.readouterr().err


# ------------------------------------------------------------------ non-UTF-8 names


@pytest.mark.skipif(sys.platform != "linux", reason="file names are bytes on Linux")
def test_non_utf8_file_names_are_printed_escaped_on_a_strict_stdout(tmp_path, example_image):
    src = tmp_path / "in"
    src.mkdir()
    good = os.fsencode(src) + b"/caf\xe9.jpg"  # Latin-1 name: not valid UTF-8
    bad = os.fsencode(src) + b"/bro\xffken.jpg"
    with open(good, "wb") as f:
        f.write(example_image.read_bytes())
    with open(bad, "wb") as f:
        f.write(b"not a jpeg")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "facesieve", "detect", str(src), "--out", str(out)],
                       env=_env(PYTHONIOENCODING="utf-8:strict", LC_ALL="C.UTF-8"), capture_output=True, timeout=300)
    stdout, stderr = r.stdout.decode("utf-8"), r.stderr.decode("utf-8")  # strict: valid UTF-8 only
    assert r.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert f"{src}/caf\\xe9.jpg: 1 face" in stdout
    assert f"failed: {src}/bro\\xffken.jpg: not a recognised image format" in stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["complete"] and s["processed"] == 1
    assert s["images"][0]["image"] == os.fsdecode(good)  # the real name, recoverable as bytes
    assert os.fsencode(s["images"][0]["image"]) == good
    rec = json.loads(Path(os.fsdecode(os.fsencode(out) + b"/caf\xe9.json")).read_text())
    assert len(rec["faces"]) == 1


# ------------------------------------------------------------------ real OS causes


def test_weights_errors_name_the_real_cause(tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    (tmp_path / "wdir").mkdir()
    for weights, cause in [(tmp_path / "wdir", "weights file is a directory, not a file"),
                           (tmp_path / "none.pth", "weights file not found")]:
        assert main(["detect", str(tmp_path / "x.png"), "--out", str(tmp_path / "o"), "--weights", str(weights)]) == 2
        err = capsys.readouterr().err
        assert f"{cause}: {weights}" in err, err
    from facesieve.weights.cache import WeightsError

    with pytest.raises(WeightsError, match="MTCNN weights not found"):
        facesieve.load("mtcnn", weights=str(tmp_path / "none.pt"))


def test_output_directories_follow_the_umask(tmp_path, videos_dir):
    from facesieve.io.paths import make_output_dir
    from facesieve.video import VideoConfig, extract_video
    from test_video_job import FakeDetector

    old = os.umask(0o022)
    try:
        d = make_output_dir(tmp_path, ".tmp-x-")
        assert d.name.startswith(".tmp-x-") and (d.stat().st_mode & 0o777) == 0o755
        os.umask(0o027)
        assert (make_output_dir(tmp_path, "y") .stat().st_mode & 0o777) == 0o750
        os.umask(0o022)
        s = extract_video(videos_dir / "ffpp_youtube_004.mp4", tmp_path / "out",
                          VideoConfig(frames=2, fallback=None), primary=FakeDetector())
        assert s.done == 1
        vdir = tmp_path / "out" / s.videos[0].video_id
        dirs = [vdir] + [p for p in vdir.rglob("*") if p.is_dir()]
        assert len(dirs) >= 2  # the video's folder and its crops folder
        assert {oct(p.stat().st_mode & 0o777) for p in dirs} == {oct(0o755)}
    finally:
        os.umask(old)


# ------------------------------------------------------------------ facesieve label


def test_label_reports_unreadable_images_and_exits_1(tmp_path, monkeypatch, capsys):
    import facesieve.api

    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    (tmp_path / "images" / "b.png").write_text("broken")
    (tmp_path / "gt.jsonl").write_text(
        '{"image": "images/a.png", "faces": [{"box": [11, 10, 31, 30]}]}\n'
        '{"image": "images/b.png", "faces": [{"box": [1, 1, 9, 9]}]}\n'
        '{"image": "images/gone.png", "faces": [{"box": [1, 1, 9, 9]}]}\n')

    class Fake:
        name = "fake"

        def detect(self, image, score_threshold=None):
            return [facesieve.Face((10.0, 10.0, 30.0, 30.0), 0.95, np.zeros((5, 2), np.float32))]

    monkeypatch.setattr(facesieve.api, "load", lambda *a, **k: Fake())
    out = tmp_path / "out" / "label.txt"
    assert main(["label", "--data", str(tmp_path / "gt.jsonl"), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr()
    assert "b.png: not a recognised image format" in err.err and "gone.png: file not found" in err.err
    assert "2 unreadable images" in err.out
    assert out.is_file()  # the readable image is labelled all the same


# ------------------------------------------------------------------ COCO output


def test_coco_output_matches_the_per_image_json(tmp_path, example_image):
    src = tmp_path / "in"
    src.mkdir()
    rgb = np.asarray(Image.open(example_image).convert("RGB"))
    Image.fromarray(rgb).save(src / "a.png")
    Image.fromarray(np.ascontiguousarray(rgb[:, ::-1])).save(src / "b_mirrored.png")
    Image.fromarray(np.ascontiguousarray(rgb[100:])).save(src / "c_cut.png")  # MTCNN box above the image
    Image.new("RGB", (40, 30), (128, 128, 128)).save(src / "d_blank.png")
    (src / "e_broken.png").write_text("broken")
    out = tmp_path / "out"
    assert main(["detect", str(src), "--model", "mtcnn", "--out", str(out), "--coco", "--no-draw", "-q"]) == 1
    coco = json.loads((out / "coco.json").read_text())
    assert coco["categories"] == [{"id": 1, "name": "face", "supercategory": "face",
                                   "keypoints": ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"],
                                   "skeleton": []}]
    names = ["a.png", "b_mirrored.png", "c_cut.png", "d_blank.png"]  # the broken file is not an image entry
    assert [Path(im["file_name"]).name for im in coco["images"]] == names
    assert [im["id"] for im in coco["images"]] == [1, 2, 3, 4]
    n_faces = 0
    for im in coco["images"]:
        w, h = Image.open(im["file_name"]).size  # sizes from the files, not from our records
        assert (im["width"], im["height"]) == (w, h)
        rec = json.loads((out / (Path(im["file_name"]).stem + ".json")).read_text())
        anns = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
        assert len(anns) == len(rec["faces"])
        n_faces += len(anns)
        for a, f in zip(anns, rec["faces"]):
            x, y, bw, bh = a["bbox"]
            x1, y1, x2, y2 = f["box"]
            assert (x, y) == (x1, y1) and x + bw == pytest.approx(x2, abs=1e-9) and y + bh == pytest.approx(y2, abs=1e-9)
            assert a["area"] == pytest.approx(bw * bh) and a["score"] == f["score"] and a["category_id"] == 1
            assert a["keypoints"][2::3] == [2] * 5 and a["num_keypoints"] == 5
            assert [[a["keypoints"][3 * k], a["keypoints"][3 * k + 1]] for k in range(5)] == f["landmarks"]
    assert n_faces == len(coco["annotations"]) >= 3
    assert len({a["id"] for a in coco["annotations"]}) == n_faces
    assert not [a for a in coco["annotations"] if a["image_id"] == 4]  # the blank image: no face
    cut = [a for a in coco["annotations"] if a["image_id"] == 3]
    assert cut and cut[0]["bbox"][1] < 0  # raw convention unless --clip-boxes

    pycocotools = pytest.importorskip("pycocotools.coco")
    from pycocotools.cocoeval import COCOeval

    gt = pycocotools.COCO(str(out / "coco.json"))  # readable as a dataset ...
    assert sorted(gt.getImgIds()) == [1, 2, 3, 4] and len(gt.getAnnIds()) == n_faces
    dt = gt.loadRes([{k: a[k] for k in ("image_id", "category_id", "bbox", "score")}
                     for a in coco["annotations"]])  # ... and as results: against itself AP = 1
    ev = COCOeval(gt, dt, "bbox")
    ev.params.areaRng = [[-1e10, 1e10]] * 4  # negative-area-safe ranges for the cut face
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def test_a_folder_that_cannot_be_listed_is_reported(tmp_path):
    from facesieve.io.paths import _walk_dir

    errors: list[tuple[str, str]] = []
    assert _walk_dir(tmp_path / "gone", [], frozenset({".jpg"}), errors) == []  # a real OS error, as root too
    assert errors == [(str(tmp_path / "gone"), "cannot list directory: No such file or directory")]


def test_permission_denied_is_named(tmp_path, example_image):
    """(Root reads files whatever their mode: run as another user, or as root without
    CAP_DAC_OVERRIDE, e.g. `setpriv --bounding-set=-dac_override,-dac_read_search
    --inh-caps=-dac_override,-dac_read_search -- python -m pytest ...`.)"""
    from facesieve.io import ImageError, load_image

    probe = tmp_path / "probe"
    probe.write_text("x")
    os.chmod(probe, 0)
    if os.access(probe, os.R_OK):  # root: run this test again without the capabilities that ignore modes
        setpriv = shutil.which("setpriv")
        assert setpriv and not os.environ.get("FACESIEVE_NO_DAC"), "cannot drop CAP_DAC_OVERRIDE to test this"
        caps = "-dac_override,-dac_read_search"
        r = subprocess.run(
            [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}", "--", sys.executable, "-m", "pytest", "-q",
             "-p", "no:cacheprovider", f"{__file__}::test_permission_denied_is_named"],
            capture_output=True, text=True, env={**os.environ, "FACESIEVE_NO_DAC": "1"}, timeout=300,
        )
        assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
        return

    src = tmp_path / "in"
    (src / "locked").mkdir(parents=True)
    shutil.copy(example_image, src / "a.jpg")
    shutil.copy(example_image, src / "secret.jpg")
    shutil.copy(example_image, src / "locked" / "b.jpg")
    os.chmod(src / "secret.jpg", 0)
    os.chmod(src / "locked", 0)
    try:
        with pytest.raises(ImageError, match="secret.jpg: permission denied"):
            load_image(src / "secret.jpg")
        out = tmp_path / "out"
        assert main(["detect", str(src), "--out", str(out), "--no-draw", "-q"]) == 1
        failed = {f["image"]: f["error"] for f in json.loads((out / "summary.json").read_text())["failed"]}
        assert failed == {str(src / "secret.jpg"): "permission denied (read)",
                          str(src / "locked"): "cannot list directory: Permission denied"}
    finally:
        os.chmod(src / "locked", 0o755)
