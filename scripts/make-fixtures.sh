#!/usr/bin/env bash
# Regenerates the real RDB fixtures in tests/fixtures/ with a real redis-server.
# The fixtures are committed; run this only to refresh them (needs redis-server and redis-cli).
set -euo pipefail
cd "$(dirname "$0")/.."
out=tests/fixtures
work=$(mktemp -d)
trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
port=$(( 20000 + RANDOM % 20000 ))

make_dump() { # name, extra redis-server args...
  local name=$1; shift
  redis-server --port "$port" --dir "$work" --dbfilename "$name" --save '' --appendonly no --daemonize yes "$@" >/dev/null
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -p "$port" flushall >/dev/null
  redis-cli -p "$port" set greeting "hello from a real redis-server" >/dev/null
  redis-cli -p "$port" set counter 42 >/dev/null
  redis-cli -p "$port" set "键:中文" "值 with spaces * ~ /" >/dev/null
  redis-cli -p "$port" set session:expiring "soon gone" EX 86400 >/dev/null
  redis-cli -p "$port" hset user:1 name alice email alice@example.com visits 17 >/dev/null
  redis-cli -p "$port" rpush queue job-1 job-2 job-3 >/dev/null
  redis-cli -p "$port" sadd tags redis backup rdb >/dev/null
  redis-cli -p "$port" zadd leaderboard 100 alice 90 bob 80 carol >/dev/null
  redis-cli -p "$port" xadd events '*' type login user alice >/dev/null
  for i in $(seq 1 200); do echo "SET bulk:$i $(head -c 300 /dev/urandom | base64 -w0)"; done | redis-cli -p "$port" >/dev/null
  redis-cli -p "$port" select 1 >/dev/null
  redis-cli -p "$port" -n 1 set other-db "lives in db 1" >/dev/null
  redis-cli -p "$port" save >/dev/null
  redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  sleep 0.3
  cp "$work/$name" "$out/$name"
  echo "wrote $out/$name ($(stat -c %s "$out/$name") bytes)"
}

make_dump redis-7.0-small.rdb
make_dump redis-7.0-nochecksum.rdb --rdbchecksum no
redis-server --version > "$out/redis-fixtures.version"
