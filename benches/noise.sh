#!/usr/bin/env bash
# compare's two methods, duet and rounds, on a quiet machine and under injected noise: a seeded
# CPU burner (benches/noise_burner.py: bursts of 2-6 ms every 20-60 ms) on the servers' core
# (CPU 0) and one on the generator's (CPU 1). Runs, per condition and method, `compare` of the
# rest, grpc and full scenarios at RPS (compare's --rps: a duet's total, half a side), and the nginx check: `compare --gateway-url` an nginx
# proxy_pass in front of the REST mock at NGINX_RPS, beside benches/paced_reference.py (one
# keep-alive connection a side, paced, sides alternated in blocks) on the quiet machine. Prints
# one table: each p50 overhead (service time) with its interval and its width, and the width
# ratio rounds / duet under noise. Every run's report stays in OUT (default
# reports/<UTC time>-noise); a run that fails is said and skipped.
#
#   bash benches/noise.sh                 # about 15 minutes on 2 cores
#   RPS=5000 NGINX_RPS=3000 SEED=1 METHODS="duet rounds" CONDITIONS="quiet noisy" bash benches/noise.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
command -v nginx > /dev/null || { echo "noise.sh: needs nginx (apt-get install nginx)" >&2; exit 2; }
[ "$(nproc)" -ge 2 ] || { echo "noise.sh: needs 2 cores (servers on CPU 0, generator on CPU 1)" >&2; exit 2; }
RPS=${RPS:-5000}; NGINX_RPS=${NGINX_RPS:-3000}; SEED=${SEED:-1}
METHODS=${METHODS:-duet rounds}; CONDITIONS=${CONDITIONS:-quiet noisy}
cargo build --release --quiet
GW=target/release/gwbench
work=$(mktemp -d); pids=(); trap cleanup EXIT
out=${OUT:-reports/$(date -u +%Y%m%dT%H%M%SZ)-noise}; mkdir -p "$out"

# The nginx check's servers: the REST mock and nginx proxying /rest/ to it, on CPU 0.
rest=$(free_port); grpc=$(free_port); adm=$(free_port); ngp=$(free_port)
taskset -c 0 "$GW" backends --rest-port "$rest" --grpc-port "$grpc" --admin-port "$adm" --threads 1 \
  > "$work/b.out" 2>&1 &
pids+=($!)
nginx_conf "$work" "$ngp" "$rest"
taskset -c 0 nginx -c "$work/nginx.conf" -p "$work" > /dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$ngp/rest/api/users/42" > /dev/null 2>&1 && break; sleep 0.1
done
direct="http://127.0.0.1:$rest/api/users/42"; via="http://127.0.0.1:$ngp/rest/api/users/42"

burners=()
noise_on() {
  taskset -c 0 python3 benches/noise_burner.py --seed "$SEED" & burners+=($!)
  taskset -c 1 python3 benches/noise_burner.py --seed "$((SEED + 1))" & burners+=($!)
  pids+=("${burners[@]}")
}
noise_off() { for p in "${burners[@]}"; do kill "$p" 2>/dev/null || true; done; burners=(); }

for cond in $CONDITIONS; do
  [ "$cond" = noisy ] && noise_on
  if [ "$cond" = quiet ]; then
    taskset -c 1 python3 benches/paced_reference.py "$direct" "$via" --rate 1000 --seconds 60 \
      --json > "$out/reference.json"
  fi
  for m in $METHODS; do
    echo "$cond, $m: compare --rps $RPS, then the nginx check at $NGINX_RPS" >&2
    "$GW" compare --method "$m" --rps "$RPS" --scenarios rest,grpc,full --quiet \
      --out "$out/$cond-$m" > "$out/$cond-$m.txt" 2>&1 || echo "  failed: $out/$cond-$m.txt" >&2
    taskset -c 1 "$GW" compare --method "$m" --rps "$NGINX_RPS" --gateway-url "$via" \
      --direct-url "$direct" --quiet --out "$out/$cond-$m-nginx" > "$out/$cond-$m-nginx.txt" 2>&1 \
      || echo "  failed: $out/$cond-$m-nginx.txt" >&2
  done
  [ "$cond" = noisy ] && noise_off
done

python3 - "$out" "$CONDITIONS" "$METHODS" "$RPS" "$NGINX_RPS" <<'PY'
import json, os, sys
work, conds, methods, rps, nrps = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4], sys.argv[5]
us = lambda ns: f"{ns / 1e3:+.1f}" if ns == ns else "-"
def row(path, scenario):
    s = json.load(open(f"{path}/summary.json"))
    for sc in s["scenarios"]:
        if sc["name"] == scenario or scenario is None:
            return sc["ci_ns"]["service"]["overhead"]["p50"], s["noise_floor"]
    return None, None
width = {}
print(f"p50 overhead, service time, µs [95 % interval] (width); compare --rps {rps}, nginx check --rps {nrps}")
print("| scenario | condition | method | overhead | width | verdict | A/A floor p50 |")
print("|---|---|---|---|---|---|---|")
for sc in ["rest", "grpc", "full", "nginx"]:
    for c in conds:
        for m in methods:
            path = f"{work}/{c}-{m}" + ("-nginx" if sc == "nginx" else "")
            if not os.path.exists(f"{path}/summary.json"):
                continue
            o, floor = row(path, None if sc == "nginx" else sc)
            lo, hi = o.get("lo"), o.get("hi")
            w = (hi - lo) if lo is not None and hi is not None else float("nan")
            width[(sc, c, m)] = w
            f = floor["floor_ns"].get("service", {}).get("p50") if floor and floor.get("floor_ns") else None
            verdict = "number" if o.get("distinguishable") else ("too short" if o.get("too_short") else "~0")
            print(f"| {sc} | {c} | {m} | {us(o['value'])} [{us(lo if lo is not None else float('nan'))}, "
                  f"{us(hi if hi is not None else float('nan'))}] | {w / 1e3:.1f} | {verdict} | "
                  f"{'±%.1f' % (f / 1e3) if f else '-'} |")
print()
for sc in ["rest", "grpc", "full", "nginx"]:
    for c in conds:
        if (sc, c, "duet") in width and (sc, c, "rounds") in width and width[(sc, c, "duet")] > 0:
            print(f"{sc}, {c}: interval width rounds / duet = {width[(sc, c, 'rounds')] / width[(sc, c, 'duet')]:.2f}")
ref = f"{work}/reference.json"
if os.path.exists(ref):
    r = json.load(open(ref))
    print(f"\npaced reference (nginx vs the mock, 1 connection a side, {r['rate_per_side']:.0f} req/s, "
          f"{r['pairs']} block pairs, quiet): {r['overhead_p50_ns'] / 1e3:+.1f} µs "
          f"[{r['overhead_p50_lo_ns'] / 1e3:+.1f}, {r['overhead_p50_hi_ns'] / 1e3:+.1f}]")
print(f"\ncommand: bash benches/noise.sh (RPS={rps} NGINX_RPS={nrps}); reports in {work}")
PY
