# Sourced by scripts that need Haraka: test.sh (tests/test_haraka.py runs a private
# Haraka instance). ensure_haraka makes sure Haraka is installed from the npm registry
# into .haraka/ (git-ignored, the project's own: nothing global), installing it when it
# is not; a second run only reads a version file.
#
# The version is pinned: 3.3.4 is the first release that answers 503 to every command a
# client pipelines behind the end of DATA before its reply ("fix(security): reject
# pipelining after DATA"; 3.3.3 and earlier process them). It needs Node.js (20 or later)
# and npm. The tests start instances of their own: tests/haraka.py makes a configuration
# directory in a temporary directory (`haraka -i DIR`), listens on a free loopback port
# and runs `haraka -c DIR`; run_private_haraka below starts one by hand.
HARAKA_VERSION=3.3.4
HARAKA_PREFIX=.haraka

haraka_installed_version() {
    local manifest="$HARAKA_PREFIX/node_modules/Haraka/package.json"
    [ -f "$manifest" ] && [ -x "$HARAKA_PREFIX/node_modules/.bin/haraka" ] || return 1
    node -p 'require(process.argv[1]).version' "$PWD/$manifest" 2>/dev/null
}

ensure_haraka() {
    if [ "$(haraka_installed_version || true)" = "$HARAKA_VERSION" ]; then
        return 0
    fi
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        echo "No Haraka in $HARAKA_PREFIX/ and no node and npm to install it with:" \
            "install Node.js 20 or later (with npm)" >&2
        return 1
    fi
    echo "Installing Haraka $HARAKA_VERSION (npm) into $HARAKA_PREFIX/"
    mkdir -p "$HARAKA_PREFIX"
    # Its own package.json, so npm installs here and never into a parent directory's.
    [ -f "$HARAKA_PREFIX/package.json" ] \
        || echo '{"name": "sockmail-haraka", "private": true}' > "$HARAKA_PREFIX/package.json"
    npm install --prefix "$HARAKA_PREFIX" --save-exact --no-audit --no-fund \
        --no-update-notifier --loglevel=error "Haraka@$HARAKA_VERSION" >/dev/null || return 1
    [ "$(haraka_installed_version || true)" = "$HARAKA_VERSION" ]
}

# A private Haraka in the foreground, for trying things by hand: prints its port, log
# and store, and stops (removing its directory) on Ctrl-C. Needs .venv.
run_private_haraka() {
    ensure_haraka
    .venv/bin/python -m tests.haraka "$@"
}
