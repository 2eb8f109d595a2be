"""The design's boundaries, read from the source: ``django_sockmail/smtp`` is an SMTP
client that imports nothing from Django nor from the rest of the package, and only its
socket driver touches sockets."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SMTP = Path(__file__).parent.parent / "django_sockmail" / "smtp"
# What the client may import besides the standard library: the IDNA 2008 codec.
THIRD_PARTY = {"idna"}
# The socket driver alone does I/O; errors.py subclasses ssl.SSLError for TLS failures.
DRIVER = {"client.py", "connection.py"}
IO_MODULES = {"socket": DRIVER, "select": DRIVER, "ssl": DRIVER | {"errors.py"}}


def imports(path: Path) -> list[tuple[int, str]]:
    """Every import in ``path`` (at any depth, in functions too): (level, module)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(0, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or ""))
    return found


MODULES = sorted(SMTP.glob("*.py"))


def test_the_client_is_all_here() -> None:
    assert {p.name for p in MODULES} >= {"client.py", "protocol.py", "replies.py"}


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_the_smtp_client_imports_no_django_and_nothing_else_of_the_package(path: Path) -> None:
    for level, module in imports(path):
        top = module.split(".")[0]
        if level == 1 or module.startswith("django_sockmail.smtp"):
            continue  # a module of the client itself
        assert level == 0, f"{path.name} imports from outside django_sockmail/smtp: {module}"
        assert top in sys.stdlib_module_names or top in THIRD_PARTY, f"{path.name} imports {module}"


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_only_the_socket_driver_does_io(path: Path) -> None:
    for _, module in imports(path):
        allowed = IO_MODULES.get(module.split(".")[0])
        assert allowed is None or path.name in allowed, f"{path.name} imports {module}"


PACKAGE = SMTP.parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules ``path`` imports, at any depth (lazy imports in functions
    too). Outside the client, not under ``if TYPE_CHECKING:``, which never runs; the
    client's modules count those too: its layers import one way only, type hints
    included."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    in_client = path.parent == SMTP
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        type_checking = isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        if type_checking and not in_client:
            return
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return {m for m in found if m in modules and m != name}


def test_the_package_has_no_import_cycle() -> None:
    paths = [p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts]
    modules = {module_name(p) for p in paths}
    graph = {module_name(p): package_imports(p, modules) for p in paths}
    assert graph["django_sockmail.backend"] >= {"django_sockmail.conf"}  # the graph is read

    def cycle_from(start: str, path: list[str]) -> list[str] | None:
        for nxt in sorted(graph[path[-1]]):
            if nxt == start:
                return [*path, start]
            if nxt not in path and nxt > start:  # each cycle once, from its least module
                found = cycle_from(start, [*path, nxt])
                if found:
                    return found
        return None

    cycles = [c for m in sorted(graph) if (c := cycle_from(m, [m]))]
    assert cycles == []
