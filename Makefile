# clipproxy: `make demo` and `make test` are the two set-up commands (README.md).
# Both install whatever is missing first (scripts/ensure-deps.sh), then do their job.
SHELL := /bin/bash
FIXTURES := Tests/Fixtures/generated
PYTHON := .venv/bin/python

.PHONY: all deps build fixtures test demo bench clean

all: build

deps:
	@scripts/ensure-deps.sh test

build:
	@scripts/ensure-deps.sh build
	swift build

fixtures: deps
	@$(PYTHON) scripts/make_fixtures.py --out $(FIXTURES) --hour

# Runs every test (Swift Testing). Tests start the servers they need on loopback ports.
test: deps fixtures
	swift build --build-tests
	swift test --skip-build --disable-xctest

# Builds clipproxy, generates demo episodes and serves them with the embedded default
# (catalog files, source directory, local clip directory: conf/clipproxy.yaml). Ctrl-C stops.
# `make demo PORT=9000` serves on another port (PORT=0: any free one). It needs no terminal: the
# server replaces the recipe's shell (exec), so SIGINT or SIGTERM to it shuts down cleanly, and it
# prints `clipproxy listening on <URL>` once it accepts connections.
PORT ?= 8080
demo:
	@scripts/ensure-deps.sh demo
	swift build --product clipproxy
	@$(PYTHON) scripts/make_fixtures.py --out demo
	@echo "==> clipproxy demo: open $(if $(filter 0,$(PORT)),the URL below,http://127.0.0.1:$(PORT)/) to play clips (Ctrl-C stops)"
	CLIPPROXY_HTTP_PORT=$(PORT) exec .build/debug/clipproxy serve --config conf/clipproxy.yaml </dev/null

# Benchmarks (release build), measured against their peers in the same run. See bench/README.md.
# `make bench` is not a set-up command: it installs its own extras (nginx, wrk, bench/requirements.txt).
bench: deps fixtures
	@scripts/ensure-deps.sh bench
	bench/trim.sh
	bench/index.sh
	bench/serving.sh

clean:
	rm -rf .build $(FIXTURES) demo
