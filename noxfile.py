"""The test matrix: Django 5.2 LTS on Python 3.11 and Django 6.1 on Python 3.13, each on
SQLite, PostgreSQL and MariaDB, and Django 6.1 on Python 3.12 (the oldest Python it
supports) on SQLite, so that every Python the package claims is tested without a fourth
pass over the database servers. ``./scripts/test.sh`` runs ruff and mypy once, then the
sessions here; ``.venv/bin/nox -l`` lists them, ``.venv/bin/nox -s NAME -- ARGS`` runs
one with pytest arguments.

The browser test and the fresh-clone test are slow and do not depend on the database or
the Django version: they run once, in the Django 5.2 / SQLite session. tests/smtp
touches no database: it runs in the SQLite sessions only.

Outside CI, ``scripts/test.sh`` runs only the cells this machine can run:
``python noxfile.py plan`` says which, and why not the others (see ``plan()``).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import nox

ROOT = Path(__file__).parent

nox.options.reuse_venv = "yes"  # a second run only runs the tests
nox.options.download_python = "never"  # no interpreter downloads: none are reachable
nox.options.error_on_missing_interpreters = True
# uv (installed into .venv with nox) builds an environment in seconds; virtualenv and
# pip where it is missing.
nox.options.default_venv_backend = "uv|virtualenv"
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")

DJANGO = {"5.2": "django>=5.2,<5.3", "6.1": "django>=6.1,<6.2"}
# The Python each Django release is tested on with every database.
MAIN_PYTHON = {"5.2": "3.11", "6.1": "3.13"}
DATABASES = {"sqlite": "sqlite", "postgresql": "postgresql", "mysql": "mariadb"}  # id's
DRIVERS = {
    "sqlite": [],
    "postgresql": ["psycopg[binary]>=3.1"],
    # Built from source against Debian's libmariadb-dev (scripts/services.sh).
    "mysql": ["mysqlclient>=2.2"],
}


class Cell(NamedTuple):
    """One session of the matrix: a Python, a Django release and a database."""

    python: str
    django: str
    db: str

    @property
    def id(self) -> str:
        """As nox names it, ``tests(<id>)``; the Python only where it is not the main one."""
        id = f"django{self.django}, {DATABASES[self.db]}"
        return id if self.python == MAIN_PYTHON[self.django] else f"{id}, python{self.python}"

    @property
    def session(self) -> str:
        return f"tests({self.id})"


CELLS = [
    *(Cell(MAIN_PYTHON["5.2"], "5.2", db) for db in DATABASES),
    *(Cell(MAIN_PYTHON["6.1"], "6.1", db) for db in DATABASES),
    Cell("3.12", "6.1", "sqlite"),
]
# The one cell that also runs the tests that need neither a database nor a version.
FULL_CELL = Cell("3.11", "5.2", "sqlite")


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", Path(path).parent.parent.name))


def _put_pyenv_pythons_on_path() -> None:
    """pyenv's shims answer only for the selected version (python3.13 fails under a
    3.11 global): put each installed version's own bin directory on PATH instead."""
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = []
    for python in sorted({cell.python for cell in CELLS}):
        candidates = glob.glob(f"{root}/versions/{python}.*/bin/python{python}")
        candidates = [c for c in candidates if re.search(rf"/{re.escape(python)}\.\d+/", c)]
        if candidates:
            found.append(str(Path(max(candidates, key=_version_key)).parent))
    if found:
        os.environ["PATH"] = os.pathsep.join([*found, os.environ.get("PATH", "")])


_put_pyenv_pythons_on_path()


def _install(session: nox.Session, requirements: list[str]) -> None:
    """Install the project and ``requirements`` again only when they or pyproject.toml
    changed, so that a reused environment starts its tests at once."""
    assert isinstance(session.virtualenv, nox.virtualenv.ProcessEnv)
    location = session.virtualenv.location
    assert location is not None
    stamp = Path(location) / ".sockmail-installed"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    digest.update("\n".join(requirements).encode())
    wanted = digest.hexdigest()
    if stamp.exists() and stamp.read_text() == wanted:
        return
    session.install("--disable-pip-version-check", "-e", ".[test]", *requirements)
    stamp.write_text(wanted)


@nox.session
@nox.parametrize(("python", "django", "db"), [nox.param(*cell, id=cell.id) for cell in CELLS])
def tests(session: nox.Session, django: str, db: str) -> None:
    """The pytest suite on one Python, one Django release and one database."""
    cell = Cell(str(session.python), django, db)
    _install(session, [DJANGO[django], *DRIVERS[db]])
    # pytest-xdist: a worker per core (at most 4; SOCKMAIL_TEST_WORKERS=0 for none), each
    # with test databases of its own; a file's tests stay in one worker. -rs: say why
    # each skipped test was skipped.
    workers = os.environ.get("SOCKMAIL_TEST_WORKERS") or str(min(os.cpu_count() or 1, 4))
    args = ["-p", "no:cacheprovider", "-n", workers, "--dist", "loadfile", "-rs"]
    if cell != FULL_CELL:
        args += ["-m", "not fresh_clone", "--ignore=tests/test_browser.py"]
    if db != "sqlite":
        # Neither the client alone nor the interop with Haraka depends on the database.
        args += ["--ignore=tests/smtp", "--ignore=tests/test_haraka.py"]
    # A test database of the cell's own (tests/settings.py): never the one of a run
    # beside it.
    name = f"test_sockmail_django{django.replace('.', '')}_py{cell.python.replace('.', '')}"
    env = {"SOCKMAIL_TEST_DB": db, "SOCKMAIL_TEST_DB_NAME": name}
    session.run("pytest", *args, *session.posargs, env=env)


def plan(
    cells: Iterable[Cell], has_python: Callable[[str], bool], without: dict[str, str]
) -> Iterator[tuple[Cell, str | None]]:
    """Each cell with why it cannot run here (None when it can): its Python is not
    installed, or its database is in ``without`` (database: why it is unavailable)."""
    for cell in cells:
        missing = f"no Python {cell.python} (python{cell.python} is not on PATH nor in pyenv)"
        if cell.db in without:
            yield cell, without[cell.db]
        elif not has_python(cell.python):
            yield cell, missing
        else:
            yield cell, None


def _main(argv: list[str]) -> None:
    """``python noxfile.py plan [--without DB=WHY ...]``: a line a cell, ``run<TAB>NAME``
    or ``skip<TAB>NAME<TAB>WHY``. ``python noxfile.py results REPORT``: a line a session
    of a nox ``--report`` file, ``RESULT<TAB>NAME``."""
    parser = argparse.ArgumentParser(prog="noxfile.py")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("plan").add_argument("--without", action="append", default=[])
    commands.add_parser("results").add_argument("report", type=Path)
    args = parser.parse_args(argv)
    if args.command == "plan":
        without = dict(item.split("=", 1) for item in args.without)
        has_python = lambda python: shutil.which(f"python{python}") is not None  # noqa: E731
        for cell, why in plan(CELLS, has_python, without):
            print(f"run\t{cell.session}" if why is None else f"skip\t{cell.session}\t{why}")
    else:
        for session in json.loads(args.report.read_text())["sessions"]:
            print(f"{session['result']}\t{session['signatures'][0]}")


if __name__ == "__main__":
    _main(sys.argv[1:])
