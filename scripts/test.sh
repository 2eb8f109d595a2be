#!/usr/bin/env bash
# The whole test suite from a fresh clone: ./scripts/test.sh [pytest arguments]
# Sets up .venv (and Debian's Chromium for the browser tests, Debian's Postfix and npm's
# Haraka for the interop tests, the MariaDB client headers for its driver), runs ruff
# and mypy once, then the pytest matrix of noxfile.py: Django 5.2 (Python 3.11) and
# Django 6.1 (Python 3.13) on SQLite, PostgreSQL and MariaDB. Arguments go to every pytest run;
# NOXSESSION picks cells (`.venv/bin/nox -l` lists them), e.g.
#   NOXSESSION="tests(django6.1, mariadb)" ./scripts/test.sh -x
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/venv.sh
source scripts/services.sh
source scripts/browser.sh
source scripts/postfix.sh
source scripts/haraka.sh
ensure_venv test,matrix
ensure_postgresql
ensure_mariadb
ensure_mariadb_database
ensure_mariadb_time_zones
ensure_mariadb_client_headers
ensure_chromium
# tests/test_postfix.py starts a private Postfix: under CI it must be there (the tests
# fail without it); elsewhere, with no way to install it, they are skipped.
if ! ensure_postfix && [ "${CI:-}" = true ]; then
    exit 1
fi
# tests/test_haraka.py starts a private Haraka (npm, into .haraka/): likewise.
if ! ensure_haraka && [ "${CI:-}" = true ]; then
    exit 1
fi

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy
echo "== pytest matrix (nox)"
exec .venv/bin/nox -- "$@"
