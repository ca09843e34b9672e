#!/usr/bin/env bash
# Replicas on PostgreSQL against one daemon on SQLite (BENCHMARKS.md, "Replicas"); run it as
# `./scripts/bench.sh replicas`. Every case makes BENCH_INSTANCES instances (default 10,000)
# due in the same minute (a daily cron for the next minute, jitter BENCH_JITTER, default 60 s)
# and measures, from the due minute:
#   - when every backup was requested (CreateBackup calls at the simulator) and when every job
#     ended (the journal's finished_at), with the outcomes;
#   - API calls per job (the simulator's counters), DB statements per job and peak connections
#     (PostgreSQL: pg_stat_statements, pg_stat_activity), peak RSS and CPU of each replica.
# Cases: SQLite with 1,000 and with BENCH_INSTANCES instances (one daemon), PostgreSQL with one
# replica and with BENCH_REPLICAS (default 3), the same config for all.
#
# The provider and the destination are kept out of the way so the replicas are what is
# measured: the simulator makes each snapshot in 3 s and serves each 64 KiB backup at
# 64 KiB/s (about a second of waiting per download, not CPU), the destination is a directory in
# /dev/shm. A replica then does at most limits.max_concurrent_transfers (40) downloads at once,
# so one replica moves about 40 jobs a second; the target is 3 replicas >= 2.5x one replica's
# throughput, and every backup requested within the jitter window (+ 2 s for the dispatch loop).
#
# PostgreSQL 15 (Debian) on a cluster of the script's own with the server's default durability
# (fsync and synchronous_commit on), pg_stat_statements loaded.
# Report: stdout and target/bench/replicas.txt; exit 1 if a target is missed. About 15 minutes.
# Knobs: BENCH_INSTANCES, BENCH_REPLICAS, BENCH_JITTER (seconds), BENCH_TRANSFERS (per replica),
# BENCH_CASES=sqlite|postgres (one backend only).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
INSTANCES=${BENCH_INSTANCES:-10000}
REPLICAS=${BENCH_REPLICAS:-3}
JITTER=${BENCH_JITTER:-60}
TRANSFERS=${BENCH_TRANSFERS:-40}

need() { command -v "$1" >/dev/null 2>&1; }
if ! need curl || ! need python3 || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "bench-replicas: installing curl, python3, postgresql-15 (apt)" >&2
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    curl python3 postgresql-15 >/dev/null
fi
echo "bench-replicas: building (release)" >&2
cargo build --release --bin rdbvault >&2
RDBVAULT=$ROOT/target/release/rdbvault

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rdbvault-bench-replicas.XXXXXX")
SHM=$(mktemp -d /dev/shm/rdbvault-bench-replicas.XXXXXX 2>/dev/null || mktemp -d "$WORK/archive.XXXXXX")
PG_DIR=
cleanup() {
  pkill -f "$WORK/" 2>/dev/null || true
  [ -n "$PG_DIR" ] && scripts/pg-test-cluster.sh stop "$PG_DIR" >/dev/null 2>&1
  rm -rf "$WORK" "$SHM"
}
trap cleanup EXIT
eval "$(PGTEST_DURABLE=1 PGTEST_OPTIONS='-c shared_preload_libraries=pg_stat_statements' scripts/pg-test-cluster.sh start)"
PG_DIR=$PGTEST_DIR
PSQL=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)/psql
export CDS_ACCESS_KEY_ID=rdbvault-demo-ak CDS_ACCESS_KEY_SECRET=rdbvault-demo-secret RUST_LOG=warn

mkdir -p target/bench
python3 - "$RDBVAULT" "$WORK" "$SHM" "$RDBVAULT_TEST_PG_URL" "$PSQL" "$INSTANCES" "$REPLICAS" \
  "$JITTER" "$TRANSFERS" <<'EOF' | tee target/bench/replicas.txt
