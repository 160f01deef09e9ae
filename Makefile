# Two commands matter: `make demo` and `make test`. Both do all setup first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
UV_VERSION := 0.13.9
UV := .tools/bin/uv
RUFF_VERSION := 0.17.6
# The CPU build of torch 2.13.0 for Python 3.11 lies here on the project's machines; uv needs the hint.
TORCH_WHEELS ?= /opt/wheels
export UV_PYTHON_DOWNLOADS := never
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
PYTEST_ARGS ?=

.PHONY: setup airflow airflow-stop demo demo-loop lint test test-unit test-integration test-steps test-hugectr test-e2e test-faults test-faults-data test-faults-airflow test-live test-kubernetes kube-build kube-up node-images bench lock clean \
        engine engine-stop images test-containers

setup: .venv/.installed .venv-steps/.installed .venv-triton/.installed .tools/prometheus.ok .tools/docker-compose.ok \
       .tools/data-docs-assets.ok $(AIRFLOW_HOME)/airflow.db

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)

# Airflow side: scheduler, DAG tasks, Great Expectations, Triton client. Locked, byte-compiled.
.venv/.installed: requirements/airflow.lock.txt pyproject.toml | $(UV)
	$(UV) venv -q --allow-existing --python $(PYTHON) .venv
	$(UV) pip sync -q --python .venv/bin/python --compile-bytecode requirements/airflow.lock.txt
	$(UV) pip install -q --python .venv/bin/python --no-deps -e .
	touch $@

# Step images' environment: NVTabular 23.08 + PyTorch CPU (old pins; cannot share Airflow's env).
.venv-steps/.installed: requirements/steps.lock.txt | $(UV)
	$(UV) venv -q --allow-existing --python $(PYTHON) .venv-steps
	$(UV) pip sync -q --python .venv-steps/bin/python --compile-bytecode --find-links $(TORCH_WHEELS) requirements/steps.lock.txt
	touch $@

# The local Triton server (tritonserver + python backend from nvidia-pytriton) and the python
# backend's interpreter with onnxruntime: the embedded default's stand-in for NVIDIA's Triton image.
.venv-triton/.installed: requirements/triton.lock.txt | $(UV)
	$(UV) venv -q --allow-existing --python $(PYTHON) .venv-triton
	$(UV) pip sync -q --python .venv-triton/bin/python --compile-bytecode requirements/triton.lock.txt
	touch $@

# Prometheus from Debian (scrapes the monitor and Triton); started by the demo and the tests.
.tools/prometheus.ok: | $(UV)
	command -v prometheus >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
	prometheus --version 2>&1 | head -1
	touch $@

# Debian's Chromium for the browser check (tests/live/test_browser.py, driven by Playwright).
.tools/chromium.ok: | $(UV)
	command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null; }
	chromium --version 2>/dev/null | head -1
	touch $@

# A real compose client (Debian's docker-compose 1.29) to check docker-compose.yaml; no engine needed.
.tools/docker-compose.ok: | $(UV)
	command -v docker-compose >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends docker-compose >/dev/null; }
	docker-compose version 2>&1 | head -1
	touch $@

# The data docs' CSS/JS (bootstrap, jQuery, Font Awesome, vega) from the npm registry, checked
# against the locked sha512; the plugin serves them so the pages render with no internet.
.tools/data-docs-assets.ok: operators/links/data_docs_assets.py .venv/.installed
	.venv/bin/python -m operators.links.data_docs_assets install --dest .tools/data-docs-assets >/dev/null
	.venv/bin/python -m operators.links.data_docs_assets check --dest .tools/data-docs-assets
	touch $@

# An Airflow home's database: the dev one ($(AIRFLOW_HOME)), the demos' and make test's lanes'.
%/airflow.db: .venv/.installed
	mkdir -p $*
	AIRFLOW_HOME=$* .venv/bin/airflow db migrate > $*/db-migrate.log 2>&1 || (cat $*/db-migrate.log; exit 1)
	AIRFLOW_HOME=$* .venv/bin/python -m operators.deploy create-pool >> $*/db-migrate.log 2>&1 || (cat $*/db-migrate.log; exit 1)

