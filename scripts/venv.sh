# Sourced by demo.sh and test.sh: make .venv with python3 and install the project
# with the given extras ("demo", or "test,matrix" for the tests and their nox matrix),
# again only when pyproject.toml changed.
ensure_venv() {
    local extra=$1
    if [ ! -x .venv/bin/python ]; then
        echo "Creating .venv"
        python3 -m venv .venv
    fi
    local stamp=".venv/.sockmail-$extra-installed" wanted
    wanted=$(.venv/bin/python -c 'import hashlib; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest())')
    if [ "$(cat "$stamp" 2>/dev/null || true)" != "$wanted" ]; then
        echo "Installing django-sockmail[$extra] into .venv"
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$extra]"
        echo "$wanted" > "$stamp"
    fi
}
