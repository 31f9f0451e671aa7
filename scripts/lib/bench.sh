# Shell helpers of the benchmark scripts (sourced). They use $OUT (results directory) and
# $DATA_DIR (the server's private data, for stop_postgres) of the script that sources them.

log() { printf '\n### %s\n' "$*" >&2; }

# Stops one process we started: TERM, then KILL after a bounded wait.
stop_pid() {
  local pid=$1 what=$2
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  echo "$what (pid $pid) did not stop within 30 s; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# The private PostgreSQL is started by `sondakika serve` and stopped when it exits; if the server
# was killed, the postmaster named in its data directory is stopped here.
stop_postgres() {
  local pidfile=$DATA_DIR/postgres/postmaster.pid pid
  [[ -f $pidfile ]] || return 0
  pid=$(head -n1 "$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -INT "$pid" 2>/dev/null || true # "fast" shutdown
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

# Waits until an HTTP URL answers 2xx, or fails after $2 seconds; gives up early if $3 died.
wait_http() {
  local url=$1 secs=$2 pid=$3
  for _ in $(seq 1 $((secs * 10))); do
    curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { echo "pid $pid exited before $url answered" >&2; return 1; }
    sleep 0.1
  done
  echo "$url did not answer within $secs s" >&2
  return 1
}

# Percent of all CPU time used over one second, by anything (from /proc/stat).
cpu_busy() {
  local a b
  read -r -a a < <(head -n1 /proc/stat)
  sleep 1
  read -r -a b < <(head -n1 /proc/stat)
  local total=0 idle i
  for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
  idle=$((b[4] - a[4] + b[5] - a[5]))
  echo $(((total - idle) * 100 / (total > 0 ? total : 1)))
}

# Two cores are shared by everything; other work (a build, a test suite) skews the figures.
# Waits up to QUIET_WAIT_SECS for the machine to be idle, then goes on with a warning that is
# kept with the results.
wait_quiet() {
  local what=$1 busy
  for _ in $(seq 1 "${QUIET_WAIT_SECS:-120}"); do
    busy=$(cpu_busy)
    if ((busy <= 5)); then
      echo "$what: machine idle before the run (${busy}% CPU busy)" | tee -a "$OUT/quiet.txt" >&2
      return 0
    fi
  done
  echo "WARNING $what: machine busy before the run (${busy}% CPU used by other work): results are noisy" |
    tee -a "$OUT/quiet.txt" >&2
}

# utime+stime of a process in seconds (clock ticks / USER_HZ, which Linux fixes at 100).
cpu_secs() {
  local stat
  stat=$(cat "/proc/$1/stat") || return 1
  stat=${stat##*) }
  # After the command name: field 3 is the first; utime is field 14, stime 15.
  awk '{ printf "%.2f", ($12 + $13) / 100 }' <<<"$stat"
}

# A throwaway CA and a P-256 certificate for localhost signed by it, valid for a day, in $1:
# sink-ca.pem, sink-cert.pem, sink-key.pem (a self-signed leaf will not do: webpki refuses a CA
# certificate used as an end entity).
make_throwaway_tls() {
  local dir=$1
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj "/CN=sondakika bench CA" -keyout "$dir/sink-ca-key.pem" -out "$dir/sink-ca.pem" 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
    -keyout "$dir/sink-key.pem" 2>/dev/null |
    openssl x509 -req -CA "$dir/sink-ca.pem" -CAkey "$dir/sink-ca-key.pem" -CAcreateserial -days 1 \
      -extfile <(printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n') \
      -out "$dir/sink-cert.pem" 2>/dev/null
}
