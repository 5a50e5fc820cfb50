#!/usr/bin/env bash
# Builds the package a DBA installs on a server without Rust or cargo:
#
#   bash scripts/package.sh --pg 17     # -> target/package/webhook_ext-<version>-pg17-<arch>.tar.gz
#   bash scripts/package.sh --pg-config /path/to/pg_config   # against another PostgreSQL build
#
# The tarball holds one folder with:
#   lib/webhook_ext.so         the extension library (release build, `cargo pgrx package`)
#   extension/                 webhook_ext.control, the install script of this version, the
#                              upgrade scripts, and the install scripts of earlier releases
#                              (sql/archive), so `ALTER EXTENSION webhook_ext UPDATE` works
#   install.sh                 copies them where the server's pg_config says
#   README.md                  the steps that follow (preload, restart, CREATE EXTENSION)
# A library only loads into the major it was built for; install.sh refuses any other.
# --pg 15 builds against Debian's PostgreSQL 15, 16-18 against setup.sh's builds.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
PG_ROOT="${WEBHOOK_EXT_PG_ROOT:-/opt/webhook_ext/pg}"

pg_config=/usr/lib/postgresql/15/bin/pg_config
while [ $# -gt 0 ]; do
  case "$1" in
    --pg)
      case "${2:-}" in
        15) pg_config=/usr/lib/postgresql/15/bin/pg_config ;;
        16 | 17 | 18) pg_config="$PG_ROOT/$2/bin/pg_config" ;;
        *) echo "package.sh: --pg takes 15, 16, 17 or 18" >&2; exit 2 ;;
      esac
      shift 2
      ;;
    --pg-config) pg_config="${2:?--pg-config takes a path}"; shift 2 ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "package.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

bash scripts/setup.sh >/dev/null
major=$("$pg_config" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
work=target/package/build-pg$major
rm -rf "$work"

echo "package: cargo pgrx package --pg-config $pg_config (release build)"
cargo pgrx package --pg-config "$pg_config" --out-dir "$work"

# `cargo pgrx package` lays files out under the build machine's absolute paths
# ($work/<pkglibdir>/..., $work/<sharedir>/extension/...); the package keeps only the files.
control=$(find "$work" -type f -name webhook_ext.control)
version=$(sed -nE "s/^default_version = '(.*)'/\1/p" "$control")
name="webhook_ext-$version-pg$major-$(uname -m)"
stage_dir=target/package/$name
rm -rf "$stage_dir" "target/package/$name.tar.gz"
mkdir -p "$stage_dir/lib" "$stage_dir/extension"
so=$(find "$work" -type f -name 'webhook_ext.so')
[ -n "$so" ] || { echo "package: cargo pgrx package made no webhook_ext.so" >&2; exit 1; }
install -m 0755 "$so" "$stage_dir/lib/webhook_ext.so"
find "$work" -type f -path '*/extension/webhook_ext*' -exec install -m 0644 -t "$stage_dir/extension" {} +
install -m 0644 sql/archive/webhook_ext--*.sql "$stage_dir/extension/"
[ -f "$stage_dir/extension/webhook_ext.control" ] && [ -f "$stage_dir/extension/webhook_ext--$version.sql" ] \
  || { echo "package: control file or webhook_ext--$version.sql missing" >&2; exit 1; }

cat > "$stage_dir/install.sh" <<INSTALL
#!/bin/sh
# Installs webhook_ext $version for PostgreSQL $major into the server given by pg_config:
#   sudo sh install.sh                          # the pg_config on PATH
#   sudo sh install.sh /usr/lib/postgresql/$major/bin/pg_config
# It copies lib/webhook_ext.so into \`pg_config --pkglibdir\` and extension/* into
# \`pg_config --sharedir\`/extension. Nothing else on the server changes.
set -eu
here=\$(cd "\$(dirname "\$0")" && pwd)
pg_config=\${1:-\${PG_CONFIG:-pg_config}}
command -v "\$pg_config" >/dev/null 2>&1 || { echo "install.sh: \$pg_config not found; pass its path" >&2; exit 1; }
server_major=\$("\$pg_config" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
if [ "\$server_major" != "$major" ]; then
  echo "install.sh: this package is for PostgreSQL $major; \$pg_config is PostgreSQL \$server_major" >&2
  exit 1
fi
libdir=\$("\$pg_config" --pkglibdir)
extdir=\$("\$pg_config" --sharedir)/extension
mkdir -p "\$libdir" "\$extdir"
# Copy then rename: a running server that already mapped the old library keeps it intact.
cp "\$here/lib/webhook_ext.so" "\$libdir/.webhook_ext.so.new"
chmod 0755 "\$libdir/.webhook_ext.so.new"
mv -f "\$libdir/.webhook_ext.so.new" "\$libdir/webhook_ext.so"
for f in "\$here"/extension/*; do
  cp "\$f" "\$extdir/"
  chmod 0644 "\$extdir/\$(basename "\$f")"
done
echo "webhook_ext $version installed: \$libdir/webhook_ext.so, \$extdir/webhook_ext*"
echo "next: shared_preload_libraries = 'webhook_ext' in postgresql.conf, restart, CREATE EXTENSION webhook_ext;"
INSTALL
chmod 0755 "$stage_dir/install.sh"

cat > "$stage_dir/README.md" <<README
# webhook_ext $version for PostgreSQL $major ($(uname -m))

1. \`sudo sh install.sh /path/to/pg_config\` (default: the \`pg_config\` on PATH; on Debian and
   Ubuntu with the PGDG packages: \`/usr/lib/postgresql/$major/bin/pg_config\`).
2. In postgresql.conf: \`shared_preload_libraries = 'webhook_ext'\` (keep what was there, comma
   separated). Every database with the extension is served (\`webhook.databases = '*'\`).
3. Restart PostgreSQL.
4. In each database that queues events: \`CREATE EXTENSION webhook_ext;\` (an existing
   installation: \`ALTER EXTENSION webhook_ext UPDATE;\`).

Then grant your application role what it needs: see "Install on your server" in the
project's README and docs/SECURITY.md.
README

tar -C target/package -czf "target/package/$name.tar.gz" "$name"
echo "package: target/package/$name.tar.gz"
tar -tzf "target/package/$name.tar.gz"
