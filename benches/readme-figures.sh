#!/usr/bin/env bash
# The README's compare figures, measured: runs the README's main command (`compare --rps 5000`,
# defaults otherwise) RUNS times in a row and prints, per run, the sentences the README uses,
# then how the runs agree. Paste the output over the README's "Measured on ..." paragraph.
#
#   bash benches/readme-figures.sh          # 2 runs, about 4 minutes
#   RUNS=3 RPS=5000 bash benches/readme-figures.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-2}; RPS=${RPS:-5000}
cargo build --release --quiet
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
for i in $(seq "$RUNS"); do
  target/release/gwbench compare --rps "$RPS" --quiet --out "$work/run$i" > "$work/run$i.txt"
  if grep -q WARNING "$work/run$i.txt"; then echo "run $i: generator warnings:"; grep WARNING "$work/run$i.txt"; fi
done
python3 - "$work" "$RUNS" "$RPS" <<'PY'
import json, sys
work, runs, rps = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def us(ns): return f"{ns/1e3:.0f} µs"
def over(o):
    if o["distinguishable"]:
        return f"+{us(o['value'])} [{us(o['lo'])}, {us(o['hi'])}]"
    return f"not distinguishable from the noise floor (at most {us(max(abs(o['lo']), abs(o['hi'])))})"
names = {"rest": "the proxy route", "grpc": "REST→gRPC transcoding", "full": "the `/secure` middleware (auth, rate limit, breaker)"}
p50s = {}
for i in range(1, runs + 1):
    s = json.load(open(f"{work}/run{i}/summary.json"))
    f = s["noise_floor"]["floor_ns"]["service"] if s["noise_floor"] else None
    floor = f"noise floor ±{us(f['p50'])} at p50, ±{us(f['p99'])} at p99" if f else "no noise floor"
    print(f"\nrun {i} ({s['started']}, {s['machine']['cores']} cores, {s['machine']['cpu_model']}; "
          f"layout {s['layout']['mode'] if s['layout'] else 'external'}: {'; '.join(s['machine']['pinning'])}; {floor}):")
    for sc in s["scenarios"]:
        o = sc["ci_ns"]["service"]["overhead"]
        cpu = sc["gateway"]["cpu_ms_per_1000"]["gateway_ms"]
        cpu_d = sc["direct"]["cpu_ms_per_1000"]["gateway_ms"]
        cpu_txt = f"{cpu:.1f} ms of gateway CPU per 1,000 requests" if cpu is not None else ""
        if cpu_d is not None and cpu is not None:
            cpu_txt = f"gateway CPU {cpu_d:.1f} → {cpu:.1f} ms per 1,000 requests"
        print(f"  {names.get(sc['name'], sc['name'])}: p50 {over(o['p50'])}, p99 {over(o['p99'])}; "
              f"{cpu_txt}; {sc['rounds_run']} rounds (ended by {sc['ended_by'].replace('_', ' ')})")
        p50s.setdefault(sc["name"], []).append(o["p50"])
print("\nagreement of the runs (p50 overhead, service time):")
for name, os_ in p50s.items():
    vals = [o["value"] for o in os_]
    verdicts = ["number" if o["distinguishable"] else "noise" for o in os_]
    print(f"  {name}: {', '.join(us(v) for v in vals)} ({', '.join(verdicts)}); spread {us(max(vals) - min(vals))}")
print(f"\ncommand: cargo run --release -- compare --rps {rps}   (run {runs} times in a row by benches/readme-figures.sh)")
PY
