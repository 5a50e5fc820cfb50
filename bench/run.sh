#!/usr/bin/env bash
# The benchmark suite of webhook_ext, in one command:
#
#   bash bench/run.sh           # full run (about 12 min, plus the first build): writes docs/BENCHMARKS.md
#   bash bench/run.sh --quick   # every scenario with small sizes (~3 min once built):
#                               # writes target/webhook-bench/BENCHMARKS.quick.md
#
#   bash bench/run.sh --pg 18   # on PostgreSQL 18 (16, 17, 18: scripts/setup.sh's builds under
#                               # /opt/webhook_ext/pg/NN); the default is Debian's 15
#
# Builds and installs webhook_ext in release mode into that PostgreSQL, builds webhook-bench
# (bench/), then runs `webhook-bench run`, which starts its own cluster of it and receivers on
# 127.0.0.1, runs scenarios 1-7 and a profiling pass, stops everything and writes the report.
# Other flags go to webhook-bench: --out FILE, --no-perf.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
bench_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --pg)
      case "${2:-}" in
        15) ;;
        16 | 17 | 18) PG_CONFIG="${WEBHOOK_EXT_PG_ROOT:-/opt/webhook_ext/pg}/$2/bin/pg_config" ;;
        *) echo "bench: --pg takes 15, 16, 17 or 18" >&2; exit 2 ;;
      esac
      shift 2
      ;;
    *) bench_args+=("$1"); shift ;;
  esac
done
[ -x "$PG_CONFIG" ] || { echo "bench: $PG_CONFIG is missing: run bash scripts/setup.sh"; exit 1; }
PG_BIN=$("$PG_CONFIG" --bindir)
# webhook-bench (bench/src/cluster.rs) takes its PostgreSQL from this pg_config.
export WEBHOOK_EXT_PG_CONFIG="$PG_CONFIG"
RUN_ROOT=/tmp/webhook_bench

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
as_postgres() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# Stop what a killed run (SIGKILL, lost terminal) left behind: its cluster and its nginx.
# A run whose process is alive is left alone.
stop_leftovers() {
  local dir pid
  for dir in "$RUN_ROOT"/run-*; do
    [ -d "$dir" ] || continue
    pid=${dir##*-}
    if kill -0 "$pid" 2>/dev/null; then continue; fi
    if [ -f "$dir/pg/data/postmaster.pid" ]; then
      echo "bench: stopping the cluster left by run $pid"
      as_postgres "$PG_BIN/pg_ctl" -D "$dir/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    if [ -f "$dir/nginx/nginx.pid" ]; then
      pid=$(cat "$dir/nginx/nginx.pid" 2>/dev/null || true)
      if [ -n "$pid" ] && grep -qs nginx "/proc/$pid/comm"; then
        echo "bench: stopping nginx left by a previous run"
        kill -QUIT "$pid" 2>/dev/null || true
      fi
    fi
  done
}

bench_pid=""
on_exit() {
  if [ -n "$bench_pid" ] && kill -0 "$bench_pid" 2>/dev/null; then
    kill -TERM "$bench_pid" 2>/dev/null || true   # the driver stops its cluster and receivers
    wait "$bench_pid" 2>/dev/null || true
  fi
  stop_leftovers
}
trap on_exit EXIT
trap 'exit 130' INT TERM

stop_leftovers

# Tools: pgbench (scenario 3), cargo-pgrx; nginx (Debian's, only to check that our receiver is
# at least as fast) is installed if missing, without starting its system service.
[ -x "$PG_BIN/pgbench" ] || { echo "bench: $PG_BIN/pgbench is missing (Debian: apt-get install postgresql-15)"; exit 1; }
cargo pgrx --version >/dev/null 2>&1 || { echo "bench: cargo-pgrx is missing: run bash scripts/setup.sh"; exit 1; }
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ] && [ "${BENCH_NO_NGINX:-}" = "" ]; then
  echo "bench: installing nginx-light (Debian) for the receiver comparison; its service is not started"
  policy_added=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
    as_root chmod +x /usr/sbin/policy-rc.d
    policy_added=1
  fi
  as_root apt-get install -y -qq nginx-light >/dev/null 2>&1 \
    || { as_root apt-get update -qq >/dev/null 2>&1 && as_root apt-get install -y -qq nginx-light >/dev/null 2>&1; } \
    || echo "bench: nginx could not be installed; the receiver comparison is skipped"
  [ -n "$policy_added" ] && as_root rm -f /usr/sbin/policy-rc.d
fi

mkdir -p target/webhook-bench
echo "bench: building and installing webhook_ext (release, lto; a few minutes the first time)"
if ! cargo pgrx install --release --pg-config "$PG_CONFIG" > target/webhook-bench/install.log 2>&1; then
  tail -40 target/webhook-bench/install.log
  exit 1
fi
echo "bench: building webhook-bench"
cargo build --release -q -p webhook_bench

target/release/webhook-bench run "${bench_args[@]}" &
bench_pid=$!
wait "$bench_pid"
