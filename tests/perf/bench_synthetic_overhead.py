"""Per-inference overhead of the harness's timed loop on the synthetic backend (not a pytest test).

Two views, in microseconds, median over interleaved repetitions:
  p50_minus_busy: harness p50 latency minus the configured busy-wait (what a latency overstates);
  wall_vs_bare:   harness wall time per inference minus a bare `for x: invoke(x)` loop's.
Run: python tests/perf/bench_synthetic_overhead.py [--reps 7] [--runs 20000] [--tflite MODEL]
--tflite also compares the harness's timed loop with a bare invoke() loop on one loaded TFLite
interpreter (same instance, alternating order: fresh loads differ by several % on their own).
"""

import argparse
import itertools
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from agent import harness  # noqa: E402
from agent.backends.synthetic import SyntheticBackend  # noqa: E402


def make_backend(ms):
    case = {"model": {"synthetic_ms": ms}, "runtime": {"backend": "synthetic", "options": {}}}
    backend = SyntheticBackend(case, None)
    backend.load()
    return backend


def bare_loop_us(ms, runs):
    """Wall us per invoke of the plainest loop there is, inputs rotated the same way."""
    backend = make_backend(ms)
    inputs = backend.make_inputs(0, 4)
    invoke = backend.invoke
    for x in itertools.islice(itertools.cycle(inputs), 1000):
        invoke(x)
    start = time.perf_counter()
    for x in itertools.islice(itertools.cycle(inputs), runs):
        invoke(x)
    return (time.perf_counter() - start) / runs * 1e6


def harness_us(ms, runs):
    """(p50 latency us, wall us per measured invoke) of the real harness."""
    settings = {"warmup_runs": 1000, "warmup_min_s": 0.0, "runs": runs, "min_duration_s": 0.0,
                "max_duration_s": 600.0, "input_seed": 0, "input_pool": 4}
    timing = harness.run_measurement(make_backend(ms), settings)["timing"]
    return timing["summary"]["p50"] * 1000.0, timing["measure_s"] / timing["runs"] * 1e6


def tflite_compare(model, runs, reps):
    """(harness loop us, bare loop us) per inference, medians, one interpreter for both."""
    from agent.backends.tflite import TFLiteBackend
    case = {"model": {}, "runtime": {"backend": "tflite", "threads": 1, "options": {}}}
    backend = TFLiteBackend(case, model)
    backend.load()
    inputs, invoke = backend.make_inputs(0, 4), backend.invoke
    clock, scale = harness.default_clock()

    def bare():
        start = time.perf_counter()
        for x in itertools.islice(itertools.cycle(inputs), runs):
            invoke(x)
        return (time.perf_counter() - start) / runs * 1e6

    def timed():
        start = time.perf_counter()
        n = harness._loop(invoke, inputs, clock, scale, runs, 0.0, 600.0, 1e-3 / scale, True)[1]
        return (time.perf_counter() - start) / n * 1e6
    bare()
    h, b = [], []
    for i in range(reps * 2):
        pair = (timed, bare) if i % 2 else (bare, timed)
        for fn in pair:
            (h if fn is timed else b).append(fn())
    return statistics.median(h), statistics.median(b)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--runs", type=int, default=20000)
    parser.add_argument("--tflite", help="a .tflite model: also compare with a bare invoke() loop")
    args = parser.parse_args()
    print("python %s, clock %s" % (sys.version.split()[0], harness.default_clock()[0].__name__))
    for ms in (0.0, 0.1):
        p50s, walls, bares = [], [], []
        runs = args.runs if ms == 0.0 else max(1000, args.runs // 10)
        for _ in range(args.reps):  # interleaved so drifts hit both loops alike
            p50, wall = harness_us(ms, runs)
            p50s.append(p50 - ms * 1000.0)
            walls.append(wall)
            bares.append(bare_loop_us(ms, runs))
        print("synthetic_ms=%-4g p50_minus_busy=%.3f us  harness_wall=%.3f us  bare_wall=%.3f us  "
              "wall_vs_bare=%.3f us (%.2f%%)" % (
                  ms, statistics.median(p50s), statistics.median(walls), statistics.median(bares),
                  statistics.median(walls) - statistics.median(bares),
                  100.0 * (statistics.median(walls) / statistics.median(bares) - 1.0)))
    if args.tflite:
        h, b = tflite_compare(args.tflite, max(200, args.runs // 20), args.reps)
        print("tflite %s: harness_loop=%.2f us  bare_loop=%.2f us  diff=%.2f%%"
              % (os.path.basename(args.tflite), h, b, 100.0 * (h / b - 1.0)))


if __name__ == "__main__":
    main()
