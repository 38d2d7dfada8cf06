# `make demo` runs the main job, `make test` the test suite; both install first into .venv/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser demo test bench screenshots

install: $(STAMP)

# Editable in "compat" mode: a plain path in a .pth file, so a task's child Python does not import
# setuptools' editable finder at start-up (about 15 ms per process).
$(STAMP): setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e ".[test]" --config-settings editable_mode=compat
	touch $(STAMP)

demo: install
	MLCOMP_ROOT=$(CURDIR)/runs/demo $(BIN)/mlcomp dag submit dags/digits.yml --wait

# The browser tests drive Debian's Chromium (never a downloaded one): installed here, once, when missing.
CHROMIUM := /usr/bin/chromium

browser:
	@test -x $(CHROMIUM) || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }; }

test: install browser
	$(BIN)/python -m pytest -q

BENCHMARKS := runner_overhead dag_overhead tick_scale grid_makespan reporting_overhead ui_scale search_efficiency multi_computer lab_scale lab_fairness

bench: install
	$(BIN)/pip install -q -c constraints.txt -e ".[test,bench]" --config-settings editable_mode=compat
	for b in $(BENCHMARKS); do $(BIN)/python bench/$$b.py || exit 1; done

# Browser tests writing a screenshot of each UI page into docs/screenshots/.
screenshots: install browser
	MLCOMP_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest -q tests/e2e
