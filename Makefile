# Two commands a newcomer needs: `make demo` and `make test`. Both set everything up on a
# fresh machine (.venv/, pinned dependencies, the vision_msgs interface package) and are
# near-instant once set up: every step is a stamp file that is rebuilt only when its inputs change.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEPS_STAMP := $(VENV)/.stamp-deps
PKG_STAMP := $(VENV)/.stamp-pkg
MSG_STAMP := $(VENV)/.stamp-interfaces
MSG_SOURCES := $(shell find ros2_ws/src/vision_msgs -type f 2>/dev/null) scripts/build_interfaces.sh
PYTEST_ARGS ?=

.PHONY: setup demo test lint format bench eval train clean distclean

setup: $(DEPS_STAMP) $(PKG_STAMP) $(MSG_STAMP)

$(DEPS_STAMP): requirements.txt requirements-nodeps.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	@touch $@

$(PKG_STAMP): $(DEPS_STAMP) setup.py setup.cfg
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

$(MSG_STAMP): $(DEPS_STAMP) $(MSG_SOURCES)
	bash scripts/build_interfaces.sh $(VENV)
	@touch $@

demo: setup
	$(VENV)/bin/pdn-demo

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check pdn_perception tests launch scripts
	$(VENV)/bin/ruff format --check pdn_perception tests launch scripts

format: setup
	$(VENV)/bin/ruff format pdn_perception tests launch scripts
	$(VENV)/bin/ruff check --fix pdn_perception tests launch scripts

bench: setup
	$(VENV)/bin/pdn-bench

eval: setup
	$(VENV)/bin/pdn-eval

train: setup
	$(VENV)/bin/pdn-train

clean:
	rm -rf demo_out build .pytest_cache .ruff_cache

distclean: clean
	rm -rf $(VENV) ros2_ws/build ros2_ws/install ros2_ws/log
