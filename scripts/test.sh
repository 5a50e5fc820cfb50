#!/usr/bin/env bash
# Runs every test of webhook_ext, on a fresh machine too (it runs scripts/setup.sh first,
# which returns at once when everything is installed):
#   1. pure Rust unit tests (delivery core, test receiver)     cargo test
#   2. in-database tests (#[pg_test])                          cargo pgrx test
#   3. end-to-end tests: real cluster + worker + receivers     tests/
# `scripts/test.sh <filter>` runs only the tests whose name contains <filter>, in every stage.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
FILTER="${1:-}"
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
failed_stages=0

bash scripts/setup.sh

stage() {
  echo "== $1"
  shift
  "$@" 2>&1 | tee -a "$LOG"
  [ "${PIPESTATUS[0]}" -eq 0 ] || failed_stages=$((failed_stages + 1))
}

stage "1/3 unit tests (pure Rust)" \
  cargo test --no-fail-fast -p webhook_delivery -p webhook_listen -- $FILTER

# The test cluster runs as the postgres OS user; its data directory must be its own.
PGRX_DATA=/tmp/webhook_ext_pgrx_data
rm -rf "$PGRX_DATA"
stage "2/3 in-database tests (cargo pgrx test)" \
  cargo pgrx test pg15 --runas postgres --pgdata "$PGRX_DATA" $FILTER

stage "3/3 end-to-end tests: install" cargo pgrx install --pg-config "$PG_CONFIG"
stage "3/3 end-to-end tests (real cluster, worker and receivers)" \
  cargo test --no-fail-fast -p webhook_ext_tests --tests -- $FILTER

# One closing line for every stage together.
passed=$(grep -Eo '^test result: [A-Za-z]+\. [0-9]+ passed' "$LOG" | awk '{s += $4} END {print s + 0}')
failed=$(grep -Eo '[0-9]+ failed;' "$LOG" | awk '{s += $1} END {print s + 0}')
echo
echo "webhook_ext: $passed passed, $failed failed"
[ "$failed_stages" -eq 0 ] && [ "$failed" -eq 0 ]
