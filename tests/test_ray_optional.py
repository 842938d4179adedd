"""Ray is optional: never imported by the local engine; without it `--engine ray` is one
line naming the extra to install (exit 2). Runs in subprocesses whose import system
refuses `ray` the way a Python without it would (ModuleNotFoundError)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

NO_RAY = """
import sys
class _NoRay:
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _NoRay())
from facesieve.cli import main
rc = main(sys.argv[1:])
print("RAY_IMPORTED" if any(m == "ray" or m.startswith("ray.") for m in sys.modules) else "NO_RAY_IMPORTED")
sys.exit(rc)
"""


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env_path = str(ROOT)
    return subprocess.run([sys.executable, "-c", NO_RAY, *args], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})


def test_without_ray_engine_ray_is_one_line_and_exit_2(tmp_path, videos_dir, example_image):
    clip = str(videos_dir / "hamilton_short_clip.mp4")
    for args in (["video", clip, "--out", str(tmp_path / "v"), "--engine", "ray"],
                 ["detect", str(example_image), "--out", str(tmp_path / "d"), "--engine", "ray"]):
        r = _run(args)
        assert r.returncode == 2, r.stderr[-2000:]
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and 'pip install "facesieve[ray]"' in lines[0], r.stderr


def test_local_engine_never_imports_ray(tmp_path, videos_dir):
    r = _run(["video", str(videos_dir / "hamilton_short_clip.mp4"), "--out", str(tmp_path), "--frames", "2",
              "--fallback", "none", "-q"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "NO_RAY_IMPORTED"
