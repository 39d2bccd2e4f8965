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

# Builds clipproxy and generates demo episodes (serving them arrives with the HTTP server).
demo:
	@scripts/ensure-deps.sh demo
	swift build
	@$(PYTHON) scripts/make_fixtures.py --out demo
	@echo "demo episodes: demo/source (catalog: demo/catalog); 'clipproxy serve' is not implemented yet (issue 6)"

# Benchmarks (release build), measured against their peers in the same run. See bench/README.md.
bench: deps fixtures
	bench/trim.sh
	bench/index.sh

clean:
	rm -rf .build $(FIXTURES) demo
