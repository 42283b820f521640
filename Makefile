# Meridian: `make demo` runs the local multi-region fleet, `make test` runs the tests (`make test-fast`:
# unit and in-process API tests only, no real server, worker, agent or browser processes),
# `make bench` the quick version of every benchmark (BENCH_ARGS="--full" or "--only heartbeat,route").
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Two test processes (pytest-xdist); the modules with a fault scenario run in one of them, in turn (tests/conftest.py).
XDIST := -n 2 --dist loadgroup --no-loadscope-reorder

.PHONY: venv test test-fast demo bench clean

$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	touch $@

venv: $(BIN)/.installed

test: venv
	bin/ensure-services
	bin/ensure-browser
	$(BIN)/python -m pytest -q $(XDIST) --durations=60 $(PYTEST_ARGS)

test-fast: venv
	bin/ensure-services
	$(BIN)/python -m pytest -q $(XDIST) -m "not integration and not faults and not browser" $(PYTEST_ARGS)

demo: venv
	$(BIN)/python manage.py demo

bench: venv
	bin/ensure-services
	bin/ensure-wrk
	$(BIN)/python bench/all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var
