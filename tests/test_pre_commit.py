"""The pre-commit configuration runs what the test command runs: each hook is a local
one (``language: system``) whose entry is a tool in .venv, the one scripts/test.sh
runs, so a hook needs no download and agrees with the test command's versions; and the
test command needs no pre-commit of its own."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".pre-commit-config.yaml"
TEST_COMMAND = ROOT / "scripts" / "test.sh"


def hooks() -> dict[str, dict[str, str]]:
    """Each hook's scalar keys by its id (the test environment has no YAML parser; the
    configuration is a list of ``- id:`` blocks of ``key: value`` lines)."""
    found: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in CONFIG.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        hook = re.fullmatch(r"\s*- id: (\S+)", line)
        if hook:
            current = found.setdefault(hook[1], {})
            continue
        field = re.fullmatch(r"\s+(\w+): (.+)", line)
        if field and found:
            current[field[1]] = field[2]
    return found


def test_the_hooks_are_ruff_ruff_format_and_mypy_run_locally() -> None:
    assert re.findall(r"^\s*- repo: (\S+)", CONFIG.read_text(), re.M) == ["local"]
    found = hooks()
    assert sorted(found) == ["mypy", "ruff", "ruff-format"]
    assert {hook["language"] for hook in found.values()} == {"system"}


def test_each_hook_runs_a_tool_of_venv_that_the_test_command_runs() -> None:
    test_command = TEST_COMMAND.read_text()
    for id, hook in hooks().items():
        tool, *args = shlex.split(hook["entry"])
        assert tool.startswith(".venv/bin/"), id
        # Its subcommand too (ruff check, ruff format): the test command's own step.
        assert " ".join([tool, *args[:1]]) in test_command, id


@pytest.mark.skipif(
    not (ROOT / ".venv").is_dir() and os.environ.get("CI") != "true",
    reason="no .venv here (./scripts/test.sh makes it)",
)
def test_each_hooks_tool_is_installed_in_venv() -> None:
    for id, hook in hooks().items():
        tool = ROOT / shlex.split(hook["entry"])[0]
        assert tool.is_file() and os.access(tool, os.X_OK), f"{id}: no {tool}"


def test_the_test_command_needs_no_pre_commit() -> None:
    for path in (TEST_COMMAND, ROOT / "noxfile.py", ROOT / "scripts" / "venv.sh"):
        assert "pre-commit" not in path.read_text(), path
