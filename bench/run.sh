#!/usr/bin/env bash
# The benchmark suite of webhook_ext, in one command:
#
#   bash bench/run.sh           # full run (about 10 min, plus the first build): writes docs/BENCHMARKS.md
#   bash bench/run.sh --quick   # every scenario with small sizes (~3 min once built):
#                               # writes target/webhook-bench/BENCHMARKS.quick.md
#
# Builds and installs webhook_ext in release mode, builds webhook-bench (bench/), then runs
# `webhook-bench run`, which starts its own PostgreSQL 15 cluster and receivers on
# 127.0.0.1, runs scenarios 1-6 and a profiling pass, stops everything and writes the report.
# Other flags go to webhook-bench: --out FILE, --no-perf.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
PG_BIN=/usr/lib/postgresql/15/bin
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
command -v pgbench >/dev/null || { echo "bench: pgbench is missing (apt-get install postgresql-client-15)"; exit 1; }
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
if ! cargo pgrx install --release --pg-config "$PG_BIN/pg_config" > target/webhook-bench/install.log 2>&1; then
  tail -40 target/webhook-bench/install.log
  exit 1
fi
echo "bench: building webhook-bench"
cargo build --release -q -p webhook_bench

target/release/webhook-bench run "$@" &
bench_pid=$!
wait "$bench_pid"
