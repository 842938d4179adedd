"""Corpus throughput: the local video job against the Ray engine (1 and 2 workers), plus the
DFDC competitors' usual pipeline as a peer.

    .venv/bin/python benchmarks/bench_scale.py [--videos ../shared/data/videos] [--repeat 4]
        [--frames 32] [--no-corpus] [--no-dev] [--no-peer] [--peer-clips 5] [--json out.json]

Each configuration is one ``facesieve video ... --out <fresh temp dir> -q`` process, so that
every run pays what a user pays (imports, model loading, Ray's start-up) and the CPU time
of the whole process tree (Ray's raylet and worker processes included) can be counted:
/proc is sampled every 0.2 s for the run's descendants (utime + stime, reaped children
included). Reported per configuration and corpus (the 10 dev clips; with --repeat R also a
corpus of R x 10 clips, copies in a temp dir):

* wall seconds of the process and clips/min; the job's own seconds from summary.json
  (without interpreter start-up and imports);
* CPU seconds of the tree and the average cores busy (cpu / wall; the machine has
  ``os.cpu_count()`` cores, shared with whatever else runs: the load average is printed);
* speed-up of the wall over ``--engine local`` on the same corpus;
* for Ray: its overhead per video, measured with timestamps in the worker
  (submission or the worker's previous video -> start; end in the worker -> result on the
  driver, serialisation included) as % of a video's processing time, and the worker CPU
  seconds per clip (the figure docs/scaling.md extrapolates from).

Peer (``--peer-clips`` clips, 32 frames each): OpenCV reads every frame sequentially with
``grab()`` and ``retrieve()``s the 32 evenly spaced samples, scales them to a 960-px long
side, runs facenet-pytorch's MTCNN (keep_all, its default thresholds) on the batch of 32
frames and cuts the box crops; against ``facesieve video`` (defaults) on the same clips.
Both times exclude model loading (ours: summary.json ``seconds``). Face frames = samples
with at least one face.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

DEFAULT_VIDEOS = ROOT.parent / "shared" / "data" / "videos"
TICK = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------- CPU of a tree
def _proc_table() -> dict[int, tuple[int, str, float]]:
    """pid -> (ppid, start time id, cpu seconds incl. reaped children) from /proc."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                s = f.read().decode("ascii", "replace")
        except OSError:
            continue
        rest = s[s.rfind(")") + 2:].split()
        # fields after the name: state ppid ... utime(12) stime(13) cutime(14) cstime(15) ... starttime(20)
        ppid = int(rest[1])
        cpu = (int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])) / TICK
        out[int(d)] = (ppid, rest[19], cpu)
    return out


