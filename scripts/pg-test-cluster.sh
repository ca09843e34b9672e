#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests' PostgreSQL pass (Debian's postgresql-15, which
# scripts/test.sh installs): initdb in a temporary directory, listening on 127.0.0.1 on a free
# port, trust authentication, durability off (fsync, synchronous_commit: it is thrown away;
# PGTEST_DURABLE=1 keeps it on).
# PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user.
#
#   eval "$(scripts/pg-test-cluster.sh start)"   # exports RDBVAULT_TEST_PG_URL and PGTEST_DIR
#   scripts/pg-test-cluster.sh restart "$PGTEST_DIR"   # drops every connection
#   scripts/pg-test-cluster.sh stop "$PGTEST_DIR"
set -euo pipefail
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$BIN/initdb" ] || { echo "pg-test-cluster.sh: no PostgreSQL (apt-get install postgresql-15)" >&2; exit 1; }

as_owner() { # as_owner DIR COMMAND: runs COMMAND as the cluster's owner, from DIR (the caller's
  # working directory may be one the postgres user cannot enter)
  if [ "$(id -u)" -eq 0 ]; then su postgres -s /bin/sh -c "cd $1 && $2"; else sh -c "cd $1 && $2"; fi
}

case "${1:-}" in
start)
  DIR=$(mktemp -d /tmp/rdbvault-pg.XXXXXX)
  chmod 700 "$DIR"
  [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$DIR"
  PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_owner "$DIR" "$BIN/initdb -D $DIR/data -A trust -U postgres -E UTF8 --locale=C --no-sync" >"$DIR/initdb.log" 2>&1 \
    || { cat "$DIR/initdb.log" >&2; exit 1; }
  OPTIONS="-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c max_connections=300"
  # Durability off unless PGTEST_DURABLE=1 (the benchmark's cluster keeps PostgreSQL's
  # defaults); PGTEST_OPTIONS adds server settings (e.g. shared_preload_libraries).
  [ "${PGTEST_DURABLE:-0}" = 1 ] || OPTIONS="$OPTIONS -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  OPTIONS="$OPTIONS ${PGTEST_OPTIONS:-}"
  echo "$OPTIONS" > "$DIR/options"
  as_owner "$DIR" "$BIN/pg_ctl -D $DIR/data -l $DIR/server.log -w -o '$OPTIONS' start" >/dev/null \
    || { cat "$DIR/server.log" >&2; exit 1; }
  echo "export PGTEST_DIR=$DIR RDBVAULT_TEST_PG_URL=postgres://postgres@127.0.0.1:$PORT/postgres"
  ;;
restart)
  # Down for SECONDS (default 0), every connection dropped, then up on the same port: an
  # operator's restart or a failover as the clients see it.
  DIR=${2:?usage: $0 restart DIR [SECONDS]}
  as_owner "$DIR" "$BIN/pg_ctl -D $DIR/data -m fast -w stop" >/dev/null
  sleep "${3:-0}"
  as_owner "$DIR" "$BIN/pg_ctl -D $DIR/data -l $DIR/server.log -w -o '$(cat "$DIR/options")' start" >/dev/null
  ;;
stop)
  DIR=${2:?usage: $0 stop DIR}
  as_owner "$DIR" "$BIN/pg_ctl -D $DIR/data -m fast -w stop" >/dev/null || true
  rm -rf "$DIR"
  ;;
*)
  echo "usage: $0 start | restart DIR | stop DIR" >&2
  exit 2
  ;;
esac
