"""The video job on a real local Ray instance (num_cpus=2, started here on 127.0.0.1):
outputs byte-for-byte those of the local engine, resuming, a worker SIGKILLed mid-video,
bad videos mixed in. The two-node cluster is in test_ray_cluster.py."""
from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from facesieve.video import VideoConfig, extract_video
from facesieve.video.manifest import read_jsonl

from test_video_sampling import make_bad_videos

ray = pytest.importorskip("ray", reason='the Ray engine tests need Ray: pip install "facesieve[ray]"')

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ("hamilton_short_clip.mp4", "ffpp_youtube_634.mp4", "dfdc_widuwuoiur.mp4")
CONFIG = dict(frames=4)  # the full cascade (MTCNN -> RetinaFace), small N to keep it quick
RAY_ONLY_KEYS = {"engine", "ray"}


def worker_env() -> None:
    """Ray's worker processes import the checkout under test (they inherit this env)."""
    parts = [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"


def tree(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())


def without_timing(d: dict) -> dict:
    d = json.loads(json.dumps(d))
    d.get("summary", d).pop("timing", None)
    return d


def assert_same_outputs(ref: Path, out: Path) -> None:
    """Every video directory of ``ref`` (local engine) is in ``out`` with the same files:
    manifests and crops byte-for-byte, done.json equal except its timings."""
    vids = sorted(p.name for p in ref.iterdir() if p.is_dir())
    assert vids and vids == sorted(p.name for p in out.iterdir() if p.is_dir())
    for vid in vids:
        a, b = ref / vid, out / vid
        assert tree(a) == tree(b), vid
        for rel in tree(a):
            if rel == "done.json":
                assert without_timing(json.loads((a / rel).read_text())) == \
                    without_timing(json.loads((b / rel).read_text())), vid
            else:
                assert (a / rel).read_bytes() == (b / rel).read_bytes(), (vid, rel)
    assert not list(out.glob(".tmp-*"))


def assert_same_summary(ref: Path, out: Path) -> dict:
    a = json.loads((ref / "summary.json").read_text())
    b = json.loads((out / "summary.json").read_text())
    assert set(b) - set(a) == RAY_ONLY_KEYS and not set(a) - set(b)
    for k in ("complete", "videos", "done", "skipped", "failed", "faces", "frames_sampled", "face_frames",
              "frames_to_detector", "faces_from_detector", "fallback_frames"):
        assert a[k] == b[k], k
    assert [without_timing(v) for v in a["per_video"]] == [without_timing(v) for v in b["per_video"]]
    return b


@pytest.fixture(scope="module")
def ray_local():
    worker_env()
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20,
             _node_ip_address="127.0.0.1", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, videos_dir) -> tuple[list[Path], Path]:
    """The local engine's outputs for CLIPS (the reference the Ray runs must equal)."""
    clips = [videos_dir / c for c in CLIPS]
    ref = tmp_path_factory.mktemp("ref") / "out"
    s = extract_video(clips, ref, VideoConfig(**CONFIG))
    assert s.exit_code == 0 and s.done == len(clips) and s.faces > 0
    return clips, ref


def test_local_ray_instance_same_outputs_as_local_engine_and_resumes(ray_local, reference, tmp_path):
    clips, ref = reference
    out = tmp_path / "out"
    s = extract_video(clips, out, VideoConfig(**CONFIG), engine="ray", workers=2)
    assert s.exit_code == 0 and s.done == len(clips)
    assert_same_outputs(ref, out)
    d = assert_same_summary(ref, out)
    r = d["ray"]
    assert d["engine"] == "ray" and r["workers"] == 2 and not r["retried"]
    assert sum(w["videos"] for w in r["per_worker"]) == len(clips)
    assert all(w["restarts"] == 0 and len(set(w["pids"])) == 1 for w in r["per_worker"])
    pids = {w["pids"][0] for w in r["per_worker"]}
    assert len(pids) == 2 and os.getpid() not in pids  # two worker processes, not the driver
    assert r["overhead"]["videos"] == len(clips) and r["overhead"]["process_s_mean"] > 0

    # resume: one video's directory removed -> only that one is scheduled, the rest skipped
    import shutil

    vid = clips[1].stem
    shutil.rmtree(out / vid)
    s2 = extract_video(clips, out, VideoConfig(**CONFIG), engine="ray", workers=2)
    assert [v.status for v in s2.videos] == ["skipped", "done", "skipped"]
    assert s2.to_dict()["ray"]["workers"] == 1  # never more workers than videos to do
    assert_same_outputs(ref, out)
    # nothing left to do: no worker is started at all
    s3 = extract_video(clips, out, VideoConfig(**CONFIG), engine="ray", workers=2)
    assert s3.skipped == len(clips) and s3.to_dict()["ray"]["workers"] == 0 and s3.exit_code == 0


def _alive_worker_pids() -> list[int]:
    from ray._private import state  # the GCS actor table (the public state API needs the dashboard)

    return [a["Pid"] for a in state.actors().values()
            if a.get("ActorClassName", "").endswith("VideoWorker") and a.get("State") == "ALIVE" and a.get("Pid")]


