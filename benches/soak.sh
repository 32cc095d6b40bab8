#!/usr/bin/env bash
# Soak: constant load through the gateway's proxy and transcoded routes while faults are
# injected through the mocks' admin endpoint, on 127.0.0.1 only. Every SAMPLE seconds it prints
# the gateway's RSS and open descriptors, the upstream breaker state, and what a checker saw:
# the checker (benches/soak_check.py, about 100 req/s beside the load) compares every answer's
# body with the id it asked for, so a response delivered to the wrong request is counted.
# Fault cycle (FAULT_EVERY seconds): an error burst (error_rate 0.5), then stalls, then the
# mocks killed and restarted on the same ports; each fault lasts FAULT_FOR seconds.
# Figures are printed, not asserted: RSS and descriptors should stay flat (within 10 % after
# warm-up), errors should appear only while a fault is active, the breaker should close again
# after each fault, and wrong answers should be 0.
#
#   bash benches/soak.sh                              # 10 minutes at 5,000 req/s
#   DURATION=120 SAMPLE=15 bash benches/soak.sh       # a short run
set -euo pipefail
cd "$(dirname "$0")/.."
RPS=${RPS:-5000}; DURATION=${DURATION:-600}; SAMPLE=${SAMPLE:-30}
FAULT_EVERY=${FAULT_EVERY:-60}; FAULT_FOR=${FAULT_FOR:-10}
cargo build --release --quiet
GW=target/release/gwbench
. benches/lib.sh
start_stack
# The mocks restarted by the fault loop are stopped too, before cleanup removes $work.
trap 'kill "$(cat "$work/mocks.pid" 2>/dev/null)" 2>/dev/null || true; cleanup' EXIT
gwadm=$(grep "ready admin" "$work/g.out" | awk '{print $3}')
madm=$(grep "ready admin" "$work/b.out" | awk '{print $3}')
[ -n "$gwadm" ] && [ -n "$madm" ] || { echo "the stack did not start" >&2; exit 1; }

# The load: half proxied, half transcoded through the /secure mount (JWT auth, rate limit and
# the gRPC upstream's circuit breaker), two generators, each at RPS/2.
token=$("$GW" token --ttl 2h)
$gen "$GW" load "http://127.0.0.1:$gwp/rest/api/users/{rand:1-100000}" --rps $((RPS / 2)) \
  -d "${DURATION}s" -c 16 --quiet --json > "$work/load-proxy.json" 2> "$work/load-proxy.err" &
load1=$!; pids+=($load1)
$gen "$GW" load "http://127.0.0.1:$gwp/secure/api/users/{rand:1-100000}" --rps $((RPS / 2)) \
  -H "authorization: Bearer $token" \
  -d "${DURATION}s" -c 16 --quiet --json > "$work/load-transcode.json" 2> "$work/load-transcode.err" &
load2=$!; pids+=($load2)
# The checker: every answer's id must be the one asked for.
python3 benches/soak_check.py "127.0.0.1:$gwp" "$DURATION" "$work/check.state" \
  > "$work/check.log" 2>&1 &
check=$!; pids+=($check)

behave() { curl -s -o /dev/null -X "$1" "http://$madm/admin/behavior" ${2:+--json "$2"}; }
restart_mocks() {
  kill "${pids[0]}" 2>/dev/null || true
  wait "${pids[0]}" 2>/dev/null || true
  sleep "$FAULT_FOR"
  $srv "$GW" backends --rest-port "$rest" --grpc-port "$grpc" --admin-port "${madm##*:}" \
    --threads 1 > "$work/b2.out" 2>&1 &
  pids[0]=$!
  echo "$!" > "$work/mocks.pid" # this runs in the fault loop's subshell: the parent kills it
}
fault_log="$work/faults.log"
faults() {
  local t=0 kind=0
  while [ "$t" -lt "$DURATION" ]; do
    sleep "$FAULT_EVERY"; t=$((t + FAULT_EVERY))
    [ "$t" -lt "$DURATION" ] || break
    echo "$(date +%s) start ${kind}" >> "$fault_log"
    case $((kind % 3)) in
      0) behave POST '{"error_rate": 0.5}'; sleep "$FAULT_FOR"; behave DELETE ;;
      1) behave POST '{"stall": "200ms/1s"}'; sleep "$FAULT_FOR"; behave DELETE ;;
      2) restart_mocks ;;
    esac
    echo "$(date +%s) end ${kind}" >> "$fault_log"
    kind=$((kind + 1))
  done
}
faults &
fault_pid=$!; pids+=($fault_pid)

# breaker: gwbench_breaker_state of the gRPC upstream (0 closed, 1 open, 2 half-open), which
# the /secure load goes through.
printf "%6s %9s %5s %8s %9s %9s %7s\n" t rss_kib fds breaker checked wrong errors
start=$(date +%s)
while kill -0 "$load1" 2>/dev/null; do
  sleep "$SAMPLE"
  now=$(( $(date +%s) - start ))
  if ! kill -0 "$gw_pid" 2>/dev/null; then
    echo "the gateway exited; its last log lines:" >&2
    tail -n 20 "$work/g.out" >&2
    exit 1
  fi
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$gw_pid/status" 2>/dev/null || echo -)
  fds=$( (ls "/proc/$gw_pid/fd" 2>/dev/null || true) | wc -l)
  breaker=$( (curl -s -m 2 "http://$gwadm/metrics" || true) \
    | awk '/^gwbench_breaker_state\{upstream="grpc"\}/ {print $2}')
  read -r checked wrong errors < <(cat "$work/check.state" 2>/dev/null || echo "- - -") || true
  printf "%6s %9s %5s %8s %9s %9s %7s\n" "$now" "$rss" "$fds" "${breaker:--}" "$checked" "$wrong" "$errors"
done
wait "$load1" "$load2" 2>/dev/null || true
wait "$check" 2>/dev/null || true
echo "faults (epoch seconds):"; cat "$fault_log" 2>/dev/null || true
echo "checker, errors by second (epoch second, count):"
grep '^error ' "$work/check.log" | awk '{print $2}' | uniq -c | awk '{print "  " $2, $1}' | head -50
echo "wrong answers:"; grep -c '^wrong ' "$work/check.log" || true
echo "breaker (gateway log): opened $(grep -c 'circuit open' "$work/g.out" || true)," \
  "closed again $(grep -c 'circuit closed' "$work/g.out" || true)"
for side in proxy transcode; do
  python3 - "$work/load-$side.json" "$side" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
q = r["requests"]
bad = sum(q["http_errors"].values()) + sum(q["transport_errors"].values()) + q["timeouts"]
print(f"load {sys.argv[2]}: scheduled {q['scheduled']}, ok {q['ok']}, errors {bad}, "
      f"not sent {q['not_sent']}; corrected p99 {r['latency_ns']['corrected']['p99'] / 1e6:.2f} ms")
PY
done
