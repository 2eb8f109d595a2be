#!/usr/bin/env bash
# The whole test suite from a fresh clone: ./scripts/test.sh [pytest arguments]
# Sets up .venv (and Debian's Chromium for the browser tests, Debian's Postfix for the
# interop tests), then runs ruff, mypy and pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/venv.sh
source scripts/services.sh
source scripts/browser.sh
source scripts/postfix.sh
ensure_venv test
ensure_postgresql
ensure_chromium
# tests/test_postfix.py starts a private Postfix: under CI it must be there (the tests
# fail without it); elsewhere, with no way to install it, they are skipped.
if ! ensure_postfix && [ "${CI:-}" = true ]; then
    exit 1
fi

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
