#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server on loopback for the test suite and prints the line to
# export its URL:
#
#     eval "$(scripts/test-postgres.sh)"      # sets JITBOT_TEST_POSTGRES_URL
#     cargo test
#
# Idempotent: a server already answering on the port is reused. Installs Debian's `postgresql`
# package when no server binaries are found and we are root (CI). Environment knobs:
#   JITBOT_PG_DIR   data directory   (default /tmp/jitbot-test-pg)
#   JITBOT_PG_PORT  TCP port         (default 55432)
#   scripts/test-postgres.sh stop    stops the server started here
set -euo pipefail

dir="${JITBOT_PG_DIR:-/tmp/jitbot-test-pg}"
port="${JITBOT_PG_PORT:-55432}"
url="postgres://jitbot:jitbot@127.0.0.1:${port}/jitbot"

log() { echo "test-postgres: $*" >&2; }

find_bin() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [[ -x "$d/pg_ctl" ]] && { echo "$d"; return 0; }
    done
    command -v pg_ctl >/dev/null 2>&1 && { dirname "$(command -v pg_ctl)"; return 0; }
    return 1
}

bin="$(find_bin || true)"
if [[ -z "$bin" ]]; then
    if [[ "$(id -u)" != 0 ]]; then
        log "no PostgreSQL server binaries found; install Debian's 'postgresql' package"
        exit 1
    fi
    log "installing PostgreSQL from Debian's packages"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    bin="$(find_bin)"
fi

# initdb and postgres refuse to run as root: use the `postgres` account the package creates.
as_owner() {
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

if [[ "${1:-start}" == "stop" ]]; then
    if [[ -f "$dir/PG_VERSION" ]]; then
        as_owner "$bin/pg_ctl" -D "$dir" -m fast -w stop >&2 || true
    fi
    exit 0
fi

ready() { "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; }

if ! ready; then
    major="$("$bin/pg_config" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')"
    if [[ -f "$dir/PG_VERSION" && "$(cat "$dir/PG_VERSION")" != "$major" ]]; then
        log "$dir holds a PostgreSQL $(cat "$dir/PG_VERSION") cluster; recreating it for $major"
        rm -rf "$dir"
    fi
    if [[ ! -f "$dir/PG_VERSION" ]]; then
        log "creating a cluster in $dir"
        rm -rf "$dir"
        mkdir -p "$dir"
        [[ "$(id -u)" == 0 ]] && chown postgres:postgres "$dir"
        chmod 700 "$dir"
        as_owner "$bin/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    fi
    log "starting PostgreSQL ($("$bin/postgres" --version)) on 127.0.0.1:$port"
    # Tests create a database each; fsync off and a generous connection limit keep that fast.
    as_owner "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 start \
        -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=500" >&2
fi

psql_admin() { "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres "$@"; }
if [[ "$(psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'jitbot'")" != 1 ]]; then
    psql_admin -c "CREATE ROLE jitbot LOGIN CREATEDB PASSWORD 'jitbot'" >&2
fi
if [[ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = 'jitbot'")" != 1 ]]; then
    psql_admin -c "CREATE DATABASE jitbot OWNER jitbot" >&2
fi

echo "export JITBOT_TEST_POSTGRES_URL=$url"
