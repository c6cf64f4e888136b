# One variable pins PyFlink and the Flink Kafka SQL connector: the connector line 5.0.0 publishes
# flink-sql-connector-kafka-5.0.0-<flink minor>, and 5.0.0-2.2 is the artifact built and tested
# against Flink 2.2 (Maven Central has no 5.0.0-2.1 SQL uber jar).
FLINK_VERSION ?= 2.2.1
KAFKA_CONNECTOR_VERSION := 5.0.0-$(basename $(FLINK_VERSION))
# Apache Kafka broker (KRaft) run from Maven Central jars.
KAFKA_VERSION ?= 4.1.1
KAFKA_PORT ?= 9092
export KAFKA_PORT
# Apache Pinot (ZooKeeper, controller, broker, server) run from Maven Central jars by
# scripts/pinot.sh. 0.11.0 is the newest release whose pinot-tools, pinot-server and Kafka stream
# plugin are all on Maven Central (deploy/pinot/pom.xml, schemas/pinot/README.md); the
# apachepinot/pinot image in docker-compose.yml uses the same version.
PINOT_VERSION ?= 0.11.0
PINOT_CONTROLLER_PORT ?= 9000
PINOT_BROKER_PORT ?= 8099
export PINOT_CONTROLLER_PORT PINOT_BROKER_PORT

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
BUILD := build
SETUP_STAMP := $(BUILD)/.setup-$(FLINK_VERSION)-$(KAFKA_CONNECTOR_VERSION)-$(KAFKA_VERSION)
PINOT_STAMP := $(BUILD)/pinot/.jars-$(PINOT_VERSION)

FLINK_REST ?= 127.0.0.1:8081
export FLINK_REST

.PHONY: cluster-up cluster-down submit savepoint-stop faults
.PHONY: pinot-jars pinot-up pinot-down pinot-status pinot-tables
.PHONY: setup browser kafka-up kafka-down topics demo responder dashboard test test-jvm test-unit test-pipeline \
	test-integration lint typecheck schemas bench eval-detect clean help

help:
	@echo "make setup | kafka-up | kafka-down | topics | demo | responder | dashboard | test | test-jvm | lint | typecheck"
	@echo "make schemas | bench | eval-detect | faults"
	@echo "make pinot-up | pinot-down | pinot-status | pinot-tables"

setup: $(SETUP_STAMP) browser

# The dashboard's browser tests drive Chromium through its ChromeDriver (testkit/browser.py).
# On Debian, setup installs the chromium and chromium-driver packages once (apt-get as root, or
# `sudo -n`). Where that cannot be done it says so and goes on: only the browser tests need them
# (install Chromium and ChromeDriver, or point CHROMIUM_BIN and CHROMEDRIVER_BIN at them).
browser:
	@{ command -v chromium || command -v chromium-browser || command -v google-chrome; } >/dev/null \
		&& command -v chromedriver >/dev/null || { \
		mkdir -p $(BUILD); \
		sudo=$$([ "$$(id -u)" = 0 ] || echo "sudo -n"); \
		if command -v apt-get >/dev/null; then \
			echo "==> installing Debian's chromium and chromium-driver for the browser tests (log: $(BUILD)/apt.log)"; \
			{ $$sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive \
				$$sudo apt-get install -y -q --no-install-recommends chromium chromium-driver; } \
				> $(BUILD)/apt.log 2>&1 \
				|| echo "==> WARNING: could not install them ($(BUILD)/apt.log); the browser tests will fail until Chromium and ChromeDriver are installed"; \
		else \
			echo "==> WARNING: no apt-get here: install Chromium and ChromeDriver for the browser tests"; \
		fi; }

JVM_SOURCES := jvm/pom.xml $(shell find jvm/src -name '*.java')

