# Two commands do all set-up on a fresh machine:
#   make bench   installs into .venv and benchmarks the default artifact for this machine
#   make test    installs into .venv (with test extras) and runs the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ITERS  ?= 200
STAMP  := $(VENV)/.installed

.PHONY: install bench test clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

bench: $(STAMP)
	$(BIN)/bisenet-rt bench --iters $(ITERS)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) engines/*.engine engines/*.onnx engines/*.json engines/*.xml engines/*.bin engines/timing.cache \
		engines/ov_cache engines/calib
