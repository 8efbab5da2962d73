#!/usr/bin/env bash
# Make the local backing services (PostgreSQL, MariaDB, Redis, RabbitMQ)
# available for the test suite.
#
# Usage:
#   scripts/services.sh ensure [postgres] [mysql] [redis] [rabbitmq]
#       (no names = all four) check each service, start it if it is installed
#       but down, install it from Debian packages if missing (root + apt-get
#       only), and wait until it answers.  Exits 1 if any service could not be
#       made available.
#   scripts/services.sh status
#       print one "<service>: up|down" line per service (always exits 0).
#
# The script can also be sourced: without arguments it only defines the
# services_* functions (and leaves the caller's shell options alone); with
# arguments, e.g. `. scripts/services.sh ensure redis`, it runs that command
# and returns its status instead of exiting.
#
# Every function handles its own errors explicitly, so the expected failing
# checks never trip `set -e`.

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
fi

# Debian keeps pg_ctlcluster, rabbitmq-server, mariadbd, ... in sbin.
case ":${PATH}:" in
    *:/usr/sbin:*) ;;
    *) PATH="${PATH}:/usr/local/sbin:/usr/sbin:/sbin" ;;
esac

SERVICES_ALL=(postgres mysql redis rabbitmq)
_SERVICES_APT_UPDATED=0

_svc_say() { printf '==> %s\n' "$*"; }
_svc_err() { printf '==> ERROR: %s\n' "$*" >&2; }

_svc_label() {
    case "$1" in
        postgres) echo PostgreSQL ;;
        mysql) echo MariaDB ;;
        redis) echo Redis ;;
        rabbitmq) echo RabbitMQ ;;
        *) echo "$1" ;;
    esac
}

# Normalise user-supplied service names; prints the canonical name.
_svc_canonical() {
    case "$1" in
        postgres | postgresql | pg) echo postgres ;;
        mysql | mariadb) echo mysql ;;
        redis) echo redis ;;
        rabbitmq | rabbit | amqp) echo rabbitmq ;;
        *) return 1 ;;
    esac
}

# ---------------------------------------------------------------- checks ---

_svc_up_postgres() {
    command -v pg_isready >/dev/null 2>&1 || return 1
    pg_isready -q -h 127.0.0.1 -p 5432 -t 2 >/dev/null 2>&1
}

_svc_mysql_admin() {
    if command -v mysqladmin >/dev/null 2>&1; then
        echo mysqladmin
    elif command -v mariadb-admin >/dev/null 2>&1; then
        echo mariadb-admin
    else
        return 1
    fi
}

_svc_mysql_client() {
    if command -v mariadb >/dev/null 2>&1; then
        echo mariadb
    elif command -v mysql >/dev/null 2>&1; then
        echo mysql
    else
        return 1
    fi
}

_svc_up_mysql() {
    local admin
    admin=$(_svc_mysql_admin) || return 1
    "$admin" -h127.0.0.1 -P3306 -uroot --connect-timeout=2 ping >/dev/null 2>&1
}

_svc_up_redis() {
    command -v redis-cli >/dev/null 2>&1 || return 1
    local reply
    reply=$(timeout 5 redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null) || return 1
    [[ "$reply" == "PONG" ]]
}

_svc_tcp_open() {
    # $1 host, $2 port
    # shellcheck disable=SC2016  # expanded by the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" >/dev/null 2>&1
}

_svc_up_rabbitmq() {
    _svc_tcp_open 127.0.0.1 5672 || return 1
    # Debian's rabbitmqctl only works for root (or the rabbitmq user); anyone
    # else has to make do with the TCP check.
    if command -v rabbitmqctl >/dev/null 2>&1 &&
        { [[ "$(id -u)" -eq 0 ]] || [[ "$(id -un)" == rabbitmq ]]; }; then
        timeout 60 rabbitmqctl --timeout 50 await_startup >/dev/null 2>&1 || return 1
    fi
    return 0
}

_svc_up() { "_svc_up_$1"; }