$(SETUP_STAMP): pyproject.toml deploy/pom.xml $(JVM_SOURCES)
	@mkdir -p $(BUILD)
	@test -x $(PY) || { echo "==> creating the virtualenv $(VENV) ($(PYTHON))"; $(PYTHON) -m venv $(VENV); }
	@echo "==> installing apache-flink $(FLINK_VERSION) and the package with its dev extras (log: $(BUILD)/pip.log)"
	@$(PY) -m pip install -q --upgrade pip > $(BUILD)/pip.log 2>&1 \
		&& $(PY) -m pip install -q "apache-flink==$(FLINK_VERSION)" -e ".[dev]" >> $(BUILD)/pip.log 2>&1 \
		|| { cat $(BUILD)/pip.log; exit 1; }
	@echo "==> resolving the Flink Kafka connector $(KAFKA_CONNECTOR_VERSION) and Kafka $(KAFKA_VERSION) jars into $(BUILD)/jars (log: $(BUILD)/mvn.log)"
	@mvn -q -B -f deploy/pom.xml \
		-Dflink.version=$(FLINK_VERSION) \
		-Dkafka.connector.version=$(KAFKA_CONNECTOR_VERSION) \
		-Dkafka.version=$(KAFKA_VERSION) \
		-Djars.dir=$(CURDIR)/$(BUILD)/jars process-resources > $(BUILD)/mvn.log 2>&1 \
		|| { cat $(BUILD)/mvn.log; exit 1; }
	@echo "==> building the job's JVM operators (jvm/) into $(BUILD)/jars/pipeline"
	@mvn -q -B -f jvm/pom.xml -Dflink.version=$(FLINK_VERSION) \
		-Djars.dir=$(CURDIR)/$(BUILD)/jars -DskipTests package >> $(BUILD)/mvn.log 2>&1 \
		|| { cat $(BUILD)/mvn.log; exit 1; }
	@touch $@

kafka-up: setup
	scripts/kafka.sh up

kafka-down:
	scripts/kafka.sh down

# Pinot's runtime classpath (build/pinot/lib), resolved once per PINOT_VERSION.
pinot-jars: $(PINOT_STAMP)

$(PINOT_STAMP): deploy/pinot/pom.xml
	@mkdir -p $(BUILD)/pinot
	@echo "==> resolving Apache Pinot $(PINOT_VERSION) jars into $(BUILD)/pinot/lib (log: $(BUILD)/pinot/mvn.log)"
	@mvn -q -B -f deploy/pinot/pom.xml -Dpinot.version=$(PINOT_VERSION) \
		-Dpinot.lib.dir=$(CURDIR)/$(BUILD)/pinot/lib process-resources > $(BUILD)/pinot/mvn.log 2>&1 \
		|| { cat $(BUILD)/pinot/mvn.log; exit 1; }
	@rm -f $(BUILD)/pinot/.jars-*
	@touch $@

pinot-up: $(PINOT_STAMP)
	scripts/pinot.sh up

pinot-down:
	scripts/pinot.sh down

pinot-status:
	@scripts/pinot.sh status

# Schemas and real-time tables from schemas/pinot/, ingesting the topics of the broker on
# KAFKA_PORT (Pinot checks the topic exists, hence `topics`). Re-running updates them in place;
# make pinot-tables ARGS=--recreate drops and re-creates them (their data is re-ingested), which
# is required to point them at another topic or broker.
pinot-tables: topics pinot-up
	$(PY) -m tools.pinot_tables --controller http://127.0.0.1:$(PINOT_CONTROLLER_PORT) \
		--bootstrap-servers 127.0.0.1:$(KAFKA_PORT) $(ARGS)

topics: kafka-up
	$(PY) -m tools.topics --bootstrap-servers 127.0.0.1:$(KAFKA_PORT)

cluster-up: setup
	scripts/flink-cluster.sh up

cluster-down:
	scripts/flink-cluster.sh down

# make submit ARGS="--bounded --wait"  (flags of jobs.gateway_pipeline plus --wait,
# --from-savepoint, --allow-non-restored-state)
submit: setup
	$(PY) -m jobs.submit --bootstrap-servers 127.0.0.1:$(KAFKA_PORT) $(ARGS)

# make savepoint-stop JOB_ID=<id>
savepoint-stop: setup
	@test -n "$(JOB_ID)" || { echo "usage: make savepoint-stop JOB_ID=<job id>"; exit 2; }
	$(PY) -m jobs.submit --stop-with-savepoint $(JOB_ID)

# Fault injection on its own broker (FAULTS_KAFKA_PORT, 29092) and session cluster
# (FAULTS_FLINK_REST, 127.0.0.1:28081), both started and stopped by the run.
# make faults ARGS="--faults 12 --duration 400 --seed 2"
# A realistic rate (40 events/s by default), e.g. 2,000 events/s with five faults (about 8 min):
# make faults ARGS="--rate 2000 --duration 120 --plan tm-kill:during,broker-kill9,py-worker-kill,broker-stop,tm-kill:every-checkpoint"
# make faults ARGS="--plan broker-kill9,tm-pause-past-txn --duration 60"   (fault kinds: --help)
faults: setup
	$(PY) -m testkit.faults $(ARGS)

