# The README's commands. Everything honours BENTOML_HOME (default ~/bentoml).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 3000
export BENTOML_HOME ?= $(HOME)/bentoml
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install install-serve models serve demo deliver test test-fast lint format train crossval evaluate build container container-batch loadtest bench
CONTAINER_PORT ?= 3300

# Two stamps: serving needs only the [serve] extra (no TensorFlow, no Ray); tests, training
# and development install everything ([dev]), which includes it.
$(BIN)/.serve: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[serve]'
	touch $@

$(BIN)/.batch: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[batch]'
	touch $@ $(BIN)/.serve

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(BIN)/.serve $(BIN)/.batch

install: $(BIN)/.installed

install-serve: $(BIN)/.serve

models: install-serve      ## import the shipped models (model.onnx included) into the model store
	$(BIN)/python -m train.import_models

serve: models              ## start the service on http://localhost:$(PORT) (web page: /ui/)
	$(BIN)/bentoml serve service:GenreDetector --port $(PORT)

demo: $(BIN)/.batch models ## fill the embedded catalog with the shared clips (owner demo)
	$(BIN)/python -m genre_detector catalog demo

deliver: install-serve     ## a webhook delivery worker on its own (the service runs one too)
	$(BIN)/python -m genre_detector deliver

test: install              ## the whole test suite (what CI runs)
	$(BIN)/python -m pytest -q

test-fast: install         ## the quick loop: everything not marked slow
	$(BIN)/python -m pytest -q -m "not slow"

lint: install              ## ruff: lint and format check (CI runs it)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install            ## ruff: fix what it can, format everything
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

train: install             ## retrain all five models + the calibrated ensemble, refresh models/
	$(BIN)/python -m train --ship

crossval: install          ## 5-fold artist-grouped cross-validation of all five + the ensemble
	$(BIN)/python -m train.crossval --json runs/crossval.json

evaluate: install models ## score the shipped models on the artists their training held out
	$(BIN)/python -m train.evaluate --held-out

build: install models ## build the Bento
	$(BIN)/bentoml build

container: install models ## build the Bento, containerize it with podman, smoke-test the image (root)
	PATH="$(CURDIR)/$(BIN):$$PATH" deploy/build_container.sh --port $(CONTAINER_PORT)

container-batch: install models ## the image with the [batch] extra (Ray) for deploy/ray/rayjob.yaml (root)
	PATH="$(CURDIR)/$(BIN):$$PATH" deploy/build_container.sh --batch

loadtest: install models ## start the service, short headless locust run, stop; fails on any failed request
	VENV_BIN=$(CURDIR)/$(BIN) loadtests/run_loadtest.sh

bench: install models ## benchmark vs the research pipeline (starts and stops everything itself)
	$(BIN)/python loadtests/benchmark.py
