#!/usr/bin/env bash
# Where the gateway's CPU goes under load: starts the mocks and the gateway (CPU 0), loads one
# path at a constant rate from CPU 1, and samples the gateway with `perf record` (software clock:
# this VM has no hardware counters) and, in a second run, counts its syscalls with `strace -c`.
# Prints the top entries of the flat profile and the syscalls per request.
#
#   bash benches/profile.sh                 # proxy route; needs perf (linux-perf) and strace
#   PATH_KIND=transcode bash benches/profile.sh
#   RPS=5000 DURATION=10 TOP=15 bash benches/profile.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RPS=${RPS:-5000}; DURATION=${DURATION:-10}; TOP=${TOP:-15}; PATH_KIND=${PATH_KIND:-proxy}
for tool in perf strace; do
  command -v $tool >/dev/null || { echo "missing: $tool (apt-get install -y linux-perf strace)" >&2; exit 2; }
done
[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet
GW=target/release/gwbench
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
srv="taskset -c 0"; gen="taskset -c 1"
[ "$(nproc)" -ge 2 ] || { srv=""; gen=""; }
rest=$(free_port); grpc=$(free_port); adm=$(free_port); gwp=$(free_port); gwa=$(free_port)
$srv $GW backends --rest-port "$rest" --grpc-port "$grpc" --admin-port "$adm" --threads 1 > "$work/b.out" 2>&1 &
pids+=($!)
$srv $GW gateway --listen "127.0.0.1:$gwp" --admin "127.0.0.1:$gwa" --threads 1 \
  --upstream-grpc "127.0.0.1:$grpc" --upstream-rest "127.0.0.1:$rest" > "$work/g.out" 2>&1 &
gw_pid=$!; pids+=($gw_pid)
for _ in $(seq 100); do grep -q "ready admin" "$work/g.out" 2>/dev/null && break; sleep 0.1; done
case $PATH_KIND in
  proxy) url="http://127.0.0.1:$gwp/rest/api/users/42" ;;
  transcode) url="http://127.0.0.1:$gwp/api/users/42" ;;
  secure) url="http://127.0.0.1:$gwp/secure/api/users/42" ;;
  *) echo "PATH_KIND is proxy, transcode or secure" >&2; exit 2 ;;
esac
hdr=()
if [ "$PATH_KIND" = secure ]; then hdr=(-H "authorization: Bearer $($GW token --sub bench)"); fi
load() { $gen "$GW" load "$url" "${hdr[@]}" --rps "$RPS" -c 16 -d "${DURATION}s" --warmup 1s -q --json > "$work/$1.json"; }

load warm
( sleep 1.5; exec perf record -F 1999 -e cpu-clock -g -o "$work/perf.data" -p "$gw_pid" -- sleep "$((DURATION - 1))" ) > "$work/perf.log" 2>&1 &
load perf; wait $! || true
report() { perf report -i "$work/perf.data" --no-children --stdio "$@" 2>/dev/null \
  | grep -E '^ +[0-9.]+%' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//'; }
echo "== $PATH_KIND at $RPS req/s: the gateway's CPU samples by thread and by object (perf cpu-clock)"
report --sort comm | head -n 5
report --sort dso | head -n 5
echo "== top $TOP symbols (self time; [k] kernel, [.] user space; in a VM without a PMU, kernel"
echo "   samples pile up where interrupts are re-enabled: finish_task_switch, *_unlock_irq*)"
report --sort symbol --percent-limit 0.3 | head -n "$TOP"
echo "== top $TOP user-space symbols"
report --sort symbol --percent-limit 0.1 | grep -F '[.]' | head -n "$TOP"
( sleep 1.5; exec timeout "$((DURATION - 1))" strace -c -f -p "$(ls /proc/$gw_pid/task | paste -sd,)" -o "$work/strace.txt" ) > /dev/null 2>&1 &
load strace || true; wait $! || true
n=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["requests"]["ok"] * (int(sys.argv[2]) - 1) / int(sys.argv[2]))' "$work/strace.json" "$DURATION")
echo "== syscalls per request (strace -c, ~$n requests; strace itself slows the gateway)"
awk -v n="$n" '!/total/ && /^ *[0-9.]+ +[0-9.]+ +[0-9]+ +[0-9]+/ {printf "%-16s %6.2f\n", $NF, $4 / n} /total/ {printf "%-16s %6.2f\n", "total", $4 / n}' "$work/strace.txt"
