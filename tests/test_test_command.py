"""The test command runs anywhere (scripts/test.sh, scripts/steps.sh, noxfile.py's plan):
outside CI what a machine lacks is skipped and said, under CI it fails the run, and the
summary says what ran, what failed and what was skipped, and why."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STEPS = ROOT / "scripts" / "steps.sh"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"

pytestmark = pytest.mark.skipif(not STEPS.exists(), reason="needs the checkout's scripts/")

# A run of two set-up steps (one the machine cannot do) and three checks.
RUN = """
source scripts/steps.sh
trap print_summary EXIT
no_root() { echo "installing it..."; echo "no root and apt-get to install chromium" >&2; return 1; }
require "browser tests" no_root || echo "went on without the browser tests"
require "PostgreSQL cells" true
check "ruff check" true
check mypy false
check_script scripts/no-such-script.sh "the docs site"
[ "$FAILED" = 0 ]
"""


def run(script: str, ci: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        ["bash", "-c", f"set -euo pipefail\n{script}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def summary(output: str) -> list[str]:
    return output.split("== Summary", 1)[1].splitlines()[1:]


def test_outside_ci_what_cannot_be_set_up_is_skipped_saying_why_and_the_run_goes_on() -> None:
    result = run(RUN, ci=False)
    assert "went on without the browser tests" in result.stdout
    assert result.returncode == 1  # mypy failed: the run fails, after the summary
    assert summary(result.stdout) == [
        "passed   ruff check",
        "failed   mypy — exit status 1",
        "skipped  browser tests — no root and apt-get to install chromium",
        "skipped  the docs site (scripts/no-such-script.sh) — scripts/no-such-script.sh is missing",
    ]


def test_under_ci_what_cannot_be_set_up_fails_the_run_at_once() -> None:
    result = run(RUN, ci=True)
    assert result.returncode == 1
    assert "went on" not in result.stdout
    assert "CI=true: browser tests cannot be left out" in result.stderr
    assert summary(result.stdout) == [
        "failed   browser tests — CI=true needs it: no root and apt-get to install chromium",
    ]


def test_under_ci_a_missing_check_script_is_a_failure() -> None:
    script = 'check_script scripts/no-such-script.sh "the docs site"\nexit "$FAILED"'
    result = run(f"source scripts/steps.sh\ntrap print_summary EXIT\n{script}", ci=True)
    assert result.returncode == 1
    assert "CI=true, but scripts/no-such-script.sh is missing" in result.stderr
    assert summary(result.stdout) == [
        "failed   the docs site (scripts/no-such-script.sh) — scripts/no-such-script.sh is missing",
    ]


@pytest.mark.skipif(not VENV_PYTHON.exists(), reason="needs .venv (scripts/test.sh makes it)")
def test_the_plan_runs_the_cells_whose_python_and_database_are_here(tmp_path: Path) -> None:
    """Only a python3.11 on PATH (no pyenv) and no MariaDB: the Python 3.11 cells but
    MariaDB's run; the others are skipped, each saying why."""
    bin = tmp_path / "bin"
    bin.mkdir()
    (bin / "python3.11").write_text("#!/bin/sh\n")
    (bin / "python3.11").chmod(0o755)
    env = {"PATH": str(bin), "PYENV_ROOT": str(tmp_path / "no-pyenv"), "HOME": str(tmp_path)}
    result = subprocess.run(
        [str(VENV_PYTHON), "noxfile.py", "plan", "--without", "mysql=no MariaDB here"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    no_python = "no Python {0} (python{0} is not on PATH nor in pyenv)".format
    assert result.stdout.splitlines() == [
        "run\ttests(django5.2, sqlite)",
        "run\ttests(django5.2, postgresql)",
        "skip\ttests(django5.2, mariadb)\tno MariaDB here",
        f"skip\ttests(django6.1, sqlite)\t{no_python('3.13')}",
        f"skip\ttests(django6.1, postgresql)\t{no_python('3.13')}",
        "skip\ttests(django6.1, mariadb)\tno MariaDB here",
        f"skip\ttests(django6.1, sqlite, python3.12)\t{no_python('3.12')}",
    ]
