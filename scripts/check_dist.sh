#!/usr/bin/env bash
# The distributions a user installs, built and tried: bash scripts/check_dist.sh
#  1. builds the sdist and, from it, the wheel (python -m build) out of a copy of the
#     working tree (tracked and new files, nothing .gitignore names);
#  2. twine check --strict;
#  3. their contents (scripts/check_dist.py): LICENSE in both, the whole tests/ in the
#     sdist, only django_sockmail in the wheel, a long description without relative links;
#  4. in a clean virtual environment (Python 3.11, the oldest supported) with only the
#     wheel and aiosmtpd, and outside the source tree: django-admin migrate on SQLite,
#     then one send_mail() through django_sockmail.backend.EmailBackend to an aiosmtpd
#     server (scripts/dist_smoke.py), which must get it, with one "ok" Session in the
#     audit log;
#  5. in the same environment with the test extras: pytest tests/smtp from the unpacked
#     sdist.
# Uses .venv (scripts/venv.sh) and installs the `release` extra (build, twine) into it
# when missing. Everything else happens in a temporary directory, removed at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
started=$SECONDS

if [ ! -x .venv/bin/python ]; then
    echo "No .venv: run scripts/test.sh (or python3 -m venv .venv) first" >&2
    exit 1
fi
# install_into VENV REQUIREMENT...: with uv (seconds) where .venv has it, else pip.
install_into() {
    if [ -x .venv/bin/uv ]; then
        .venv/bin/uv pip install --quiet --python "$1/bin/python" "${@:2}"
    else
        "$1/bin/python" -m pip install --quiet --disable-pip-version-check "${@:2}"
    fi
}
if ! .venv/bin/python -c 'import build, twine' 2>/dev/null; then
    echo "Installing build and twine (the release extra) into .venv"
    install_into .venv "build>=1.2" "twine>=6.1"
fi

# The clean environment's Python: the oldest supported one installed (3.11 first).
# pyenv's shims answer only for the selected version, so look in pyenv's versions too.
clean_python=""
pyenv_versions=${PYENV_ROOT:-$HOME/.pyenv}/versions
for version in 3.11 3.12 3.13; do
    for candidate in "python$version" "$pyenv_versions/$version".*/bin/python"$version"; do
        if command -v "$candidate" >/dev/null && "$candidate" -c '' 2>/dev/null; then
            clean_python=$(command -v "$candidate")
            break 2
        fi
    done
done
if [ -z "$clean_python" ]; then
    echo "No Python 3.11, 3.12 or 3.13 found for the clean virtual environment" >&2
    exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/sockmail-dist.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/source" "$work/dist" "$work/run"

echo "== build (sdist, then the wheel from the sdist)"
# A copy, so the build neither sees .venv/.nox/egg-info leftovers nor writes into the tree:
# the files git tracks or would (not what .gitignore names); outside git, all but those.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' path; do [ -e "$path" ] && printf '%s\0' "$path"; done \
        | tar --null -T - -c | tar -x -C "$work/source"
else
    tar -c --exclude-vcs --exclude=./.venv --exclude=./.nox --exclude=./build \
        --exclude='*.egg-info' --exclude=__pycache__ . | tar -x -C "$work/source"
fi
installer=()
if [ -x .venv/bin/uv ]; then
    installer=(--installer uv)
fi
PATH="$root/.venv/bin:$PATH" .venv/bin/python -m build "${installer[@]}" \
    --outdir "$work/dist" "$work/source" >"$work/build.log" 2>&1 \
    || { cat "$work/build.log"; exit 1; }
sdist=$(echo "$work"/dist/*.tar.gz)
wheel=$(echo "$work"/dist/*.whl)
echo "  ok    built $(basename "$sdist") and $(basename "$wheel")"

echo "== twine check --strict"
.venv/bin/twine --no-color check --strict "$sdist" "$wheel" | sed 's/^/  /'

echo "== contents"
failed=0
.venv/bin/python scripts/check_dist.py "$work/dist" "$work/source" || failed=1

echo "== the wheel in a clean virtual environment ($("$clean_python" -V))"
"$clean_python" -m venv "$work/venv"
install_into "$work/venv" "$wheel" "aiosmtpd>=1.4"
django_version=$("$work/venv/bin/python" -c 'import django; print(django.get_version())')
echo "  ok    installed $(basename "$wheel") and aiosmtpd; Django $django_version"
cp scripts/dist_smoke.py "$work/run/"
cat >"$work/run/smoke_settings.py" <<'EOF'
SECRET_KEY = "check-dist-only"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django_sockmail"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "smoke.sqlite3"}}
EMAIL_BACKEND = "django_sockmail.backend.EmailBackend"
EOF
(
    # Outside the source tree: only the installed django_sockmail can be imported.
    cd "$work/run"
    export DJANGO_SETTINGS_MODULE=smoke_settings PYTHONPATH=.
    "$work/venv/bin/django-admin" migrate --verbosity 0
    applied=$("$work/venv/bin/django-admin" showmigrations django_sockmail | grep -c '\[X\]')
    echo "  ok    django-admin migrate on SQLite ($applied django_sockmail migrations applied)"
    "$work/venv/bin/python" dist_smoke.py
)

echo "== the sdist's tests (pytest tests/smtp, test extras)"
install_into "$work/venv" "$wheel[test]"
tar -xzf "$sdist" -C "$work"
unpacked=$work/$(basename "$sdist" .tar.gz)
if (cd "$unpacked" && "$work/venv/bin/python" -m pytest tests/smtp -p no:cacheprovider -q) \
    >"$work/pytest.log" 2>&1; then
    tail -n 1 "$work/pytest.log" | sed 's/^/  ok    /'
else
    cat "$work/pytest.log"
    exit 1
fi

sdist_size=$(stat -c %s "$sdist")
wheel_size=$(stat -c %s "$wheel")
echo "== sdist $sdist_size bytes, wheel $wheel_size bytes; $((SECONDS - started)) s"
if [ "$failed" != 0 ]; then
    echo "FAILED: the distributions' contents (see == contents above)"
    exit 1
fi
echo "All distribution checks passed"
