#!/usr/bin/env python3
"""The soak's checker: asks the gateway for random users over one keep-alive connection (about
100 requests a second, proxied and transcoded in turn) and checks that every answer is the user
it asked for. Writes 'checked wrong errors' to STATE after each request, and 'error EPOCH' or
'wrong EPOCH asked got' lines to stdout.

    soak_check.py HOST:PORT SECONDS STATE
"""
import http.client
import json
import os
import random
import sys
import time

host, seconds, state = sys.argv[1], float(sys.argv[2]), sys.argv[3]
end = time.monotonic() + seconds
checked = wrong = errors = 0
conn = None
i = 0
while time.monotonic() < end:
    i += 1
    uid = random.randint(1, 100000)
    path = f"/rest/api/users/{uid}" if i % 2 else f"/api/users/{uid}"
    try:
        if conn is None:
            conn = http.client.HTTPConnection(host, timeout=5)
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            errors += 1
            print(f"error {int(time.time())} {resp.status}", flush=True)
        else:
            got = json.loads(body).get("id")
            checked += 1
            if str(got) != str(uid):
                wrong += 1
                print(f"wrong {int(time.time())} {uid} {got}", flush=True)
    except Exception as e:  # a reset or a timeout while a fault is active: reconnect
        errors += 1
        print(f"error {int(time.time())} {type(e).__name__}", flush=True)
        conn = None
    # Written whole and renamed, so the sampling loop never reads a half-written line.
    with open(state + ".tmp", "w") as f:
        f.write(f"{checked} {wrong} {errors}\n")
    os.replace(state + ".tmp", state)
    time.sleep(0.01)
