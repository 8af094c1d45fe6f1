# shellcheck shell=bash
#
# scripts/services.sh -- make a PostgreSQL and a Redis available for hypercode.
#
# Source it (do not execute it):   source scripts/services.sh
#
# * DATABASE_URL unset (and no DATABASE_URL_FILE): start -- or reuse, if one
#   already answers on the port -- a private PostgreSQL cluster in
#   "$HYPERCODE_STATE_DIR/pg" listening on 127.0.0.1:${HYPERCODE_PG_PORT:-55432},
#   create the database `hypercode` and export
#   DATABASE_URL=postgres://postgres@127.0.0.1:$PORT/hypercode
# * HYPERCODE_REDIS_URL unset (and no HYPERCODE_REDIS_URL_FILE): start -- or
#   reuse -- a redis-server on 127.0.0.1:${HYPERCODE_REDIS_PORT:-56379}
#   (installing the Debian package if it is missing) and export
#   HYPERCODE_REDIS_URL=redis://127.0.0.1:$PORT/
# * exports HYPERCODE_TEST_DATABASE_URL (same server, database `postgres`) and
#   HYPERCODE_TEST_REDIS_URL (same as HYPERCODE_REDIS_URL) if they are unset.
# * exports HYPERCODE_STATE_DIR (absolute; default "$PWD/.hypercode").
#
# Idempotent: sourcing it again reuses the running servers. Safe under
# `set -euo pipefail`; it does not change the caller's shell options. Messages
# go to stderr. Returns non-zero (which aborts a `set -e` caller) on failure.
#
# Stop the private servers with:
#   runuser -u postgres -- pg_ctl -D "$HYPERCODE_STATE_DIR/pg/data" stop
#   redis-cli -u "$HYPERCODE_REDIS_URL" shutdown

if ! (return 0 2>/dev/null); then
    echo "scripts/services.sh must be sourced: source scripts/services.sh" >&2
    exit 2
fi

_hc_log() { printf 'services: %s\n' "$*" >&2; }

