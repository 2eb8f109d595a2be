# Sourced by test.sh: make sure Debian's Chromium is at /usr/bin/chromium for the
# browser tests (tests/test_browser.py). Playwright drives it from there; its own
# browser download ("playwright install") is never used. Without it (and without root
# and apt-get to install it) it says why and returns 1; the tests then skip themselves.
ensure_chromium() {
    if [ -x /usr/bin/chromium ]; then
        return 0
    fi
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "No /usr/bin/chromium, and no root and apt-get to install it:" \
            "install Debian's chromium package" >&2
        return 1
    fi
    echo "Installing system-wide (apt-get): chromium, for the browser tests"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
}
