"""The litert backend through the agent harness against LiteRT's own benchmark tool, same model.

A script, not a test (pytest does not collect bench_*.py). Rounds alternate, so drift and thermal
state hit both alike: ai_edge_litert.tools.benchmark_litert_model in a subprocess (a fresh
CompiledModel; it times run_by_name on input buffers it filled once), then the litert backend
through agent.harness.run_measurement (loaded once; it times TensorBuffer.write of every input
plus run_by_index), then the two halves of that invoke timed apart on the same backend.

    python tests/perf/bench_litert_vs_tool.py [--models movenet-tiny/tflite-fp32 ...]
        [--rounds 5] [--runs 300] [--warmup 30] [--threads 1]
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from agent import harness  # noqa: E402
from agent.backends.litert import LiteRTBackend  # noqa: E402
from orchestrator.models import zoo  # noqa: E402

_MEDIAN = re.compile(r"^Inference \(median\):\s+([0-9.]+) ms", re.M)


class Preloaded(object):
    """The loaded backend, with load() a no-op: every round times the same CompiledModel."""

    def __init__(self, backend):
        self._backend = backend

    def load(self):
        pass

    def __getattr__(self, name):
        return getattr(self._backend, name)


def tool_round(path, runs, warmup, threads):
    """The tool's "Inference (median)" in ms (it prints two decimals)."""
    out = subprocess.run(
        [sys.executable, "-m", "ai_edge_litert.tools.benchmark_litert_model", "--model=" + path,
         "--num_runs=%d" % runs, "--warmup_runs=%d" % warmup, "--num_threads=%d" % threads],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True, check=True)
    found = _MEDIAN.search(out.stdout)
    if found is None:
        raise RuntimeError("no 'Inference (median)' line in the tool's output:\n" + out.stdout)
    return float(found.group(1))


def harness_round(backend, runs, warmup):
    settings = {"warmup_runs": warmup, "warmup_min_s": 0.0, "runs": runs, "min_duration_s": 0.0,
                "max_duration_s": 600.0, "input_seed": 0, "input_pool": 4, "cv_max": 1.0,
                "case_timeout_s": 900.0}
    return harness.run_measurement(Preloaded(backend), settings)["timing"]["summary"]["p50"]


def parts_round(backend, inputs, runs):
    """(p50 of the writes alone, p50 of run_by_index alone on buffers filled once), in ms."""
    clock = time.perf_counter_ns
    writes, run, ins, outs = backend._writes, backend._run, backend._in, backend._out
    write_ns, run_ns = [], []
    for i in range(runs):
        x = inputs[i % len(inputs)]
        t0 = clock()
        for write, array in zip(writes, x):
            write(array)
        write_ns.append(clock() - t0)
    for _ in range(runs):
        t0 = clock()
        run(0, ins, outs)
        run_ns.append(clock() - t0)
    return statistics.median(write_ns) / 1e6, statistics.median(run_ns) / 1e6


def bench(model, variant, rounds, runs, warmup, threads):
    path = str(zoo.build_model(model, variant).local_path)
    case = {"runtime": {"backend": "litert", "threads": threads, "options": {}}}
    backend = LiteRTBackend(case, path)
    backend.load()
    inputs = backend.make_inputs(0, 4)
    got = {"tool run_by_name": [], "harness write+run": [], "write alone": [], "run alone": []}
    for _ in range(rounds):
        got["tool run_by_name"].append(tool_round(path, runs, warmup, threads))
        got["harness write+run"].append(harness_round(backend, runs, warmup))
        write_ms, run_ms = parts_round(backend, inputs, runs)
        got["write alone"].append(write_ms)
        got["run alone"].append(run_ms)
    med = dict((k, statistics.median(v)) for k, v in got.items())
    print("%s/%s threads=%d, %d rounds x %d runs (%d warm-up); median of round medians, ms:"
          % (model, variant, threads, rounds, runs, warmup))
    for k, v in got.items():
        print("  %-18s %8.4f   rounds: %s" % (k, med[k], " ".join("%.4f" % x for x in v)))
    tool = got["tool run_by_name"]
    for name in ("harness write+run", "run alone"):
        # Per-round ratios pair figures taken minutes apart at most: steadier on a busy machine.
        paired = statistics.median(a / b for a, b in zip(got[name], tool))
        print("  %-18s / tool: %.4f of medians (%+.1f us), %.4f paired per round" % (
            name, med[name] / med["tool run_by_name"],
            (med[name] - med["tool run_by_name"]) * 1000, paired))
    backend.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["movenet-tiny/tflite-fp32",
                                                         "movenet-lightning/tflite-fp32"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    for spec in args.models:
        model, variant = spec.split("/")
        bench(model, variant, args.rounds, args.runs, args.warmup, args.threads)


if __name__ == "__main__":
    main()
