#!/usr/bin/env bash
# Runtimes and libraries of the example receivers in examples/receivers/ (called by
# scripts/setup.sh; Debian 12, as root or a sudoer). Installs only what is missing, so a
# run on a machine that has everything takes well under a second. Safe to run again.
#   node/    Node.js >= 18 (Debian's `nodejs`); standard library only, so no npm install
#   express/ Express 5 (npm, pinned by package-lock.json) for the receiver of
#            json_numbers = 'javascript' webhooks (docs/MIGRATING.md)
#   php/     php-cli: the receiver runs on PHP's built-in server
#   python/  python3 + python3-venv; a venv at examples/receivers/python/.venv holding the
#            official `standardwebhooks` library and Flask, pinned by hash in requirements.txt
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# Commands, not package names, for node and php: a NodeSource or sury.org build is fine too.
need=()
command -v node >/dev/null || need+=(nodejs)
command -v php >/dev/null || need+=(php-cli)
command -v npm >/dev/null || need+=(npm)
installed python3 || need+=(python3)
installed python3-venv || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup-receivers: installing ${need[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The venv uses Debian's python3 (what python3-venv belongs to), not whatever `python3` is first
# on PATH. Recreated if broken (e.g. after a Python upgrade); pip runs only when
# requirements.txt changed since the last install.
venv=examples/receivers/python/.venv
requirements=examples/receivers/python/requirements.txt
if ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
  echo "setup-receivers: creating $venv"
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv"
fi
if ! cmp -s "$requirements" "$venv/installed-requirements.txt"; then
  echo "setup-receivers: pip install -r $requirements"
  "$venv/bin/pip" install -q --disable-pip-version-check --no-input --require-hashes -r "$requirements"
  cp "$requirements" "$venv/installed-requirements.txt"
fi

# Express, exactly as package-lock.json pins it; npm ci runs only when the lock changed.
express=examples/receivers/express
if ! cmp -s "$express/package-lock.json" "$express/node_modules/.installed-package-lock.json"; then
  echo "setup-receivers: npm ci in $express"
  (cd "$express" && npm ci --omit=dev --no-audit --no-fund --loglevel=error)
  cp "$express/package-lock.json" "$express/node_modules/.installed-package-lock.json"
fi
