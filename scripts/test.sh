#!/usr/bin/env bash
# Runs every test of webhook_ext on every supported PostgreSQL major, on a fresh machine too
# (it runs scripts/setup.sh first, which returns at once when everything is installed):
#
#   bash scripts/test.sh                  # gates + unit tests once, then 15, 16, 17 and 18
#   bash scripts/test.sh --pg 17          # gates + unit tests, then 17 only
#   bash scripts/test.sh --pg 16 --pg 18  # several majors
#   bash scripts/test.sh --pg 17 <name>   # only the tests whose name contains <name>
#                                         # (gates are skipped when a name is given)
#
# Once:      gates (cargo fmt --check, cargo clippy -D warnings on the default pg15 build) and
#            the pure Rust unit tests (delivery core, test receiver, bench driver).
# Per major: 1. in-database tests (#[pg_test])          cargo pgrx test pgNN
#            2. install into that major                   cargo pgrx install --pg-config ...
#            3. end-to-end: real cluster, worker, receivers   tests/ (WEBHOOK_EXT_PG_CONFIG)
#            4. the DBA package (scripts/package.sh) installed into a fresh copy of that
#               major's binaries that never saw this tree, delivering a signed event
#               (tests/package.rs). Runs for 17 in a full run (a release build per major
#               costs minutes) and for each major chosen with --pg.
# PostgreSQL 15 is Debian's (/usr/lib/postgresql/15); 16-18 are unpacked by setup.sh under
# /opt/webhook_ext/pg/NN.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
PG_ROOT="${WEBHOOK_EXT_PG_ROOT:-/opt/webhook_ext/pg}"

majors=(15 16 17 18)
package_majors=(17)
chosen=()
FILTER=""
while [ $# -gt 0 ]; do
  case "$1" in
    --pg)
      case "${2:-}" in
        15 | 16 | 17 | 18) chosen+=("$2") ;;
        *) echo "test.sh: --pg takes 15, 16, 17 or 18" >&2; exit 2 ;;
      esac
      shift 2
      ;;
    -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
    *) FILTER="$1"; shift ;;
  esac
done
if [ ${#chosen[@]} -gt 0 ]; then majors=("${chosen[@]}") package_majors=("${chosen[@]}"); fi

pg_config_of() {
  if [ "$1" = 15 ]; then echo /usr/lib/postgresql/15/bin/pg_config; else echo "$PG_ROOT/$1/bin/pg_config"; fi
}

LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT

bash scripts/setup.sh || exit 1

# A run builds every major (and a release build for the package); incremental caches would
# add 2 GB that a run of every test seldom reuses.
export CARGO_INCREMENTAL=0
free_kb=$(df -Pk . | awk 'NR == 2 {print $4}')
if [ "${free_kb:-0}" -lt $((8 * 1024 * 1024)) ]; then
  echo "test.sh: warning: $((free_kb / 1024)) MB free here; a run of every major needs about 5 GB" >&2
fi

# stage <log name> <title> <command...>: runs it, keeps its output in $LOGS/<log name> for the
# tally, and records the stage as failed when the command fails.
failed_stages=()
stage() {
  local log="$LOGS/$1" title="$2"
  shift 2
  echo "== $title"
  "$@" 2>&1 | tee -a "$log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || failed_stages+=("$title")
}

# Counts of cargo's "test result:" lines in one log.
passed_in() { grep -Eo '^test result: [A-Za-z]+\. [0-9]+ passed' "$1" 2>/dev/null | awk '{s += $4} END {print s + 0}'; }
failed_in() { grep -Eo '[0-9]+ failed;' "$1" 2>/dev/null | awk '{s += $1} END {print s + 0}'; }

if [ -z "$FILTER" ]; then
  stage common "gate: cargo fmt --all --check" cargo fmt --all --check
  stage common "gate: cargo clippy --workspace --all-targets -- -D warnings (pg15)" \
    cargo clippy --workspace --all-targets -- -D warnings
fi
stage common "unit tests (pure Rust: delivery core, test receiver, bench driver)" \
  cargo test --no-fail-fast -p webhook_delivery -p webhook_listen -p webhook_bench -- $FILTER

for major in "${majors[@]}"; do
  pg_config=$(pg_config_of "$major")
  # The pgrx test cluster runs as the postgres OS user; its data directory must be its own,
  # one per major (a data directory only opens with the major that created it).
  pgrx_data=/tmp/webhook_ext_pgrx_data_$major
  rm -rf "$pgrx_data"
  stage "pg$major" "pg$major 1/4 in-database tests (cargo pgrx test pg$major)" \
    cargo pgrx test "pg$major" --runas postgres --pgdata "$pgrx_data" $FILTER
  stage "pg$major" "pg$major 2/4 install (cargo pgrx install --pg-config $pg_config)" \
    cargo pgrx install --pg-config "$pg_config"
  stage "pg$major" "pg$major 3/4 end-to-end tests (real cluster, worker and receivers)" \
    env WEBHOOK_EXT_PG_CONFIG="$pg_config" \
    cargo test --no-fail-fast -p webhook_ext_tests --tests -- $FILTER

  # The package test is #[ignore]d in plain `cargo test` (it needs the package built first).
  if [[ " ${package_majors[*]} " == *" $major "* ]] \
    && [[ "package_installs_into_a_fresh_postgresql_and_delivers_a_signed_event" == *"$FILTER"* ]]; then
    stage "pg$major" "pg$major 4/4 package: build (scripts/package.sh --pg $major)" \
      bash scripts/package.sh --pg "$major"
    stage "pg$major" "pg$major 4/4 package: install into a fresh PostgreSQL $major and deliver" \
      env WEBHOOK_EXT_PACKAGE_MAJOR="$major" \
      cargo test --no-fail-fast -p webhook_ext_tests --test package -- --ignored $FILTER
  fi
done

# What passed per major, then one closing line for every stage together.
echo
total_passed=0 total_failed=0
for log in common "${majors[@]/#/pg}"; do
  p=$(passed_in "$LOGS/$log") f=$(failed_in "$LOGS/$log")
  total_passed=$((total_passed + p)) total_failed=$((total_failed + f))
  label=$log
  [ "$log" = common ] && label="gates and unit tests"
  echo "$label: $p passed, $f failed"
done
for title in "${failed_stages[@]}"; do echo "FAILED stage: $title"; done
echo "webhook_ext: $total_passed passed, $total_failed failed"
[ "${#failed_stages[@]}" -eq 0 ] && [ "$total_failed" -eq 0 ]
