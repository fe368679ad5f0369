# Two commands do all set-up on a fresh machine:
#   make bench   installs into .venv and benchmarks the default artifact for this machine
#   make test    installs into .venv (with test extras) and runs the test suite
#   make typecheck  runs mypy on the package (settings in pyproject.toml)
# On an NVIDIA GPU machine, with a Python that has the GPU stack (pip install -e '.[gpu]'):
#   make gpu-check PYTHON=/path/to/that/python   runs benchmarks/gpu_check.py (README, "GPU")
#   make gpu-check-cpu   rehearses the same plan on this CPU (ONNX Runtime standing in for the engines)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ITERS  ?=
WEIGHTS ?=
STAMP  := $(VENV)/.installed

.PHONY: install bench test typecheck gpu-check gpu-check-cpu clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# make bench: the newest artifact under engines/ (none: built from the demo checkpoint), timed for 10 s.
# make bench WEIGHTS=model.pth builds from that checkpoint first; ITERS=5000 is the paper's protocol.
bench: $(STAMP)
	$(if $(WEIGHTS),$(BIN)/bisenet-rt build --weights $(WEIGHTS) &&) $(BIN)/bisenet-rt bench $(if $(ITERS),--iters $(ITERS))

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

typecheck: $(STAMP)
	$(BIN)/python -m mypy

gpu-check:
	PYTHONPATH=$(CURDIR) $(PYTHON) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

gpu-check-cpu: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py --plan-on-cpu --quick $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) engines/*.engine engines/*.onnx engines/*.json engines/*.xml engines/*.bin
