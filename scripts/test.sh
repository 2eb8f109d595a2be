#!/usr/bin/env bash
# The whole test suite from a fresh clone: ./scripts/test.sh [pytest arguments]
#
# Sets up .venv, the machine's PostgreSQL and MariaDB (and the MariaDB client headers
# for its driver), Debian's Chromium for the browser tests, Debian's Postfix and npm's
# Haraka (into .haraka/) for the interop tests; each step that installs something
# system-wide says so first. Then ruff and mypy once, the built distributions
# (scripts/check_dist.sh), the docs (scripts/docs.sh), and the pytest matrix of
# noxfile.py: Django 5.2 on Python 3.11 and Django 6.1 on Python 3.13, each on SQLite,
# PostgreSQL and MariaDB, and Django 6.1 on Python 3.12 on SQLite. It ends with a
# summary: what ran, what failed, what was skipped and why.
#
# Outside CI, what this machine cannot run is skipped, saying why: a cell whose Python
# is not installed or whose database server is not reachable (and cannot be started),
# a step that needs root and apt-get to install something. Under CI=true (.ci/run)
# every step and every cell is required. Arguments go to every pytest run; NOXSESSION
# picks a cell (`.venv/bin/nox -l` lists them), e.g.
#   NOXSESSION="tests(django6.1, mariadb)" ./scripts/test.sh -x
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/steps.sh
source scripts/venv.sh
source scripts/services.sh
source scripts/browser.sh
source scripts/postfix.sh
source scripts/haraka.sh
trap print_summary EXIT

ensure_venv test,matrix
# Each database's cells need its server; outside CI, without it they are skipped.
without=()
require "PostgreSQL cells" ensure_postgresql || without+=(--without "postgresql=$WHY")
if ! { require "MariaDB cells" ensure_mariadb \
    && require "MariaDB cells" ensure_mariadb_database \
    && require "MariaDB cells" ensure_mariadb_time_zones \
    && require "MariaDB cells" ensure_mariadb_client_headers; }; then
    without+=(--without "mysql=$WHY")
fi
# The test modules skip themselves where their server or browser is missing, but not
# under CI: there require has already stopped the run.
require "browser tests (tests/test_browser.py)" ensure_chromium || true
require "Postfix interop tests (tests/test_postfix.py)" ensure_postfix || true
require "Haraka interop tests (tests/test_haraka.py)" ensure_haraka || true

echo "== ruff"
check "ruff check" .venv/bin/ruff check .
check "ruff format --check" .venv/bin/ruff format --check .
echo "== mypy"
check mypy .venv/bin/mypy
check_script scripts/check_dist.sh "the built distributions"
check_script scripts/docs.sh "the docs site"

echo "== pytest matrix (nox)"
sessions=()
if [ -n "${NOXSESSION:-}" ]; then
    # One name, passed on as it is: nox itself would split "tests(django6.1, mariadb)"
    # at its comma.
    echo "NOXSESSION=$NOXSESSION picks the cells"
    sessions=("$NOXSESSION")
    unset NOXSESSION
elif ! under_ci; then
    while IFS=$'\t' read -r verdict session why; do
        if [ "$verdict" = run ]; then
            sessions+=("$session")
        else
            note skipped "$session" "$why"
        fi
    done < <(.venv/bin/python noxfile.py plan "${without[@]}")
    if [ "${#sessions[@]}" = 0 ]; then
        note failed "pytest matrix" "no cell can run here"
        exit 1
    fi
fi
report=$(mktemp)
nox_args=(--report "$report")
if [ "${#sessions[@]}" -gt 0 ]; then
    nox_args+=(-s "${sessions[@]}")
fi
status=0
.venv/bin/nox "${nox_args[@]}" -- "$@" || status=$?
if [ -s "$report" ]; then
    while IFS=$'\t' read -r result session; do
        case $result in
            success) note passed "$session" ;;
            skipped) note skipped "$session" "nox skipped it (see above)" ;;
            *) note failed "$session" "$result (see its output above)" ;;
        esac
    done < <(.venv/bin/python noxfile.py results "$report")
else
    note failed "pytest matrix" "nox wrote no report (exit status $status)"
fi
rm -f "$report"
[ "$status" = 0 ] && [ "$FAILED" = 0 ]
