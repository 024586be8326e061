# recsys-audit — `make demo` audits the built-in sandbox; `make test` runs the test suite.
# Both set up what they need on a fresh machine: a virtualenv, the package, and the system services.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint bench system-deps services clean sandbox-down

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Prometheus, Chromium, wrk and poppler-utils (pdfinfo, pdftoppm: the report's print test) come from Debian packages;
# installed when missing and we may (root + apt).
system-deps:
	@missing=""; \
	command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	command -v promtool   >/dev/null || missing="$$missing prometheus"; \
	command -v chromium   >/dev/null || missing="$$missing chromium"; \
	command -v wrk        >/dev/null || missing="$$missing wrk"; \
	command -v pdftoppm   >/dev/null || missing="$$missing poppler-utils"; \
	command -v pdfinfo    >/dev/null || missing="$$missing poppler-utils"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$(echo $$missing | tr ' ' '\n' | sort -u) >/dev/null; \
	  else echo "note: missing$$missing — install them with your package manager (tests needing them will fail)"; fi; \
	fi

# PostgreSQL must answer on 127.0.0.1:5432 (or set DATABASE_URL); start the local cluster if it is down.
services:
	@if [ -z "$$DATABASE_URL" ] && ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then \
	  if command -v pg_ctlcluster >/dev/null; then \
	    pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -1) main start; \
	  else echo "PostgreSQL is not running on 127.0.0.1:5432 and DATABASE_URL is not set" >&2; exit 1; fi; \
	fi

demo: $(STAMP) system-deps services
	$(BIN)/recsys-audit sandbox up
	$(BIN)/recsys-audit run local; status=$$?; \
	  echo "sandbox still running: stop it with '$(BIN)/recsys-audit sandbox down'"; \
	  [ $$status -le 1 ]

test: $(STAMP) system-deps services
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check recsys_audit tests benchmarks
	$(BIN)/ruff format --check recsys_audit tests benchmarks

bench: $(STAMP) system-deps services
	@for script in benchmarks/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

sandbox-down: $(STAMP)
	$(BIN)/recsys-audit sandbox down

clean:
	rm -rf audits .sandbox .pytest_cache
