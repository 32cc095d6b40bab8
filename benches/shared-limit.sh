#!/usr/bin/env bash
# Two gateway instances sharing one allowance through a real Redis: one key
# ("sub:bench", rate RATE/s, burst BURST) is loaded through both instances at once, each at
# OFFER req/s (together above the allowance), for DURATION seconds. Prints what each instance
# let through, the total, and the total against what one allowance admits (RATE x DURATION +
# BURST). Needs redis-server (apt-get install -y redis-server).
#
#   bash benches/shared-limit.sh
#   RATE=500 BURST=50 OFFER=400 DURATION=10 bash benches/shared-limit.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-200}; BURST=${BURST:-20}; OFFER=${OFFER:-300}; DURATION=${DURATION:-10}
command -v redis-server >/dev/null || { echo "missing: redis-server (apt-get install -y redis-server)" >&2; exit 2; }
[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet
GW=target/release/gwbench
. benches/lib.sh
start_stack
kill "$gw_pid" 2>/dev/null || true
rp=$(free_port)
redis-server --port "$rp" --bind 127.0.0.1 --save "" --appendonly no > "$work/redis.out" 2>&1 &
pids+=($!)
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/"$rp") 2>/dev/null && break; sleep 0.1; done
"$GW" gateway --print-default-config | sed \
  -e 's/^store = "local".*/store = "redis"/' \
  -e "s|^# \[rate_limit.redis\].*|[rate_limit.redis]\nurl = \"redis://127.0.0.1:$rp\"\ninstances = 2|" \
  -e 's/^# \[\[rate_limit.overrides\]\].*/[[rate_limit.overrides]]/' \
  -e 's/^# key = "key:partner-1"/key = "sub:bench"/' \
  -e "s/^# rate = 500/rate = $RATE/" -e "s/^# burst = 50/burst = $BURST/" > "$work/gw.toml"
ports=()
for i in 0 1; do
  p=$(free_port); a=$(free_port)
  $srv "$GW" gateway --config "$work/gw.toml" --listen "127.0.0.1:$p" --admin "127.0.0.1:$a" --threads 1 \
    --upstream-grpc "127.0.0.1:$grpc" --upstream-rest "127.0.0.1:$rest" > "$work/gw$i.out" 2>&1 &
  pids+=($!); ports+=("$p")
  for _ in $(seq 100); do grep -q "ready admin" "$work/gw$i.out" 2>/dev/null && break; sleep 0.1; done
done
token=$("$GW" token --sub bench)
for i in 0 1; do
  $gen "$GW" load "http://127.0.0.1:${ports[$i]}/secure/api/users/42" -H "authorization: Bearer $token" \
    --rps "$OFFER" --duration "${DURATION}s" --warmup 0s -c 8 --json -q > "$work/load$i.json" &
  pids+=($!)
done
wait "${pids[-1]}" "${pids[-2]}" || true
python3 - "$work" "$RATE" "$BURST" "$DURATION" "$OFFER" <<'PY'
import json, sys
work, rate, burst, dur, offer = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
ok = []
for i in (0, 1):
    r = json.load(open(f"{work}/load{i}.json"))
    q = r["requests"]
    ok.append(q["ok"])
    print(f"instance {i}: {q['scheduled']} sent at {offer}/s, {q['ok']} allowed, "
          f"{q['http_errors'].get('429', 0)} refused (429), other errors "
          f"{sum(v for k, v in q['http_errors'].items() if k != '429') + sum(q['transport_errors'].values())}")
want = rate * dur + burst
print(f"together: {sum(ok)} allowed; one allowance admits {rate}/s x {dur:.0f} s + {burst} = {want:.0f}; "
      f"ratio {sum(ok) / want:.3f}")
PY
