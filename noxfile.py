"""The test matrix: Django 5.2 LTS on Python 3.11 and Django 6.1 on Python 3.13, each on
SQLite, PostgreSQL and MariaDB. ``./scripts/test.sh`` runs ruff and mypy once, then
every session here; ``.venv/bin/nox -l`` lists them, ``.venv/bin/nox -s NAME -- ARGS``
runs one with pytest arguments.

The browser test and the fresh-clone test are slow and do not depend on the database or
the Django version: they run once, in the Django 5.2 / SQLite session. tests/smtp
touches no database: it runs in the SQLite sessions only.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from pathlib import Path

import nox

ROOT = Path(__file__).parent

nox.options.reuse_venv = "yes"  # a second run only runs the tests
nox.options.download_python = "never"  # no interpreter downloads: none are reachable
nox.options.error_on_missing_interpreters = True
# uv (installed into .venv with nox) builds an environment in seconds; virtualenv and
# pip where it is missing.
nox.options.default_venv_backend = "uv|virtualenv"
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")

# (Python, Django) pairs: each Django release on the Python it is tested with.
DJANGO = {"5.2": ("3.11", "django>=5.2,<5.3"), "6.1": ("3.13", "django>=6.1,<6.2")}
DRIVERS = {
    "sqlite": [],
    "postgresql": ["psycopg[binary]>=3.1"],
    # Built from source against Debian's libmariadb-dev (scripts/services.sh).
    "mysql": ["mysqlclient>=2.2"],
}
# The one cell that also runs the tests that need neither a database nor a version.
FULL_CELL = ("5.2", "sqlite")


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", Path(path).parent.parent.name))


def _put_pyenv_pythons_on_path() -> None:
    """pyenv's shims answer only for the selected version (python3.13 fails under a
    3.11 global): put each installed version's own bin directory on PATH instead."""
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = []
    for python, _ in DJANGO.values():
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
@nox.parametrize("db", ["sqlite", "postgresql", "mysql"], ids=["sqlite", "postgresql", "mariadb"])
@nox.parametrize(
    ("python", "django"),
    [(python, django) for django, (python, _) in DJANGO.items()],
    ids=[f"django{django}" for django in DJANGO],
)
def tests(session: nox.Session, django: str, db: str) -> None:
    """The pytest suite on one Django release and one database."""
    _install(session, [DJANGO[django][1], *DRIVERS[db]])
    # pytest-xdist: a worker per core (at most 4; SOCKMAIL_TEST_WORKERS=0 for none), each
    # with test databases of its own; a file's tests stay in one worker.
    workers = os.environ.get("SOCKMAIL_TEST_WORKERS") or str(min(os.cpu_count() or 1, 4))
    args = ["-p", "no:cacheprovider", "-n", workers, "--dist", "loadfile"]
    if (django, db) != FULL_CELL:
        args += ["-m", "not fresh_clone", "--ignore=tests/test_browser.py"]
    if db != "sqlite":
        # Neither the client alone nor the interop with Haraka depends on the database.
        args += ["--ignore=tests/smtp", "--ignore=tests/test_haraka.py"]
    # A test database of the cell's own (tests/settings.py): never the one of a run
    # beside it.
    name = f"test_sockmail_django{django.replace('.', '')}"
    env = {"SOCKMAIL_TEST_DB": db, "SOCKMAIL_TEST_DB_NAME": name}
    session.run("pytest", *args, *session.posargs, env=env)
