# Sourced by test.sh: make sure Debian's Chromium is at /usr/bin/chromium for the
# browser tests (tests/test_browser.py). Playwright drives it from there; its own
# browser download ("playwright install") is never used.
ensure_chromium() {
    if [ -x /usr/bin/chromium ]; then
        return 0
    fi
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "No /usr/bin/chromium and no way to install it here (needs root and apt-get):" \
            "the browser tests will be skipped. Install Debian's chromium package." >&2
        return 0
    fi
    echo "Installing chromium (Debian package)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
}
