#!/usr/bin/env bash
# What the gateway core adds, side by side with nginx's proxy_pass, at a constant rate, and where
# each saturates.
# Starts the mocks (CPU 0), the gateway and nginx (CPU 0), and loads each path from CPU 1:
#   direct REST mock | gateway proxy route | nginx proxy_pass (1 worker, upstream keepalive)
#   direct gRPC mock | gateway REST->gRPC transcoding
# For each: corrected/service p50 and p99 (gwbench load), and CPU µs per request of the middle
# process (from /proc/PID/stat). Runs alternate in rounds; medians are printed. Then `gwbench
# saturate --target URL` finds the knee of the gateway's proxy route and of nginx's, with the
# same p99 objective (SAT_SLO), and the three ratios of the performance goal are printed.
#
#   bash benches/gateway.sh            # needs nginx: apt-get install -y nginx
#   RPS=5000 DURATION=5 ROUNDS=3 bash benches/gateway.sh
#   SAT=0 bash benches/gateway.sh      # without the saturation searches (about 2 minutes)
#   SAT_SLO=10ms bash benches/gateway.sh
#   GW_B=/tmp/gwbench-before bash benches/gateway.sh   # also a second gateway build, same runs
#                                                      # (before/after a change, back to back)
#   GW_B=target/release/gwbench GW_B_ARGS="--http1 hyper" bash benches/gateway.sh
#                                                      # this build with hyper serving HTTP/1.1
set -euo pipefail
cd "$(dirname "$0")/.."
RPS=${RPS:-5000}; DURATION=${DURATION:-5}; ROUNDS=${ROUNDS:-3}; CONNS=${CONNS:-16}
SAT=${SAT:-1}; SAT_SLO=${SAT_SLO:-10ms}
command -v nginx >/dev/null || { echo "missing: nginx (apt-get install -y nginx)" >&2; exit 2; }
cargo build --release --quiet
GW=target/release/gwbench
. benches/lib.sh
start_stack
ngp=$(free_port)
if [ -n "${GW_B:-}" ]; then
  gwbp=$(free_port); gwba=$(free_port)
  $srv "$GW_B" gateway --listen "127.0.0.1:$gwbp" --admin "127.0.0.1:$gwba" --threads 1 \
    --upstream-grpc "127.0.0.1:$grpc" --upstream-rest "127.0.0.1:$rest" ${GW_B_ARGS:-} > "$work/gb.out" 2>&1 &
  gwb_pid=$!; pids+=($gwb_pid)
fi
nginx_conf "$work" "$ngp" "$rest"
$srv nginx -c "$work/nginx.conf" -p "$work" &
ng_pid=$!; pids+=($ng_pid)
sleep 0.5
hz=$(getconf CLK_TCK)

run() { # name pid args...
  local name=$1 pid=$2; shift 2
  local before after
  before=$([ "$pid" = - ] && echo 0 || cpu_ticks "$pid")
  $gen "$GW" load "$@" --rps "$RPS" -c "$CONNS" -d "${DURATION}s" --warmup 1s --json -q > "$work/r.json"
  after=$([ "$pid" = - ] && echo 0 || cpu_ticks "$pid")
  python3 - "$work/r.json" "$name" "$before" "$after" "$hz" "$DURATION" >> "$work/all.txt" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); name = sys.argv[2]
ticks = int(sys.argv[4]) - int(sys.argv[3]); hz = int(sys.argv[5])
sent = r["requests"]["scheduled"] - r["requests"]["not_sent"]
# The CPU counter also covers the 1 s warm-up: scale it to the measured share of requests.
warm = r["offered_rps"] * 1.0
cpu_us = ticks / hz * 1e6 / (sent + warm) if ticks else float("nan")
c, s = r["latency_ns"]["corrected"], r["latency_ns"]["service"]
ok = r["requests"]["ok"] == r["requests"]["scheduled"]
print(name, c["p50"], c["p99"], s["p50"], s["p99"], f"{cpu_us:.2f}", "ok" if ok else "ERRORS")
PY
}
for round in $(seq "$ROUNDS"); do
  run direct-rest - "http://127.0.0.1:$rest/api/users/42"
  run gateway-proxy "$gw_pid" "http://127.0.0.1:$gwp/rest/api/users/42"
  run nginx-proxy "$ng_pid" "http://127.0.0.1:$ngp/rest/api/users/42"
  run direct-grpc - "http://127.0.0.1:$grpc" --grpc gwbench.v1.UserService/GetUser --data '{"id": 42}'
  run gateway-transcode "$gw_pid" "http://127.0.0.1:$gwp/api/users/42"
  if [ -n "${GW_B:-}" ]; then
    run b-gateway-proxy "$gwb_pid" "http://127.0.0.1:$gwbp/rest/api/users/42"
    run b-gateway-transcode "$gwb_pid" "http://127.0.0.1:$gwbp/api/users/42"
  fi
