# clipproxy: `make demo` and `make test` are the two set-up commands (README.md).
# Both install whatever is missing first (scripts/ensure-deps.sh), then do their job.
SHELL := /bin/bash
FIXTURES := Tests/Fixtures/generated
PYTHON := .venv/bin/python

.PHONY: all deps build fixtures test check demo bench replay replay-faults chaos credentials-soak clean

all: build

deps:
	@scripts/ensure-deps.sh test

build:
	@scripts/ensure-deps.sh build
	swift build

fixtures: deps
	@$(PYTHON) scripts/make_fixtures.py --out $(FIXTURES) --hour

# Runs every test (Swift Testing). Tests start the servers they need on loopback ports.
# The in-process concurrency suites run first, on their own: beside the suites that wait
# synchronously (subprocess servers, curl) they could wait minutes for a thread of the
# cooperative pool (2 on a 2-core machine). Both runs always run; either failing fails the target.
CONCURRENCY_SUITES := FillTests|FillCoordinatorTests|FillSlotsTests|SingleFlightTests|LocalCopyFullDiskTests
# Five minutes of load under expiring credentials (issue 26): started first, in a process of its
# own, so it runs beside the other suites instead of adding five minutes after them; its output is
# printed when it ends.
SOAK_SUITES := AWSCredentialsSoakTests
# $(call run_suites,SKIP): the concurrency suites, then every other suite not matching SKIP.
run_suites = swift build --build-tests || exit 1; status=0; \
	swift test --skip-build --disable-xctest --filter '$(CONCURRENCY_SUITES)' || status=1; \
	swift test --skip-build --disable-xctest --skip '$(CONCURRENCY_SUITES)$(1)' || status=1; \
	exit $$status
test: deps fixtures
	swift build --build-tests || exit 1; status=0; soak_log=$$(mktemp); \
	( swift test --skip-build --disable-xctest --filter '$(SOAK_SUITES)' >$$soak_log 2>&1 ) & soak=$$!; \
	swift test --skip-build --disable-xctest --filter '$(CONCURRENCY_SUITES)' || status=1; \
	swift test --skip-build --disable-xctest --skip '$(CONCURRENCY_SUITES)|$(SOAK_SUITES)' || status=1; \
	echo "==> $(SOAK_SUITES) (ran beside the suites above)"; \
	wait $$soak || status=1; cat $$soak_log; rm -f $$soak_log; \
	exit $$status

# The inner loop: the unit and in-process suites, and the server suites that need no browser,
# nginx, Prometheus, schemathesis or S3 server (under 3 minutes). `make test` runs everything.
CHECK_SKIP := AWSCredentialSources|AWSCredentialsSoak|OperatorMetrics|SnapSourceReads|AWSCredentialsRefresh|AWSCredentialsServe|ReplayBench|CurlSmoke|Browser|DemoPage|DemoFreshClone|Chaos|CDNTests|MultiNode|RangeSemantics|ServerRangeTable|AdminListener|OpenAPI|OperationsConfig|FullStack|ClipBucket|StreamingFill|CoalescingAt|FaultTolerance|CaptionMongo|PeaksFullStack|ShutdownDrain|VBRSourceReads|ProgressiveIndexServer|S3Fault|S3Auth|S3Client|S3Credentials|S3Presign|S3Secrets|Mongo|CatalogSearch|ColdRange|OneRoundTrip|SecondTierOutage|IndexSources|WarmFeed|AudioClipsAPI|SignedURL
check: deps fixtures
	$(call run_suites,|$(CHECK_SKIP))

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

# A day of dashboard traffic replayed (issue 23): one node, three nodes behind nginx, and a CDN
# cache in front, on moto and the MongoDB wire server; the capacity model checked against it,
# extrapolated and costed; bench/CAPACITY.md and its plots. Results: bench/results/replay-<date>*.json.
# `bench/replay --quick` is the short form. bench/CAPACITY.md says how long each takes here.
replay: deps
	@scripts/ensure-deps.sh bench
	bench/replay

# The same cluster (set-up c: three nodes behind conf/multinode, conf/cdn in front) under the default
# trace while a seeded schedule kills and restarts nodes, browns out S3, stops MongoDB, wipes the CDN
# and fills a node's disk (issue 24). Results: bench/results/replay-<date>-faults.json and
# bench/RELIABILITY.md ("Cluster"). About 10 minutes; run it niced on a shared machine.
replay-faults: deps
	@scripts/ensure-deps.sh bench
	nice -n 10 bench/replay --faults

# Chaos soak and eviction-pressure stress (issue 12; results: bench/RELIABILITY.md), release build:
# faults injected at random for CHAOS_SOAK_S seconds (default 180), then CHAOS_EVICTION_S (default
# 120) of 16 clients against an 8 MB cache. Both run; fails if either saw a broken response.
# JSON summaries: bench/results/chaos-{soak,eviction}-<date>.json.
chaos: deps fixtures
	swift build -c release --product clipproxy --scratch-path .build-release
	@bin=$$(swift build -c release --scratch-path .build-release --show-bin-path)/clipproxy; day=$$(date +%F); status=0; \
	$(PYTHON) scripts/chaos.py --mode soak --seconds $${CHAOS_SOAK_S:-180} --binary $$bin \
	  --json-out bench/results/chaos-soak-$$day.json || status=1; \
	$(PYTHON) scripts/chaos.py --mode eviction --seconds $${CHAOS_EVICTION_S:-120} --binary $$bin \
	  --json-out bench/results/chaos-eviction-$$day.json || status=1; \
	exit $$status

# The S3 client's own renewal test at the issue's full scale (issue 26): 60 s credentials renewed
# under 5 minutes of S3 load, moto checking every signature (`make test` runs it with 20 s
# credentials and 45 s of load; it runs AWSCredentialsSoakTests, the same through `clipproxy serve`,
# at full scale).
credentials-soak: deps fixtures
	swift build --build-tests
	CLIPPROXY_CREDENTIALS_SOAK=1 swift test --skip-build --disable-xctest \
	  --filter 'AWSCredentialsRefreshTests/renewedUnderLoad|AWSCredentialsSoakTests'

clean:
	rm -rf .build $(FIXTURES) demo
