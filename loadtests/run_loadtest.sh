#!/usr/bin/env bash
# Start the service, run a short headless locust load against it, stop it; exit non-zero
# when any request failed (or the service never got ready). Used by `make loadtest`.
#
#   loadtests/run_loadtest.sh                      # -u 8 -r 4 -t 60s, realistic waits
#   USERS=16 SPAWN_RATE=8 DURATION=120s loadtests/run_loadtest.sh
#   LOADTEST_WAIT_SCALE=0 loadtests/run_loadtest.sh   # no think time: closed-loop stress
#
# Environment: USERS, SPAWN_RATE, DURATION, PORT (default: a free port), OUT (report
# prefix, default loadtests/results/locust-<date>), VENV_BIN (default .venv/bin, else PATH),
# BENTOML_HOME (model store), GENRE_DATA (clips) and the service's GENRE_* knobs.
# Reports: ${OUT}_stats.csv, ${OUT}_failures.csv, ... and $OUT.html; service log: $OUT-serve.log.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
VENV_BIN="${VENV_BIN:-$REPO/.venv/bin}"
if [[ -x "$VENV_BIN/python" ]]; then PY="$VENV_BIN/python"; BENTOML="$VENV_BIN/bentoml"
else PY="$(command -v python3)"; BENTOML="$(command -v bentoml)"; fi
USERS="${USERS:-8}"
SPAWN_RATE="${SPAWN_RATE:-4}"
DURATION="${DURATION:-60s}"
PORT="${PORT:-$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
mkdir -p loadtests/results
OUT="${OUT:-loadtests/results/locust-$(date +%Y%m%d-%H%M%S)}"
HOST="http://127.0.0.1:$PORT"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}" BENTOML_DO_NOT_TRACK=True

echo "starting bentoml serve service:GenreDetector on $HOST (log: $OUT-serve.log)"
setsid "$BENTOML" serve service:GenreDetector --host 127.0.0.1 --port "$PORT" \
    >"$OUT-serve.log" 2>&1 &
SERVE_PID=$!
stop_service() {
    if kill -0 "$SERVE_PID" 2>/dev/null; then
        kill -TERM -- "-$SERVE_PID" 2>/dev/null || true
        for _ in $(seq 60); do kill -0 "$SERVE_PID" 2>/dev/null || return 0; sleep 0.5; done
        kill -KILL -- "-$SERVE_PID" 2>/dev/null || true
    fi
}
trap stop_service EXIT

START=$SECONDS
until curl -sf --max-time 5 -o /dev/null "$HOST/readyz"; do
    if ! kill -0 "$SERVE_PID" 2>/dev/null; then
        echo "bentoml serve exited before it was ready:" >&2; tail -n 40 "$OUT-serve.log" >&2; exit 2
    fi
    if (( SECONDS - START > 180 )); then
        echo "service not ready after 180 s" >&2; tail -n 40 "$OUT-serve.log" >&2; exit 2
    fi
    sleep 0.5
done
echo "service ready after $((SECONDS - START)) s"

echo "locust: -u $USERS -r $SPAWN_RATE -t $DURATION (reports: ${OUT}_stats.csv, $OUT.html)"
set +e
"$PY" -m locust -f loadtests/locustfile.py --headless -u "$USERS" -r "$SPAWN_RATE" \
    -t "$DURATION" --host "$HOST" --csv "$OUT" --html "$OUT.html" --only-summary \
    --exit-code-on-error 1
LOCUST_RC=$?
set -e

# The Aggregated row of the stats CSV: fail on any failed request or on no requests at all.
read -r REQUESTS FAILURES < <("$PY" - "${OUT}_stats.csv" <<'EOF'
import csv, sys
rows = {r["Name"]: r for r in csv.DictReader(open(sys.argv[1]))}
agg = rows["Aggregated"]
print(agg["Request Count"], agg["Failure Count"])
EOF
)
echo "requests: $REQUESTS, failures: $FAILURES, locust exit code: $LOCUST_RC"
if [[ "$FAILURES" != 0 || "$REQUESTS" == 0 || $LOCUST_RC != 0 ]]; then
    echo "LOAD TEST FAILED" >&2
    exit 1
fi
echo "load test passed"