# Run a command as the PostgreSQL server owner: the `postgres` user when we are
# root (the server refuses to run as root), ourselves otherwise. Runs from `/`
# so that an unreadable current directory does not produce warnings.
_hc_as_pg() {
    if [ "$(id -u)" = 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

# Directory holding initdb / pg_ctl.
_hc_pg_bindir() {
    local p d v best="" best_v=0
    if p=$(command -v pg_ctl 2>/dev/null) && [ -n "$p" ]; then
        dirname "$p"
        return 0
    fi
    # Highest installed major version.
    for d in /usr/lib/postgresql/*/bin; do
        v=${d#/usr/lib/postgresql/}
        v=${v%%/*}
        if [ -x "$d/pg_ctl" ] && [[ $v =~ ^[0-9]+$ ]] && ((v > best_v)); then
            best=$d
            best_v=$v
        fi
    done
    [ -n "$best" ] && printf '%s\n' "$best"
}

# Same server as $1, database `postgres` (keeps credentials and query string).
_hc_admin_url() {
    local url=$1 base query rest prefix
    base=${url%%\?*}
    query=${url#"$base"}
    rest=${base#*://}
    if [ "$rest" != "${rest#*/}" ]; then
        prefix=${base%/*}
    else
        prefix=$base
    fi
    printf '%s/postgres%s\n' "$prefix" "$query"
}

# URL with any password replaced by ***, for log messages.
_hc_redact() { printf '%s\n' "$1" | sed -E 's#(://[^:/@]*:)[^/]*@#\1***@#'; }

_hc_pg_ready() { pg_isready -q -h 127.0.0.1 -p "$1" -t 2 >/dev/null 2>&1; }

# Runs "$@" up to $1 times, $2 seconds apart, until it succeeds; fails if it never does.
_hc_poll() {
    local tries=$1 pause=$2 i
    shift 2
    for ((i = 0; i < tries; i++)); do
        if "$@"; then
            return 0
        fi
        sleep "$pause"
    done
    return 1
}

# Pick (and prepare) the directory for the private cluster; prints it.
_hc_pg_dir() {
    local state=$1 port=$2 dir fallback
    dir=$state/pg
    if [ "$(id -u)" != 0 ]; then
        mkdir -p "$dir" || return 1
        printf '%s\n' "$dir"
        return 0
    fi
    if ! id postgres >/dev/null 2>&1; then
        _hc_log "user 'postgres' does not exist; cannot run PostgreSQL as root"
        return 1
    fi
    if mkdir -p "$dir" 2>/dev/null && chown postgres:postgres "$dir" 2>/dev/null \
        && chmod 700 "$dir" && _hc_as_pg test -w "$dir" -a -x "$dir"; then
        printf '%s\n' "$dir"
        return 0
    fi
    # A parent of $state is not traversable by `postgres` (e.g. under /root).
    fallback=/tmp/hypercode-$(id -u)
    _hc_log "$dir is not usable by user postgres; using $fallback/pg-$port instead"
    if [ -L "$fallback" ]; then
        _hc_log "$fallback is a symlink; refusing to use it"
        return 1
    fi
    mkdir -p "$fallback" && chmod 755 "$fallback" || return 1
    if [ "$(stat -c %u "$fallback")" != "$(id -u)" ]; then
        _hc_log "$fallback is not owned by us; refusing to use it"
        return 1
    fi
    dir=$fallback/pg-$port
    mkdir -p "$dir" && chown postgres:postgres "$dir" && chmod 700 "$dir" || return 1
    printf '%s\n' "$dir"
}

# Start (or reuse) the private cluster on 127.0.0.1:$2. $3 = lock fd to close
# in the server process (so the daemon does not hold our lock forever).
_hc_pg_start() {
    local state=$1 port=$2 lockfd=$3 bindir dir data log sockopt
    if _hc_pg_ready "$port"; then
        _hc_log "reusing PostgreSQL already running on 127.0.0.1:$port"
        return 0
    fi
    if ! command -v pg_isready >/dev/null 2>&1 || ! command -v psql >/dev/null 2>&1; then
        _hc_log "pg_isready/psql not found; install the PostgreSQL client (postgresql-client)"
        return 1
    fi
    bindir=$(_hc_pg_bindir) || {
        _hc_log "PostgreSQL server binaries (pg_ctl, initdb) not found on PATH or in /usr/lib/postgresql/*/bin"
        return 1
    }
    dir=$(_hc_pg_dir "$state" "$port") || return 1
    data=$dir/data
    log=$dir/postgres.log
    if [ ! -s "$data/PG_VERSION" ]; then
        _hc_log "initialising PostgreSQL cluster in $data"
        if ! _hc_as_pg "$bindir/initdb" -D "$data" -A trust -U postgres -E UTF8 --locale=C \
            >"$dir/initdb.log" 2>&1; then
            _hc_log "initdb failed; see $dir/initdb.log:"
            tail -n 20 "$dir/initdb.log" >&2 || true
            return 1
        fi
    fi
    if _hc_as_pg "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        local running_port
        running_port=$(sed -n 4p "$data/postmaster.pid" 2>/dev/null || true)
        if [ -n "$running_port" ] && [ "$running_port" != "$port" ]; then
            _hc_log "the cluster in $data is already running on port $running_port, not $port;"
            _hc_log "stop it (runuser -u postgres -- pg_ctl -D '$data' stop) or set HYPERCODE_PG_PORT=$running_port"
            return 1
        fi
        _hc_log "PostgreSQL cluster in $data is already running; waiting for it"
    else
        # Unix socket in the cluster directory when the path is usable for one
        # (sun_path is ~107 bytes, and pg_ctl passes -o through a shell);
        # TCP only otherwise.
        if [[ $dir =~ ^[A-Za-z0-9_./-]+$ ]] && [ "${#dir}" -le 90 ]; then
            sockopt="-k $dir"
        else
            sockopt="-k ''"
        fi
        _hc_log "starting PostgreSQL on 127.0.0.1:$port (data: $data, log: $log)"
        if ! _hc_as_pg "$bindir/pg_ctl" -D "$data" -l "$log" -w -t 60 \
            -o "-p $port $sockopt -c listen_addresses=127.0.0.1 -c max_connections=400" \
            start >/dev/null {lockfd}>&-; then
            _hc_log "PostgreSQL failed to start; last lines of $log:"
            tail -n 20 "$log" >&2 || true
            return 1
        fi
    fi
    if _hc_poll 60 1 _hc_pg_ready "$port"; then
        return 0
    fi
    _hc_log "PostgreSQL on 127.0.0.1:$port did not become ready in 60s; see $log"
    return 1
}

_hc_pg_create_db() {
    local port=$1 db=$2 exists
    exists=$(psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
        "select 1 from pg_database where datname = '$db'" 2>&1) || {
        _hc_log "cannot connect to PostgreSQL on 127.0.0.1:$port as user postgres: $exists"
        return 1
    }
    if [ "$exists" != 1 ]; then
        _hc_log "creating database $db"
        # Tolerate a concurrent creator.
        psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres \
            -c "create database \"$db\"" >/dev/null 2>&1 ||
            [ "$(psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
                "select 1 from pg_database where datname = '$db'" 2>/dev/null)" = 1 ] || {
            _hc_log "could not create database $db"
            return 1
        }
    fi
}

_hc_redis_ping() {
    [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]
}

