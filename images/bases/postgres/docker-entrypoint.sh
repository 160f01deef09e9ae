#!/usr/bin/env bash
# Stand-in for the official postgres image's docker-entrypoint.sh, the part compose uses: as root,
# own PGDATA and drop to postgres; on an empty PGDATA, initdb with POSTGRES_USER/POSTGRES_PASSWORD
# (scram-sha-256 over TCP, trust on the local socket as the official image) and create POSTGRES_DB.
set -euo pipefail
if [ "${1:-}" = postgres ] && [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA"
    chown -R postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?the database is uninitialized and POSTGRES_PASSWORD is not set}"
    user=${POSTGRES_USER:-postgres}
    pwfile=$(mktemp)
    printf '%s' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 > /dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    db=${POSTGRES_DB:-$user}
    if [ "$db" != postgres ]; then
        echo "CREATE DATABASE \"$db\";" | postgres --single -D "$PGDATA" -j postgres > /dev/null
    fi
    echo "PostgreSQL init process complete; ready for start up."
fi
exec "$@"