import json, os, platform, subprocess, sys, time, shutil, socket, sqlite3, urllib.request
rdbvault, work, shm, pg_url, psql = sys.argv[1:6]
n_big, replicas, jitter, transfers = map(int, sys.argv[6:10])
pg_base = pg_url.rsplit("/", 1)[0]

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def http(url, body=None):
    req = urllib.request.Request(url, data=body, method="POST" if body else "GET",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r) if "json" in r.headers.get("Content-Type", "") else r.read()

def sql(db, text):
    out = subprocess.run([psql, f"{pg_base}/{db}", "-XAtqc", text], check=True,
                         capture_output=True, text=True).stdout.strip()
    return out

def proc_status(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0

def cpu_seconds(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

def machine_ticks():
    # (busy, total) jiffies of the whole machine since boot
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = f[3] + f[4]
    return sum(f) - idle, sum(f)

def postgres_cpu():
    # CPU seconds of every live PostgreSQL process (server and backends)
    total = 0.0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if open(f"/proc/{pid}/comm").read().strip() == "postgres":
                    total += cpu_seconds(int(pid))
            except OSError:
                pass
    return total

def run_case(backend, n, k):
    name = f"{backend}-{k}x-{n}"
    print(f"bench-replicas: {name}", file=sys.stderr, flush=True)
    state = os.path.join(work, f"{name}-sim.json")
    json.dump({"instances": [{"name": f"bench-{i:05d}", "backup_size": 65536} for i in range(n)]},
              open(state, "w"))
    sim_port = free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    sim = subprocess.Popen([rdbvault, "sim", "--listen", f"127.0.0.1:{sim_port}", "--state", state,
                            "--backup-delay", "3s"], stdout=subprocess.DEVNULL,
                           stderr=open(os.path.join(work, f"{name}-sim.log"), "w"))
    for _ in range(600):
        try:
            http(sim_url + "/_sim/health"); break
        except Exception:
            time.sleep(0.1)
    http(sim_url + "/_sim/faults", json.dumps({"kind": "download_throttle", "bytes_per_second": 65536}).encode())
    archive = os.path.join(shm, name)
    os.makedirs(archive)
    if backend == "postgres":
        db = name.replace("-", "_")
        sql("postgres", f"CREATE DATABASE {db}")
        sql(db, "CREATE EXTENSION pg_stat_statements")
        state_yaml = f"  url: {pg_base}/{db}\n"
    else:
        db_path = os.path.join(work, f"{name}.db")
        state_yaml = f"  path: {db_path}\n"
    now = time.time()
    due = (int(now) // 60 + 1) * 60
    if due - now < 25:  # start-up (migrations, the first look at the fleet) must be over
        due += 60
    minute, hour = time.gmtime(due).tm_min, time.gmtime(due).tm_hour
    cfg = os.path.join(work, f"{name}.yaml")
    open(cfg, "w").write(f"""cds:
  endpoint: {sim_url}
  poll_interval: 1s
  poll_max_interval: 8s
state:
{state_yaml}http:
  listen: 127.0.0.1:0
limits:
  max_concurrent_jobs: {n}
  max_concurrent_transfers: {transfers}
destinations:
  dir: {{ type: file, path: {archive} }}
policies:
  - name: bench
    schedule: {{ cron: "{minute} {hour} * * *", timezone: UTC, jitter: {jitter}s, start_window: 10m, completion_window: 30m, catch_up: none }}
    instances: [ {{ name: "bench-*" }} ]
    destination: dir
    retention: {{ destination: {{ keep_last: 10 }} }}
""")
    subprocess.run([rdbvault, "-c", cfg, "check-config"], check=True, stdout=subprocess.DEVNULL)
    procs = [subprocess.Popen([rdbvault, "-c", cfg, "run"], stdout=subprocess.DEVNULL,
                              stderr=open(os.path.join(work, f"{name}-replica{i}.log"), "w"))
             for i in range(k)]
    time.sleep(max(0, due - time.time() - 3))
    if backend == "postgres":
        sql(db, "SELECT pg_stat_statements_reset()")
    before = http(sim_url + "/_sim/stats")["calls"]
    cpu_before = [cpu_seconds(p.pid) for p in procs]
    sim_before, pg_before, machine_before = cpu_seconds(sim.pid), postgres_cpu(), machine_ticks()
    requested_after, peak_conns, last_db_look = None, 0, 0
    while True:
        for p in procs:
            if p.poll() is not None:
                sys.exit(f"{name}: a replica exited ({p.returncode}); see {work}")
        t = time.time()
        calls = http(sim_url + "/_sim/stats")["calls"]
        created = calls.get("CreateBackup", 0) - before.get("CreateBackup", 0)
        if requested_after is None and created >= n:
            requested_after = t - due
        if backend == "postgres":
            peak_conns = max(peak_conns, int(sql("postgres",
                f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}'")))
        if t - last_db_look >= 2:
            last_db_look = t
            q = ("SELECT count(*), count(*) FILTER (WHERE state IN ('stored','failed','missed')) "
                 f"FROM jobs WHERE due_at >= {due * 1000}")
            if backend == "postgres":
                total, ended = map(int, sql(db, q).split("|"))
            else:
                con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
                total, ended = con.execute(q.replace("count(*) FILTER (WHERE state IN ('stored','failed','missed'))",
                    "sum(state IN ('stored','failed','missed'))")).fetchone()
                con.close()
                total, ended = int(total or 0), int(ended or 0)
            if total >= n and ended == total:
                break
        if t - due > 1800:
            sys.exit(f"{name}: {ended} of {n} jobs ended after 30 minutes")
        time.sleep(0.5)
    q_end = f"SELECT max(finished_at), state, count(*) FROM jobs WHERE due_at >= {due * 1000} GROUP BY state"
    if backend == "postgres":
        rows = [r.split("|") for r in sql(db, q_end).splitlines()]
        mine = "dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        statements = int(sql(db, f"SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE {mine}"))
        top = sql(db, "SELECT calls, left(regexp_replace(query, '\\s+', ' ', 'g'), 100) "
                      f"FROM pg_stat_statements WHERE {mine} ORDER BY calls DESC LIMIT 12")
        top = [line.split("|", 1) for line in top.splitlines()]
        costly = sql(db, "SELECT round(total_exec_time)::bigint, calls, round(mean_exec_time::numeric, 3), "
                         "left(regexp_replace(query, '\\s+', ' ', 'g'), 90) "
                         f"FROM pg_stat_statements WHERE {mine} ORDER BY total_exec_time DESC LIMIT 8")
        costly = [line.split("|", 3) for line in costly.splitlines()]
    else:
        con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        rows = con.execute(q_end).fetchall()
        con.close()
        statements, top, costly = None, [], []
    finished_after = max(int(r[0]) for r in rows) / 1000 - due
    states = {r[1]: int(r[2]) for r in rows}
    calls = http(sim_url + "/_sim/stats")
    api = {a: c - before.get(a, 0) for a, c in calls["calls"].items() if c - before.get(a, 0)}
    rss = [proc_status(p.pid, "VmHWM") / 1024 for p in procs]
    cpu = [cpu_seconds(p.pid) - c for p, c in zip(procs, cpu_before)]
    sim_cpu = cpu_seconds(sim.pid) - sim_before
    pg_cpu = postgres_cpu() - pg_before if backend == "postgres" else None
    busy, total = (a - b for a, b in zip(machine_ticks(), machine_before))
    machine_busy = busy / total
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(timeout=120)
    sim.terminate(); sim.wait()
    shutil.rmtree(archive, ignore_errors=True)
    return dict(name=name, backend=backend, n=n, k=k, requested_after=requested_after,
                finished_after=finished_after, states=states, api=api, statements=statements,
                peak_conns=peak_conns if backend == "postgres" else None, rss=rss, cpu=cpu, top=top, costly=costly,
                sim_cpu=sim_cpu, pg_cpu=pg_cpu, machine_busy=machine_busy,
                gap=calls.get("describe_backups_min_gap_ms"))

cases = [("sqlite", 1000, 1), ("sqlite", n_big, 1), ("postgres", n_big, 1), ("postgres", n_big, replicas)]
only = os.environ.get("BENCH_CASES")  # e.g. "postgres": a quicker look at one backend
results = [run_case(*c) for c in cases if not only or c[0] == only]

def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
cpu_model = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
print(f"rdbvault replicas benchmark, {sh('date -u +%Y-%m-%dT%H:%MZ')}, commit {sh('git describe --always --dirty')}")
print(f"machine: {os.cpu_count()} cores ({cpu_model}), Linux {platform.release()}; {sh(psql + ' --version')}")
print(f"every case: instances due in one minute, jitter {jitter} s, snapshot 3 s, 64 KiB at 64 KiB/s per download,")
print(f"max_concurrent_transfers {transfers} per replica, file destination in /dev/shm\n")
print(f"{'case':<22} {'requested':>10} {'all ended':>10} {'jobs/s':>7} {'API/job':>8} {'DB stmts/job':>13} {'peak conns':>11} {'RSS MiB/replica':>16} {'CPU s/replica':>14}")
for r in results:
    label = f"{r['backend']} {r['k']} replica{'s' if r['k'] > 1 else ''}, {r['n']}"
    api_per_job = sum(r["api"].values()) / r["n"]
    stm = f"{r['statements'] / r['n']:.1f}" if r["statements"] is not None else "n/a"
    conns = str(r["peak_conns"]) if r["peak_conns"] is not None else "n/a"
    req = f"{r['requested_after']:.1f} s" if r["requested_after"] is not None else "-"
    print(f"{label:<22} {req:>10} {r['finished_after']:>8.1f} s {r['n'] / r['finished_after']:>7.1f} {api_per_job:>8.2f} {stm:>13} {conns:>11} "
          f"{'/'.join(f'{x:.0f}' for x in r['rss']):>16} {'/'.join(f'{x:.0f}' for x in r['cpu']):>14}")
print()
for r in results:
    pg_cpu = f"PostgreSQL {r['pg_cpu']:.0f} s, " if r["pg_cpu"] is not None else ""
    print(f"{r['name']}: CPU seconds from the due minute to the last job's end: replicas {sum(r['cpu']):.0f}, "
          f"{pg_cpu}simulator {r['sim_cpu']:.0f}; the machine's {os.cpu_count()} cores {100 * r['machine_busy']:.0f}% busy")
for r in results:
    print(f"{r['name']}: outcomes {r['states']}; API calls " + ", ".join(f"{a} {c / r['n']:.2f}" for a, c in sorted(r["api"].items()))
          + f"; shortest gap between two DescribeBackups of one instance {r['gap']} ms")
ok = True
def check(cond, text):
    global ok
    ok &= cond
    print(("meets " if cond else "MISSES ") + text)
print()
pg = [r for r in results if r["backend"] == "postgres"]
for r in results:
    check(r["states"].get("stored", 0) == r["n"], f"{r['name']}: every job stored ({r['states'].get('stored', 0)} of {r['n']})")
    req = r["requested_after"]
    check(req is not None and req <= jitter + 2,
          f"{r['name']}: every backup requested within the jitter window + 2 s ({'-' if req is None else f'{req:.1f}'} s <= {jitter + 2} s)")
    check(r["gap"] is None or r["gap"] >= 1000, f"{r['name']}: one DescribeBackups per instance per poll interval (gap {r['gap']} ms >= 1000)")
if len(pg) == 2:
    one, many = pg
    speedup = one["finished_after"] / many["finished_after"]
    check(speedup >= 2.5, f"{many['k']} replicas >= 2.5x one replica's throughput ({speedup:.2f}x)")
for r in pg:
    print(f"\n{r['name']}: the statements made most often (calls per job, statement):")
    for calls, query in r["top"]:
        print(f"   {int(calls) / r['n']:6.2f}  {query}")
    print(f"\n{r['name']}: the statements PostgreSQL spent most time in (total ms, calls, mean ms, statement):")
    for total, calls, mean, query in r["costly"]:
        print(f"   {int(total):8d} {int(calls):8d} {float(mean):8.3f}  {query}")
print("\nall targets met" if ok else "\nSOME TARGETS MISSED (see above)")
sys.exit(0 if ok else 1)
EOF
