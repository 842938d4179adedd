"""`facesieve detect --engine ray`: Ray Data over detector actors on a real local Ray
instance (num_cpus=2, 127.0.0.1); the Parquet rows equal the local engine's per-image JSON,
bad files are rows with an error (the dataset completes), exit code 1."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from test_ray_video import ray_local  # noqa: F401  (the module's local Ray instance)

ray = pytest.importorskip("ray", reason='the Ray engine tests need Ray: pip install "facesieve[ray]"')
pq = pytest.importorskip("pyarrow.parquet")


def test_ray_data_parquet_equals_local_engine_and_bad_files_are_rows(ray_local, wider_val_dev, tmp_path,  # noqa: F811
                                                                      capsys):
    from facesieve.cli import main

    inp = tmp_path / "in"
    inp.mkdir()
    good = sorted((wider_val_dev / "images").rglob("*.jpg"))[:7]
    assert len(good) == 7
    for p in good:
        shutil.copy(p, inp / p.name)
    (inp / "a_not_an_image.jpg").write_bytes(b"this is not a jpeg")
    (inp / "b_empty.png").write_bytes(b"")
    data = good[0].read_bytes()
    (inp / "c_truncated.jpg").write_bytes(data[: len(data) // 3])
    common = ["detect", str(inp), "--model", "retinaface-mnet025", "--batch-size", "3", "-q"]

    local = tmp_path / "local"
    rc_local = main(common + ["--out", str(local), "--no-draw"])
    err_local = capsys.readouterr().err
    out = tmp_path / "ray"
    rc = main(common + ["--out", str(out), "--engine", "ray", "--workers", "2"])
    err = capsys.readouterr().err
    assert rc == rc_local == 1

    ref = json.loads((local / "summary.json").read_text())
    table = pq.read_table(out / "detections.parquet")
    assert table.schema.names[:5] == ["path", "width", "height", "faces", "error"]
    rows = table.to_pylist()
    inputs = sorted(str(p) for p in inp.iterdir())
    assert [r["path"] for r in rows] == inputs  # one row per image, in input order
    errors = {f["image"]: f["error"] for f in ref["failed"]}
    assert len(errors) >= 2  # the junk and the empty file at least (a truncated JPEG may still decode)
    for r in rows:
        if r["path"] in errors:
            assert r["error"] == errors[r["path"]] and r["faces"] is None and r["width"] is None
            assert err.count(f"failed: {r['path']}: ") == 1 and err_local.count(f"failed: {r['path']}: ") == 1
            continue
        assert r["error"] is None
        want = json.loads((local / f"{Path(r['path']).stem}.json").read_text())
        assert (r["width"], r["height"]) == (want["width"], want["height"])
        # Same faces; values equal up to float rounding: an image's batch neighbours (and so
        # its padding) differ between the engines, which moves the last digit now and then.
        assert len(r["faces"]) == len(want["faces"]), r["path"]
        for got, exp in zip(r["faces"], want["faces"]):
            assert np.allclose(got["box"], exp["box"], rtol=0, atol=0.01), (r["path"], got, exp)
            assert abs(got["score"] - exp["score"]) <= 1e-5, (r["path"], got, exp)
            assert np.allclose(got["landmarks"], exp["landmarks"], rtol=0, atol=0.01), (r["path"], got, exp)
    s = json.loads((out / "summary.json").read_text())
    assert (s["processed"], s["faces"], len(s["failed"])) == (ref["processed"], ref["faces"], len(ref["failed"]))
    assert s["faces"] > 0 and sum(w["images"] for w in s["workers"]) == len(inputs)
    assert not list(out.glob(".tmp-*"))


def test_ray_engine_rejects_jsonl(tmp_path, example_image, capsys):
    from facesieve.cli import main

    assert main(["detect", str(example_image), "--out", str(tmp_path), "--engine", "ray", "--jsonl"]) == 2
    assert "--jsonl is for --engine local" in capsys.readouterr().err


def test_ray_detect_applies_the_scale_options(ray_local, tmp_path, capsys):  # noqa: F811
    """--single-scale / --max-size reach the Ray workers' detectors: the couple photo gives the
    local engine's faces under the same options (at the original single scale, RetinaFace splits
    these two large faces into several boxes, which the multi-scale default does not)."""
    from facesieve.cli import main

    from conftest import SHARED

    photo = SHARED / "data" / "photos_large_faces" / "images" / "deepface_couple.jpg"
    for opts in (["--single-scale"], ["--max-size", "800"]):
        common = ["detect", str(photo), "--model", "retinaface-mnet025", "-q", *opts]
        local, out = tmp_path / f"local{opts[0]}", tmp_path / f"ray{opts[0]}"
        assert main(common + ["--out", str(local), "--no-draw"]) == 0
        assert main(common + ["--out", str(out), "--engine", "ray", "--workers", "1"]) == 0
        want = json.loads((local / "deepface_couple.json").read_text())["faces"]
        got = pq.read_table(out / "detections.parquet").to_pylist()[0]["faces"]
        assert len(got) == len(want), opts
        for g, w in zip(got, want):
            np.testing.assert_allclose(g["box"], w["box"], atol=0.01)
    capsys.readouterr()


def test_ray_only_and_local_only_options_are_usage_errors_that_write_nothing(tmp_path, example_image):
    from facesieve.cli import main

    for opts in (["--engine", "ray", "--coco"], ["--engine", "ray", "--jsonl"], ["--workers", "2"]):
        out = tmp_path / "out"
        assert main(["detect", str(example_image), "--out", str(out), "-q", *opts]) == 2, opts
        assert not out.exists(), opts
