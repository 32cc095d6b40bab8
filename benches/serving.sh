#!/usr/bin/env bash
# The gateway's serving models at saturation beside nginx proxy_pass: closed loop
# (`wrk -t1 -cCONNS -dDURATIONs`, pinned to CPU 1) against each server under test, pinned to
# CPU 0 with the mocks (`backends --threads 1`). Prints, per server and route, the median over
# ROUNDS alternating rounds of requests/s and CPU µs per request of the server's process (from
# /proc/PID/stat), with the spread, and the ratios to nginx.
#
#   bash benches/serving.sh            # needs nginx and wrk: apt-get install -y nginx wrk
#   ROUNDS=5 DURATION=5 CONNS=50 bash benches/serving.sh
#   THREADS=2 bash benches/serving.sh  # gateway workers (default: what a user gets on the
#                                      # cores it is given, here 1)
#   GW_B=/tmp/gwbench-before bash benches/serving.sh   # also that build (per-core), same rounds
#   MODELS="per-core" GW_B=... bash ...                # only these of this build
#   MODELS="per-core hyper" bash benches/serving.sh    # "hyper": per-core with --http1 hyper
#                                                      # (every request by hyper, as before #30)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-5}; CONNS=${CONNS:-50}; THREADS=${THREADS:-}
MODELS=${MODELS:-"per-core work-stealing"}
for tool in nginx wrk python3; do
  command -v "$tool" >/dev/null || { echo "missing: $tool (apt-get install -y nginx wrk)" >&2; exit 2; }
done
cargo build --release --quiet
GW=target/release/gwbench
. benches/lib.sh
start_stack   # mocks and a default gateway; the gateways below are this script's own
kill "$gw_pid" 2>/dev/null || true
threads=()
[ -n "$THREADS" ] && threads=(--threads "$THREADS")

ngp=$(free_port)
nginx_conf "$work" "$ngp" "$rest"
$srv nginx -c "$work/nginx.conf" -p "$work" &
ng_pid=$!; pids+=($ng_pid)

declare -A port pid
models=$MODELS
[ -n "${GW_B:-}" ] && models="$models b-per-core"
for model in $models; do
  p=$(free_port); a=$(free_port)
  bin=$GW runtime=$model
  http1=()
  [ "$model" = b-per-core ] && { bin=$GW_B; runtime=per-core; }
  [ "$model" = hyper ] && { runtime=per-core; http1=(--http1 hyper); }
  $srv "$bin" gateway --listen "127.0.0.1:$p" --admin "127.0.0.1:$a" --runtime "$runtime" \
    "${threads[@]}" "${http1[@]}" --upstream-grpc "127.0.0.1:$grpc" --upstream-rest "127.0.0.1:$rest" \
    > "$work/$model.out" 2>&1 &
  pid[$model]=$!; port[$model]=$p; pids+=($!)
  for _ in $(seq 100); do grep -q "ready admin" "$work/$model.out" 2>/dev/null && break; sleep 0.1; done
done
sleep 0.5
hz=$(getconf CLK_TCK)

run() { # name pid url
  local name=$1 p=$2 url=$3 before after out
  before=$(cpu_ticks "$p")
  out=$($gen wrk -t1 -c"$CONNS" -d"${DURATION}s" "$url")
  after=$(cpu_ticks "$p")
  local reqs errors
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
  echo "$name $reqs $((after - before)) ${errors:-none}" >> "$work/all.txt"
}
for round in $(seq "$ROUNDS"); do
  run nginx-proxy "$ng_pid" "http://127.0.0.1:$ngp/rest/api/users/42"
  for model in $models; do
    run "$model-proxy" "${pid[$model]}" "http://127.0.0.1:${port[$model]}/rest/api/users/42"
    run "$model-transcode" "${pid[$model]}" "http://127.0.0.1:${port[$model]}/api/users/42"
  done
done
echo "closed loop: wrk -t1 -c$CONNS -d${DURATION}s on CPU 1; servers and mocks on CPU 0;" \
  "gateway threads: ${THREADS:-default}; $ROUNDS rounds, medians [min..max]"
python3 - "$work/all.txt" "$hz" "$DURATION" <<'PY'
import sys, statistics as st
hz, dur = int(sys.argv[2]), float(sys.argv[3])
rows = {}
for line in open(sys.argv[1]):
    name, reqs, ticks, *err = line.split()
    rows.setdefault(name, []).append((int(reqs), int(ticks), " ".join(err)))
med = {}
for name, rs in rows.items():
    rps = [r / dur for r, _, _ in rs]
    cpu = [t / hz * 1e6 / r for r, t, _ in rs if r]
    med[name] = (st.median(rps), st.median(cpu))
    errs = {e for _, _, e in rs if e != "none"}
    print(f"  {name:<24} {med[name][0]:>9.0f} req/s [{min(rps):.0f}..{max(rps):.0f}]"
          f"  {med[name][1]:6.1f} µs CPU/req [{min(cpu):.1f}..{max(cpu):.1f}]"
          + (f"  ERRORS: {errs}" if errs else ""))
ng = med.get("nginx-proxy")
if ng:
    for name, (rps, cpu) in med.items():
        if name != "nginx-proxy":
            print(f"  {name:<24} CPU/req {cpu / ng[1]:.2f}x nginx proxy_pass, req/s {rps / ng[0]:.2f}x")
PY
