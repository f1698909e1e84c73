# acr-transfer — the two commands a newcomer needs: `make demo` and `make test`.
# Everything installs itself: uv (into .tools/ when it is not on PATH), the Python env (uv sync), Azurite (npm ci).
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)
PY_PACKAGES := acr_transfer flows tasks deployments emulator
PYTEST_ARGS ?=

.PHONY: help setup tools test faults-report lint format demo up down emulator bench clean

help:
	@echo "make demo      run a real transfer against the local Azure stand-in"
	@echo "make test      run the test suite (installs what it needs)"
	@echo "make lint      ruff check, ruff format --check, mypy, lint-imports (the layers in .importlinter)"
	@echo "make faults-report  run the fault suite and write its tables into README.md (Reliability)"
	@echo "make up        Prefect server + worker + stand-in + event receiver, deployed; make down stops it"
	@echo "               make up DB=postgres WORKERS=2: the server on a local PostgreSQL, two workers"
	@echo "make emulator  start the local Azure stand-in in the foreground (state in .emulator/)"
	@echo "make image     build the worker image (Dockerfile) with buildah, no registry needed; see README"

$(CURDIR)/.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv

# --all-extras: tests, demo, stack, bench and `make emulator` need the stand-in's extra (`emulator`)
.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --quiet --all-extras
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

setup: .venv/.synced node_modules/.installed

# skopeo proves the stand-in's registries work with a second real client; chromium is the browser the UI tests
# drive (Playwright, from the dev group, cannot download its own here); both best effort (Debian, as root)
tools:
	@command -v skopeo >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq skopeo >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq skopeo >/dev/null 2>&1; }; } \
	  || echo "note: skopeo is not installed; its interoperability tests will be skipped"; }
	@[ -x /usr/bin/chromium ] || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; }; } \
	  || echo "note: chromium is not installed; the browser tests of the UI (tests/stack/test_ui_browser.py) will be skipped"; }

# three pytest sessions side by side (tests/run_shards.py: the suite mostly waits); PYTEST_ARGS naming test
# paths runs one ordinary session instead
test: setup tools
	$(UV) run --frozen python tests/run_shards.py $(PYTEST_ARGS)

# the reliability suite (tests marked `faults`, also part of `make test`), then its tables into the README
faults-report: setup tools
	rm -f build/faults.jsonl
	ACR_TRANSFER_FAULTS_REPORT=$(CURDIR)/build/faults.jsonl $(UV) run --frozen pytest -m faults $(PYTEST_ARGS)
	$(UV) run --frozen python -m tests.faults.report build/faults.jsonl docs/faults-report.md README.md

lint: setup
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy $(PY_PACKAGES)
	$(UV) run --frozen lint-imports --no-cache

format: setup
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

demo: setup
	$(UV) run --frozen python -m deployments.demo

# DB=postgres: the Prefect server on a local PostgreSQL (installed when missing); WORKERS=N process workers
DB ?= sqlite
WORKERS ?= 1
up: setup
	$(UV) run --frozen python -m deployments.stack up --db $(DB) --workers $(WORKERS)

down:
	$(UV) run --frozen python -m deployments.stack down

bench: setup
	$(UV) sync --frozen --quiet --all-extras --group bench
	$(UV) run --frozen --group bench python bench/run.py

emulator: setup
	$(UV) run --frozen acr-transfer emulator up

clean:
	rm -rf .emulator .stack .pytest_cache .mypy_cache .ruff_cache build

# the flow-run image for Kubernetes / ACI work pools (Dockerfile), built with buildah: no Docker engine and no
# container registry needed (the base is made with debootstrap unless BASE_IMAGE names one); installs buildah,
# podman, debootstrap and runc from Debian when missing. tests/stack/test_container_image.py uses the result.
.PHONY: image
image:
	bash deploy/build-image.sh
