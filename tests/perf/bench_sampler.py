"""Latency the telemetry sampler adds to a measurement (not a pytest test).

The real harness (agent.harness.run_measurement) on the synthetic backend, alternately without
and with an agent.telemetry.Sampler running, interleaved repetitions; prints the median p50 of
each and their ratio (target: within 0.5%), and what one sample costs the sampler thread.
The sampler reads this machine's own / (whatever it has: thermal zones, cpufreq, RAPL, NVML)
plus, unless --no-fake, a fake sysfs tree heavier than any edge device (--zones thermal zones,
--cpus cores, two INA3221 chips, an INA219, RAPL domains, a Pi throttle file).
Run: python tests/perf/bench_sampler.py [--reps 5] [--ms 1.0] [--runs 2000] [--min-s 3]
     [--interval-ms 100]
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from agent import harness, schema, telemetry  # noqa: E402
from agent.backends.synthetic import SyntheticBackend  # noqa: E402


def _write(root, rel, text):
    path = os.path.join(root, rel)
    if not os.path.isdir(os.path.dirname(path)):
        os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write("%s\n" % text)


def fake_tree(root, zones, cpus):
    """A device with more sensors than any edge board: every file the sampler reads."""
    for z in range(zones):
        _write(root, "sys/class/thermal/thermal_zone%d/type" % z, "zone%d-thermal" % z)
        _write(root, "sys/class/thermal/thermal_zone%d/temp" % z, 40000 + z * 100)
    for c in range(cpus):
        _write(root, "sys/devices/system/cpu/cpu%d/cpufreq/scaling_cur_freq" % c, 1500000)
    for chip, labels in ((0, ("VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC")),
                         (1, ("VDD_GPU", "VDD_CPU", "VDD_DDR"))):
        base = "sys/class/hwmon/hwmon%d" % chip
        _write(root, base + "/name", "ina3221")
        for n, label in enumerate(labels, 1):
            _write(root, base + "/in%d_label" % n, label)
            _write(root, base + "/in%d_input" % n, 5000)
            _write(root, base + "/curr%d_input" % n, 300 * n)
    _write(root, "sys/class/hwmon/hwmon2/name", "ina219")
    _write(root, "sys/class/hwmon/hwmon2/power1_input", 2500000)
    for rel, name in (("intel-rapl:0", "package-0"), ("intel-rapl:0:0", "core"),
                      ("intel-rapl:0:1", "dram")):
        base = "sys/class/powercap/" + rel
        _write(root, base + "/name", name)
        _write(root, base + "/energy_uj", 123456789)
        _write(root, base + "/max_energy_range_uj", 262143328850)
    _write(root, "sys/devices/platform/soc/soc:firmware/get_throttled", "0")


def make_backend(ms):
    case = {"model": {"synthetic_ms": ms}, "runtime": {"backend": "synthetic", "options": {}}}
    return SyntheticBackend(case, None)


def measure(ms, runs, min_s, sources, interval_ms):
    """(p50 ms, p99 ms, samples taken) of one harness run, a sampler around it when sources."""
    settings = dict(schema.DEFAULT_SETTINGS, warmup_runs=200, warmup_min_s=0.0, runs=runs,
                    min_duration_s=min_s, max_duration_s=600.0, interval_ms=interval_ms)
    sampler = telemetry.Sampler(sources, interval_ms).start() if sources is not None else None
    try:
        timing = harness.run_measurement(make_backend(ms), settings)["timing"]
    finally:
        if sampler is not None:
            sampler.stop()
    taken = len(sampler.samples) if sampler is not None else 0
    return timing["summary"]["p50"], timing["summary"]["p99"], taken


def sample_cost_us(sources, n=300):
    """Wall microseconds of one sample (every source read, stored), on this thread."""
    sampler = telemetry.Sampler(sources, 100)
    sampler._sample()
    start = time.perf_counter()
    for _ in range(n):
        sampler._sample()
    return (time.perf_counter() - start) / n * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--ms", type=float, default=1.0, help="synthetic_ms per inference")
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--min-s", type=float, default=3.0, help="min_duration_s of each run")
    parser.add_argument("--interval-ms", type=float, default=100.0)
    parser.add_argument("--zones", type=int, default=32)
    parser.add_argument("--cpus", type=int, default=64)
    parser.add_argument("--no-fake", action="store_true", help="only this machine's own /")
    parser.add_argument("--reopen", action="store_true",
                        help="open the fake tree's files at each read (as in tests) instead of "
                             "keeping them open (as on a device)")
    args = parser.parse_args()

    sources, notes = telemetry.discover("/")
    tree = None
    if not args.no_fake:
        tree = tempfile.mkdtemp(prefix="bench_sampler.")
        fake_tree(tree, args.zones, args.cpus)
        # its files are written once, never replaced: read as the live root's are (kept open)
        fake, _ = telemetry.discover(tree, keep_open=not args.reopen)
        for src in fake:
            src.name = "fake:" + src.name
        sources += fake
    try:
        channels = sum(len(s.channels) for s in sources)
        print("python %s, %d sources (%d channels) at %g ms: %s" % (
            sys.version.split()[0], len(sources), channels, args.interval_ms,
            ", ".join(s.name for s in sources) or "none"))
        for note in notes:
            print("  note: %s" % note)
        cost = sample_cost_us(sources)
        print("one sample: %.0f us of the sampler thread (%.3f%% of one core at %g ms)" % (
            cost, cost / (args.interval_ms * 10.0), args.interval_ms))
        without, with_, p99_without, p99_with, taken = [], [], [], [], []
        measure(args.ms, args.runs // 4, 0.5, None, args.interval_ms)   # warm the process
        for rep in range(args.reps):
            # interleaved, the order alternating, so a drift hits both alike
            order = (False, True) if rep % 2 == 0 else (True, False)
            for sampled in order:
                p50, p99, n = measure(args.ms, args.runs, args.min_s,
                                      sources if sampled else None, args.interval_ms)
                (with_ if sampled else without).append(p50)
                (p99_with if sampled else p99_without).append(p99)
                if sampled:
                    taken.append(n)
            print("  rep %d: p50 without %.5f ms, with %.5f ms" % (rep + 1, without[-1],
                                                                     with_[-1]))
        a, b = statistics.median(without), statistics.median(with_)
        print("synthetic_ms=%g runs=%d min_duration_s=%g reps=%d: median p50 without sampler "
              "%.5f ms, with %.5f ms, ratio %.5f (%+.3f%%; target within 0.5%%)"
              % (args.ms, args.runs, args.min_s, args.reps, a, b, b / a, 100.0 * (b / a - 1.0)))
        print("median p99 without %.5f ms, with %.5f ms; %d samples per sampled run"
              % (statistics.median(p99_without), statistics.median(p99_with),
                 int(statistics.median(taken))))
    finally:
        if tree:
            shutil.rmtree(tree, ignore_errors=True)


if __name__ == "__main__":
    main()