class TreeCPU:
    """CPU seconds of a process and all its descendants, sampled from /proc until stop()."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.pid = pid
        self.seen: dict[tuple[int, str], float] = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._t.start()

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(interval)

    def sample(self) -> None:
        table = _proc_table()
        kids: dict[int, list[int]] = {}
        for p, (pp, _, _) in table.items():
            kids.setdefault(pp, []).append(p)
        stack = [self.pid]
        while stack:
            p = stack.pop()
            if p in table:
                key = (p, table[p][1])
                self.seen[key] = max(self.seen.get(key, 0.0), table[p][2])
            stack.extend(kids.get(p, []))

    def stop(self) -> float:
        self._stop.set()
        self._t.join()
        return sum(self.seen.values())


def run_job(inputs: list[str], engine: str, workers: int | None, frames: int) -> dict[str, Any]:
    """One `facesieve video` process into a fresh temp dir: wall, CPU of the tree, summary."""
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "facesieve", "video", *inputs, "--out", str(out), "--frames", str(frames), "-q"]
        if engine == "ray":
            cmd += ["--engine", "ray"] + (["--workers", str(workers)] if workers else [])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
        before = os.times()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        tree = TreeCPU(proc.pid)
        stdout, stderr = proc.communicate()
        wall = time.perf_counter() - t0
        sampled = tree.stop()
        after = os.times()
        reaped = (after.children_user - before.children_user) + (after.children_system - before.children_system)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd[:4])} ... exited {proc.returncode}:\n{stderr.decode()[-3000:]}")
        summary = json.loads((out / "summary.json").read_text())
    cpu = max(sampled, reaped)
    n = len(inputs)
    if summary["done"] != n:
        raise SystemExit(f"{engine} x{workers}: {summary['done']} of {n} clips done: {summary}")
    r: dict[str, Any] = {
        "engine": engine, "workers": workers, "clips": n, "wall_s": round(wall, 2), "job_s": summary["seconds"],
        "clips_per_min": round(60 * n / wall, 2), "cpu_s": round(cpu, 2), "cores_busy": round(cpu / wall, 2),
        "faces": summary["faces"], "done": summary["done"],
    }
    if engine == "ray":
        ray = summary["ray"]
        r["overhead"] = ray.get("overhead")
        per = ray["per_worker"]
        vids = sum(w["videos"] for w in per)
        r["worker_cpu_s_per_clip"] = round(sum(w["cpu_s"] for w in per) / max(1, vids), 3)
        r["worker_busy_s_per_clip"] = round(sum(w["busy_s"] for w in per) / max(1, vids), 3)
        r["worker_start_s"] = ray["worker_start_s"]
        r["per_worker"] = [{k: w[k] for k in ("worker", "videos", "videos_per_min", "utilisation")} for w in per]
    return r


# ----------------------------------------------------------------------------- the peer
def peer_pipeline(clips: list[Path], frames: int = 32, long_side: int = 960) -> dict[str, Any]:
    """OpenCV grab/retrieve + facenet-pytorch MTCNN on the batch of sampled frames + box crops."""
    import cv2
    import numpy as np
    import torch

    from bench_mtcnn import load_facenet_mtcnn

    torch.set_num_threads(os.cpu_count() or 1)
    MTCNN = load_facenet_mtcnn()
    mtcnn = MTCNN(keep_all=True, device="cpu", post_process=False)
    face_frames = samples = crops = 0
    per_clip = []
    t_all = time.perf_counter()
    for clip in clips:
        t0 = time.perf_counter()
        cap = cv2.VideoCapture(str(clip))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        want = set(np.linspace(0, n - 1, frames).astype(int).tolist())
        imgs = []
        for i in range(n):
            if not cap.grab():
                break
            if i in want:
                ok, bgr = cap.retrieve()
                if not ok:
                    continue
                h, w = bgr.shape[:2]
                s = long_side / max(h, w)
                bgr = cv2.resize(bgr, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
                imgs.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        cap.release()
        boxes, _ = mtcnn.detect(imgs)
        found = 0
        for img, b in zip(imgs, boxes):
            if b is None or len(b) == 0:
                continue
            found += 1
            for x1, y1, x2, y2 in np.asarray(b):
                crop = img[max(0, int(y1)):max(0, int(y2)), max(0, int(x1)):max(0, int(x2))]
                crops += crop.size > 0
        face_frames += found
        samples += len(imgs)
        per_clip.append({"clip": clip.name, "s": round(time.perf_counter() - t0, 2), "face_frames": found,
                         "samples": len(imgs)})
    return {"seconds": round(time.perf_counter() - t_all, 2), "face_frames": face_frames, "samples": samples,
            "crops": crops, "per_clip": per_clip}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=Path, default=DEFAULT_VIDEOS)
    ap.add_argument("--repeat", type=int, default=4, help="corpus = R x the dev clips, symlinked (default 4)")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--no-corpus", action="store_true", help="only the 10 dev clips")
    ap.add_argument("--no-dev", action="store_true", help="skip the run on the dev clips alone")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--peer-clips", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    clips = sorted(p for p in args.videos.iterdir() if p.suffix == ".mp4")
    print(f"{len(clips)} clips in {args.videos}; {os.cpu_count()} cores; load average before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    results: dict[str, Any] = {"runs": [], "load_before": os.getloadavg()}
    configs = [("local", None), ("ray", 1), ("ray", 2)]
    with tempfile.TemporaryDirectory(prefix="bench_scale_corpus_") as tmp:
        corpora = [] if args.no_dev else [(f"dev{len(clips)}", [str(c) for c in clips])]
        if not args.no_corpus and args.repeat > 1:
            copies = []  # copies, not symlinks: the job de-duplicates inputs by their real path
            for r in range(args.repeat):
                for c in clips:
                    dst = Path(tmp) / f"{c.stem}_r{r}{c.suffix}"
                    shutil.copyfile(c, dst)
                    copies.append(str(dst))
            corpora.append((f"corpus{len(copies)}", copies))
        for name, inputs in corpora:
            base = None
            for engine, workers in configs:
                r = run_job(inputs, engine, workers, args.frames)
                r["corpus"] = name
                base = r["wall_s"] if engine == "local" else base
                r["speedup_vs_local"] = round(base / r["wall_s"], 3) if base else None
                results["runs"].append(r)
                tag = "local" if engine == "local" else f"ray x{workers}"
                line = (f"{name:10s} {tag:8s} wall {r['wall_s']:7.1f} s (job {r['job_s']:7.1f} s)  "
                        f"{r['clips_per_min']:6.1f} clips/min  cpu {r['cpu_s']:7.1f} s = {r['cores_busy']:.2f} cores  "
                        f"speed-up {r['speedup_vs_local']:.2f}x")
                if engine == "ray" and r.get("overhead"):
                    o = r["overhead"]
                    line += (f"  | Ray overhead/video: dispatch {1000 * o['dispatch_s_mean']:.1f} ms + return "
                             f"{1000 * o['return_s_mean']:.1f} ms = {o['percent_of_process']:.2f}% of "
                             f"{o['process_s_mean']:.2f} s; "
                             f"driver CPU {1000 * o['driver_cpu_s_per_video']:.1f} ms/video; "
                             f"worker CPU {r['worker_cpu_s_per_clip']:.2f} s/clip; "
                             f"workers up in {r['worker_start_s']:.1f} s")
                print(line, flush=True)
    if not args.no_peer:
        peer_clips = clips[: args.peer_clips]
        ours = run_job([str(c) for c in peer_clips], "local", None, 32)
        with tempfile.TemporaryDirectory() as tmp:  # face frames / samples of ours, same settings
            from facesieve.video import VideoConfig, extract_video

            s = extract_video(peer_clips, tmp, VideoConfig(frames=32)).to_dict()
        peer = peer_pipeline(peer_clips)
        results["peer"] = {"clips": [c.name for c in peer_clips], "peer": peer,
                           "ours_job_s": ours["job_s"], "ours_face_frames": s["face_frames"],
                           "ours_samples": sum(v["samples"] for v in s["per_video"]),
                           "ours_frames_sampled": s["frames_sampled"]}
        p = results["peer"]
        print(f"peer (OpenCV grab/retrieve + facenet-pytorch MTCNN, 960 px, batch of 32) on {len(peer_clips)} clips: "
              f"{peer['seconds']:.1f} s, face frames {peer['face_frames']}/{peer['samples']}; "
              f"facesieve video: {ours['job_s']:.1f} s, face frames {p['ours_face_frames']}/{p['ours_frames_sampled']} "
              f"({p['ours_samples']} samples after oversampling); time ratio peer/ours "
              f"{peer['seconds'] / ours['job_s']:.2f}x", flush=True)
    results["load_after"] = os.getloadavg()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (a shared machine: "
          f"walls are upper bounds, only same-run ratios mean much)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
