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

# Sourced by test.sh: make sure the MariaDB server the matrix's MySQL sessions use is
# up (127.0.0.1:3306, root without a password; a service of the machine, started the
# way the machine starts it when it is down).
mariadb_is_up() {
    mariadb-admin --protocol=tcp -h 127.0.0.1 -P 3306 -u root ping >/dev/null 2>&1
}

ensure_mariadb() {
    if mariadb_is_up; then
        return 0
    fi
    if [ -x /usr/sbin/mariadbd ] && command -v start-stop-daemon >/dev/null 2>&1; then
        echo "Starting MariaDB"
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
        for _ in $(seq 1 30); do
            mariadb_is_up && return 0
            sleep 1
        done
    fi
    echo "MariaDB is not reachable on 127.0.0.1:3306 (user root, no password)." >&2
    return 1
}

# mysqlclient (the MySQL/MariaDB driver) is built from source against MariaDB's
# Connector/C: it needs Debian's libmariadb-dev, pkg-config and a C compiler.
ensure_mariadb_client_headers() {
    if pkg-config --exists libmariadb 2>/dev/null && command -v gcc >/dev/null 2>&1; then
        return 0
    fi
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "No MariaDB client headers and no way to install them here (needs root and" \
            "apt-get): install Debian's libmariadb-dev, pkg-config and gcc." >&2
        return 1
    fi
    echo "Installing libmariadb-dev, pkg-config and gcc (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq libmariadb-dev pkg-config gcc >/dev/null
}

# tests/settings.py names the database "sockmail" (the tests run in test_<name>, which
# pytest-django creates); a manage.py the tests start in a subprocess runs the system
# checks, which connect to it on MariaDB (to learn the server's features): create it.
ensure_mariadb_database() {
    mariadb --protocol=tcp -h 127.0.0.1 -P 3306 -u root -e \
        "CREATE DATABASE IF NOT EXISTS sockmail CHARACTER SET utf8mb4"
}

# Django's date lookups on MySQL/MariaDB with USE_TZ (the admin's date filters, __day
# and the like) convert with CONVERT_TZ(), which gives NULL until the server has its
# time zone tables: load them from the system's zoneinfo once.
ensure_mariadb_time_zones() {
    local zones
    zones=$(mariadb --protocol=tcp -h 127.0.0.1 -P 3306 -u root -N -e \
        "SELECT COUNT(*) FROM mysql.time_zone_name" 2>/dev/null || echo 0)
    if [ "${zones:-0}" -gt 0 ]; then
        return 0
    fi
    echo "Loading the time zone tables into MariaDB"
    mariadb-tzinfo-to-sql /usr/share/zoneinfo 2>/dev/null \
        | mariadb --protocol=tcp -h 127.0.0.1 -P 3306 -u root mysql
}
