#!/usr/bin/env bash
# Make the pgvector extension ("vector") available to the local PostgreSQL server.
#
#   bash scripts/install-pgvector.sh           # install it unless it is already there
#   bash scripts/install-pgvector.sh --check   # only say whether it can be created
#
# The server is the one of AGENTD_TEST_POSTGRES_URL (default: the CI server,
# postgresql://postgres@127.0.0.1:5432/test). When `vector` is already among its
# available extensions this is a no-op. Otherwise, as root on a Debian machine, it
# builds pgvector from Debian's own source package and installs it into that server:
# Debian 12 packages pgvector for no PostgreSQL version, but Debian 13 ("trixie")
# carries its source, which builds against PostgreSQL 15 in seconds. The source comes
# through apt from the machine's configured Debian mirror, checked against the
# release's signed index, with a private apt state (a temporary directory) so the
# machine's own apt sources and caches are left as they were.
#
# Settings (environment): PGVECTOR_DEBIAN_SUITE (default trixie), PGVECTOR_DEBIAN_MIRROR
# (default: the mirror this machine's apt uses for its own release), PGVECTOR_PG_MAJOR
# (default: the server's major version, or the newest installed when it is not up).
#
# Exits 0 when `vector` is available at the end (or installed while the server is
# down), non-zero with the reason otherwise.
# .ci/run treats a failure as "no pgvector" (the suite then tests the exact-search
# fallback only), never as a failed CI.
set -euo pipefail

url=${AGENTD_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test}
suite=${PGVECTOR_DEBIAN_SUITE:-trixie}

say() { echo "== pgvector: $*"; }
fail() { echo "== pgvector: $*" >&2; exit 1; }

available() {
  [ "$(psql "$url" -Atqc "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'" 2>/dev/null)" = 1 ]
}

# Creates the extension inside a transaction that is rolled back: proves the library
# loads and the operators work, and leaves the database as it was.
usable() {
  local out
  out=$(psql "$url" -X -Atq -v ON_ERROR_STOP=1 2>&1 <<'SQL'
BEGIN;
CREATE EXTENSION IF NOT EXISTS vector;
SELECT '[1,2,3]'::vector <-> '[1,2,4]';
ROLLBACK;
SQL
  ) || { echo "$out" >&2; return 1; }
  [ "$out" = 1 ] || { echo "unexpected answer from the server: $out" >&2; return 1; }
}

if [ "${1:-}" = --check ]; then
  if available && usable; then
    say "available and usable on $url ($(psql "$url" -Atqc "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"))"
    exit 0
  fi
  fail "not available on $url"
fi

if available; then
  say "already available on $url, nothing to do"
  exit 0
fi

[ "$(id -u)" = 0 ] || fail "not installed, and installing needs root (sudo bash $0)"
command -v apt-get >/dev/null 2>&1 || fail "not installed, and this machine has no apt-get: see docs/operations.md (pgvector) for other sources"

major=${PGVECTOR_PG_MAJOR:-}
if [ -z "$major" ]; then
  if num=$(psql "$url" -Atqc 'SHOW server_version_num' 2>/dev/null) && [ -n "$num" ]; then
    major=$((num / 10000))
  else
    major=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1)
  fi
fi
[ -n "$major" ] || fail "no PostgreSQL server found (neither $url nor /usr/lib/postgresql/*)"
[ -d "/usr/lib/postgresql/$major" ] || fail "the server at $url is PostgreSQL $major, not installed on this machine: install pgvector where the server runs"

start=$SECONDS
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
trap 'exit 1' INT TERM  # .ci/run's timeout: still leave no temporary directory behind
log=$work/log
export DEBIAN_FRONTEND=noninteractive

# Build tools: the server's headers and PGXS makefiles (which bring clang and llvm, for
# the JIT bitcode PostgreSQL installs beside each extension), a C compiler and make.
need=()
for package in "postgresql-server-dev-$major" gcc make; do
  dpkg -s "$package" >/dev/null 2>&1 || need+=("$package")
done
if [ ${#need[@]} -gt 0 ]; then
  say "installing the build tools: ${need[*]}"
  if ! apt-get install -y -qq "${need[@]}" >"$log" 2>&1; then
    # Stale package lists (a mirror moved on since the last update) are the usual cause.
    if ! { apt-get update -qq && apt-get install -y -qq "${need[@]}"; } >"$log" 2>&1; then
      tail -n 20 "$log" >&2
      fail "could not install ${need[*]}"
    fi
  fi
fi

# Debian's source package, through a private apt state: only a deb-src line for the
# suite that has pgvector, on the mirror this machine already uses for its release.
mirror=${PGVECTOR_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Created-By: Packages' 2>/dev/null \
    | awk -v c="$codename" '$2 == c { print $1; exit }')
fi
[ -n "$mirror" ] || fail "no Debian mirror found in this machine's apt sources (set PGVECTOR_DEBIAN_MIRROR)"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
signed=""
[ -f "$keyring" ] && signed="[signed-by=$keyring] "
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/apt/parts" "$work/src"
echo "deb-src $signed$mirror $suite main" >"$work/apt/sources.list"
apt=(-o "Dir::Etc::SourceList=$work/apt/sources.list" -o "Dir::Etc::SourceParts=$work/apt/parts"
     -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache"
     -o APT::Sandbox::User=root)
say "fetching Debian's pgvector source package ($suite)"
apt-get "${apt[@]}" update -qq >"$log" 2>&1 || { tail -n 20 "$log" >&2; fail "apt-get update for $suite sources failed"; }
(cd "$work/src" && apt-get "${apt[@]}" source --download-only pgvector) >"$log" 2>&1 \
  || { tail -n 20 "$log" >&2; fail "no pgvector source package in Debian $suite"; }
orig=$(ls "$work"/src/pgvector_*.orig.tar.* 2>/dev/null | head -n 1)
[ -n "$orig" ] || fail "the source package has no upstream tarball"
tar -xf "$orig" -C "$work/src"
dir=$(find "$work/src" -mindepth 1 -maxdepth 1 -type d | head -n 1)

# OPTFLAGS="" drops upstream's -march=native, as Debian's package does: the library
# then runs on any x86-64 the machine image may move to.
say "building $(basename "$orig" | sed 's/\.orig\.tar\..*//') for PostgreSQL $major"
build=(-C "$dir" OPTFLAGS= "PG_CONFIG=/usr/lib/postgresql/$major/bin/pg_config")
{ make "${build[@]}" -j"$(nproc)" && make "${build[@]}" install; } >"$log" 2>&1 \
  || { tail -n 30 "$log" >&2; fail "build failed"; }

if available && usable; then
  say "installed in $((SECONDS - start)) s; CREATE EXTENSION vector works on $url"
elif ! psql "$url" -Atqc 'SELECT 1' >/dev/null 2>&1; then
  say "installed for PostgreSQL $major in $((SECONDS - start)) s; $url is not up, so not checked (--check once it is)"
else
  fail "built and installed, but the server at $url does not offer it (is it PostgreSQL $major?)"
fi
