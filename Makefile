# Quick start on a fresh Debian/Ubuntu machine with Python 3.10+:
#   make test   install into .venv and run the whole test suite
#   make sim    install into .venv and race the bundled model in the embedded simulator
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test sim bench lint clean train

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[laptop,sim,test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q test

# Race the bundled model in the embedded simulator (options: $(BIN)/deepracer sim --help).
sim: $(STAMP)
	$(BIN)/deepracer sim

# Train the bundled model again from scratch on the CPU (PyTorch's CPU build, ~20-30 min
# on 2 cores): the same settings and seed as models/centerline_v1 (its training_log.json).
train: $(STAMP)
	$(BIN)/pip install --quiet -e '.[laptop,sim,train]'
	$(BIN)/deepracer train --output models/centerline_v1

lint: $(STAMP)
	$(BIN)/python -m flake8 deepracer_nodes launch test

bench: $(STAMP)
	$(BIN)/deepracer bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