# A real Airflow 3 (API server, scheduler, DAG processor, triggerer) with Triton, the monitor and
# Prometheus, in the background; prints the login and URLs. AIRFLOW_PORT=8080 by default.
AIRFLOW_PORT ?= 8080
airflow: setup
	.venv/bin/python -m local_servers.airflow start --port $(AIRFLOW_PORT)

airflow-stop:
	@if [ -x .venv/bin/python ]; then .venv/bin/python -m local_servers.airflow stop; else echo "nothing to stop"; fi

# The demos keep an Airflow home of their own: the runs `make test` or a developer leave in
# $(AIRFLOW_HOME) (a day failed on purpose, say) would hold the demo's days at wait_for_previous_day.
DEMO_HOME := $(CURDIR)/.data/demo-airflow
demo: setup $(DEMO_HOME)/airflow.db
	AIRFLOW_HOME=$(DEMO_HOME) .venv/bin/python scripts/demo.py $(DEMO_ARGS)

# The closed loop: serve with Triton, monitor, drift, sensor, full retrain, recovery.
demo-loop: setup $(DEMO_HOME)/airflow.db
	AIRFLOW_HOME=$(DEMO_HOME) .venv/bin/python scripts/demo_loop.py $(DEMO_ARGS)

# ruff, with Airflow's rules (configured in pyproject.toml); CI runs it before the tests.
lint: .tools/ruff.ok
	.tools/bin/ruff check .

.tools/ruff.ok: | $(UV)
	$(UV) pip install -q --python .tools/bin/python ruff==$(RUFF_VERSION)
	touch $@

# The layers (markers, see tests/conftest.py), each runnable alone. The merlin image's tests need
# its environment (.venv-steps); the kernel's run in both environments.
# `make test` runs them in two lanes side by side (scripts/test_lanes.sh: each layer keeps about one
# of the 2 cores busy), each lane on an Airflow home of its own; the lanes take about the same time.
# Lane c is the container layer: its tests mostly wait on containers, so it runs beside the other
# two. The images (lanes b and c use them) are built, and imported into the nodes, before the lanes.
TEST_LANE_A := test-unit test-integration test-live
TEST_LANE_B := test-kubernetes test-e2e test-steps
TEST_LANE_C := test-containers test-faults-airflow test-faults-data
LANE_A_HOME := $(CURDIR)/.airflow-lane-a
LANE_C_HOME := $(CURDIR)/.airflow-lane-c
test: setup kube-build node-images .tools/chromium.ok $(LANE_A_HOME)/airflow.db $(LANE_C_HOME)/airflow.db
	CRITEO_IMAGES_READY=1 MAKE="$(MAKE)" bash scripts/test_lanes.sh a="$(LANE_A_HOME):$(TEST_LANE_A)" b="$(AIRFLOW_HOME):$(TEST_LANE_B)" \
	    c="$(LANE_C_HOME):$(TEST_LANE_C)"

test-steps:
	env -u PYTHONPATH .venv-steps/bin/python -m pytest -q tests/images/kernel tests/images/merlin $(PYTEST_ARGS)
	# again with every test folder acting as a gcsfuse mount (tests/fixtures/gcsfuse.py)
	env -u PYTHONPATH CRITEO_FAKE_GCSFUSE=1 .venv-steps/bin/python -m pytest -q tests/images/kernel tests/images/merlin \
	  $(PYTEST_ARGS)

# The HugeCTR trainer with HugeCTR itself: only inside the merlin image's hugectr target on a GPU
# machine (HugeCTR has no wheel; CI has neither), with the repository mounted:
#   docker run --gpus all --rm -v "$$PWD":/repo -w /repo --entrypoint python IMAGE \
#       -m pytest -q -m hugectr -rs -p no:cacheprovider tests/images/merlin   (what this target runs)
# Elsewhere its tests skip, saying why; make test-steps runs everything around HugeCTR.
test-hugectr:
	python -m pytest -q -m hugectr -rs -p no:cacheprovider tests/images/merlin $(PYTEST_ARGS)

test-unit:
	.venv/bin/python -m pytest -q -m unit --ignore=tests/images/merlin tests $(PYTEST_ARGS)

# Real Triton, the GCS emulator, Prometheus, step subprocesses, Airflow's API server app.
test-integration:
	.venv/bin/python -m pytest -q -m integration --durations=10 --ignore=tests/images/merlin tests $(PYTEST_ARGS)

