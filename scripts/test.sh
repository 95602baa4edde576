#!/usr/bin/env bash
# The README's test command: set up what the test suite needs, then run the whole suite.
#
#   scripts/test.sh                 install what is missing, then `cargo test --workspace --all-features`
#   scripts/test.sh -- <args>       the same, passing <args> to cargo test (a filter, --test NAME, ...)
#   scripts/test.sh --setup-only    install what is missing and stop (CI runs the gates itself)
#   scripts/test.sh --check         only report what is missing (exit 1 if anything is)
#
# The suite spawns real servers on free loopback ports: redis-server, redis-cli (which creates
# the throwaway Redis Cluster), etcd, PostgreSQL (initdb + postgres, run as `nobody` when
# root) and PgBouncer in front of it; building the etcd client needs protoc; the TLS test
# makes its certificates with openssl; the scheduler's tests use IANA time zones (tzdata).
# Missing ones are installed with apt-get (as root, or through sudo when it needs no password);
# otherwise the script says exactly what to install, and stops.
set -euo pipefail
cd "$(dirname "$0")/.."

setup_only=false
check_only=false
if [ "${1:-}" = "--setup-only" ]; then setup_only=true; shift; fi
if [ "${1:-}" = "--check" ]; then check_only=true; shift; fi
[ "${1:-}" = "--" ] && shift

missing=()
have() { command -v "$1" >/dev/null 2>&1; }
have "${LEASEHOLD_REDIS_SERVER:-redis-server}" || missing+=(redis-server)
have "${LEASEHOLD_REDIS_CLI:-redis-cli}" || missing+=(redis-tools)
have "${LEASEHOLD_ETCD:-etcd}" || missing+=(etcd-server)
# PostgreSQL: initdb on PATH, in LEASEHOLD_POSTGRES_BIN, or in Debian's
# /usr/lib/postgresql/*/bin (not on PATH there).
postgres_found() {
  [ -n "${LEASEHOLD_POSTGRES_BIN:-}" ] && [ -x "$LEASEHOLD_POSTGRES_BIN/initdb" ] && return 0
  have initdb && return 0
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}
postgres_found || missing+=(postgresql)
# PgBouncer (the transaction-mode pooler test): on PATH, in LEASEHOLD_PGBOUNCER, or Debian's
# /usr/sbin (not on every PATH).
pgbouncer_found() {
  [ -n "${LEASEHOLD_PGBOUNCER:-}" ] && [ -x "$LEASEHOLD_PGBOUNCER" ] && return 0
  have pgbouncer || [ -x /usr/sbin/pgbouncer ]
}
pgbouncer_found || missing+=(pgbouncer)
# protoc alone is not enough: etcd-client's build imports google/protobuf/*.proto, which
# Debian ships in libprotobuf-dev (left out by --no-install-recommends). Probe the real
# thing: compile a file that imports descriptor.proto.
protoc_works() {
  local dir
  dir=$(mktemp -d) || return 1
  printf 'syntax = "proto3";\nimport "google/protobuf/descriptor.proto";\n' >"$dir/probe.proto"
  "${PROTOC:-protoc}" -I"$dir" --descriptor_set_out="$dir/out" "$dir/probe.proto" >/dev/null 2>&1
  local ok=$?
  rm -rf "$dir"
  return $ok
}
have "${PROTOC:-protoc}" || missing+=(protobuf-compiler)
protoc_works || missing+=(libprotobuf-dev)
have openssl || missing+=(openssl)
[ -e /usr/share/zoneinfo/Europe/Berlin ] || missing+=(tzdata)

if $check_only; then
  if [ ${#missing[@]} -gt 0 ]; then
    echo "scripts/test.sh: would install: ${missing[*]}"
    exit 1
  fi
  echo "scripts/test.sh: everything the suite needs is installed"
  exit 0
fi

if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if have sudo && sudo -n true 2>/dev/null; then sudo="sudo"; else sudo="unavailable"; fi
  fi
  if ! have apt-get || [ "$sudo" = "unavailable" ]; then
    cat >&2 <<MSG
scripts/test.sh: the test suite needs: ${missing[*]} (Debian/Ubuntu package names).
Install them, for example:
    sudo apt-get install ${missing[*]}
or on macOS:
    brew install redis etcd protobuf openssl postgresql pgbouncer
or point LEASEHOLD_REDIS_SERVER, LEASEHOLD_REDIS_CLI, LEASEHOLD_ETCD and PROTOC at the binaries
(LEASEHOLD_POSTGRES_BIN at the directory of initdb and postgres, LEASEHOLD_PGBOUNCER at pgbouncer).
MSG
    exit 1
  fi
  echo "scripts/test.sh: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
  # protobuf-compiler brings protoc; the probe must now pass (libprotobuf-dev included).
  protoc_works || { echo "scripts/test.sh: protoc cannot compile an import of google/protobuf/descriptor.proto (install libprotobuf-dev)" >&2; exit 1; }
fi

$setup_only && exit 0
exec cargo test --workspace --all-features "$@"
