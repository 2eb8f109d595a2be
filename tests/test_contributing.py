"""CONTRIBUTING.md names what is there: every file, test and shell function it tells a
contributor to run or read exists, and every benchmark has its line."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXT = (ROOT / "CONTRIBUTING.md").read_text()


PLACES = r"(?:\.ci|scripts|tests|benchmarks|docs|django_sockmail|example_project)"


def test_every_path_it_names_exists() -> None:
    named = set(re.findall(rf"(?<![\w/.-])({PLACES}/[\w./-]*\w)", TEXT))
    assert {"scripts/test.sh", "tests/test_postfix.py", "django_sockmail/backend.py"} <= named
    assert sorted(path for path in named if not (ROOT / path).exists()) == []


def test_every_test_it_names_exists() -> None:
    for module, test in re.findall(r"(tests/[\w/]+\.py)::(\w+)", TEXT):
        assert f"def {test}(" in (ROOT / module).read_text(), f"{module}::{test}"


def test_every_shell_function_it_sources_is_defined_there() -> None:
    uses = re.findall(r"source (scripts/\w+\.sh); (\w+)", TEXT)
    assert len(uses) >= 5
    for script, function in uses:
        assert re.search(rf"^{function}\(\) {{", (ROOT / script).read_text(), re.M), function


def test_every_benchmark_has_its_command() -> None:
    for benchmark in sorted((ROOT / "benchmarks").glob("*.py")):
        if benchmark.name != "django_setup.py":  # a helper the benchmarks import
            assert f".venv/bin/python benchmarks/{benchmark.name}" in TEXT, benchmark.name
