#!/usr/bin/env bash
# WebSocket: what the gateway's proxy costs per message beside nginx proxying the same echo, and
# what the translation to a gRPC bidi stream costs; then the generator's ceiling beside a
# closed-loop reference client (benches/ws_closed_loop.rs).
# Starts the mocks, the gateway and nginx (CPU 0; nginx's documented WebSocket proxying:
# proxy_http_version 1.1 and the Upgrade/Connection headers passed on), and loads from CPU 1:
#   direct echo (/ws/echo) | gateway proxy (/rest/ws/echo) | nginx proxy
#   direct SyncStock twin (/ws/inventory/sync) | gateway translation (/api/inventory/sync)
# At a constant rate (RPS messages/s over CONNS connections) and at saturation (--rps max over
# CONNS_SAT connections, each a closed loop with one message in flight). For each: p50/p99 and CPU µs per message
# of the middle process (/proc/PID/stat, children included). Runs alternate; medians printed.
#
#   bash benches/websocket.sh            # needs nginx: apt-get install -y nginx
#   RPS=5000 DURATION=5 ROUNDS=3 CONNS=8 bash benches/websocket.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RPS=${RPS:-5000}; DURATION=${DURATION:-5}; ROUNDS=${ROUNDS:-3}; CONNS=${CONNS:-8}; CONNS_SAT=${CONNS_SAT:-64}
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { echo "missing: nginx (apt-get install -y nginx)" >&2; exit 2; }
export PATH=$PATH:/usr/sbin
cargo build --release --quiet
cargo build --release --quiet --bench ws_closed_loop 2>/dev/null || true
GW=target/release/gwbench
. benches/lib.sh
start_stack
ngp=$(free_port)
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
  server {
    listen 127.0.0.1:$ngp;
    location /rest/ {
      proxy_pass http://127.0.0.1:$rest/;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      proxy_read_timeout 60s;
    }
  }
}
CONF
$srv nginx -c "$work/nginx.conf" -p "$work" &
ng_pid=$!; pids+=($ng_pid)
sleep 0.5
hz=$(getconf CLK_TCK)
ECHO='{"id":{seq},"event":"price","symbol":"GWB","bid":101.25,"ask":101.5}'
SYNC='{"productId":"{rand:1-1000}","warehouseId":"wh-fra-1","delta":1}'

run() { # name pid rate url message
  local name=$1 pid=$2 rate=$3 url=$4 msg=$5 before after conns=$CONNS
  [ "$rate" = max ] && conns=$CONNS_SAT
  before=$([ "$pid" = - ] && echo 0 || cpu_ticks "$pid")
  $gen "$GW" load "$url" --rps "$rate" -c "$conns" -d "${DURATION}s" --warmup 0s --data "$msg" --json -q > "$work/r.json" || true
  after=$([ "$pid" = - ] && echo 0 || cpu_ticks "$pid")
  python3 - "$work/r.json" "$name" "$before" "$after" "$hz" >> "$work/all.txt" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); name = sys.argv[2]
ticks = int(sys.argv[4]) - int(sys.argv[3]); hz = int(sys.argv[5])
ok = r["requests"]["ok"]
cpu_us = ticks / hz * 1e6 / ok if ticks and ok else float("nan")
c, s = r["latency_ns"]["corrected"], r["latency_ns"]["service"]
print(name, c["p50"], c["p99"], s["p50"], s["p99"], f"{cpu_us:.2f}", f"{r['achieved_rps']:.0f}",
      "ok" if ok == r["requests"]["scheduled"] else f"ERRORS({r['requests']['scheduled'] - ok})")
PY
}
for round in $(seq "$ROUNDS"); do
  run direct-echo - "$RPS" "ws://127.0.0.1:$rest/ws/echo" "$ECHO"
  run gateway-proxy "$gw_pid" "$RPS" "ws://127.0.0.1:$gwp/rest/ws/echo" "$ECHO"
  run nginx-proxy "$ng_pid" "$RPS" "ws://127.0.0.1:$ngp/rest/ws/echo" "$ECHO"
  run direct-sync - "$RPS" "ws://127.0.0.1:$rest/ws/inventory/sync" "$SYNC"
  run gateway-translate "$gw_pid" "$RPS" "ws://127.0.0.1:$gwp/api/inventory/sync" "$SYNC"
  run sat-gateway-proxy "$gw_pid" max "ws://127.0.0.1:$gwp/rest/ws/echo" "$ECHO"
  run sat-nginx-proxy "$ng_pid" max "ws://127.0.0.1:$ngp/rest/ws/echo" "$ECHO"
  run sat-direct-echo - max "ws://127.0.0.1:$rest/ws/echo" "$ECHO"
done
echo "medians of $ROUNDS rounds at $RPS messages/s over $CONNS connections (sat-*: --rps max over $CONNS_SAT), ${DURATION}s each"
python3 - "$work/all.txt" <<'PY'
import statistics, sys, math
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    rows.setdefault(f[0], []).append(f[1:])
def us(ns): return f"{float(ns)/1000:.0f}"
print(f"{'path':20} {'corr p50':>9} {'corr p99':>9} {'svc p50':>8} {'svc p99':>8} {'CPU us/msg':>11} {'msg/s':>8}  runs")
cpu = {}
for name, rs in rows.items():
    med = lambda i: statistics.median(float(r[i]) for r in rs)
    c = [float(r[4]) for r in rs if not math.isnan(float(r[4]))]
    cpu[name] = statistics.median(c) if c else float("nan")
    spread = f"{min(c):.2f}-{max(c):.2f}" if c else "-"
    print(f"{name:20} {us(med(0)):>9} {us(med(1)):>9} {us(med(2)):>8} {us(med(3)):>8} {cpu[name]:>11.2f} {med(5):>8.0f}  {' '.join(r[6] for r in rs)} (CPU spread {spread})")
for a, b in [("gateway-proxy", "nginx-proxy"), ("sat-gateway-proxy", "sat-nginx-proxy")]:
    if a in cpu and b in cpu:
        print(f"{a} / {b} CPU per message: {cpu[a] / cpu[b]:.2f}x")
PY
ref=$(ls -t target/release/deps/ws_closed_loop-* 2>/dev/null | grep -v '\.d$' | head -1 || true)
if [ -n "$ref" ]; then
  echo "generator ceiling (the mock's echo on CPU 0, client on CPU 1):"
  $gen "$GW" load "ws://127.0.0.1:$rest/ws/echo" --rps max -c "$CONNS" -d "${DURATION}s" --warmup 0s --data "$ECHO" --json -q \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); g=r["generator"]; print("  gwbench load --rps max: %.0f messages/s answered, %.2f us CPU per message" % (r["achieved_rps"], g["cpu_us_per_request"]))'
  $gen "$ref" "ws://127.0.0.1:$rest/ws/echo" "$CONNS" "$DURATION"
fi
