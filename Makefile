# Two commands on a fresh machine:  make train  |  make test
# Both create .venv on first use and install the package (and its test extras) into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: train test test-fast sample benchmark demo clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

train: $(STAMP)  ## the main job: the default MNIST experiment (ARGS="key=value ..." for overrides)
	$(PY) train.py $(ARGS)

test: $(STAMP)  ## everything, as CI runs it
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)  ## the fast subset (a few minutes on 2 cores): no training runs, subprocesses, DDP, browser or compile
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

sample: $(STAMP)  ## e.g. make sample ARGS="ckpt_path=outputs/.../last.ckpt task=temperature"
	$(PY) sample.py $(ARGS)

benchmark: $(STAMP)
	$(PY) scripts/benchmark.py $(ARGS)

$(VENV)/.demo-installed: $(STAMP)
	$(PY) -m pip install --quiet -e '.[demo]'
	touch $@

demo: $(VENV)/.demo-installed  ## the web page on the newest outputs/**/last.ckpt (ARGS="ckpt_path=... port=7860")
	$(PY) scripts/demo.py $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun wandb lightning_logs .pytest_cache
