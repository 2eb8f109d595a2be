"""The docs' "How it is built" (docs/internals.md) lists the package as it is: every
module, and no module that is gone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "django_sockmail"


def listed() -> set[str]:
    """The paths the tree in docs/internals.md names, relative to the package."""
    page = (ROOT / "docs" / "internals.md").read_text()
    block = page.split("# How it is built", 1)[1].split("```", 2)[1]
    paths, folder = set(), ""
    for line in block.splitlines()[2:]:  # after "django_sockmail/"
        name = re.match(r"( *)(\S+)", line)
        if name is None or line.startswith("       " * 3):
            continue  # a continuation of a description
        indent, entry = len(name.group(1)), name.group(2)
        if indent == 2:
            folder = entry if entry.endswith("/") else ""
            paths.add(entry)
        elif indent == 4 and folder:
            paths.add(folder + entry)
    return paths


def modules() -> set[str]:
    found = set()
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if "migrations" in relative.parts or path.name == "__init__.py":
            continue
        if relative.parts[0] == "management":
            continue  # the commands are listed by their folder
        found.add(str(relative))
    return found


def test_the_docs_list_every_module_of_the_package_and_no_other() -> None:
    named = {p for p in listed() if p.endswith(".py")}
    assert named == modules()
    assert "management/commands/" in listed()
