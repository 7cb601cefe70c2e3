# The two commands a newcomer needs: `make demo` and `make test`. Both do their own set-up.
VENV   := .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: setup system-packages ci-tools demo test test-under-load lint typecheck bench clean

setup: system-packages $(STAMP)

system-packages:
	@sh scripts/ensure-system-packages.sh

# gitlab-ci-local, pinned by tools/gitlab-ci-local/package-lock.json, for the `gitlab` tests.
ci-tools:
	@sh scripts/ensure-gitlab-ci-local.sh

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(VENV)/bin/fm demo $(ARGS)

# Lint and types first: they take seconds, and a failure there is cheaper to read than in a test.
test: setup ci-tools lint typecheck
	$(PYTHON) -m pytest $(ARGS)

# The same suite while stress-ng keeps every core busy: tests must hold on a busy machine.
test-under-load: setup
	@sh scripts/test-under-load.sh ARGS="$(ARGS)"

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

# With no arguments mypy checks src/ and tests/, strictly: pyproject.toml names them.
typecheck: setup
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache tools/gitlab-ci-local/node_modules