# ------------------------------------------------------------- installed ---

# Highest PostgreSQL version that has a cluster config in /etc/postgresql.
_svc_pg_version() {
    local v
    [[ -d /etc/postgresql ]] || return 1
    # shellcheck disable=SC2012  # version directory names are plain numbers
    v=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
    [[ -n "$v" && -d "/etc/postgresql/$v/main" ]] || return 1
    echo "$v"
}

_svc_installed_postgres() {
    command -v pg_ctlcluster >/dev/null 2>&1 && _svc_pg_version >/dev/null
}
_svc_installed_mysql() { [[ -x /usr/sbin/mariadbd ]]; }
_svc_installed_redis() { command -v redis-server >/dev/null 2>&1; }
_svc_installed_rabbitmq() { command -v rabbitmq-server >/dev/null 2>&1; }
_svc_installed() { "_svc_installed_$1"; }

_svc_package() {
    case "$1" in
        postgres) echo postgresql ;;
        mysql) echo mariadb-server ;;
        redis) echo redis-server ;;
        rabbitmq) echo rabbitmq-server ;;
    esac
}

_svc_can_install() {
    [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1
}

# ----------------------------------------------------------------- start ---

_svc_start_postgres() {
    local ver
    ver=$(_svc_pg_version) || {
        _svc_err "no PostgreSQL cluster found under /etc/postgresql"
        return 1
    }
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
}

_svc_start_mysql() {
    if [[ ! -d /run/mysqld ]]; then
        mkdir -p /run/mysqld || true
        chown mysql:mysql /run/mysqld || true
    fi
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
}

_svc_start_redis() {
    mkdir -p /var/lib/redis /var/log/redis || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
}

_svc_start_rabbitmq() {
    rabbitmq-server -detached || true
}

_svc_wait() {
    # $1 service, $2 timeout in seconds
    local svc="$1" deadline=$((SECONDS + $2))
    while ((SECONDS < deadline)); do
        if _svc_up "$svc"; then
            return 0
        fi
        sleep 1
    done
    _svc_up "$svc"
}

_svc_timeout() {
    if [[ "$1" == rabbitmq ]]; then echo 120; else echo 60; fi
}

_svc_start_and_wait() {
    local svc="$1" label limit
    label=$(_svc_label "$svc")
    limit=$(_svc_timeout "$svc")
    _svc_say "starting ${label}"
    "_svc_start_${svc}"
    _svc_say "waiting up to ${limit}s for ${label}"
    if _svc_wait "$svc" "$limit"; then
        _svc_say "${label} is up"
        return 0
    fi
    _svc_err "${label} did not come up within ${limit}s"
    return 1
}

# ------------------------------------------------------ install + config ---

_svc_apt_install() {
    local pkg="$1"
    if [[ "$_SERVICES_APT_UPDATED" -eq 0 ]]; then
        _svc_say "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update || return 1
        _SERVICES_APT_UPDATED=1
    fi
    _svc_say "installing ${pkg} from Debian packages"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$pkg"
}

_svc_configure_postgres() {
    local ver hba conf marker="# added by scripts/services.sh"
    ver=$(_svc_pg_version) || {
        # Binaries installed but the package did not create a cluster.
        # shellcheck disable=SC2012
        ver=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1)
        [[ -n "$ver" ]] || return 1
        _svc_say "creating PostgreSQL ${ver} cluster 'main'"
        pg_createcluster "$ver" main || return 1
    }
    hba="/etc/postgresql/${ver}/main/pg_hba.conf"
    conf="/etc/postgresql/${ver}/main/conf.d"
    _svc_say "configuring PostgreSQL: trust auth on local/loopback, listen on localhost"
    if ! grep -qF "$marker" "$hba"; then
        local tmp
        tmp=$(mktemp) || return 1
        {
            echo "$marker: passwordless access for local tests"
            echo "local   all   all                  trust"
            echo "host    all   all   127.0.0.1/32   trust"
            echo "host    all   all   ::1/128        trust"
            cat "$hba"
        } >"$tmp" && cat "$tmp" >"$hba"
        rm -f "$tmp"
    fi
    mkdir -p "$conf"
    printf "listen_addresses = 'localhost'\nport = 5432\n" >"${conf}/90-services-sh.conf"
    chown -R postgres:postgres "$conf" 2>/dev/null || true
    # The package may already have started the cluster with the old settings.
    if _svc_up_postgres; then
        pg_ctlcluster --skip-systemctl-redirect "$ver" main restart || true
    fi
}

