# Meridian: `make demo` runs the local multi-region fleet, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv test demo clean

$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	touch $@

venv: $(BIN)/.installed

test: venv
	bin/ensure-services
	bin/ensure-browser
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

demo: venv
	$(BIN)/python manage.py demo

clean:
	rm -rf $(VENV) var
