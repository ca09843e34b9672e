#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 600), two at a time, and prints the figures.
# Needs cargo-fuzz (`cargo install cargo-fuzz`); `-s none` lets it run on a stable toolchain.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-600}
mkdir -p logs
cargo fuzz build -O -s none
run() { cargo fuzz run -O -s none "$1" -- -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 >"logs/$1.log" 2>&1 || echo "$1: FAILED (see fuzz/logs/$1.log)"; }
run config_parse & run api_response & wait
run rdb_verify & run sign_canonical & wait
for t in config_parse api_response rdb_verify sign_canonical; do
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -o 'cov: [0-9]*' "logs/$t.log" | tail -1 || true)
  crash=$(ls artifacts/"$t" 2>/dev/null | grep -c crash- || true)
  echo "$t: ${secs}s, $runs executions, $cov, $crash crashes"
done
