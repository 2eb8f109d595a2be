# Sourced by scripts that need Postfix: test.sh (tests/test_postfix.py runs a private
# Postfix instance) and the throughput benchmark (smtp-sink, and the same private
# instance). ensure_postfix makes sure Debian's postfix package is installed —
# /usr/sbin/postfix, /usr/sbin/smtp-sink and the postfix user and postdrop group its
# daemons need — installing it when it is not.
#
# The package's own mail system is never left running: the install may start it on
# port 25, and it is stopped again. Whoever needs Postfix starts an instance of its
# own: tests/postfix.py writes a main.cf and master.cf into a temporary directory (the
# queue on /dev/shm), listens on free loopback ports and runs
# `postfix -c DIR check|start|stop`; run_private_postfix below starts one by hand.
ensure_postfix() {
    if [ -x /usr/sbin/postfix ] && [ -x /usr/sbin/smtp-sink ] \
        && getent passwd postfix >/dev/null && getent group postdrop >/dev/null; then
        return 0
    fi
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "No Postfix (/usr/sbin/postfix, /usr/sbin/smtp-sink), and no root and" \
            "apt-get to install it: install Debian's postfix package" >&2
        return 1
    fi
    echo "Installing system-wide (apt-get): postfix, for the interop tests" \
        "(its own mail system on port 25 is stopped again)"
    echo "postfix postfix/main_mailer_type select Local only" | debconf-set-selections
    echo "postfix postfix/mailname string localhost" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
    stop_postfix_daemon
    [ -x /usr/sbin/postfix ] && [ -x /usr/sbin/smtp-sink ]
}

# The older name, for smtp-sink alone: the same package.
ensure_smtp_sink() {
    ensure_postfix
}

# The package's postinst starts the system Postfix (master on port 25) where it can:
# stop it. Without systemd "postfix stop" is the way; it fails harmlessly when the
# daemon is not running. Only the default instance (/etc/postfix) is touched here.
stop_postfix_daemon() {
    if command -v postfix >/dev/null 2>&1 && postfix status >/dev/null 2>&1; then
        echo "Stopping the system Postfix daemon the install started"
        postfix stop >/dev/null 2>&1 || true
    fi
}

# A private Postfix instance in the foreground, for trying things by hand: prints its
# port, Maildir and log, and stops (removing its directory) on Ctrl-C. Needs root and
# .venv. Arguments go to `python -m tests.postfix` (--discard: accept and drop).
run_private_postfix() {
    ensure_postfix
    .venv/bin/python -m tests.postfix "$@"
}
