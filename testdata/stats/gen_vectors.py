#!/usr/bin/env python3
"""Generate independent expected values for the stats (p50 / p95 / MAD) tests.

Contract:
  * p50, p95: linear interpolation between closest ranks (numpy "linear"):
        r = q*(n-1); x[floor r] + (r - floor r) * (x[ceil r] - x[floor r])
  * mad_raw = 50th percentile (same method) of |x - p50|
  * mad     = max(mad_raw, EPS) with EPS = 1.0 ms

Deterministic: every random case uses numpy.random.default_rng(<fixed seed>).
Generated samples are rounded to 3 decimals and kept in generation (unsorted)
order. Expected values are computed with numpy and cross-checked against a
pure-Python implementation of the contract formula.

Usage: python3 gen_vectors.py   (writes vectors.json next to this script)
"""
import json
import math
import os

import numpy as np

EPS = 1.0
REL_TOL = 1e-9
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors.json")


def r3(arr):
    """Round to 3 decimals and return plain Python floats."""
    return [float(v) for v in np.round(np.asarray(arr, dtype=np.float64), 3)]


def build_cases():
    cases = []

    def add(name, samples):
        samples = [float(v) for v in samples]
        cases.append((name, samples))

    # --- hand-written / degenerate cases -------------------------------
    add("n1_single", [42.5])
    add("n2_pair", [10.0, 30.0])
    add("n3_unsorted", [5.0, 1.0, 3.0])
    add("all_equal_60x100", [100.0] * 60)
    add("small_mad_below_eps",
        [round(100.0 + 0.1 * i, 1) for i in range(5)] * 8)  # 100.0..100.4 x8
    add("hand_unsorted_dups", [
        12.5, 7.0, 33.25, 7.0, 18.0, 250.0, 12.5, 9.75, 41.0, 7.0,
        18.0, 3.5, 120.0, 12.5, 64.0, 22.125, 18.0, 5.0, 99.9, 41.0,
    ])

    # --- generated cases -------------------------------------------------
    rng = np.random.default_rng(1)
    add("lognormal_m4_s0.5_n1000_seed1",
        r3(rng.lognormal(mean=4.0, sigma=0.5, size=1000)))

    rng = np.random.default_rng(2)
    add("lognormal_heavy_m4_s1.5_n1000_seed2",
        r3(rng.lognormal(mean=4.0, sigma=1.5, size=1000)))

    rng = np.random.default_rng(3)
    add("uniform_0_500_n50_seed3", r3(rng.uniform(0.0, 500.0, size=50)))

    rng = np.random.default_rng(4)
    add("uniform_0_500_n49_seed4", r3(rng.uniform(0.0, 500.0, size=49)))

    rng = np.random.default_rng(5)
    add("pareto_a1.2_x10_n1000_seed5", r3(rng.pareto(1.2, size=1000) * 10.0))

    rng = np.random.default_rng(6)
    bimodal = np.concatenate([
        np.abs(rng.normal(50.0, 5.0, size=900)),
        np.abs(rng.normal(400.0, 20.0, size=100)),
    ])
    rng.shuffle(bimodal)
    add("bimodal_50s5x900_400s20x100_seed6", r3(bimodal))

    rng = np.random.default_rng(7)
    base = rng.lognormal(mean=4.0, sigma=0.5, size=200)
    idx = rng.choice(200, size=4, replace=False)
    base[idx] = 1e6
    add("huge_outliers_1e6_n200_seed7", r3(base))

    add("integers_1_to_1000_reversed", [float(v) for v in range(1000, 0, -1)])

    rng = np.random.default_rng(8)
    add("lognormal_m4_s0.8_n999_seed8",
        r3(rng.lognormal(mean=4.0, sigma=0.8, size=999)))

    rng = np.random.default_rng(9)
    add("uniform_0_500_n17_seed9", r3(rng.uniform(0.0, 500.0, size=17)))

    rng = np.random.default_rng(10)
    z = rng.exponential(scale=30.0, size=60)
    zidx = rng.choice(60, size=12, replace=False)
    z[zidx] = 0.0
    add("with_zeros_n60_seed10", r3(z))

    return cases


# --- pure-Python reference implementation of the contract formula -----------
def pct_contract(xs, q):
    s = sorted(xs)
    n = len(s)
    r = q * (n - 1)
    lo = math.floor(r)
    hi = math.ceil(r)
    return s[lo] + (r - lo) * (s[hi] - s[lo])


def close(a, b):
    return a == b or abs(a - b) <= REL_TOL * max(abs(a), abs(b))


def main():
    out = []
    max_rel = 0.0
    for name, samples in build_cases():
        assert len(samples) >= 1, name
        assert all(math.isfinite(v) and v >= 0.0 for v in samples), name

        x = np.asarray(samples, dtype=np.float64)
        p50 = float(np.percentile(x, 50, method="linear"))
        p95 = float(np.percentile(x, 95, method="linear"))
        mad_raw = float(np.percentile(np.abs(x - p50), 50, method="linear"))
        mad = max(mad_raw, EPS)

        # Cross-check against the contract formula (pure Python).
        c50 = pct_contract(samples, 0.50)
        c95 = pct_contract(samples, 0.95)
        cmad = pct_contract([abs(v - c50) for v in samples], 0.50)
        for label, a, b in (("p50", p50, c50), ("p95", p95, c95),
                            ("mad_raw", mad_raw, cmad)):
            assert close(a, b), f"{name}: {label} numpy={a!r} contract={b!r}"
            if a != b:
                max_rel = max(max_rel, abs(a - b) / max(abs(a), abs(b)))

        out.append({"name": name, "samples": samples, "p50": p50,
                    "p95": p95, "mad_raw": mad_raw, "mad": mad})

    # Explicit expectations for the degenerate cases.
    by = {c["name"]: c for c in out}
    assert by["n1_single"]["p50"] == 42.5 and by["n1_single"]["p95"] == 42.5
    assert by["n1_single"]["mad_raw"] == 0.0 and by["n1_single"]["mad"] == 1.0
    assert by["n2_pair"]["p50"] == 20.0 and close(by["n2_pair"]["p95"], 29.0)
    assert by["n3_unsorted"]["p50"] == 3.0 and by["n3_unsorted"]["mad_raw"] == 2.0
    assert by["all_equal_60x100"]["mad_raw"] == 0.0
    assert by["all_equal_60x100"]["mad"] == 1.0
    assert by["small_mad_below_eps"]["mad_raw"] < 1.0
    assert by["small_mad_below_eps"]["mad"] == 1.0

    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {len(out)} cases to {OUT}; "
          f"max numpy-vs-contract relative diff = {max_rel:.3g}")


if __name__ == "__main__":
    main()
