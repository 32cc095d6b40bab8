#!/usr/bin/env bash
# Allocations per request of the gateway process: a uprobe on the allocator's entry (`perf probe`,
# needs root and linux-perf) — mimalloc's `mi_malloc_aligned` in the binary (the binary's global
# allocator, main.rs), or libc's malloc for a build without it (GW=/path/to/build) counted while the proxy and the transcoded route are loaded at a
# constant rate. A count, not a timing: it does not move with the machine's noise, so it shows
# what a change to the request path allocates. CALLERS=1 also lists the code that calls malloc
# on the proxy route (DWARF call graphs; the first frame outside allocation helpers), one
# percent per ~1/N of the N mallocs of a request.
#
#   bash benches/allocs.sh
#   CALLERS=1 NO_BUILD=1 bash benches/allocs.sh
set -eu
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "missing: perf (apt-get install -y linux-perf)" >&2; exit 2; }
RPS=${RPS:-2000}
[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet
GW=${GW:-target/release/gwbench}
if nm "$GW" | grep -q ' T mi_malloc_aligned$'; then
  perf probe -q -x "$GW" --del 'probe_gwbench:*' 2>/dev/null || true # another build's offsets
  perf probe -q -x "$GW" mi_malloc_aligned
  event=probe_gwbench:mi_malloc_aligned
else
  libc=$(ldd "$GW" | awk '/libc.so/ {print $3}')
  perf probe -q -x "$libc" malloc 2>/dev/null || true   # already there is fine
  event=probe_libc:malloc
fi
. benches/lib.sh
start_stack
sleep 0.5
# Requests the gateway has answered (its /metrics), to check that the offered rate was served:
# the count is divided by the offered requests of perf's window, which a busy machine may not
# reach (then the figure comes out too low, and this says so). The scrapes bracket the window
# a little wider than perf's 3 s, so a few percent more than offered is normal.
served() {
  python3 -c '
import sys, urllib.request
page = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
print(int(sum(float(l.rsplit(" ", 1)[1]) for l in page.splitlines() if l.startswith("gwbench_requests_total{"))))
' "http://127.0.0.1:$gwa/metrics"
}
for path in /rest/api/users/42 /api/users/42; do
  $gen "$GW" load "http://127.0.0.1:$gwp$path" --rps "$RPS" -c 8 -d 6s --warmup 1s -q --json > /dev/null &
  lp=$!
  sleep 2
  before=$(served)
  perf stat -e "$event" -x, -o "$work/st.txt" -p "$gw_pid" -- sleep 3 2>/dev/null
  after=$(served)
  wait $lp
  offered=$((RPS * 3)); got=$((after - before))
  echo "$path: $(awk -F, -v n=$offered '/probe_/ {printf "%.1f", $1 / n}' "$work/st.txt") mallocs per request"
  [ $((got * 100)) -ge $((offered * 97)) ] || \
    echo "  (only $got requests served around a window of $offered offered: the machine was too busy; the figure is too low)"
done
[ -n "${CALLERS:-}" ] || exit 0
$gen "$GW" load "http://127.0.0.1:$gwp/rest/api/users/42" --rps "$RPS" -c 8 -d 5s --warmup 1s -q --json > /dev/null &
lp=$!
sleep 2
perf record -q -e "$event" --call-graph dwarf,16384 -o "$work/m.data" -p "$gw_pid" -- sleep 1 > /dev/null 2>&1
wait $lp
perf script -i "$work/m.data" 2>/dev/null | python3 -c '
import sys, re, collections
helper = re.compile(r"malloc|mimalloc|mi_|__rust_alloc|alloc::|RawVec|raw_vec|core::ptr|<alloc|with_capacity|::clone|to_owned|to_vec|Box<|boxed|String|fmt::|format|hashbrown|Vec<|::reserve|::push|do_reserve|finish_grow|grow_|from_iter|SpecFrom|collect|extend")
calls, n, stack = collections.Counter(), 0, []
def flush():
    global n
    if stack:
        n += 1
        calls[next((f[:140] for f in stack[1:] if not helper.search(f)), "?")] += 1
for line in sys.stdin:
    if not line.strip():
        flush(); stack = []; continue
    m = re.match(r"\s+[0-9a-f]+ (.*) \(", line)
    if m: stack.append(m.group(1))
flush()
print(f"callers of malloc on the proxy route ({n} samples):")
for k, v in calls.most_common(20): print(f"  {v / n * 100:5.1f}%  {k}")
'
