# Sourced by test.sh: make sure the PostgreSQL server the tests use is up (it is a
# service of the machine; start it the way the machine starts it when it is down).
ensure_postgresql() {
    if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
        return 0
    fi
    if command -v pg_ctlcluster >/dev/null 2>&1; then
        echo "Starting PostgreSQL"
        local version
        version=$(ls /etc/postgresql | sort -V | tail -n 1)
        pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
        for _ in $(seq 1 30); do
            pg_isready -q -h 127.0.0.1 -p 5432 && return 0
            sleep 1
        done
    fi
    echo "PostgreSQL is not reachable on 127.0.0.1:5432 (user postgres, trust)." >&2
    return 1
}
