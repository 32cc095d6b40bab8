#!/usr/bin/env bash
# One load schedule split across N local generator processes — the command lines the
# Kubernetes Indexed Job (deploy/k8s/load-job.yaml) runs, here on loopback: generator i runs
# `gwbench load --segment i/N` from its own source address 127.0.0.(i+2), all start on the same
# instant (--start-at), and their --json outputs are merged with `gwbench report --merge`.
#
#   bash deploy/local-fleet.sh 4                  # against mocks it starts (REST GetUser)
#   RPS=8000 DURATION=20s bash deploy/local-fleet.sh 4
#   TARGET=http://127.0.0.1:8080/api/users/42 bash deploy/local-fleet.sh 2
#   OUT=/tmp/fleet bash deploy/local-fleet.sh 4   # keep the segments' outputs there
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-}
[[ "$N" =~ ^[1-9][0-9]*$ ]] && [ "$N" -le 250 ] || { echo "usage: deploy/local-fleet.sh N (1..250 generators)" >&2; exit 2; }
RPS=${RPS:-2000}; DURATION=${DURATION:-10s}; WARMUP=${WARMUP:-1s}; CONNS=${CONNS:-4}
LEAD_MS=${LEAD_MS:-2000}   # how far ahead the common start is set
GW=${GW:-target/release/gwbench}
[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
if [ -z "${TARGET:-}" ]; then
  "$GW" backends --rest-port 0 --grpc-port 0 --admin-port 0 --threads 1 > "$out/backends.out" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do grep -q "ready admin" "$out/backends.out" 2>/dev/null && break; sleep 0.1; done
  rest=$(awk '/^ready rest/ {print $3; exit}' "$out/backends.out")
  [ -n "$rest" ] || { echo "the mocks did not start: $(cat "$out/backends.out")" >&2; exit 1; }
  TARGET="http://$rest/api/users/42"
fi
start_at=$(( $(date +%s%3N) + LEAD_MS ))
echo "fleet: $N generators x ($RPS req/s / $N) for $DURATION against $TARGET, starting at epoch ms $start_at"
gens=()
for i in $(seq 0 $((N - 1))); do
  "$GW" load "$TARGET" --rps "$RPS" --duration "$DURATION" --warmup "$WARMUP" --connections "$CONNS" \
    --threads 1 --segment "$i/$N" --start-at "$start_at" --local-addr "127.0.0.$((i + 2))" \
    --json -q > "$out/segment-$i.json" 2> "$out/segment-$i.err" &
  gens+=($!)
done
failed=0
for i in "${!gens[@]}"; do
  wait "${gens[$i]}" || { failed=1; echo "segment $i/$N failed: $(cat "$out/segment-$i.err")" >&2; }
done
[ "$failed" = 0 ] || exit 1
"$GW" report --merge "$out"/segment-*.json
echo "segments' outputs: $out"
