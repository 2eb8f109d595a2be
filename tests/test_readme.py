"""The README's two set-up commands, run from a fresh clone as a new user would; its
links, absolute for PyPI.

The clone is of the last commit: in CI, which runs on a clean clone, that is the
code under test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [line.split("#")[0].strip() for line in block.strip().splitlines()]


def test_readme_names_a_demo_command_and_a_test_command_that_ci_runs() -> None:
    demo, test = quick_start_commands()
    assert demo == "./scripts/demo.sh" and test == "./scripts/test.sh"
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^exec bash scripts/test\.sh$", ci, re.MULTILINE)


def test_the_readme_links_and_images_are_absolute() -> None:
    # PyPI shows the README as the package's long description, away from the repository:
    # a relative target (docs/..., LICENSE) would be a broken link or image there.
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)", readme) + re.findall(r"<(\w[^>\s]*)>", readme)
    assert targets
    assert [t for t in targets if not t.startswith(("https://", "http://"))] == []


@pytest.mark.fresh_clone
@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the git checkout")
def test_the_demo_command_works_from_a_fresh_clone(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    demo, _ = quick_start_commands()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "VIRTUAL_ENV"))}
    # Only the system Python on the PATH, as for someone who has just cloned.
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(ROOT))
    )
    result = subprocess.run(
        [*demo.split(), "--no-serve"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Creating .venv" in result.stdout  # it set itself up
    assert "S: 220" in result.stdout and "C: QUIT" in result.stdout
    assert "/admin/" in result.stdout
    shutil.rmtree(clone, ignore_errors=True)
