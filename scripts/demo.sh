#!/usr/bin/env bash
# Run the django_sockmail demo from a fresh clone:
#   ./scripts/demo.sh [--no-serve | --serve-only] [--reset] [--port N]
# Every run adds its SMTP sessions to example_project/db.sqlite3; --reset starts it afresh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/venv.sh
ensure_venv demo
exec .venv/bin/python example_project/manage.py sockmail_demo "$@"