# make demo PINOT=1 also starts Pinot, ingests the demo's topics and prints the KPIs from it.
# make demo ARGS="--duration 100"   (flags of testkit.demo: --attack-at, --rate, --no-responder)
demo: setup kafka-up $(if $(PINOT),pinot-up)
	$(PY) -m testkit.demo --bootstrap-servers 127.0.0.1:$(KAFKA_PORT) \
		$(if $(PINOT),--pinot-broker http://127.0.0.1:$(PINOT_BROKER_PORT) \
		--pinot-controller http://127.0.0.1:$(PINOT_CONTROLLER_PORT)) $(ARGS)

# The responder (responder/, docs/responder.md) on the local broker's alerts topic, writing the
# actions topic that `topics` creates. Its secrets come from the environment only (python -m
# responder run --help lists them, with every setting's RESPONDER_* variable); the policy's
# channels and gateway must be configured, e.g.
# make responder RESPONDER_POLICY=my-policy.toml ARGS="--gateway apisix --webhook-url https://..."
RESPONDER_POLICY ?= responder/policy.example.toml
responder: setup topics
	$(PY) -m responder run --bootstrap-servers 127.0.0.1:$(KAFKA_PORT) \
		--policy-file $(RESPONDER_POLICY) $(ARGS)

# The dashboard (dashboard/) over the local Pinot, operator views on; a consumer's portal link:
# $(PY) -m dashboard token --consumer NAME (DASHBOARD_TOKEN_SECRET from the environment).
dashboard: setup
	$(PY) -m dashboard run --operator --broker http://127.0.0.1:$(PINOT_BROKER_PORT) $(ARGS)

# Benchmark (not a test): the job vs a Java-only Flink SQL ceiling vs a plain Python loop on the
# same pre-loaded data; table on stdout, bench/results/latest.json and latest.png (git-ignored).
# Its own broker port (started and stopped if none answers). BENCH_* variables: bench/README.md.
# make bench BENCH_EVENTS=100000 BENCH_ARGS="--only job,python_loop --execution-mode thread"
BENCH_EVENTS ?= 1000000
BENCH_KAFKA_PORT ?= 49092
bench: setup
	$(PY) -m bench.run --events $(BENCH_EVENTS) \
		--bootstrap-servers 127.0.0.1:$(BENCH_KAFKA_PORT) $(BENCH_ARGS)

# The detector's labelled evaluation (evaluation/): generated key populations with injected
# attacks through the detector's pure code; table on stdout, bench/results/eval-detect.json.
# make eval-detect EVAL_ARGS="--keys 300 --warmup-hours 6 --hours 6"
eval-detect: setup
	$(PY) -m evaluation $(EVAL_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy

schemas: setup
	$(PY) -m schemas.export

# The integration tests start their own Pinot (tests/conftest.py) from the pinot-jars.
test: setup pinot-jars lint typecheck test-jvm
	$(PY) -m pytest tests

# The JVM operators' tests (jvm/src/test: Flink's operator test harnesses, no cluster).
test-jvm: setup
	@echo "==> testing the job's JVM operators (jvm/src/test; log: $(BUILD)/mvn-test.log)"
	@mvn -B -f jvm/pom.xml -Dflink.version=$(FLINK_VERSION) \
		-Djars.dir=$(CURDIR)/$(BUILD)/jars test > $(BUILD)/mvn-test.log 2>&1 \
		|| { grep -E "Tests run|FAIL|ERROR" $(BUILD)/mvn-test.log || tail -n 60 $(BUILD)/mvn-test.log; exit 1; }
	@grep -E "^\[INFO\] Tests run:" $(BUILD)/mvn-test.log | tail -1

test-unit: setup
	$(PY) -m pytest tests/unit

test-pipeline: setup
	$(PY) -m pytest tests/pipeline

test-integration: setup pinot-jars
	$(PY) -m pytest tests/integration

clean:
	rm -rf $(BUILD) .pytest_cache .mypy_cache .ruff_cache
