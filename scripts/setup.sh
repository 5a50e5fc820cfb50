#!/usr/bin/env bash
# One-time machine setup for webhook_ext: Debian packages, cargo-pgrx 0.18.0 (only when
# missing) and `cargo pgrx init` against the system PostgreSQL 15. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
PGRX_VERSION=0.18.0

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need_pkgs=()
for pkg in postgresql-15 postgresql-server-dev-15 postgresql-contrib libclang-dev clang sudo pkg-config python3; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$pkg")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "setup: installing ${need_pkgs[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
  echo "setup: installing cargo-pgrx $PGRX_VERSION (a few minutes)"
  cargo install cargo-pgrx --version "$PGRX_VERSION" --locked --quiet
fi

if ! grep -qs "pg15" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
  echo "setup: cargo pgrx init --pg15 $PG_CONFIG"
  cargo pgrx init --pg15 "$PG_CONFIG" >/dev/null
fi

# Runtimes and libraries of the example receivers (Node, Python, PHP), when present.
if [ -f scripts/setup-receivers.sh ]; then
  bash scripts/setup-receivers.sh
fi

# The test and demo clusters run as the `postgres` OS user, which must be able to read
# the build tree (cargo pgrx test --runas postgres).
id postgres >/dev/null 2>&1 || as_root useradd --system --create-home postgres
echo "setup: done"
