# One-command set-up and entry points. Everything lives in a virtual environment ($(VENV)).
#   make test   - set up, then run the test suite
#   make test-fast - set up, then run the tests that start no processes, torchrun or browser (~1 min)
#   make demo   - set up, then generate a small Sudoku set, train HRM on it, evaluate, show answers
#   make gpu-check - on an NVIDIA GPU machine: CUDA tests, a real training run with resume, Sudoku-config
#                    benchmark, into gpu_check_report.md (docs/gpu-check.md)
#   make gpu-bundle - here, with network: .gpu_bundle/, what gpu-check needs on a machine without network
# On machines without an NVIDIA GPU the pinned CPU build of torch ($(TORCH)) is installed first,
# so pip never pulls the multi-GB CUDA build. With a GPU, an already-installed torch is kept
# (use VENV_FLAGS=--system-site-packages to reuse a system-wide CUDA torch).
# TORCH selects the torch a new venv gets, e.g. `make test VENV=.venv-211 TORCH=torch==2.11.0`
# (the registry's Linux wheel of 2.11 is the CUDA build with its NVIDIA libraries, several GB).

PYTHON      ?= python3
VENV        ?= .venv
VENV_FLAGS  ?=
TORCH       ?= torch==2.13.0
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip
STAMP       := $(VENV)/.installed
# Test processes: most tests wait on the programs they start, so two workers keep 2 cores busy.
TEST_WORKERS ?= 2

.PHONY: setup test test-fast demo browser benchmark gpu-check gpu-bundle clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		if $(PY) -c "import torch" >/dev/null 2>&1; then \
			echo "[setup] NVIDIA GPU found; keeping the installed torch: $$($(PY) -c 'import torch; print(torch.__version__, "(uses the GPU)" if torch.cuda.is_available() else "(cannot use the GPU: make gpu-check will fail; install a CUDA build of torch)")')"; \
		else \
			echo "[setup] NVIDIA GPU found: installing $(TORCH) from PyPI (its Linux wheels are CUDA builds)"; \
			$(PIP) install -q $(TORCH); \
		fi; \
	elif $(PY) -c "import torch" >/dev/null 2>&1; then \
		echo "[setup] torch already installed: $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	else \
		echo "[setup] no NVIDIA GPU: installing $(TORCH)"; \
		$(PIP) install -q $(TORCH); \
	fi
	$(PIP) install -q -r requirements.txt -r requirements-dev.txt
	$(PIP) install -q -e .  # the repository's modules importable from anywhere (scripts/, dataset/)
	@touch $@

# Headless Chromium for the visualizer test. Best effort: installs Debian's packages when we
# are root with apt; otherwise the browser test says it is skipped and why.
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "[setup] installing chromium + chromium-driver for the visualizer test"; \
		(apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || \
		 (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1)) || \
		echo "[setup] could not install chromium; the visualizer test will be skipped"; \
	else echo "[setup] chromium not installed and cannot install it here; the visualizer test will be skipped"; fi

test: $(STAMP) browser
	$(PY) -m pytest -n $(TEST_WORKERS)

test-fast: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) -m "not slow"

demo: $(STAMP)
	$(PY) scripts/demo.py $(DEMO_FLAGS)

benchmark: $(STAMP)
	$(PY) scripts/benchmark_optim.py
	$(PY) scripts/benchmark_builders.py
	$(PY) scripts/benchmark.py

# Before a long GPU job: one report file (docs/gpu-check.md). Without a GPU it says so
# in one line and succeeds; with a GPU that torch cannot use it fails with one line.
# Without $(VENV) but with $(GPU_BUNDLE) (a GPU machine without network): the machine's own
# python3 and torch, plus the bundle's wheels installed with no index.
GPU_REPORT  ?= gpu_check_report.md
GPU_BUNDLE  ?= .gpu_bundle
gpu-check:
	@if [ ! -x $(PY) ] && [ -d $(GPU_BUNDLE)/wheels ]; then \
		$(PYTHON) scripts/gpu_check.py --bundle $(GPU_BUNDLE) --out $(GPU_REPORT); \
	else \
		$(MAKE) --no-print-directory setup && $(PY) scripts/gpu_check.py --out $(GPU_REPORT); \
	fi

# Wheels (Python 3.12, manylinux x86_64) of what a Python image with torch lacks (scripts/gpu_bundle.py) + the reference fixtures.
gpu-bundle: $(STAMP)
	$(PY) scripts/gpu_bundle.py --out $(GPU_BUNDLE)

clean:
	rm -rf $(VENV) .pytest_cache demo_run
