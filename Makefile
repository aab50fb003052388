# Sluice: `make run` serves the demo on http://localhost:8000, `make test` runs everything.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
PORT    ?= 8000
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run dev test test-fast system-deps clean

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

## run: gunicorn with one gevent worker, the demo model and the page on :$(PORT)
run: $(VENV)/.runtime
	SLUICE_BIND=0.0.0.0:$(PORT) $(VENV)/bin/gunicorn -c deploy/gunicorn.conf.py wsgi:app

## dev: Flask's reloading development server
dev: $(VENV)/.runtime
	$(VENV)/bin/flask --app app run --debug --port $(PORT)

## system-deps: what the tests need from Debian (installed only when missing)
system-deps:
	@missing=""; \
	 command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	 [ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || missing="$$missing nginx"; \
	 command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	 [ -z "$$missing" ] || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $$missing; }

## test: install what is needed, then the whole suite
test: $(VENV)/.dev system-deps
	$(PY) -m pytest -q

## test-fast: the suite without the groups marked slow
test-fast: $(VENV)/.dev
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache tests/artifacts
