#!/usr/bin/env python3
"""What hostile clients and a silent collector cost the gateway's memory, threads and descriptors.

    python3 benches/hostile_memory.py [GWBENCH_BINARY]   # default: target/release/gwbench

Starts the mocks and a gateway (the binary given) on free 127.0.0.1 ports, with tracing to a
collector that accepts connections and never answers, and a mount /limited with a rate limit
keyed by API key. Then, reading the gateway's VmRSS, threads and open descriptors from /proc:
  1. 30,000 requests carrying an 8 KB tracestate (8 keep-alive connections);
  2. 40 POST /reload while traced requests keep coming;
  3. 2,500 requests, each with its own 60 KB X-Api-Key.
Everything it starts it stops, on success or failure. Run it for two builds back to back.
"""
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/gwbench"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def proc(pid):
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    rss_mb = int(status["VmRSS"].split()[0]) / 1024
    threads = int(status["Threads"])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return f"RSS {rss_mb:6.1f} MB, threads {threads:3d}, descriptors {fds:3d}"


def silent_collector():
    """Accepts connections and never answers (held until the process ends)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    held = []

    def accept():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    return listener, listener.getsockname()[1]


def requests(port, count, headers, conns=8, path="/api/users/1"):
    """`count` GETs over `conns` keep-alive connections; headers(i) gives request i's."""
    statuses = {}

    def run(k):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for i in range(k, count, conns):
            try:
                c.request("GET", path, headers=headers(i))
                r = c.getresponse()
                r.read()
                statuses[r.status] = statuses.get(r.status, 0) + 1
            except Exception as e:  # a refused or closed connection: count it, reconnect
                statuses[type(e).__name__] = statuses.get(type(e).__name__, 0) + 1
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.close()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def main():
    work = tempfile.mkdtemp()
    collector, cport = silent_collector()
    rest, grpc, badm, gw, gadm = (free_port() for _ in range(5))
    default = subprocess.run([BIN, "gateway", "--print-default-config"],
                             capture_output=True, text=True, check=True).stdout
    config = default.replace('otlp_endpoint = ""', f'otlp_endpoint = "http://127.0.0.1:{cport}"')
    config = config.replace("[[transcode.mounts]]\nprefix = \"\"\n",
                            "[[transcode.mounts]]\nprefix = \"\"\n\n[[transcode.mounts]]\n"
                            "prefix = \"/limited\"\nrate_limit = true\n", 1)
    path = os.path.join(work, "gw.toml")
    with open(path, "w") as f:
        f.write(config)
    children = []
    try:
        children.append(subprocess.Popen(
            [BIN, "backends", "--rest-port", str(rest), "--grpc-port", str(grpc),
             "--admin-port", str(badm), "--threads", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
        children[-1].stdout.readline()
        g = subprocess.Popen(
            [BIN, "gateway", "--config", path, "--listen", f"127.0.0.1:{gw}",
             "--admin", f"127.0.0.1:{gadm}", "--threads", "1",
             "--upstream-grpc", f"127.0.0.1:{grpc}", "--upstream-rest", f"127.0.0.1:{rest}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        children.append(g)
        while "ready admin" not in g.stdout.readline():
            pass
        print(f"{BIN}")
        print(f"  idle                                {proc(g.pid)}")
        # 32 list members of 250 characters: a valid tracestate of 8 KB.
        members = ",".join(f"v{k}=" + "x" * 250 for k in range(32))
        state = {"tracestate": members, "host": "gw",
                 "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
        s = requests(gw, 30_000, lambda i: state)
        print(f"  30,000 x 8 KB tracestate            {proc(g.pid)}   {s}")
        stop = threading.Event()
        traffic = threading.Thread(target=lambda: [requests(gw, 250, lambda i: state, conns=2)
                                                   for _ in iter(stop.is_set, True)])
        traffic.start()
        for _ in range(40):
            c = http.client.HTTPConnection("127.0.0.1", gadm, timeout=30)
            c.request("POST", "/reload")
            c.getresponse().read()
            c.close()
        stop.set()
        traffic.join()
        print(f"  40 reloads under traced traffic     {proc(g.pid)}")
        s = requests(gw, 2_500, lambda i: {"x-api-key": f"{i:0>61440}", "host": "gw"},
                     path="/limited/api/users/1")
        print(f"  2,500 distinct 60 KB API keys       {proc(g.pid)}   {s}")
    finally:
        for c in children:
            c.kill()
            c.wait()
        collector.close()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
