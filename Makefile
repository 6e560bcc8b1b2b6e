# kubeswarm developer targets. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
TOOLS := $(HOME)/.cache/kubeswarm/tools
UV := $(shell command -v uv 2>/dev/null || echo $(TOOLS)/bin/uv)
export UV_PYTHON_DOWNLOADS := never
export UV_CACHE_DIR ?= $(HOME)/.cache/kubeswarm/uv
PYTEST_ARGS ?=

.PHONY: help venv lock test test-unit test-integration test-e2e test-kind lint testbed testbed-regenerate \
        cluster-up cluster-down crds run-operator bench demo demo-tools up

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

$(TOOLS)/bin/uv:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q uv==$(UV_VERSION)

$(BIN)/.synced: requirements.lock runtime/pyproject.toml operator/pyproject.toml | $(UV)
	test -x $(BIN)/python || $(UV) venv -q --python $(PYTHON) $(VENV)
	$(UV) pip sync -q --python $(BIN)/python requirements.lock
	touch $@

venv: $(BIN)/.synced ## create .venv exactly as requirements.lock pins it

lock: | $(UV) ## re-resolve requirements.in into requirements.lock
	$(UV) pip compile -q requirements.in --python-version 3.11 --generate-hashes --no-header -o requirements.lock

testbed: venv ## build the test bed from its pinned Go modules, and the real node's parts and the images where it can run (cached)
	$(BIN)/python -m tests.testbed build --real-node

testbed-regenerate: venv ## rewrite hack/testbed/*/go.mod after editing hack/testbed/pins.json
	$(BIN)/python -m tests.testbed regenerate

test: testbed ## the whole suite: unit, integration (real NATS), e2e (real API server)
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: venv ## unit tests only
	$(BIN)/pytest -m unit $(PYTEST_ARGS)

test-integration: venv ## integration tests (real nats-server)
	$(BIN)/pytest -m integration $(PYTEST_ARGS)

test-e2e: testbed ## e2e tests (local test bed, or KUBESWARM_E2E_KUBECONFIG)
	$(BIN)/pytest -m e2e $(PYTEST_ARGS)

test-kind: venv ## e2e tests on a kind cluster (needs a container engine)
	@command -v docker >/dev/null && docker info >/dev/null 2>&1 || { \
	  echo "make test-kind needs a running container engine (docker info failed): kind runs Kubernetes in containers." >&2; \
	  echo "Without one, use 'make test-e2e' (local test bed) or KUBESWARM_E2E_KUBECONFIG=<path> make test-e2e." >&2; exit 1; }
	KUBESWARM_E2E_KIND=1 $(BIN)/pytest -m e2e $(PYTEST_ARGS)

lint: venv ## ruff (lint and format), mypy --strict and the operator's import layers (.importlinter)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

cluster-up: testbed ## start the local test bed and leave it running (KUBESWARM_REAL_NODE=1: pods run for real; last line: export KUBECONFIG=...)
	@$(BIN)/python -m tests.testbed up

cluster-down: venv ## stop every process cluster-up started, and clean the real node off the host
	@$(BIN)/python -m tests.testbed down

crds: venv ## regenerate crds/ from the resource models
	$(BIN)/python -m kubeswarm_operator.crdgen crds

run-operator: venv ## install the CRDs into the current KUBECONFIG's cluster and run the operator in the foreground
	$(BIN)/kubectl apply --server-side --force-conflicts -f crds/
	$(BIN)/python -m kubeswarm_operator $(OPERATOR_ARGS)

demo: venv ## local mode end to end: an example swarm answers tasks and shares a discovery; then agents cooperate through tools
	$(BIN)/kubeswarm demo examples/swarm.yaml
	$(BIN)/python -m examples.tools.demo

demo-tools: venv ## the tools part of the demo: a planner delegates, shares and calls an MCP server (scripted stand-in model, offline)
	$(BIN)/python -m examples.tools.demo

up: venv ## local mode: run the example swarm until Ctrl-C, printing each agent's MCP endpoint
	$(BIN)/kubeswarm up examples/swarm.yaml

bench: testbed ## run every benchmark in bench/ (each prints its ratios against a baseline run beside it)
	@set -e; for script in bench/bench_*.py; do name=$$(basename $$script .py); echo "== $$name"; $(BIN)/python -m bench.$$name; done

# -- packaging: images, chart, dashboards (no container engine needed except for `images`)

# A helm on PATH, else the test bed's (built from its Go module, alone, on first use: minutes).
HELM = $(or $(shell command -v helm 2>/dev/null),$(shell $(BIN)/python -c 'from tests.testbed import build; print(build.build(next(c for c in build.COMPONENTS if c.name == "helm")) / "helm")'))

.PHONY: base-image images images-lock test-images dashboards chart chart-lint

base-image: ## the Python base the images build on: docker pulls the pinned image, buildah/podman make one from Debian packages
	$(PYTHON) -m images.build base

images: venv ## build the runtime, operator, NATS and pause images into ~/.cache/kubeswarm/images (docker, else buildah/podman; cached)
	$(BIN)/python -m images.build all

images-lock: | $(UV) ## recompile images/requirements-*.lock (the versions requirements.lock pins)
	UV=$(UV) images/lock.sh

test-images: venv ## the image checks that need no container engine (locks, Dockerfile, venvs, entrypoints)
	$(BIN)/pytest tests/unit/test_images.py $(PYTEST_ARGS)

dashboards: venv ## rebuild charts/kubeswarm/dashboards/*.json from dashboards/build.py
	$(BIN)/python -m dashboards.build

chart: venv dashboards ## copy crds/ into the chart and package it into dist/ (helm from PATH, else built)
	rm -f charts/kubeswarm/files/crds/*.yaml
	cp crds/*.yaml charts/kubeswarm/files/crds/
	mkdir -p dist
	$(HELM) package charts/kubeswarm --destination dist

chart-lint: venv ## helm lint --strict and the chart's unit tests (schemas, RBAC, NATS config)
	$(HELM) lint --strict charts/kubeswarm
	$(BIN)/pytest tests/unit/test_chart.py tests/unit/test_dashboards.py $(PYTEST_ARGS)
