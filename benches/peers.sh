#!/usr/bin/env bash
# Side-by-side: gwbench load vs wrk against nginx (one worker, small body) on 127.0.0.1.
# Prints closed-loop throughput (median of N alternating runs) and CPU per request, constant-rate
# accuracy and lag at several rates, and generator RSS growth over a long run.
#
#   bash benches/peers.sh            # needs nginx and wrk: apt-get install -y nginx wrk
#   RUNS=5 DURATION=5 CONNS=16 LONG=60 bash benches/peers.sh
#
# nginx is pinned to CPU 0 and the generators to CPU 1 (when the machine has 2+ cores), so that
# the two do not compete for one core. Everything runs on loopback and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
DURATION=${DURATION:-5}
CONNS=${CONNS:-16}
LONG=${LONG:-60}
RATES=${RATES:-"5000 20000 50000"}

for tool in nginx wrk python3; do
  command -v "$tool" >/dev/null || { echo "missing: $tool (apt-get install -y nginx wrk)" >&2; exit 2; }
done
cargo build --release --quiet
GW=target/release/gwbench

work=$(mktemp -d)
. benches/lib.sh
port=$(free_port)
nginx_conf "$work" "$port"
pin_server=""; pin_gen=""
if [ "$(nproc)" -ge 2 ]; then pin_server="taskset -c 0"; pin_gen="taskset -c 1"; fi
$pin_server nginx -c "$work/nginx.conf" -p "$work" &
nginx_pid=$!
trap 'kill $nginx_pid 2>/dev/null || true; wait $nginx_pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 50); do python3 -c "import socket; socket.create_connection(('127.0.0.1',$port))" 2>/dev/null && break; sleep 0.1; done
url="http://127.0.0.1:$port/"
echo "nginx 1 worker on $url; generators: 1 thread, $CONNS connections, ${DURATION}s runs; pinning: ${pin_gen:-none}"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"

# Runs a command, prints "<requests/s> <cpu seconds>" (CPU = user + sys of the child).
cpu_of() { # file with "real user sys" from bash time
  awk '{print $2 + $3}' "$1"
}
wrk_run() {
  local out t
  out=$( { TIMEFORMAT='%R %U %S'; time $pin_gen wrk -t1 -c"$CONNS" -d"${DURATION}s" "$url" > "$work/wrk.out"; } 2> "$work/wrk.time" )
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.out")
  reqs=$(awk '/requests in/ {print $1}' "$work/wrk.out")
  echo "$rps $(cpu_of "$work/wrk.time") $reqs"
}
gw_run() {
  { TIMEFORMAT='%R %U %S'; time $pin_gen "$GW" load "$url" --rps max -c "$CONNS" -t 1 -d "${DURATION}s" --warmup 0s --json -q > "$work/gw.json"; } 2> "$work/gw.time"
  python3 - "$work/gw.json" "$(cpu_of "$work/gw.time")" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(r["achieved_rps"], sys.argv[2], r["requests"]["ok"])
PY
}

echo
echo "== closed loop (--rps max vs wrk -t1), $RUNS alternating runs =="
: > "$work/wrk.all"; : > "$work/gw.all"
for i in $(seq "$RUNS"); do
  w=$(wrk_run); g=$(gw_run)
  echo "run $i: wrk $w | gwbench $g   (rps cpu_s requests)"
  echo "$w" >> "$work/wrk.all"; echo "$g" >> "$work/gw.all"
done
python3 - "$work/wrk.all" "$work/gw.all" <<'PY'
import statistics, sys
def load(p):
    rows = [list(map(float, l.split())) for l in open(p) if l.strip()]
    rps = statistics.median(r[0] for r in rows)
    cpu_us = statistics.median(r[1] / r[2] * 1e6 for r in rows)
    return rps, cpu_us
w, g = load(sys.argv[1]), load(sys.argv[2])
print(f"median req/s: wrk {w[0]:.0f}, gwbench {g[0]:.0f}, ratio gwbench/wrk {g[0]/w[0]:.3f}")
print(f"median CPU per request (user+sys of the whole process): wrk {w[1]:.2f} us, gwbench {g[1]:.2f} us, ratio {g[1]/w[1]:.3f}")
PY

echo
echo "== constant rate: achieved vs offered, generator lag =="
for rate in $RATES; do
  $pin_gen "$GW" load "$url" --rps "$rate" -c "$CONNS" -t 1 -d "${DURATION}s" --warmup 1s --json -q > "$work/rate.json" || true
  python3 - "$work/rate.json" "$rate" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); off = float(sys.argv[2]); q = r["requests"]
lag = r["latency_ns"]["lag"]; cor = r["latency_ns"]["corrected"]
print(f"offered {off:>7.0f}/s achieved {r['achieved_rps']:>9.1f}/s ({100*r['achieved_rps']/off:6.2f}%) "
      f"ok {q['ok']} not_sent {q['not_sent']} lag p50 {lag['p50']/1e3:.0f}us p99 {lag['p99']/1e3:.0f}us "
      f"corrected p50 {cor['p50']/1e3:.0f}us p99 {cor['p99']/1e3:.0f}us cpu {r['generator']['cpu_us_per_request']:.2f}us/req")
PY
done

echo
echo "== memory: generator RSS after 10 s and at the end of a ${LONG} s run at 5000/s =="
$pin_gen "$GW" load "$url" --rps 5000 -c "$CONNS" -d "${LONG}s" --warmup 0s -q > /dev/null &
gw_pid=$!
sleep 10; rss10=$(awk '/VmRSS/ {print $2}' /proc/$gw_pid/status)
sleep $((LONG - 11)); rss_end=$(awk '/VmRSS/ {print $2}' /proc/$gw_pid/status)
wait $gw_pid
python3 -c "a,b=$rss10,$rss_end; print(f'RSS at 10 s {a} KiB, at {$LONG - 1} s {b} KiB, growth {100*(b-a)/a:.1f}%')"
