# The same commands the README and CI use. `make demo` and `make test` install what they need first.
# Debian's own python3, whatever else is first on PATH (pyenv, conda): that is what a Debian user has.
# `make PYTHON=/path/to/python3` picks another on purpose.
PYTHON := $(or $(wildcard /usr/bin/python3),python3)
VENV ?= .venv
BIN := $(VENV)/bin
# Debian packages: FUSE and pyfuse3's build needs; bubblewrap, uidmap and passt (pasta, for run -p) that RUN and run
# use; peers and oracles the tests and benchmarks compare with.
DEB_PACKAGES := fuse3 libfuse3-dev pkg-config gcc python3-dev python3-venv attr acl fuse-overlayfs \
	busybox-static bubblewrap uidmap passt skopeo umoci docker-registry apache2-utils buildah crun netavark hyperfine \
	file libcap2-bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# where `make install` puts the commands: on root's PATH, or on an ordinary user's in a new login shell
BINDIR ?= $(if $(filter 0,$(shell id -u)),/usr/local/bin,$(HOME)/.local/bin)
# wait for another apt or dpkg (unattended-upgrades, say) instead of failing at once
APT := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3
PYTEST_ARGS ?=
say = @echo "install [$$(date +%T)]: $(1)"

.PHONY: all deps install test test-fast test-realworld lint fuzz bench bench-build demo check-fresh clean
# minutes per fuzzer: two fuzzers, 30 minutes in all
FUZZ_MINUTES ?= 15

all: test

deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | \
		grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "install [$$(date +%T)]: Debian packages:" $$missing; \
		$(APT) update -qq && $(APT) install -y -qq --no-install-recommends $$missing >/dev/null || { \
			echo "install: apt-get could not install the packages above: see its message, fix it and run make again" >&2; \
			exit 1; }; \
	fi

$(BIN)/.installed: pyproject.toml scripts/patch_pyfuse3.py $(wildcard scripts/pyfuse3_patch/*.pxi)
	$(call say,a virtual environment in $(VENV) with $(PYTHON) ($(shell $(PYTHON) -V 2>&1)))
	@$(PYTHON) -m venv --clear $(VENV)
	@$(BIN)/pip install -q --upgrade pip
	$(call say,pyfuse3 from source with the project's patches (about a minute))
	@$(BIN)/python scripts/patch_pyfuse3.py
	$(call say,the project and its tools (pytest, ruff, mypy))
	@$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: deps $(BIN)/.installed
	@mkdir -p $(BINDIR) && for c in imagebuild unionfs; do ln -sfn $(abspath $(BIN))/$$c $(BINDIR)/$$c; done
	$(call say,done: imagebuild and unionfs are in $(BINDIR)$(if $(findstring :$(BINDIR):,:$(PATH):),, (on PATH in a new login shell)))

test: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -q tests/unit $(PYTEST_ARGS)

# Real Dockerfiles (tests/realworld/contexts) built by imagebuild as root and as an ordinary user and by buildah,
# their rootfs compared entry by entry; a table of results and build times at the end. Root; about 20 minutes.
test-realworld: install
	@dpkg-query -W -f='$${Status}\n' mmdebstrap 2>/dev/null | grep -q 'install ok installed' || \
		$(APT) install -y -qq --no-install-recommends mmdebstrap >/dev/null
	$(SUDO) $(BIN)/python -m pytest -v -m realworld tests/realworld -rxXfs $(PYTEST_ARGS)

fuzz: install
	UNIONFS_FUZZ_MINUTES=$(FUZZ_MINUTES) UNIONFS_FUZZ_EXAMPLES=4 $(BIN)/python -m pytest -q -x --timeout=0 tests/fuzz $(PYTEST_ARGS)

bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Cold build, no-op rebuild and one-file edit of real-world contexts, imagebuild against buildah in the same run.
# Root; a few minutes for the default contexts (BENCH_BUILD_ARGS="--contexts all" for the whole corpus;
# BENCH_BUILD_ARGS=--rootless for both builders as an ordinary user, buildah with fuse-overlayfs).
bench-build: install
	@dpkg-query -W -f='$${Status}\n' mmdebstrap 2>/dev/null | grep -q 'install ok installed' || \
		$(APT) install -y -qq --no-install-recommends mmdebstrap >/dev/null
	$(SUDO) $(BIN)/python bench/build.py $(BENCH_BUILD_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

demo: install
	@sh examples/demo.sh

# A clean Debian tree per release (cached), this commit cloned into it, `make demo` and the README's commands
# there as root and as an ordinary user. Needs root.
check-fresh:
	@dpkg-query -W -f='$${Status}\n' mmdebstrap 2>/dev/null | grep -q 'install ok installed' || \
		$(APT) install -y -qq --no-install-recommends mmdebstrap >/dev/null
	$(SUDO) $(PYTHON) scripts/check_fresh.py $(CHECK_FRESH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
