#!/usr/bin/env bash
# Throwaway PostgreSQL 15 cluster for tests. Usage:
#   eval "$(pg-test-cluster.sh start)"   # exports RDBVAULT_TEST_PG_URL, PGTEST_DIR
#   pg-test-cluster.sh stop "$PGTEST_DIR"
set -euo pipefail
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
case "${1:-}" in
start)
  if [ ! -x "$BIN/initdb" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null
    BIN=/usr/lib/postgresql/15/bin
    service postgresql stop >/dev/null 2>&1 || true   # the package may start the system cluster
  fi
  DIR=$(mktemp -d /tmp/rdbvault-pg.XXXXXX)
  PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  as_pg() { if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$DIR"; su postgres -s /bin/sh -c "$1"; else sh -c "$1"; fi; }
  chmod 700 "$DIR"
  as_pg "$BIN/initdb -D $DIR/data -A trust -U postgres -E UTF8 --locale=C --no-sync" >"$DIR.initdb.log" 2>&1
  as_pg "$BIN/pg_ctl -D $DIR/data -l $DIR/log -w -o '-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200' start" >/dev/null
  echo "export PGTEST_DIR=$DIR RDBVAULT_TEST_PG_URL=postgres://postgres@127.0.0.1:$PORT/postgres"
  ;;
stop)
  DIR=${2:?dir}
  if [ "$(id -u)" -eq 0 ]; then su postgres -s /bin/sh -c "$BIN/pg_ctl -D $DIR/data -m fast -w stop" >/dev/null; else "$BIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null; fi
  rm -rf "$DIR" "$DIR.initdb.log"
  ;;
*) echo "usage: $0 start | stop DIR" >&2; exit 2;;
esac
