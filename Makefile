# Two entry points a newcomer needs: `make demo` (main job on the embedded default) and
# `make test` (the test suite). Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: demo serve test test-fast install clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip uv
	# torch first, from the CPU build; the constraints file keeps it (and torchvision) pinned.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/uv pip install --quiet --python $(BIN)/python -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Import the demo catalog, build and publish the index, then serve it (Ctrl-C stops).
demo: $(STAMP)
	$(BIN)/recsys demo
	$(BIN)/recsys-indexer build
	$(MAKE) serve

serve: $(STAMP)
	@echo "serving on http://$(HOST):$(PORT)/  (open it for the search page; API docs: http://$(HOST):$(PORT)/docs)"
	$(BIN)/gunicorn -w 2 -k service.web.gunicorn_worker.JsonErrorThreadWorker --threads 2 -b $(HOST):$(PORT) 'service.web.app:create_app()'

# The full suite: architecture contracts, then every test (PostgreSQL and the browser included).
test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

# The edit-run loop (under a minute here): no browser, no gunicorn, no real model (-m "not slow").
test-fast: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) data
