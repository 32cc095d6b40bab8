#!/usr/bin/env bash
# Where a proxy's CPU goes under load: starts the mocks and the gateway or nginx (CPU 0), loads
# one path at a constant rate from CPU 1, samples the proxy with `perf record` (software clock:
# this VM has no hardware counters) and, in a second run, counts its syscalls, context switches
# and CPU time with `perf stat`. Prints the top of the flat profile and the counts per request.
#
#   bash benches/profile.sh                     # gateway proxy route; needs perf (linux-perf)
#   PATH_KIND=transcode bash benches/profile.sh # or secure (JWT + rate limit + breaker), nginx
#   RPS=5000 DURATION=10 TOP=15 NO_BUILD=1 bash benches/profile.sh
#   PERF_OUT=/tmp/p.data bash benches/profile.sh   # keeps the samples (with call graphs)
#   CLOSED=50 bash benches/profile.sh           # at saturation: wrk -t1 -c50 (closed loop) instead
#                                               # of a constant rate; needs wrk
set -eu # not pipefail: `head` closing perf report's pipe is expected
cd "$(dirname "$0")/.."
RPS=${RPS:-5000}; DURATION=${DURATION:-10}; TOP=${TOP:-15}; PATH_KIND=${PATH_KIND:-proxy}
command -v perf >/dev/null || { echo "missing: perf (apt-get install -y linux-perf)" >&2; exit 2; }
[ "$PATH_KIND" != nginx ] || command -v nginx >/dev/null || { echo "missing: nginx (apt-get install -y nginx)" >&2; exit 2; }
[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet
GW=${GW:-target/release/gwbench} # GW=/path/to/other/build profiles that build
. benches/lib.sh
start_stack
pid=$gw_pid
if [ "$PATH_KIND" = nginx ]; then
  ngp=$(free_port)
  nginx_conf "$work" "$ngp" "$rest"
  $srv nginx -c "$work/nginx.conf" -p "$work" &
  pids+=($!); sleep 0.5
  pid=$(pgrep -P "$!") # the worker
fi
case $PATH_KIND in
  nginx) url="http://127.0.0.1:$ngp/rest/api/users/42" ;;
  proxy) url="http://127.0.0.1:$gwp/rest/api/users/42" ;;
  transcode) url="http://127.0.0.1:$gwp/api/users/42" ;;
  secure) url="http://127.0.0.1:$gwp/secure/api/users/42" ;;
  *) echo "PATH_KIND is proxy, transcode, secure or nginx" >&2; exit 2 ;;
esac
hdr=()
if [ "$PATH_KIND" = secure ]; then hdr=(-H "authorization: Bearer $($GW token --sub bench)"); fi
# Closed loop: the profilers below run for exactly wrk's run (a script they start), and the
# request count is wrk's.
closed() { bash "$work/closed.sh" "$1"; }
if [ -n "${CLOSED:-}" ]; then
  command -v wrk >/dev/null || { echo "missing: wrk (apt-get install -y wrk)" >&2; exit 2; }
  { printf 'exec '; printf '%q ' $gen wrk -t1 -c"$CLOSED" -d"$((DURATION - 1))s" "${hdr[@]}" "$url"
    printf '> %q/"$1".wrk\n' "$work"; } > "$work/closed.sh"
fi
load() { $gen "$GW" load "$url" "${hdr[@]}" --rps "$RPS" -c 16 -d "${DURATION}s" --warmup 1s -q --json > "$work/$1.json"; }

if [ -n "${CLOSED:-}" ]; then
  closed warm
  perf record -F 1999 -e cpu-clock ${CALLGRAPH:--g} -o "$work/perf.data" -p "$pid" -- bash "$work/closed.sh" perf > "$work/perf.log" 2>&1 || true
else
  load warm
  ( sleep 1.5; exec perf record -F 1999 -e cpu-clock ${CALLGRAPH:--g} -o "$work/perf.data" -p "$pid" -- sleep "$((DURATION - 1))" ) > "$work/perf.log" 2>&1 &
  load perf; wait $! || true
fi
[ -z "${PERF_OUT:-}" ] || cp "$work/perf.data" "$PERF_OUT" # kept for `perf report -g` by hand
report() { perf report -i "$work/perf.data" --no-children --stdio "$@" 2>/dev/null \
  | grep -E '^ +[0-9.]+%' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//'; }
rate="$RPS req/s"; [ -z "${CLOSED:-}" ] || rate="saturation (wrk -c$CLOSED)"
echo "== $PATH_KIND at $rate: the proxy's CPU samples by thread and by object (perf cpu-clock)"
report --sort comm | head -n 5
report --sort dso | head -n 5
echo "== top $TOP symbols (self time; [k] kernel, [.] user space; in a VM without a PMU, kernel"
echo "   samples pile up where interrupts are re-enabled: finish_task_switch, *_unlock_irq*)"
report --sort symbol --percent-limit 0.3 | head -n "$TOP"
echo "== top $TOP user-space symbols"
report --sort symbol --percent-limit 0.1 | grep -F '[.]' | head -n "$TOP"
echo "== user-space samples by crate (share of all samples)"
report --sort symbol --percent-limit 0 | grep -F "[.]" | python3 -c '
import re, sys, collections
by = collections.Counter()
for line in sys.stdin:
    pct, sym = line.split("[.]", 1); sym = sym.strip()
    m = re.match(r"^<?(?:<)?([a-z_][a-z0-9_]*)::", sym)
    by[m.group(1) if m else ("libc/malloc" if not "::" in sym else "other")] += float(pct.strip().rstrip("%"))
for k, v in by.most_common(12): print(f"  {v:6.2f}%  {k}")
'
events=raw_syscalls:sys_enter,context-switches,cpu-clock${EXTRA_EVENTS:+,$EXTRA_EVENTS}
if [ -n "${CLOSED:-}" ]; then
  perf stat -x, -e "$events" -o "$work/stat.txt" -p "$pid" -- bash "$work/closed.sh" stat > /dev/null 2>&1 || true
  n=$(awk '/requests in/ {print $1}' "$work/stat.wrk")
  echo "== per request (perf stat over wrk's $((DURATION - 1)) s: $n requests, $((n / (DURATION - 1))) req/s; $(grep -E 'Non-2xx|Socket errors' "$work/stat.wrk" || echo 'no errors'))"
else
  ( sleep 1.5; exec perf stat -x, -e "$events" -o "$work/stat.txt" -p "$pid" -- sleep "$((DURATION - 1))" ) > /dev/null 2>&1 &
  load stat || true; wait $! || true
  n=$((RPS * (DURATION - 1)))
  echo "== per request (perf stat over $((DURATION - 1)) s = $n requests at the offered rate)"
fi
awk -F, -v n="$n" '$3 == "raw_syscalls:sys_enter" {printf "syscalls          %6.2f\n", $1 / n}
  $3 ~ /context-switches/ {printf "context switches  %6.2f\n", $1 / n}
  $3 ~ /cpu-clock/ {printf "CPU µs            %6.2f\n", $1 * 1000 / n}
  $3 ~ /syscalls:sys_enter_/ {sub("syscalls:sys_enter_", "", $3); printf "  %-15s %6.2f\n", $3, $1 / n}' "$work/stat.txt"