_svc_configure_mysql() {
    # Needs the server running; connects as OS root through the unix socket.
    local client
    client=$(_svc_mysql_client) || return 1
    _svc_say "configuring MariaDB: root with empty password over TCP 127.0.0.1:3306"
    "$client" -uroot <<'SQL'
ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket;
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS 'root'@'::1' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'::1' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL
}

_svc_install() {
    local svc="$1" label
    label=$(_svc_label "$svc")
    _svc_say "${label} is not installed; installing it"
    _svc_apt_install "$(_svc_package "$svc")" || return 1
    case "$svc" in
        postgres)
            _svc_configure_postgres || return 1
            _svc_up_postgres || _svc_start_and_wait postgres || return 1
            ;;
        mysql)
            _svc_up_mysql || _svc_start_and_wait mysql || return 1
            _svc_configure_mysql || return 1
            ;;
        redis | rabbitmq)
            # guest/guest works on loopback by default for RabbitMQ.
            _svc_up "$svc" || _svc_start_and_wait "$svc" || return 1
            ;;
    esac
}

# ---------------------------------------------------------------- public ---

services_ensure_one() {
    local svc="$1" label
    label=$(_svc_label "$svc")
    if _svc_up "$svc"; then
        _svc_say "${label} is up"
        return 0
    fi
    if _svc_installed "$svc"; then
        _svc_say "${label} is installed but not answering"
        _svc_start_and_wait "$svc" && return 0
        echo "start it with: docker compose up -d ${svc}" >&2
        return 1
    fi
    if _svc_can_install; then
        _svc_install "$svc" && _svc_up "$svc" && return 0
        _svc_err "could not install/start ${label}"
        echo "start it with: docker compose up -d ${svc}" >&2
        return 1
    fi
    _svc_err "${label} is not running and cannot be installed here (needs root and apt-get)"
    echo "start it with: docker compose up -d ${svc}" >&2
    return 1
}

services_ensure() {
    local names=() name svc failed=()
    if [[ $# -eq 0 ]]; then
        names=("${SERVICES_ALL[@]}")
    else
        for name in "$@"; do
            svc=$(_svc_canonical "$name") || {
                _svc_err "unknown service '${name}' (expected: ${SERVICES_ALL[*]})"
                return 2
            }
            names+=("$svc")
        done
    fi
    for svc in "${names[@]}"; do
        services_ensure_one "$svc" || failed+=("$svc")
    done
    if [[ ${#failed[@]} -gt 0 ]]; then
        _svc_err "services not available: ${failed[*]}"
        return 1
    fi
    return 0
}

services_status() {
    local svc
    for svc in "${SERVICES_ALL[@]}"; do
        if _svc_up "$svc"; then
            printf '%-9s up\n' "${svc}:"
        else
            printf '%-9s down\n' "${svc}:"
        fi
    done
    return 0
}

services_usage() {
    cat <<'EOF'
usage: scripts/services.sh ensure [postgres] [mysql] [redis] [rabbitmq]
       scripts/services.sh status
EOF
}

services_main() {
    local cmd="${1:-}"
    if [[ $# -gt 0 ]]; then shift; fi
    case "$cmd" in
        ensure) services_ensure "$@" ;;
        status) services_status ;;
        -h | --help | help)
            services_usage
            return 0
            ;;
        *)
            services_usage >&2
            return 2
            ;;
    esac
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    services_main "$@"
    exit $?
elif [[ $# -gt 0 ]]; then
    services_main "$@"
    return $?
fi