_hc_redis_start() {
    local state=$1 port=$2 lockfd=$3 dir
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        if [ "$(id -u)" != 0 ]; then
            _hc_log "redis-server is not installed and we are not root; install it (apt-get install redis-server) or set HYPERCODE_REDIS_URL"
            return 1
        fi
        _hc_log "installing redis-server (apt-get)"
        # RUNLEVEL=1 asks invoke-rc.d not to start the packaged system redis
        # (port 6379); we start our own below either way.
        if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq redis-server; } \
            >"${TMPDIR:-/tmp}/hypercode-apt-redis.log" 2>&1; then
            _hc_log "apt-get install redis-server failed; see ${TMPDIR:-/tmp}/hypercode-apt-redis.log"
            return 1
        fi
    fi
    if _hc_redis_ping "$port"; then
        _hc_log "reusing Redis already running on 127.0.0.1:$port"
        return 0
    fi
    dir=$state/redis
    mkdir -p "$dir" || return 1
    _hc_log "starting Redis on 127.0.0.1:$port (log: $dir/redis.log)"
    if ! redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize yes --dir "$dir" --logfile "$dir/redis.log" \
        --pidfile "$dir/redis.pid" >/dev/null {lockfd}>&-; then
        _hc_log "redis-server failed to start; see $dir/redis.log"
        return 1
    fi
    if _hc_poll 100 0.2 _hc_redis_ping "$port"; then
        return 0
    fi
    _hc_log "Redis on 127.0.0.1:$port did not answer PING in 20s; last lines of $dir/redis.log:"
    tail -n 20 "$dir/redis.log" >&2 || true
    return 1
}

_hc_services() {
    local state pg_port redis_port lockfd="" rc=0 db_url=""
    state=${HYPERCODE_STATE_DIR:-$PWD/.hypercode}
    mkdir -p "$state" || {
        _hc_log "cannot create state directory $state"
        return 1
    }
    state=$(cd "$state" && pwd -P) || return 1
    pg_port=${HYPERCODE_PG_PORT:-55432}
    redis_port=${HYPERCODE_REDIS_PORT:-56379}

    # Serialise concurrent `source`s of this script on the same state dir.
    if command -v flock >/dev/null 2>&1; then
        exec {lockfd}>"$state/.services.lock" || return 1
        if ! flock -w 180 "$lockfd"; then
            _hc_log "timed out waiting for $state/.services.lock"
            exec {lockfd}>&-
            return 1
        fi
    fi

    if [ -n "${DATABASE_URL:-}" ]; then
        _hc_log "using DATABASE_URL from the environment"
        db_url=$DATABASE_URL
    elif [ -n "${DATABASE_URL_FILE:-}" ]; then
        _hc_log "using DATABASE_URL_FILE from the environment ($DATABASE_URL_FILE)"
        db_url=$(cat "$DATABASE_URL_FILE") || rc=1
    else
        if _hc_pg_start "$state" "$pg_port" "${lockfd:-9}" && _hc_pg_create_db "$pg_port" hypercode; then
            export DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/hypercode"
            db_url=$DATABASE_URL
        else
            rc=1
        fi
    fi

    if [ "$rc" = 0 ]; then
        if [ -n "${HYPERCODE_REDIS_URL:-}" ]; then
            _hc_log "using HYPERCODE_REDIS_URL from the environment"
        elif [ -n "${HYPERCODE_REDIS_URL_FILE:-}" ]; then
            _hc_log "using HYPERCODE_REDIS_URL_FILE from the environment ($HYPERCODE_REDIS_URL_FILE)"
        elif _hc_redis_start "$state" "$redis_port" "${lockfd:-9}"; then
            export HYPERCODE_REDIS_URL="redis://127.0.0.1:$redis_port/"
        else
            rc=1
        fi
    fi

    if [ -n "$lockfd" ]; then
        exec {lockfd}>&-
    fi
    [ "$rc" = 0 ] || return 1

    export HYPERCODE_STATE_DIR=$state
    if [ -z "${HYPERCODE_TEST_DATABASE_URL:-}" ] && [ -n "$db_url" ]; then
        HYPERCODE_TEST_DATABASE_URL=$(_hc_admin_url "$db_url")
        export HYPERCODE_TEST_DATABASE_URL
    fi
    if [ -z "${HYPERCODE_TEST_REDIS_URL:-}" ]; then
        if [ -n "${HYPERCODE_REDIS_URL:-}" ]; then
            export HYPERCODE_TEST_REDIS_URL=$HYPERCODE_REDIS_URL
        elif [ -n "${HYPERCODE_REDIS_URL_FILE:-}" ]; then
            HYPERCODE_TEST_REDIS_URL=$(cat "$HYPERCODE_REDIS_URL_FILE") || return 1
            export HYPERCODE_TEST_REDIS_URL
        fi
    fi
    _hc_log "ready: DATABASE_URL=$(_hc_redact "${DATABASE_URL:-<from DATABASE_URL_FILE>}")" \
        "HYPERCODE_REDIS_URL=$(_hc_redact "${HYPERCODE_REDIS_URL:-<from HYPERCODE_REDIS_URL_FILE>}")"
}

_hc_services || return 1
