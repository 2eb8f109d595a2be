# Sourced by scripts that need Postfix's smtp-sink (benchmarks/throughput.py): make
# sure /usr/sbin/smtp-sink is there, installing Debian's postfix package when it is not.
# The package's own mail system is never left running: the install may start it on
# port 25, and it is stopped again; smtp-sink is started by whoever needs it, on a
# loopback port of its own.
ensure_smtp_sink() {
    if [ -x /usr/sbin/smtp-sink ]; then
        return 0
    fi
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "No /usr/sbin/smtp-sink and no way to install it here (needs root and" \
            "apt-get): install Debian's postfix package." >&2
        return 1
    fi
    echo "Installing postfix (Debian package) for smtp-sink"
    echo "postfix postfix/main_mailer_type select Local only" | debconf-set-selections
    echo "postfix postfix/mailname string localhost" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
    stop_postfix_daemon
    [ -x /usr/sbin/smtp-sink ]
}

# The package's postinst starts the system Postfix (master on port 25) where it can:
# stop it. Without systemd "postfix stop" is the way; it fails harmlessly when the
# daemon is not running.
stop_postfix_daemon() {
    if command -v postfix >/dev/null 2>&1 && postfix status >/dev/null 2>&1; then
        echo "Stopping the system Postfix daemon the install started"
        postfix stop >/dev/null 2>&1 || true
    fi
}