done
if [ "$SAT" != 0 ]; then
  for side in gateway nginx; do
    port=$([ $side = gateway ] && echo "$gwp" || echo "$ngp")
    $gen "$GW" saturate --target "http://127.0.0.1:$port/rest/api/users/42" --slo-p99 "$SAT_SLO" \
      -q --out "$work/sat-$side" > "$work/sat-$side.txt"
  done
fi
echo "rate $RPS req/s, $CONNS connections, ${DURATION}s x $ROUNDS rounds; servers on CPU 0, generator on CPU 1"
echo "gateway RSS: $(awk '/VmRSS/ {print $2, $3}' /proc/$gw_pid/status)"
python3 - "$work/all.txt" "$work" "$SAT_SLO" "$RPS" <<'PY'
import statistics, sys, collections, json, os
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    f = line.split(); rows[f[0]].append(f[1:])
med = lambda xs: statistics.median(float(x) for x in xs)
m = {k: [med(col) for col in list(zip(*v))[:5]] + [" ".join(sorted(set(x[5] for x in v)))] for k, v in rows.items()}
print(f"{'path':<18} {'corr p50':>9} {'corr p99':>9} {'svc p50':>9} {'svc p99':>9} {'CPU us/req':>10}")
for k, v in m.items():
    print(f"{k:<18} {v[0]/1e3:>8.0f}u {v[1]/1e3:>8.0f}u {v[2]/1e3:>8.0f}u {v[3]/1e3:>8.0f}u {v[4]:>10.2f} {v[5]}")
def add(a, b, i): return (m[a][i] - m[b][i]) / 1e3
print(f"proxy added:     p50 {add('gateway-proxy','direct-rest',2):.0f} us, p99 {add('gateway-proxy','direct-rest',3):.0f} us (service time)")
print(f"nginx added:     p50 {add('nginx-proxy','direct-rest',2):.0f} us, p99 {add('nginx-proxy','direct-rest',3):.0f} us")
print(f"transcode added: p50 {add('gateway-transcode','direct-grpc',2):.0f} us, p99 {add('gateway-transcode','direct-grpc',3):.0f} us")
print(f"CPU per request: gateway proxy / nginx = {m['gateway-proxy'][4]/m['nginx-proxy'][4]:.2f}x, "
      f"gateway transcode / nginx = {m['gateway-transcode'][4]/m['nginx-proxy'][4]:.2f}x")
print("the performance goal (CPU per request at saturation: benches/serving.sh):")
gp50, np50 = add('gateway-proxy','direct-rest',2), add('nginx-proxy','direct-rest',2)
gp99, np99 = add('gateway-proxy','direct-rest',3), add('nginx-proxy','direct-rest',3)
met = lambda ok: "met" if ok else "missed"
print(f"  1. added p50 at {sys.argv[4]} req/s, gateway proxy vs nginx: {gp50:.0f} vs {np50:.0f} us "
      f"(goal <= nginx + 10 us: {met(gp50 <= np50 + 10)})")
print(f"  2. added p99, gateway proxy vs nginx: {gp99:.0f} vs {np99:.0f} us (goal <= nginx + 100 us: {met(gp99 <= np99 + 100)})")
knees = {}
for side in ("gateway", "nginx"):
    f = os.path.join(sys.argv[2], f"sat-{side}", "summary.json")
    if os.path.exists(f):
        srch = json.load(open(f))["searches"][0]
        knees[side] = (srch.get("knee_rps"), srch.get("generator_limited"))
if len(knees) == 2 and all(k[0] for k in knees.values()):
    (g, gl), (n, nl) = knees["gateway"], knees["nginx"]
    lim = " (a lower bound: the generator ran out)" if gl or nl else ""
    print(f"  3. saturation knee (p99 <= {sys.argv[3]}), gateway / nginx = {g:.0f} / {n:.0f} req/s = {g/n:.2f}x (goal >= 1.0x){lim}")
elif knees:
    print(f"  3. saturation: no knee found for one side: {knees}")
else:
    print("  3. saturation: not measured (SAT=0)")
if 'b-gateway-proxy' in m:
    print(f"this build / GW_B, CPU per request: proxy {m['gateway-proxy'][4]/m['b-gateway-proxy'][4]:.2f}x, "
          f"transcode {m['gateway-transcode'][4]/m['b-gateway-transcode'][4]:.2f}x")
PY
