# Sourced by the bench scripts that need PostgreSQL (bench-backends.sh, bench-postgres.sh). `start_bench_postgres`
# installs Debian's postgresql when missing, initdb's a temporary directory and starts the server on a free loopback
# port, as the `postgres` user when run as root (PostgreSQL refuses root), with fsync off (the machine's disk is
# shared with other sessions; a SaveState then costs what it costs on a server whose disk keeps up) and
# max_connections 400 (above what 50 sidecars may open, 50 × maxConns). It creates the role and database `hangar`
# and sets pg_bin, pg_dir, pg_port, pg_pid (the postmaster's, for its CPU and for the clean-up) and the function
# `pg` (psql as the superuser). The caller stops the server (kill -INT "$pg_pid") and removes "$pg_dir".

start_bench_postgres() {
    if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
        echo "bench: installing postgresql with apt-get" >&2
        local sudo=""
        [ "$(id -u)" -ne 0 ] && sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql
    fi
    pg_bin="/usr/lib/postgresql/$(ls /usr/lib/postgresql | sort -n | tail -n 1)/bin"
    pg_dir="$(mktemp -d /tmp/hb-pg.XXXXXX)"
    local as_postgres=()
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres:postgres "$pg_dir"
        # setpriv execs in place, so $! below is the postmaster.
        as_postgres=(setpriv --reuid=postgres --regid=postgres --init-groups --)
    fi
    pg_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    "${as_postgres[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth-local=trust --auth-host=trust -E UTF8 \
        --no-sync >/dev/null
    "${as_postgres[@]}" "$pg_bin/postgres" -D "$pg_dir/data" -p "$pg_port" -k "$pg_dir" \
        -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=400 \
        -c shared_buffers=64MB >"$pg_dir/postgres.log" 2>&1 &
    pg_pid=$!
    for _ in $(seq 100); do
        [ "$(pg -c 'SELECT 1' 2>/dev/null)" = 1 ] && break
        sleep 0.1
    done
    pg -c "CREATE ROLE hangar LOGIN" -c "CREATE DATABASE hangar OWNER hangar"
    echo "postgresql: $("$pg_bin/postgres" --version) on 127.0.0.1:$pg_port (postmaster pid $pg_pid)" >&2
}

pg() { psql -X -q -At -v ON_ERROR_STOP=1 -h "$pg_dir" -p "$pg_port" -U postgres -d postgres "$@"; }