test-e2e:
	.venv/bin/python -m pytest -q -m e2e --durations=10 --ignore=tests/images/merlin tests $(PYTEST_ARGS)

# Input faults and infrastructure failures on the real DAGs (tests/faults); writes the fault table
# docs/figures.md shows to .data/faults/table.md. The landing cases need the raw-day sensor to wait longer.
# Two halves, each runnable alone, so make test's lanes can split them: the data and infrastructure
# faults on dag.test(), and Airflow's own components killed under a running Airflow (tests/faults/
# test_airflow_kills.py, about 12 minutes, mostly waiting). Both merge their rows into the one table.
FAULTS_AIRFLOW := tests/faults/test_airflow_kills.py
test-faults: test-faults-data test-faults-airflow

test-faults-data:
	CRITEO_RAW_WAIT_TIMEOUT_S=120 .venv/bin/python -m pytest -q -m faults --durations=10 --ignore=tests/images/merlin \
	  --ignore=$(FAULTS_AIRFLOW) tests $(PYTEST_ARGS)

test-faults-airflow: .venv/.installed .venv-steps/.installed .venv-triton/.installed .tools/data-docs-assets.ok
	CRITEO_RAW_WAIT_TIMEOUT_S=120 .venv/bin/python -m pytest -q -m faults --durations=10 $(FAULTS_AIRFLOW) $(PYTEST_ARGS)

# The DAGs under a running Airflow (its scheduler, DAG processor, triggerer and API server on a
# database of their own), driven through the REST API, the CLI and headless Chromium: tests/live.
test-live: .venv/.installed .venv-steps/.installed .venv-triton/.installed .tools/data-docs-assets.ok .tools/chromium.ok
	.venv/bin/python -m pytest -q -s -m live --durations=10 --ignore=tests/images/merlin tests $(PYTEST_ARGS)

# The pod runtime against a real control plane on 127.0.0.1 (etcd, kube-apiserver,
# controller-manager, scheduler v1.20.2) whose two nodes are real kubelets with containerd
# (local_servers/kubelet.py): every pod a container of its image from `make images`.
test-kubernetes: .venv/.installed .venv-steps/.installed .venv-triton/.installed .tools/chromium.ok kube-build node-images
	.venv/bin/python -m pytest -q -m kubernetes --durations=10 --ignore=tests/images/merlin tests $(PYTEST_ARGS)

# The container engine (Podman from Debian, as root, host networking only, no registry) serving the
# Docker API for docker-compose and the Docker runtime; its state and image cache in $(CRITEO_ENGINE_ROOT),
# outside the repository. engine-stop leaves no process or mount behind (the images stay cached).
export CRITEO_ENGINE_ROOT ?= $(HOME)/.cache/criteo-mlops/engine
engine:
	bash scripts/containers/engine.sh up

engine-stop:
	bash scripts/containers/engine.sh down

# Every image from its Dockerfile, on local stand-ins of the real bases (images/bases), cached; and
# the stand-ins of the compose stack's service images (PostgreSQL, Prometheus, the GCS emulator).
# `make test` builds them once before its lanes start; inside the lanes (CRITEO_IMAGES_READY=1) the
# layers that need them do not build again, side by side.
images: engine
ifndef CRITEO_IMAGES_READY
	bash scripts/containers/images.sh
	bash scripts/containers/bases.sh postgres prometheus fake-gcs-server
endif

# The built images as containers (tests/containers): the image users, the bases' versions, SIGTERM
# and memory limits, the step tests inside the merlin image, the DAGs with every step a container
# against the local runtime; and the compose stack's fault (tests/faults/test_database_restart.py:
# PostgreSQL restarted mid-run, its row in the fault table). Then the engine is stopped and checked
# to have left nothing behind.
test-containers: .venv/.installed .venv-steps/.installed .venv-triton/.installed .tools/chromium.ok images \
                 $(AIRFLOW_HOME)/airflow.db
	.venv/bin/python -m pytest -q -s -m containers --durations=10 tests/containers tests/faults/test_database_restart.py \
	  $(PYTEST_ARGS); rc=$$?; \
	bash scripts/containers/engine.sh down && bash scripts/containers/engine.sh check-stopped || rc=1; exit $$rc