def test_worker_killed_mid_video_is_retried_without_half_written_output(ray_local, reference, tmp_path):
    clips, ref = reference
    out = tmp_path / "out"
    with ThreadPoolExecutor(1) as ex:
        fut = ex.submit(extract_video, clips, out, VideoConfig(**CONFIG), engine="ray", workers=1)
        killed = None
        deadline = time.monotonic() + 120
        while killed is None and time.monotonic() < deadline and not fut.done():
            tmps = [p for p in out.glob(".tmp-*") if p.is_dir()] if out.exists() else []
            pids = _alive_worker_pids() if tmps else []
            if tmps and pids:
                vid = tmps[0].name[len(".tmp-"):].rsplit("-", 1)[0]
                assert not (out / vid).exists()  # mid-video: its directory is not published yet
                os.kill(pids[0], signal.SIGKILL)
                killed = (vid, pids[0])
            time.sleep(0.01)
        s = fut.result(timeout=300)
    assert killed is not None, "the worker was never seen mid-video"
    vid, pid = killed
    assert s.exit_code == 0 and s.done == len(clips) and s.failed == 0
    r = s.to_dict()["ray"]
    (w,) = r["per_worker"]
    assert w["restarts"] == 1 and w["pids"][0] == pid and w["pids"][1] != pid
    assert [Path(x["video"]).stem for x in r["retried"]] == [vid]
    assert_same_outputs(ref, out)  # no half-written dir, no duplicate rows, nothing lost
    assert_same_summary(ref, out)
    rows = read_jsonl(out / vid / "manifest.jsonl")
    assert len(rows) == len({(x["frame_index"], x["sample"], x["face_index"]) for x in rows})


def test_bad_videos_reported_once_rest_completes_exit_1(ray_local, reference, tmp_path, videos_dir, capsys):
    from facesieve.cli import main

    clips, _ = reference
    bad = {k: v for k, v in make_bad_videos(tmp_path, videos_dir).items() if k != "directory"}
    inputs = [str(clips[0])] + [str(p) for p, _ in bad.values()] + [str(clips[2])]
    args = ["video", *inputs, "--frames", "2", "--fallback", "none", "-q"]
    assert main(args + ["--out", str(tmp_path / "local")]) == 1
    capsys.readouterr()
    out = tmp_path / "ray"
    assert main(args + ["--out", str(out), "--engine", "ray", "--workers", "2"]) == 1
    err = capsys.readouterr().err
    d = assert_same_summary(tmp_path / "local", out)
    assert_same_outputs(tmp_path / "local", out)
    status = {Path(v["video"]).name: (v["status"], v["error"]) for v in d["per_video"]}
    assert len(d["per_video"]) == len(inputs)  # each file reported exactly once
    assert status[clips[0].name] == ("done", None) and status[clips[2].name] == ("done", None)
    for name, (path, reason) in bad.items():
        st, e = status[path.name]
        assert st == "failed" and reason in e, (name, e)
        assert err.count(f"FAILED {path}:") == 1
    assert d["ray"]["retried"] == []  # a file's own failure is not a worker death: no retry


def test_ray_engine_rejects_detector_objects_and_unknown_engines(tmp_path, videos_dir):
    import facesieve

    with pytest.raises(ValueError, match="engine='local' only"):
        extract_video(videos_dir / CLIPS[0], tmp_path, engine="ray", primary=facesieve.load("mtcnn"))
    with pytest.raises(ValueError, match="engine must be 'local' or 'ray'"):
        extract_video(videos_dir / CLIPS[0], tmp_path, engine="spark")


@pytest.mark.slow
def test_driver_interrupted_with_ctrl_c_then_rerun_finishes_the_rest(reference, tmp_path):
    """A real `facesieve video --engine ray` process (its own local Ray instance) gets SIGINT
    once a first video is published: exit 130, nothing half-written, its workers gone; the
    re-run skips what was complete and finishes with the local engine's bytes."""
    import subprocess
    import sys

    clips, ref = reference
    out = tmp_path / "out"
    worker_env()
    cmd = [sys.executable, "-m", "facesieve", "video", *map(str, clips), "--frames", str(CONFIG["frames"]),
           "--out", str(out), "--engine", "ray", "--workers", "1", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while not list(out.glob("*/done.json")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1].decode()[-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()[-2000:]
    first = json.loads((out / "summary.json").read_text())
    assert first["complete"] is False and 1 <= first["done"] < len(clips)
    for d in (p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".tmp-")):
        assert (d / "done.json").exists()  # published directories are complete
    time.sleep(2)
    for w in first["ray"]["per_worker"]:
        for pid in w["pids"]:
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    # a video the worker published while the driver was stopping is complete too (not in first["done"])
    complete = len(list(out.glob("*/done.json")))
    assert first["done"] <= complete
    s = extract_video(clips, out, VideoConfig(**CONFIG), engine="ray", workers=2, ray_address=None)
    assert s.exit_code == 0 and s.skipped == complete and s.done == len(clips) - complete
    assert_same_outputs(ref, out)


def test_workers_that_cannot_load_the_models_are_a_start_error(ray_local, tmp_path, videos_dir):
    from facesieve.video.ray_engine import WorkerStartError

    missing = tmp_path / "no_such_weights.pt"
    with pytest.raises(WorkerStartError, match="could not load the detectors") as e:
        extract_video(videos_dir / CLIPS[0], tmp_path / "out", VideoConfig(frames=2, fallback=None,
                      primary_options={"weights": str(missing)}), engine="ray", workers=1)
    assert "no_such_weights.pt" in str(e.value)
    assert not list((tmp_path / "out").glob("*/")) or not list((tmp_path / "out").glob("*/done.json"))
