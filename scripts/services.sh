# Sourced by test.sh: the database servers the matrix's PostgreSQL and MariaDB cells use
# (services of the machine, on 127.0.0.1 as tests/settings.py says). Each ensure_* returns
# 0 when what the cells need is there; otherwise it says why on its last line on stderr
# and returns 1 (test.sh then skips those cells outside CI, and fails under CI).

# The machine's PostgreSQL (127.0.0.1:5432, user postgres, trust): started the way the
# machine starts it when it is down and we are root.
ensure_postgresql() {
    if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
        return 0
    fi
    local why="PostgreSQL is not reachable on 127.0.0.1:5432 (user postgres, trust)"
    if [ "$(id -u)" != 0 ]; then
        echo "$why, and only root can start the machine's server" >&2
        return 1
    fi
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        echo "$why, and there is no pg_ctlcluster to start it with" >&2
        return 1
    fi
    local version
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
    echo "Starting the machine's PostgreSQL $version (pg_ctlcluster)"
    if pg_ctlcluster --skip-systemctl-redirect "$version" main start; then
        for _ in $(seq 1 30); do
            pg_isready -q -h 127.0.0.1 -p 5432 && return 0
            sleep 1
        done
    fi
    echo "$why, and starting it did not help" >&2
    return 1
}

mariadb_is_up() {
    mariadb-admin --protocol=tcp -h 127.0.0.1 -P 3306 -u root ping >/dev/null 2>&1
}

# The machine's MariaDB (127.0.0.1:3306, root without a password): started the way the
# machine starts it when it is down and we are root.
ensure_mariadb() {
    if mariadb_is_up; then
        return 0
    fi
    local why="MariaDB is not reachable on 127.0.0.1:3306 (user root, no password)"
    if [ "$(id -u)" != 0 ]; then
        echo "$why, and only root can start the machine's server" >&2
        return 1
    fi
    if [ ! -x /usr/sbin/mariadbd ] || ! command -v start-stop-daemon >/dev/null 2>&1; then
        echo "$why, and there is no /usr/sbin/mariadbd to start" >&2
        return 1
    fi
    echo "Starting the machine's MariaDB (/usr/sbin/mariadbd)"
    if start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd; then
        for _ in $(seq 1 30); do
            mariadb_is_up && return 0
            sleep 1
        done
    fi
    echo "$why, and starting it did not help" >&2
    return 1
}

# mysqlclient (the MySQL/MariaDB driver) is built from source against MariaDB's
# Connector/C: it needs Debian's libmariadb-dev, pkg-config and a C compiler.
ensure_mariadb_client_headers() {
    if pkg-config --exists libmariadb 2>/dev/null && command -v gcc >/dev/null 2>&1; then
        return 0
    fi
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "No MariaDB client headers (for the mysqlclient driver) and no root and" \
            "apt-get to install them: install Debian's libmariadb-dev, pkg-config, gcc" >&2
        return 1
    fi
    echo "Installing system-wide (apt-get): libmariadb-dev pkg-config gcc, to build mysqlclient"
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
    echo "Loading the time zone tables into the machine's MariaDB (mysql.time_zone_*)"
    mariadb-tzinfo-to-sql /usr/share/zoneinfo 2>/dev/null \
        | mariadb --protocol=tcp -h 127.0.0.1 -P 3306 -u root mysql
}
