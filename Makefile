# Two commands on a fresh machine: `make test` and `make serve`. Everything installs into .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sarveg-installed
export BENTOML_DO_NOT_TRACK := true

.PHONY: install test serve lint models clean-venv

install: $(STAMP)

# pip takes torch 2.14.1 / torchvision 0.29.1 from the machine's local wheel cache; uv and poetry do
# not see it and would download ~3 GB, so everything installs with pip into a venv.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[train,serve,ray,dev]'
	touch $(STAMP)

# The web page's test drives a real headless Chromium: install it on a fresh Debian machine.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
test: $(STAMP)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		($(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			chromium chromium-driver)
	$(PY) -m pytest -q

# Serves the packaged bundles in models/ (override with SARVEG_MODELS) on http://localhost:3000.
serve: $(STAMP)
	$(VENV)/bin/bentoml serve serving.service:SarVeg --port 3000

# Rebuilds the packaged bundles end to end (simulate if missing -> pretrain -> finetune -> export).
DATA ?= data/bench
RUNS ?= runs
models: $(STAMP)
	$(PY) -m training.models_pipeline --data $(DATA) --runs $(RUNS) --models models

lint: $(STAMP)
	$(VENV)/bin/ruff check sarveg training serving tests bench testkit

clean-venv:
	rm -rf $(VENV)
