#!/usr/bin/python3
"""The FedAvg fold the way Python FL frameworks write it, for aggregation_speed_bench.

Flower's aggregate(): every client's layers are multiplied by its sample count, the products
are summed layer by layer with functools.reduce(np.add), and the sums are divided by the
total count. The client results are float32 layers decoded from the same F32 wire payloads
the C++ bench folds; like the C++ side, a small pool of distinct payloads is cycled through.
Only the aggregate itself is timed (decoding happens beforehand), and the process's peak
resident memory is reported both as ru_maxrss and as the growth during the fold.

Prints one line: key=value pairs (params, updates, seconds, gbps, fold_peak_mb, maxrss_mb).
"""

import argparse
import functools
import resource
import sys
import time

import numpy as np


def resident_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reset_peak():
    # Resets VmHWM to the current resident size (Linux >= 4.0); harmless if refused.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def layer_sizes(params, layers):
    base = params // layers
    sizes = [base] * layers
    sizes[-1] += params - base * layers
    return sizes


def aggregate(results):
    """The sample-weighted mean in the shape of Flower's aggregate()."""
    num_examples_total = sum(num_examples for (_, num_examples) in results)
    weighted_weights = [
        [layer * num_examples for layer in weights] for weights, num_examples in results
    ]
    weights_prime = [
        functools.reduce(np.add, layer_updates) / num_examples_total
        for layer_updates in zip(*weighted_weights)
    ]
    return weights_prime


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--params", type=int, required=True)
    p.add_argument("--updates", type=int, required=True)
    p.add_argument("--pool", type=int, default=4)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--min_seconds", type=float, default=0.5)
    a = p.parse_args()

    rng = np.random.default_rng(a.seed)
    sizes = layer_sizes(a.params, a.layers)
    pool = []
    for k in range(min(a.pool, a.updates)):
        values = (rng.uniform(-1e-3, 1e-3, a.params) * (1 + k)).astype(np.float32)
        payload = values.tobytes()  # the F32 wire encoding (little-endian float32)
        flat = np.frombuffer(payload, dtype=np.float32)
        layers, off = [], 0
        for s in sizes:
            layers.append(flat[off:off + s].reshape(-1))
            off += s
        pool.append(layers)
    results = [(pool[i % len(pool)], 100 + i % 7) for i in range(a.updates)]

    reset_peak()
    before_kb = resident_kb("VmRSS")
    reps, elapsed = 0, 0.0
    while reps == 0 or elapsed < a.min_seconds:
        start = time.perf_counter()
        out = aggregate(results)
        elapsed += time.perf_counter() - start
        reps += 1
        del out
    peak_kb = resident_kb("VmHWM")
    bytes_folded = reps * a.updates * a.params * 4
    maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"params={a.params} updates={a.updates} reps={reps} seconds={elapsed / reps:.6f} "
          f"gbps={bytes_folded / elapsed / 1e9:.4f} "
          f"fold_peak_mb={(peak_kb - before_kb) / 1e3:.1f} maxrss_mb={maxrss_kb / 1e3:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