# Builds the control plane, kubelet and kubectl from Debian's source package once (about 12
# minutes), cached in $(KUBE_CACHE) outside the repository; later runs find them and return at once.
KUBE_CACHE ?= $(HOME)/.cache/criteo-mlops/kube-1.20.2
export KUBE_CACHE
kube-build:
	bash scripts/kube/build.sh

# The step images into each node's containerd (its root in $(CRITEO_NODE_CACHE), outside the
# repository), only those whose ID changed since the last import: a few minutes once, seconds after.
export CRITEO_NODE_CACHE ?= $(HOME)/.cache/criteo-mlops/node-1.20.2
node-images: .venv/.installed kube-build images
	.venv/bin/python -m local_servers.kubelet import-images

# The control plane and its two nodes in the foreground (Ctrl-C stops them); kubeconfig in
# .data/kube, e.g. `$(KUBE_CACHE)/bin/kubectl --kubeconfig .data/kube/kubeconfig.json get nodes`.
kube-up: .venv/.installed kube-build node-images
	.venv/bin/python -m local_servers.kubelet up --work-dir .data/kube

# bench/ only: polars, the baseline bench_preprocess.py compares the project's preprocessing with.
.venv-bench/.installed: requirements/bench.lock.txt | $(UV)
	$(UV) venv -q --allow-existing --python $(PYTHON) .venv-bench
	$(UV) pip sync -q --python .venv-bench/bin/python --compile-bytecode requirements/bench.lock.txt
	touch $@

# Each bench prints its figures and, last, `<name>: ratio <x> (<what over what>)`.
bench: setup .venv-bench/.installed
	.venv/bin/python bench/bench_parse.py
	.venv-steps/bin/python bench/bench_preprocess.py --compare polars
	PYTHONPATH=images/kernel/src:images/merlin/src .venv-steps/bin/python bench/bench_train.py
	.venv/bin/python bench/bench_validate.py
	.venv/bin/python bench/bench_gate.py
	.venv/bin/python bench/bench_daily_run.py
	.venv/bin/python bench/bench_serving.py
	.venv/bin/python bench/bench_autoscale.py
	.venv/bin/python bench/bench_promotion.py
	.venv/bin/python bench/bench_deploy_race.py --repeat 20
	.venv/bin/python bench/bench_load.py

# Re-resolve the locks (needs the registries); commit the result.
# An image's lock: requirements/NAME.in resolved for its base's Python against its base's versions
# (images/bases/BASE/requirements.txt, the real base's list), minus what the base already has: the
# image installs it with --no-deps. $(call image_lock,NAME,PYTHON,BASE REQUIREMENTS)
base_packages = $(shell sed -n 's/^\([A-Za-z0-9_.-]*\).*==.*/\1/p' $(1))
image_lock = $(UV) pip compile -q --python-version $(2) -c $(3) $(addprefix --no-emit-package ,$(call base_packages,$(3))) \
	requirements/$(1).in -o requirements/$(1).lock.txt
lock: | $(UV)
	$(UV) pip compile -q --python-version 3.11 requirements/airflow.in -o requirements/airflow.lock.txt
	$(UV) pip compile -q --python-version 3.11 --find-links $(TORCH_WHEELS) requirements/steps.in -o requirements/steps.lock.txt
	$(UV) pip compile -q --python-version 3.11 requirements/triton.in -o requirements/triton.lock.txt
	$(UV) pip compile -q --python-version 3.11 requirements/bench.in -o requirements/bench.lock.txt
	# the python:3.11-slim images run what .venv runs: resolved against its lock
	$(UV) pip compile -q --python-version 3.11 -c requirements/airflow.lock.txt requirements/validator.in -o requirements/validator.lock.txt
	$(UV) pip compile -q --python-version 3.11 -c requirements/airflow.lock.txt requirements/monitoring.in -o requirements/monitoring.lock.txt
	$(call image_lock,merlin,3.10,images/bases/merlin-pytorch/requirements.txt)
	$(call image_lock,merlin-hugectr,3.10,images/bases/merlin-hugectr/requirements.txt)
	$(call image_lock,triton-image,3.10,images/bases/tritonserver/requirements.txt)

clean:
	rm -rf .venv .venv-steps .venv-triton .venv-bench .tools .airflow .airflow-lane-a .airflow-lane-c .data
