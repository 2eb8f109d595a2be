"""What the built distributions must hold: python scripts/check_dist.py DIST_DIR SOURCE_DIR

Called by scripts/check_dist.sh after `python -m build`. DIST_DIR holds one sdist and one
wheel; SOURCE_DIR is the tree they were built from. Checks, and prints each as it passes:

- LICENSE in the sdist and in the wheel (.dist-info/licenses/LICENSE);
- the sdist carries the whole tests/ directory of the source (conftest.py, settings.py,
  servers.py, tests/smtp/, every module) and no build leftovers;
- the wheel holds django_sockmail (every module, py.typed, templates, migrations) and
  its .dist-info, nothing else (no tests);
- the long description (the wheel's METADATA, as PyPI shows it) links to no relative
  path: on PyPI ``](docs/...)`` or ``src="docs/..."`` would point nowhere.

Exits 1 with every failure listed.
"""

from __future__ import annotations

import re
import sys
import tarfile
import zipfile
from email.parser import HeaderParser
from pathlib import Path, PurePosixPath

PACKAGE = "django_sockmail"
# The test suite's own modules, named so that a MANIFEST that drops them fails loudly.
TEST_SUPPORT = [
    "tests/__init__.py",
    "tests/conftest.py",
    "tests/settings.py",
    "tests/servers.py",
    "tests/toolkit.py",
    "tests/instances.py",
    "tests/faults.py",
    "tests/urls.py",
    "tests/smtp/__init__.py",
]
LEFTOVERS = re.compile(r"(^|/)(__pycache__|\.nox|\.venv|\.haraka|\.hypothesis)(/|$)|\.py[cod]$")
# A Markdown link or image target, a reference definition, or an HTML src/href, whose
# target has no scheme and is not a fragment: relative to a repository PyPI does not have.
RELATIVE_TARGETS = [
    re.compile(r"\]\(\s*<?(?![a-z][a-z0-9+.-]*:|#)([^)\s>]+)", re.IGNORECASE),
    re.compile(r"^\s*\[[^\]]+\]:\s*<?(?![a-z][a-z0-9+.-]*:|#)(\S+)", re.IGNORECASE | re.M),
    re.compile(r"\b(?:src|href)\s*=\s*[\"'](?![a-z][a-z0-9+.-]*:|#)([^\"']+)", re.IGNORECASE),
]


class Report:
    """Collects failures; prints what was checked."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def check(self, ok: bool, what: str, why: str = "") -> None:
        if ok:
            print(f"  ok    {what}")
        else:
            print(f"  FAIL  {what}{': ' + why if why else ''}")
            self.failures.append(what)


def listed(names: list[str], most: int = 8) -> str:
    """``names``, the first ``most`` of them when there are more."""
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def one(dist_dir: Path, pattern: str) -> Path:
    found = sorted(dist_dir.glob(pattern))
    if len(found) != 1:
        sys.exit(f"expected one {pattern} in {dist_dir}, found {[p.name for p in found]}")
    return found[0]


def source_files(source: Path, top: str) -> set[str]:
    """The files under ``top`` in the source tree, as relative POSIX paths."""
    return {
        path.relative_to(source).as_posix()
        for path in (source / top).rglob("*")
        if path.is_file() and not LEFTOVERS.search(path.relative_to(source).as_posix())
    }


def sdist_names(sdist: Path) -> set[str]:
    """The sdist's files, without its top directory (django_sockmail-0.1.0/)."""
    with tarfile.open(sdist) as archive:
        return {
            PurePosixPath(*PurePosixPath(member.name).parts[1:]).as_posix()
            for member in archive.getmembers()
            if member.isfile()
        }


def check_sdist(sdist: Path, source: Path, report: Report) -> None:
    names = sdist_names(sdist)
    print(f"sdist {sdist.name}: {len(names)} files, {sdist.stat().st_size:,} bytes")
    report.check("LICENSE" in names, "sdist has LICENSE")
    missing = sorted(name for name in TEST_SUPPORT if name not in names)
    report.check(not missing, "sdist has the test suite's support modules", listed(missing))
    tests = source_files(source, "tests")
    missing = sorted(tests - names)
    report.check(
        not missing, f"sdist has all {len(tests)} files of tests/ (tests/smtp too)", listed(missing)
    )
    package = source_files(source, PACKAGE)
    missing = sorted(package - names)
    report.check(not missing, f"sdist has all {len(package)} files of {PACKAGE}/", listed(missing))
    junk = sorted(name for name in names if LEFTOVERS.search(name))
    report.check(not junk, "sdist has no build leftovers (__pycache__, .nox, ...)", listed(junk))


def check_wheel(wheel: Path, source: Path, report: Report) -> str:
    """Check the wheel; return its long description."""
    with zipfile.ZipFile(wheel) as archive:
        names = {info.filename for info in archive.infolist() if not info.is_dir()}
        dist_info = next(name.split("/")[0] for name in names if name.endswith(".dist-info/WHEEL"))
        metadata = archive.read(f"{dist_info}/METADATA").decode()
    print(f"wheel {wheel.name}: {len(names)} files, {wheel.stat().st_size:,} bytes")
    license_file = f"{dist_info}/licenses/LICENSE"
    report.check(license_file in names, f"wheel has {license_file}")
    strays = sorted(name for name in names if not name.startswith((f"{PACKAGE}/", f"{dist_info}/")))
    only = f"wheel holds only {PACKAGE}/ and {dist_info}/ (no tests)"
    report.check(not strays, only, listed(strays))
    package = source_files(source, PACKAGE)
    missing = sorted(package - names)
    report.check(
        not missing,
        f"wheel has all {len(package)} files of {PACKAGE}/ (py.typed, templates, migrations)",
        listed(missing),
    )
    for needed in ("py.typed", "migrations/0001_initial.py", "templates/admin/"):
        path = f"{PACKAGE}/{needed}"
        report.check(any(name.startswith(path) for name in names), f"wheel has {path}")
    return HeaderParser().parsestr(metadata).get_payload()  # type: ignore[return-value]


# Code is shown, not followed: `a[0](b)` in a code block is no link.
CODE = re.compile(r"^(```|~~~).*?^\1[^\n]*$|`[^`\n]+`", re.M | re.S)


def relative_targets(markdown: str) -> list[str]:
    """The link and image targets in ``markdown`` that are relative paths."""
    text = CODE.sub("", markdown)
    return sorted({match for pattern in RELATIVE_TARGETS for match in pattern.findall(text)})


def check_long_description(description: str, report: Report) -> None:
    report.check(bool(description.strip()), "the long description is not empty (README.md)")
    relative = relative_targets(description)
    report.check(
        not relative,
        "the long description has no relative image or link targets (PyPI cannot follow them)",
        f"{relative}; use https://raw.githubusercontent.com/django-sockmail/django-sockmail/"
        "main/<path> for images, https://github.com/django-sockmail/django-sockmail/blob/"
        "main/<path> for links",
    )


def main(dist_dir: Path, source: Path) -> int:
    report = Report()
    check_sdist(one(dist_dir, "*.tar.gz"), source, report)
    description = check_wheel(one(dist_dir, "*.whl"), source, report)
    check_long_description(description, report)
    if report.failures:
        print(f"{len(report.failures)} distribution check(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.splitlines()[0] if __doc__ else "usage: check_dist.py DIST SOURCE")
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
