#!/usr/bin/env bash
# Runs every test of webhook_ext (run scripts/setup.sh once first):
#   1. pure Rust unit tests (delivery core, test receiver)     cargo test
#   2. in-database tests (#[pg_test])                          cargo pgrx test
#   3. end-to-end tests: real cluster + worker + receivers     tests/
# Pass a test name filter as the first argument to run only matching tests of every stage.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
FILTER="${1:-}"

echo "== 1/3 unit tests (pure Rust)"
cargo test --no-fail-fast -p webhook_delivery -p webhook_listen -- $FILTER

echo "== 2/3 in-database tests (cargo pgrx test)"
# The test cluster runs as the postgres OS user; its data directory must be its own.
PGRX_DATA=/tmp/webhook_ext_pgrx_data
rm -rf "$PGRX_DATA"
cargo pgrx test pg15 --runas postgres --pgdata "$PGRX_DATA" $FILTER

echo "== 3/3 end-to-end tests (real cluster, worker and receivers)"
cargo pgrx install --pg-config "$PG_CONFIG" >/dev/null
cargo test --no-fail-fast -p webhook_ext_tests -- $FILTER
