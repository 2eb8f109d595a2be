#!/usr/bin/env bash
# The whole test suite from a fresh clone: ./scripts/test.sh [pytest arguments]
# Sets up .venv (and Debian's Chromium for the browser tests), then runs ruff, mypy
# and pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/venv.sh
source scripts/services.sh
source scripts/browser.sh
ensure_venv test
ensure_postgresql
ensure_chromium

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy
echo "== pytest (SQLite)"
.venv/bin/pytest "$@"
echo "== pytest (PostgreSQL)"
# tests/smtp never touches a database: once is enough.
SOCKMAIL_TEST_DB=postgresql .venv/bin/pytest -m "not fresh_clone" --ignore=tests/smtp "$@"
