# make install: .venv with torch and everything else; repeated runs skip what is already done.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH := torch==2.14.1 torchvision==0.29.1
DEMO_DATA := data/demo

.PHONY: install demo notebook browser test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: install
	$(PY) -m mlic.demo --out $(DEMO_DATA)
	ROOT_PATH=$(DEMO_DATA) $(PY) train.py configs/demo.py

# Jupyter Lab on notebooks/ (the `notebook` extra, installed once). The kernels start in notebooks/;
# PYTHONPATH lets an experiment's config copy import `configs.base` from there. As root (a container),
# Jupyter refuses to start without --allow-root.
notebook: install
	test -x $(VENV)/bin/jupyter-lab || $(PY) -m pip install --quiet -e '.[notebook]'
	PYTHONPATH="$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH}" $(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/

# two workers, each taking whole test files (module fixtures are built once, and the multi-process tests
# of tests/train/test_distributed.py run one at a time); PYTEST_ARGS adds options, e.g. -n 0 for one process
# headless Chromium and its driver for the report.html browser tests (Debian's packages, once); where
# apt-get is missing or fails, say so and go on: those tests are then skipped with the same reason
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null && { apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || \
		{ apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1; }; }; then \
		echo "make browser: installed chromium and chromium-driver"; \
	else echo "make browser: could not install chromium (no apt-get, or not root); the browser tests will be skipped"; fi

test: install browser
	$(PY) -m pytest -q -n 2 --dist loadfile $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) experiments
