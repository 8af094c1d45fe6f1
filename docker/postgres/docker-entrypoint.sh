#!/usr/bin/env bash
# Entrypoint of the PostgreSQL image of scripts/images. It honours the official image's
# environment: POSTGRES_PASSWORD, POSTGRES_USER (default `postgres`), POSTGRES_DB (default the
# user's name) and POSTGRES_INITDB_ARGS, each also as NAME_FILE (a file holding it; setting
# both is an error), POSTGRES_INITDB_WALDIR, POSTGRES_HOST_AUTH_METHOD (default scram-sha-256)
# and PGDATA. On the
# first start (an empty PGDATA) it runs initdb, creates the database, runs the *.sh and *.sql
# files of /docker-entrypoint-initdb.d, then starts the server as user `postgres`.
set -Eeuo pipefail

# file_env NAME [DEFAULT]: NAME from itself or from the file named by NAME_FILE.
file_env() {
    local var=$1 file_var="${1}_FILE" default=${2:-} value
    if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
        echo >&2 "error: both $var and $file_var are set (but are exclusive)"
        exit 1
    fi
    value=$default
    if [ -n "${!var:-}" ]; then
        value=${!var}
    elif [ -n "${!file_var:-}" ]; then
        value=$(<"${!file_var}")
    fi
    export "$var"="$value"
    unset "$file_var"
}

# The server's own arguments without the program name.
if [ "${1:0:1}" = - ]; then
    set -- postgres "$@"
fi

if [ "$1" = postgres ] && [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA"
    chown -R postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"
    if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
        mkdir -p "$POSTGRES_INITDB_WALDIR"
        chown -R postgres:postgres "$POSTGRES_INITDB_WALDIR"
        chmod 700 "$POSTGRES_INITDB_WALDIR"
    fi
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    file_env POSTGRES_PASSWORD
    file_env POSTGRES_USER postgres
    file_env POSTGRES_DB "$POSTGRES_USER"
    file_env POSTGRES_INITDB_ARGS
    auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
    if [ -z "$POSTGRES_PASSWORD" ] && [ "$auth" != trust ]; then
        echo >&2 "error: the database is uninitialized and POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) is not set;"
        echo >&2 "       set it, or POSTGRES_HOST_AUTH_METHOD=trust to allow every connection without one"
        exit 1
    fi
    waldir=()
    if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
        waldir=(--waldir "$POSTGRES_INITDB_WALDIR")
    fi
    # Later arguments win: POSTGRES_INITDB_ARGS may override the encoding and locale.
    # shellcheck disable=SC2086
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
        --encoding=UTF8 --locale=C.UTF-8 "${waldir[@]}" ${POSTGRES_INITDB_ARGS:-} -D "$PGDATA"
    printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"

    # A server on the Unix socket only while the database is set up: nobody connects early.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
    export PGUSER=$POSTGRES_USER PGPASSWORD=$POSTGRES_PASSWORD
    if [ "$POSTGRES_DB" != postgres ]; then
        psql -v ON_ERROR_STOP=1 --no-psqlrc --dbname postgres --set db="$POSTGRES_DB" \
            <<<'create database :"db";'
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        case $f in
            *.sh) echo "running $f"; . "$f" ;;
            *.sql) echo "running $f"; psql -v ON_ERROR_STOP=1 --no-psqlrc --dbname "$POSTGRES_DB" -f "$f" ;;
            *) ;;
        esac
    done
    unset PGPASSWORD
    pg_ctl -D "$PGDATA" -m fast -w stop
    echo "PostgreSQL init process complete; ready for start up."
fi

exec "$@"
