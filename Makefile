# Every target builds its own virtualenv, so a fresh machine needs only Python 3.11+ and make.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Installing the project: errors only. A strict editable install always prints setuptools'
# "Strict editable installation performed" banner as a warning; errors still show.
PIP_QUIET := --quiet --quiet

.PHONY: venv relink demo test test-deep lint pytest docs bench screenshots clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install $(PIP_QUIET) -e '.[dev]' --config-settings editable_mode=strict
	touch $(STAMP)

# strict editable mode links files, so new modules need a re-install to be seen.
relink: $(STAMP)
	$(BIN)/python -m pip install $(PIP_QUIET) --no-deps -e . --config-settings editable_mode=strict

demo: relink
	cd examples && ../$(BIN)/python quickstart.py && ../$(BIN)/python workflow_verification.py

lint: relink
	$(BIN)/ruff check core runtime actors storage tests examples bench docs_tools
	$(BIN)/ruff format --check core runtime actors storage tests examples bench docs_tools
	$(BIN)/mypy

pytest: relink
	$(BIN)/pytest -q

test: lint pytest

# The documentation site in site/: strict, so a broken link, a missing page or reference,
# or a docstring that does not render fails the build.
docs: relink
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# Nightly depth: thousands of hypothesis examples per property.
test-deep: relink
	HYPOTHESIS_PROFILE=deep $(BIN)/pytest -q tests/test_model.py tests/test_partitions.py \
		tests/test_scheduling_properties.py tests/test_cron_schedule.py tests/test_flow.py

# The dashboard's screenshots in docs/screenshots/, taken by the browser tests (Chromium).
screenshots: relink
	TRIOFORGE_SCREENSHOTS=docs/screenshots TRIOFORGE_REQUIRE_BROWSER=1 $(BIN)/pytest -q tests/test_browser.py

# Every bench prints its figures as it measures them and stops at its own --deadline; a
# failed or stopped bench does not stop the others, and fails `make bench` at the end.
# `make bench QUICK=1`: small sizes, a smoke run of every bench in a few minutes.
QUICK ?=
BENCHES = \
	"bench.table $(if $(QUICK),--quick)" \
	"bench.run $(if $(QUICK),--jobs 2000 --rounds 1)" \
	"bench.replicas $(if $(QUICK),--jobs 2000 --samples 30 --trickle 50)" \
	"bench.live $(if $(QUICK),--samples 20)" \
	"bench.workflows $(if $(QUICK),--runs 100 --asleep 1000)" \
	"bench.dashboard --jobs $(if $(QUICK),20000,200000)" \
	"bench.counts --rows $(if $(QUICK),20000,200000) $(if $(QUICK),--samples 10)" \
	"bench.notices --repeats $(if $(QUICK),1,2) $(if $(QUICK),--jobs 2000)" \
	"bench.bigtable $(if $(QUICK),--pending 50000 --finished 50000 --window 5000 --future 50000 --drain 5000 --trickle 400 --pairs 1)"

bench: relink
	@failed=""; for bench in $(BENCHES); do \
		echo "== python -m $$bench"; \
		$(BIN)/python -m $$bench || failed="$$failed $${bench%% *}"; \
	done; \
	if [ -n "$$failed" ]; then echo "== failed or stopped early:$$failed"; exit 1; fi

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache .mypy_cache .ruff_cache
