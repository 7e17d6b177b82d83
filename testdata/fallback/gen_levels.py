#!/usr/bin/env python3
"""Expected fallback levels, computed with numpy, for the recomputer's level tests.

One endpoint has windows in a few buckets (weekday and weekend hours, various sizes); for
probe buckets the expected statistics of each level are those of the UNION of the windows
the level covers (never averages of per-bucket percentiles):
  * nearby:  same day type, hours h-2..h+2 (wrapping past midnight)
  * dayType: the 24 hours of the day type
  * all:     all 48 buckets
Percentiles use numpy's "linear" method (the contract's); MAD = max(50th percentile of
|x - p50|, EPS); quantiles at the 32 fixed levels of anomaly-core's summary.

Deterministic (numpy.random.default_rng with fixed seeds); samples rounded to 3 decimals
(whole microseconds, as windows store them).
Usage: python3 gen_levels.py   (writes levels.json next to this script)
"""
import json
import os

import numpy as np

EPS = 1.0
NEARBY = 2
LEVELS = [0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6,
          0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995,
          0.998, 0.999, 1.0]
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "levels.json")

# (dayType, hour, samples, median ms, sigma)
WINDOWS = [
    ("weekday", 9, 400, 120.0, 0.3),
    ("weekday", 10, 300, 150.0, 0.35),
    ("weekday", 11, 30, 160.0, 0.4),
    ("weekday", 12, 12, 170.0, 0.5),
    ("weekday", 13, 80, 140.0, 0.3),
    ("weekday", 16, 5, 300.0, 0.6),
    ("weekday", 23, 20, 90.0, 0.2),
    ("weekday", 0, 25, 95.0, 0.2),
    ("weekend", 3, 7, 60.0, 0.5),
    ("weekend", 20, 40, 200.0, 0.8),
]
# Thin buckets to probe: (dayType, hour).
PROBES = [("weekday", 12), ("weekday", 11), ("weekday", 15), ("weekday", 1), ("weekend", 3),
          ("weekend", 12)]


def r3(xs):
    return [float(v) for v in np.round(np.asarray(xs, dtype=np.float64), 3)]


def stats(xs):
    xs = np.asarray(xs, dtype=np.float64)
    p50 = float(np.percentile(xs, 50, method="linear"))
    p95 = float(np.percentile(xs, 95, method="linear"))
    mad = float(np.percentile(np.abs(xs - p50), 50, method="linear"))
    return {
        "p50": p50,
        "p95": p95,
        "mad": max(mad, EPS),
        "sampleCount": int(xs.size),
        "quantiles": [float(np.percentile(xs, q * 100, method="linear")) for q in LEVELS],
    }


def main():
    windows = {}
    for i, (day, hour, n, median, sigma) in enumerate(WINDOWS):
        rng = np.random.default_rng(1000 + i)
        windows[(day, hour)] = r3(rng.lognormal(np.log(median), sigma, n))
    expected = []
    for day, hour in PROBES:
        nearby_hours = [(hour + d) % 24 for d in range(-NEARBY, NEARBY + 1)]
        nearby = [x for h in nearby_hours for x in windows.get((day, h), [])]
        day_all = [x for (d, _), w in windows.items() if d == day for x in w]
        every = [x for w in windows.values() for x in w]
        case = {"dayType": day, "hour": hour,
                "exactCount": len(windows.get((day, hour), [])),
                "nearbyHours": nearby_hours}
        case["nearby"] = stats(nearby) if nearby else None
        case["dayTypeLevel"] = stats(day_all) if day_all else None
        case["all"] = stats(every)
        expected.append(case)
    out = {
        "nearbyHours": NEARBY,
        "windows": [{"dayType": d, "hour": h, "samples": s} for (d, h), s in windows.items()],
        "expected": expected,
    }
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
