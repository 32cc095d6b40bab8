#!/usr/bin/env bash
# Side-by-side: gwbench load vs wrk against nginx (one worker, small body) on 127.0.0.1.
# Prints closed-loop throughput (median of N alternating runs) and CPU per request, constant-rate
# accuracy and lag at several rates, and generator RSS growth over a long run.
#
#   bash benches/peers.sh            # needs nginx and wrk: apt-get install -y nginx wrk
#   RUNS=5 DURATION=5 CONNS=16 LONG=60 bash benches/peers.sh
#   CR_RPS=5000 CR_DURATION=30 ...   # the constant-rate comparison beside oha (installed if missing)
#
# nginx is pinned to CPU 0 and the generators to CPU 1 (when the machine has 2+ cores), so that
# the two do not compete for one core. Everything runs on loopback and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
DURATION=${DURATION:-5}
CONNS=${CONNS:-16}
LONG=${LONG:-60}
[ "$LONG" -ge 12 ] || { echo "peers.sh: LONG must be at least 12 (seconds; RSS is read at 10 s and at LONG - 1)" >&2; exit 2; }
RATES=${RATES:-"5000 20000 50000"}
CR_RPS=${CR_RPS:-5000}
CR_DURATION=${CR_DURATION:-30}

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

# nginx's worker's CPU so far, in clock ticks (utime + stime).
server_ticks() {
  local w; w=$(pgrep -P "$nginx_pid" | head -1)
  awk '{print $14 + $15}' "/proc/${w:-$nginx_pid}/stat"
}

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
echo "== constant rate beside oha: ${CR_RPS}/s, $CONNS connections, ${CR_DURATION}s, $RUNS alternating runs =="
# oha is a benchmark-script dependency only: installed here when missing (not for the tests).
OHA=$(command -v oha || echo "$HOME/.cargo/bin/oha")
if [ ! -x "$OHA" ]; then cargo install oha --locked --quiet || true; fi
if [ -x "$OHA" ]; then
  : > "$work/cr.all"
  for i in $(seq "$RUNS"); do
    # Both generators' CPU measured the same way, from outside: the process's user + system
    # time over the whole run (no warm-up for either), per request it completed.
    # The server's CPU too (its worker's utime + stime, clock ticks): a generator whose every
    # answer wakes it makes the server pay for that wake-up.
    n0=$(server_ticks)
    { TIMEFORMAT='%R %U %S'; time $pin_gen "$GW" load "$url" --rps "$CR_RPS" -c "$CONNS" -t 1 -d "${CR_DURATION}s" --warmup 0s --json -q > "$work/cr.json"; } 2> "$work/gw.time"
    n1=$(server_ticks)
    { TIMEFORMAT='%R %U %S'; time $pin_gen "$OHA" -q "$CR_RPS" -z "${CR_DURATION}s" -c "$CONNS" --latency-correction --no-tui "$url" > "$work/oha.out"; } 2> "$work/oha.time"
    n2=$(server_ticks)
    # gwbench again at oha's own send pattern (its 1 ms timer sends CR_RPS/1000 at each tick),
    # to tell the generator's cost from the cost of pacing each request on its own.
    { TIMEFORMAT='%R %U %S'; time $pin_gen "$GW" load "$url" --burst "$((CR_RPS / 1000))/1ms" -c "$CONNS" -t 1 -d "${CR_DURATION}s" --warmup 0s --json -q > "$work/crb.json"; } 2> "$work/gwb.time"
    gwb_us=$(python3 -c "import json,sys; r=json.load(open('$work/crb.json')); print($(cpu_of "$work/gwb.time") * 1e6 / max(r['achieved_rps'] * r['duration_s'], 1))")
    python3 - "$work/cr.json" "$work/oha.out" "$(cpu_of "$work/oha.time")" "$CR_RPS" "$CR_DURATION" "$(cpu_of "$work/gw.time")" $((n1 - n0)) $((n2 - n1)) "$gwb_us" >> "$work/cr.all" <<'PY'
