#!/bin/bash
# One hostile address holding connections: what the server keeps, and whether /healthz still
# answers. BENCHMARKS.md, "The main port under one hostile address".
# run.sh BIN PORT N : starts BIN serve with a private PostgreSQL, probes, stops.
BIN=$1; PORT=$2; N=$3
export SONDAKIKA_DATA_DIR=/tmp/hold-connections-data-$PORT SONDAKIKA_BIND=127.0.0.1:$PORT SONDAKIKA_LOG_LEVEL=warn
"$BIN" serve > /tmp/hold-connections-server-$PORT.log 2>&1 &
PID=$!
for i in $(seq 1 120); do curl -sf http://127.0.0.1:$PORT/readyz >/dev/null && break; sleep 1; done
python3 "$(dirname "$0")/probe.py" $PORT $PID $N
kill -TERM $PID; wait $PID
