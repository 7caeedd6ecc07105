#!/usr/bin/env bash
# Every test suite of Run Ledger, in one command: ./test.sh
#
# Installs what the suites need when it is missing (Debian packages, via apt-get), starts a
# throwaway PostgreSQL for them unless LEDGER_TEST_CONNECTION already names one, runs each
# suite, stops what it started, and ends with exactly one line: "N passed, N failed" (all
# suites together). Exits non-zero if any test failed, a suite could not run, or no test ran.
# .ci/run is a thin wrapper around this script.
#
# Settings (environment):
#   LEDGER_TEST_CONNECTION  an existing PostgreSQL server (Npgsql connection string); when set,
#                           no cluster is started and nothing is installed for PostgreSQL
#   LEDGER_TEST_PG_PORT     port of the throwaway cluster (default: the first free port from 54460)
#   LEDGER_TEST_RESULTS     a directory to keep the .NET suite's TRX files in (by default they are
#                           read for the counts and removed with the rest of the run's scratch files)
#   Any further arguments are passed to `dotnet test` (e.g. --filter "FullyQualifiedName~Batch").
set -uo pipefail
cd "$(dirname "$0")"

log() { echo "[test.sh] $*"; }

WORK=$(mktemp -d /tmp/ledger-test.XXXXXX)
CLEANUP=("rm -rf '$WORK'")
cleanup() {
  local i
  for ((i = ${#CLEANUP[@]} - 1; i >= 0; i--)); do eval "${CLEANUP[i]}" >/dev/null 2>&1; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PASSED=0
FAILED=0
# record SUITE PASSED FAILED: adds a suite's counts to the totals.
record() {
  log "suite $1: $2 passed, $3 failed"
  PASSED=$((PASSED + $2))
  FAILED=$((FAILED + $3))
}
finish() {
  echo "$PASSED passed, $FAILED failed"
  [ "$FAILED" -eq 0 ] && [ "$PASSED" -gt 0 ]
  exit $?
}

# apt_install PACKAGE...: installs Debian packages (apt-get update first, once).
APT_UPDATED=
apt_install() {
  log "installing $*"
  if [ -z "$APT_UPDATED" ]; then apt-get update -qq >/dev/null || return 1; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
# need COMMAND PACKAGE...: installs the Debian packages when COMMAND is missing.
need() {
  local command=$1; shift
  command -v "$command" >/dev/null 2>&1 || apt_install "$@"
}
# attr NAME TAG: the number in NAME="..." of an XML start tag, 0 when absent.
attr() {
  local value
  value=$(sed -n "s/.* $1=\"\([0-9]*\)\".*/\1/p" <<<"$2")
  echo "${value:-0}"
}

# ---------------------------------------------------------------------------------------------
# What the suites need. A suite of a later issue adds its line here, e.g.:
#   need chromium chromium             # browser suite (Playwright .NET drives Debian's chromium)
#   need pytest-3 python3-pytest       # Python suite
# ---------------------------------------------------------------------------------------------
command -v dotnet >/dev/null 2>&1 || { log "the .NET SDK (dotnet) is required"; FAILED=1; finish; }
need chromium chromium             # browser suite (Playwright .NET drives Debian's chromium)
# The Python client's suite runs with Debian's interpreter and Debian's pytest (no package index here).
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c "import pytest" 2>/dev/null || apt_install python3 python3-pytest
# The contract tests lint the API description and type-check a generated TypeScript client (tools/contract).
need npm nodejs npm
# The README's examples (ReadmeExampleTests) run as written: curl, and a virtual environment for the Python client.
need curl curl
python3 -c "import venv, ensurepip" 2>/dev/null || apt_install python3-venv

start_postgres() {
  local bin
  if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt_install postgresql || return 1
  fi
  bin=$(dirname "$(readlink -f "$(command -v initdb 2>/dev/null || ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")")

  local port=${LEDGER_TEST_PG_PORT:-}
  if [ -z "$port" ]; then
    for port in $(seq 54460 54499); do
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
    done
  fi

  # A throwaway cluster. initdb and postgres refuse to run as root: then it belongs to the
  # postgres user, in a directory that user can reach (/var/tmp, not under /root).
  local data
  data=$(mktemp -d /var/tmp/ledger-test-pg.XXXXXX)
  CLEANUP+=("rm -rf '$data'")
  as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
  [ "$(id -u)" = 0 ] && chown postgres "$data"
  log "starting PostgreSQL in $data on 127.0.0.1:$port"
  as_pg "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --no-instructions >/dev/null || return 1
  if ! as_pg "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
      -o "-p $port -k $data -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" start >/dev/null; then
    tail -5 "$data/server.log"
    return 1
  fi
  CLEANUP+=("as_pg '$bin/pg_ctl' -D '$data' -m fast -w stop")
  export LEDGER_TEST_CONNECTION="Host=127.0.0.1;Port=$port;Username=postgres;Database=postgres"
}

if [ -z "${LEDGER_TEST_CONNECTION:-}" ]; then
  start_postgres || { log "could not start PostgreSQL"; FAILED=1; finish; }
else
  log "using the PostgreSQL server from LEDGER_TEST_CONNECTION"
fi

# ---------------------------------------------------------------------------------------------
# Suite runners: each runs its tests and calls `record NAME PASSED FAILED`. A run that fails
# without a failed test (a build error, a crash) counts as one failure.
# ---------------------------------------------------------------------------------------------

# dotnet_suite NAME TARGET [dotnet test arguments]: every test project of TARGET, counted from TRX.
dotnet_suite() {
  local name=$1 target=$2; shift 2
  local results="$WORK/trx-$name"
  # dotnet test names each TRX file it writes; these are scratch files, removed at the end, so their
  # paths are not printed (LEDGER_TEST_RESULTS keeps them, and then says where).
  dotnet test "$target" --logger trx --results-directory "$results" "$@" | grep --line-buffered -v '^Results File: '
  local status=${PIPESTATUS[0]} passed=0 failed=0 trx counters
  for trx in "$results"/*.trx; do
    [ -e "$trx" ] || continue
    counters=$(grep -o '<Counters [^>]*>' "$trx" | head -1)
    passed=$((passed + $(attr passed "$counters")))
    failed=$((failed + $(attr failed "$counters") + $(attr error "$counters") + $(attr timeout "$counters") + $(attr aborted "$counters")))
  done
  if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
  # What failed, with its message and stack (the console logger gives a class cleanup failure's type only).
  if [ "$failed" -ne 0 ] && compgen -G "$results/*.trx" >/dev/null; then
    log "suite $name: what failed"
    /usr/bin/python3 tools/trx-failures.py "$results"/*.trx
  fi
  if [ -n "${LEDGER_TEST_RESULTS:-}" ] && compgen -G "$results/*.trx" >/dev/null; then
    mkdir -p "$LEDGER_TEST_RESULTS" && cp "$results"/*.trx "$LEDGER_TEST_RESULTS"/ && log "TRX files of suite $name kept in $LEDGER_TEST_RESULTS"
  fi
  record "$name" "$passed" "$failed"
}

# pytest_suite NAME DIR [pytest arguments]: a Python suite; exit code 5 (no tests collected) is 0 tests, not a failure.
pytest_suite() {
  local name=$1 dir=$2; shift 2
  local xml="$WORK/pytest-$name.xml"
  # The JUnit XML is a scratch file too: its path is not printed.
  /usr/bin/python3 -m pytest "$dir" -q -p no:cacheprovider --junitxml="$xml" "$@" | grep --line-buffered -v 'generated xml file: '
  local status=${PIPESTATUS[0]} tests=0 failures=0 errors=0 skipped=0 suite
  if [ -s "$xml" ]; then
    suite=$(grep -o '<testsuite [^>]*>' "$xml" | head -1)
    tests=$(attr tests "$suite"); failures=$(attr failures "$suite")
    errors=$(attr errors "$suite"); skipped=$(attr skipped "$suite")
  fi
  local failed=$((failures + errors))
  [ "$status" -eq 5 ] && status=0
  if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
  record "$name" "$((tests - failures - errors - skipped))" "$failed"
}

# ---------------------------------------------------------------------------------------------
# The suites, one line each. A later issue adds its own.
# (A browser suite written as a .NET test project in Ledger.sln runs with the dotnet suite;
#  it only needs its `need chromium chromium` line above.)
# ---------------------------------------------------------------------------------------------
dotnet_suite dotnet Ledger.sln "$@"
pytest_suite python clients/python/tests

finish