import json, os, re, sys
r = json.load(open(sys.argv[1])); text = open(sys.argv[2]).read()
def secs(label):
    m = re.search(label + r" in ([0-9.]+) (secs?|ms)", text)
    return float(m.group(1)) * (1e6 if m.group(2).startswith("sec") else 1e3)
oha_rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", text).group(1))
oha_us = float(sys.argv[3]) * 1e6 / max(oha_rps * float(sys.argv[5]), 1)
gw_us = float(sys.argv[6]) * 1e6 / max(r["achieved_rps"] * r["duration_s"], 1)
lat = r["latency_ns"]
hz = os.sysconf("SC_CLK_TCK")
gw_n = r["achieved_rps"] * r["duration_s"]
srv_gw = int(sys.argv[7]) / hz * 1e6 / max(gw_n, 1)
srv_oha = int(sys.argv[8]) / hz * 1e6 / max(oha_rps * float(sys.argv[5]), 1)
wake = (r["generator"].get("wakeups") or 0) / max(gw_n, 1)
print(gw_us, lat["lag"]["p99"] / 1e3, lat["corrected"]["p99"] / 1e3, oha_us, secs("99.00%"),
      lat["corrected"]["p50"] / 1e3, secs("50.00%"), srv_gw, srv_oha, wake, lat["lag"]["p50"] / 1e3,
      float(sys.argv[9]))
PY
    echo "run $i: $(tail -1 "$work/cr.all")   (gwbench us/req, lag p99 us, corrected p99 us | oha us/req, p99 us | gwbench p50, oha p50 us | nginx us/req under gwbench, under oha | gwbench wake-ups/req, lag p50 us | gwbench us/req at oha's pattern)"
  done
  python3 - "$work/cr.all" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
col = lambda k: [r[k] for r in rows]
g, lag, gp99, o, op99, gp50, op50, sg, so, wake, lag50, gb = (statistics.median(col(k)) for k in range(12))
print(f"median CPU per request (process time, measured alike): gwbench {g:.1f} us (runs {min(col(0)):.1f}..{max(col(0)):.1f}), "
      f"oha {o:.1f} us (runs {min(col(3)):.1f}..{max(col(3)):.1f}); gwbench/oha {g/o:.2f}")
print(f"median p99: gwbench corrected {gp99:.0f} us (generator lag p99 {lag:.0f} us), oha (latency-corrected) {op99:.0f} us")
print(f"median p50: gwbench corrected {gp50:.1f} us, oha {op50:.1f} us; gwbench send lag p50 {lag50:.1f} us")
print(f"median server (nginx) CPU per request: under gwbench {sg:.1f} us (runs {min(col(7)):.1f}..{max(col(7)):.1f}), "
      f"under oha {so:.1f} us (runs {min(col(8)):.1f}..{max(col(8)):.1f}); gwbench wake-ups per request {wake:.2f}")
print(f"median CPU per request at oha's send pattern (--burst, a 1 ms tick): gwbench {gb:.1f} us (runs {min(col(11)):.1f}..{max(col(11)):.1f}), "
      f"gwbench/oha {gb/o:.2f}")
PY
else
  echo "oha is not installed and could not be installed (cargo install oha): skipped"
fi

echo
echo "== memory: generator RSS after 10 s and at the end of a ${LONG} s run at 5000/s =="
$pin_gen "$GW" load "$url" --rps 5000 -c "$CONNS" -d "${LONG}s" --warmup 0s -q > /dev/null &
gw_pid=$!
sleep 10; rss10=$(awk '/VmRSS/ {print $2}' /proc/$gw_pid/status)
sleep $((LONG - 11)); rss_end=$(awk '/VmRSS/ {print $2}' /proc/$gw_pid/status)
wait $gw_pid
python3 -c "a,b=$rss10,$rss_end; print(f'RSS at 10 s {a} KiB, at {$LONG - 1} s {b} KiB, growth {100*(b-a)/a:.1f}%')"
