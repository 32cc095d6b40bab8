#!/usr/bin/env python3
"""Reproducible CPU noise: bursts of busy work at seeded random times, until killed.

Each cycle sleeps a gap drawn from [GAP_MIN, GAP_MAX] ms, then spins for a burst drawn from
[BURST_MIN, BURST_MAX] ms; the draws come from random.Random(SEED), so two runs with one seed
make the same noise. Pin it with taskset to the core it should disturb.

    taskset -c 0 python3 benches/noise_burner.py --seed 1 [--burst 2:6] [--gap 20:60]
"""
import argparse
import random
import time


def span(text):
    lo, _, hi = text.partition(":")
    return float(lo), float(hi or lo)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--burst", type=span, default=(2.0, 6.0), help="ms of spinning, MIN:MAX")
    ap.add_argument("--gap", type=span, default=(20.0, 60.0), help="ms between bursts, MIN:MAX")
    ap.add_argument("--seconds", type=float, default=3600.0, help="stops by itself after this")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    end = time.monotonic() + a.seconds
    while time.monotonic() < end:
        time.sleep(rng.uniform(*a.gap) / 1e3)
        until = time.perf_counter() + rng.uniform(*a.burst) / 1e3
        x = 0
        while time.perf_counter() < until:
            x += 1


if __name__ == "__main__":
    main()
