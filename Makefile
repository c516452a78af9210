# The same commands the README and CI use. `make demo` and `make test` install what they need first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Debian packages: FUSE and pyfuse3's build needs; peers and oracles the tests and benchmarks compare with.
DEB_PACKAGES := fuse3 libfuse3-dev pkg-config gcc python3-dev python3-venv attr fuse-overlayfs \
	busybox-static bubblewrap uidmap skopeo umoci docker-registry apache2-utils buildah crun hyperfine
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: all deps install test test-fast lint fuzz bench demo clean
# minutes per fuzzer: two fuzzers, 30 minutes in all
FUZZ_MINUTES ?= 15

all: test

deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | \
		grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(BIN)/.installed: pyproject.toml scripts/patch_pyfuse3.py $(wildcard scripts/pyfuse3_patch/*.pxi)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/python scripts/patch_pyfuse3.py
	touch $@

install: deps $(BIN)/.installed

test: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -q tests/unit $(PYTEST_ARGS)

fuzz: install
	UNIONFS_FUZZ_MINUTES=$(FUZZ_MINUTES) UNIONFS_FUZZ_EXAMPLES=4 $(BIN)/python -m pytest -q -x --timeout=0 tests/fuzz $(PYTEST_ARGS)

bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

demo: install
	sh examples/demo.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
