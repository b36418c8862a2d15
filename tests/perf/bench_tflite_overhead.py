"""What the agent harness + TFLiteBackend add over a bare `interpreter.invoke()` loop.

A script, not a test (pytest does not collect bench_*.py). One interpreter, loaded once, is timed
in alternating rounds (harness, bare, harness, ...) so drift and thermal state hit both alike.

    python tests/perf/bench_tflite_overhead.py [--models movenet-tiny/tflite-fp32 ...]
        [--rounds 5] [--runs 500] [--threads 1]
"""

import argparse
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from agent import harness  # noqa: E402
from agent.backends.tflite import TFLiteBackend  # noqa: E402
from orchestrator.models import zoo  # noqa: E402


class Preloaded(object):
    """The loaded backend, with load() a no-op: every round times the same interpreter."""

    def __init__(self, backend):
        self._backend = backend

    def load(self):
        pass

    def __getattr__(self, name):
        return getattr(self._backend, name)


def bare_round(interpreter, index, inputs, runs, set_inputs):
    """p50 (ms) of a plain timed loop; set_inputs: also copy the input in, as invoke() does."""
    clock = time.perf_counter_ns
    invoke, set_tensor = interpreter.invoke, interpreter.set_tensor
    set_tensor(index, inputs[0][0])
    for _ in range(20):
        invoke()
    times = []
    for i in range(runs):
        x = inputs[i % len(inputs)][0]
        t0 = clock()
        if set_inputs:
            set_tensor(index, x)
        invoke()
        times.append(clock() - t0)
    return statistics.median(times) / 1e6


def harness_round(backend, runs):
    settings = {"warmup_runs": 20, "warmup_min_s": 0.0, "runs": runs, "min_duration_s": 0.0,
                "max_duration_s": 120.0, "input_seed": 0, "input_pool": 4, "cv_max": 1.0,
                "case_timeout_s": 600.0}
    return harness.run_measurement(Preloaded(backend), settings)["timing"]["summary"]["p50"]


def bench(model, variant, rounds, runs, threads):
    art = zoo.build_model(model, variant)
    case = {"runtime": {"backend": "tflite", "threads": threads, "options": {}}}
    backend = TFLiteBackend(case, str(art.local_path))
    backend.load()
    inputs = backend.make_inputs(0, 4)
    index = backend.interpreter.get_input_details()[0]["index"]
    got = {"harness": [], "bare set+invoke": [], "bare invoke": []}
    for _ in range(rounds):
        got["harness"].append(harness_round(backend, runs))
        got["bare set+invoke"].append(bare_round(backend.interpreter, index, inputs, runs, True))
        got["bare invoke"].append(bare_round(backend.interpreter, index, inputs, runs, False))
    med = {k: statistics.median(v) for k, v in got.items()}
    print("%s/%s threads=%d, %d rounds x %d runs (median of round p50s, ms):"
          % (model, variant, threads, rounds, runs))
    for k, v in got.items():
        print("  %-16s %.4f   rounds: %s" % (k, med[k], " ".join("%.4f" % x for x in v)))
    for base in ("bare set+invoke", "bare invoke"):
        print("  harness / %-16s %.4f  (%+.1f us)"
              % (base, med["harness"] / med[base], (med["harness"] - med[base]) * 1000))
    backend.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["movenet-tiny/tflite-fp32",
                                                         "movenet-tiny/tflite-int8",
                                                         "movenet-lightning/tflite-fp32"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    for spec in args.models:
        model, variant = spec.split("/")
        bench(model, variant, args.rounds, args.runs, args.threads)


if __name__ == "__main__":
    main()
