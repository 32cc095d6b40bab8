#!/usr/bin/env python3
"""An independent reference for what a gateway adds at p50: no code of gwbench's.

One keep-alive HTTP/1.1 connection per side, one request at a time, sent on a paced schedule
(a request every 1/RATE s; a late one is sent at once and the schedule is not shifted), the
sides alternated in blocks (BLOCK seconds of direct, then BLOCK of gateway, ...), so that drift
of the machine hits both. Latency is service time (send to the last byte of the answer) from
time.perf_counter_ns. Each pair of blocks gives one difference of the medians; the overhead is
the median of those differences, with a 95 % bootstrap interval over the pairs (seeded).

    python3 benches/paced_reference.py DIRECT_URL GATEWAY_URL [--rate 1000] [--seconds 60]
        [--block 1] [--json]

Only http://127.0.0.1... URLs; the answer must carry Content-Length (the mocks, nginx and the
gateway do).
"""
import argparse
import json
import random
import socket
import statistics
import sys
import time
from urllib.parse import urlsplit


class Side:
    def __init__(self, url):
        u = urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            sys.exit(f"paced_reference: {url}: only http:// URLs")
        self.addr = (u.hostname, u.port or 80)
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        self.request = (f"GET {path} HTTP/1.1\r\nHost: {u.netloc}\r\n"
                        "User-Agent: paced-reference\r\n\r\n").encode()
        self.sock = socket.create_connection(self.addr)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def one(self):
        """Sends one request, reads its whole answer; returns (nanoseconds, status)."""
        t0 = time.perf_counter_ns()
        self.sock.sendall(self.request)
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(rest) < length:
            rest += self._recv()
        self.buf = rest[length:]
        return time.perf_counter_ns() - t0, status

    def _recv(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            sys.exit("paced_reference: the server closed the connection")
        return chunk


def block(side, rate, seconds):
    """One block: requests paced at `rate` for `seconds`; returns their latencies."""
    period = 1e9 / rate
    start = time.perf_counter_ns()
    out = []
    n = int(rate * seconds)
    for i in range(n):
        due = start + int(i * period)
        while True:
            now = time.perf_counter_ns()
            if now >= due:
                break
            if due - now > 200_000:
                time.sleep((due - now - 150_000) / 1e9)
        ns, status = side.one()
        if status != 200:
            sys.exit(f"paced_reference: status {status} from {side.addr}")
        out.append(ns)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("direct")
    ap.add_argument("gateway")
    ap.add_argument("--rate", type=float, default=1000.0, help="requests per second per side")
    ap.add_argument("--seconds", type=float, default=60.0, help="total time of the measurement")
    ap.add_argument("--block", type=float, default=1.0, help="seconds per block")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of both sides, discarded")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    d, g = Side(a.direct), Side(a.gateway)
    block(d, a.rate, a.warmup / 2)
    block(g, a.rate, a.warmup / 2)
    diffs, dall, gall = [], [], []
    pairs = max(1, int(a.seconds / (2 * a.block)))
    for i in range(pairs):
        # Alternate which side leads each pair, so neither is always first after the other.
        first, second = (d, g) if i % 2 == 0 else (g, d)
        x = block(first, a.rate, a.block)
        y = block(second, a.rate, a.block)
        dl, gl = (x, y) if first is d else (y, x)
        dall += dl
        gall += gl
        diffs.append(statistics.median(gl) - statistics.median(dl))
    rng = random.Random(1)
    boots = sorted(statistics.median(rng.choices(diffs, k=len(diffs))) for _ in range(2000))
    lo, hi = boots[int(0.025 * len(boots))], boots[int(0.975 * len(boots)) - 1]
    out = {
        "pairs": pairs,
        "rate_per_side": a.rate,
        "direct_p50_ns": statistics.median(dall),
        "gateway_p50_ns": statistics.median(gall),
        "overhead_p50_ns": statistics.median(diffs),
        "overhead_p50_lo_ns": lo,
        "overhead_p50_hi_ns": hi,
    }
    if a.json:
        print(json.dumps(out))
    else:
        us = lambda ns: f"{ns / 1e3:.1f} µs"
        print(f"direct p50 {us(out['direct_p50_ns'])}, gateway p50 {us(out['gateway_p50_ns'])}; "
              f"overhead at p50 {us(out['overhead_p50_ns'])} [{us(lo)}, {us(hi)}] "
              f"({pairs} block pairs at {a.rate:.0f} req/s a side)")


if __name__ == "__main__":
    main()
