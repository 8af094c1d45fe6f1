#!/bin/sh
# Entrypoint of the Redis image of scripts/images, after the official image's: arguments that
# start with `-` or name a `.conf` file go to redis-server; redis-server drops root for user
# `redis` (owning /data first); protected mode is turned off unless a config file sets it.
set -eu

if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
    set -- redis-server "$@"
fi

if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
    find . \! -user redis -exec chown redis '{}' +
    exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

if [ "$1" = redis-server ]; then
    config=""
    protected=1
    if [ -f "${2:-}" ]; then
        config=$2
        if grep -q '^protected-mode' "$config"; then
            protected=""
        fi
    fi
    if [ -n "$protected" ]; then
        shift
        if [ -n "$config" ]; then
            shift
        fi
        set -- --protected-mode no "$@"
        if [ -n "$config" ]; then
            set -- "$config" "$@"
        fi
        set -- redis-server "$@"
    fi
fi

umask 0077
exec "$@"
