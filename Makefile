# voiceagent — the two commands: `make run` serves the product, `make test` runs the whole suite.
# Both set up everything they need on a fresh machine (a .venv, system packages when root), idempotently.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
# Debian packages the suite needs: a browser for the e2e tests, speech and SIP tools for the engine tests,
# nginx and Caddy for the reverse-proxy tests of deploy/.
APT_PACKAGES := chromium espeak-ng sox sip-tester nginx caddy
# silero-vad's own import needs torch; we only load its onnx file, so it is installed without deps.
SILERO_VAD := silero-vad==6.2.3

.PHONY: run test test-postgres lint typecheck format setup system-deps clean

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[local,dev]'
	$(PY) -m pip install --quiet --no-deps '$(SILERO_VAD)'
	@touch $@

setup: $(VENV)/.installed

system-deps:
	@missing=""; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing system packages:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "Missing system packages:$$missing (install them with apt-get as root)"; exit 1; \
	  fi; \
	fi

# `make run` is the development set-up: DEBUG defaults to true (a generated SECRET_KEY, plain-http cookies).
run: export DEBUG ?= true
run: setup
	$(PY) manage.py migrate --noinput
	$(PY) manage.py ensure_admin
	$(PY) manage.py serve --host 127.0.0.1 --port $(PORT)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: setup system-deps lint typecheck
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The database-facing tests once more against PostgreSQL (DATABASE_URL must point at it).
test-postgres: setup
	$(VENV)/bin/pytest -m "not e2e and not speech" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache staticfiles
