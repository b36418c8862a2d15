"""How long report.html takes to render and how big it is (not a pytest test).

A real 7-case run (tests/test_report_html.make_run: the controller on two local devices with a
live fake sysfs tree, so results carry telemetry series and energy; back-to-back, sustained,
paced, INVALID, failed and skipped cases), or --run RUN_DIR; then a 50-case run made from its
result documents with new case ids, in memory. Each is rendered --reps times as SVG and as PNG
images (htmlreport.IMAGE_FORMAT); prints the median render time and the page's size, and the
one-off cost of importing pandas and matplotlib in a fresh process.
Run: python tests/perf/bench_report.py [--reps 5] [--run RUN_DIR] [--cases 7,50]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [REPO, os.path.dirname(HERE)]

from orchestrator import htmlreport, records, report, rundir  # noqa: E402


def widen(loaded, cases):
    """(devices, results, rows) of `cases` cases made from the run's results, cycling through
    its cases with new case ids and labels."""
    by_case = {}
    for r in loaded.results:
        by_case.setdefault(r.case_id, []).append(r)
    order = list(by_case)
    results = []
    for n in range(cases):
        for r in by_case[order[n % len(order)]]:
            doc = r.to_doc()
            doc.update(case_id="c-%010d" % n, label="%s #%d" % (r.label, n))
            results.append(records.from_doc(doc))
    results.sort(key=lambda r: (loaded.devices.index(r.device_name), r.case_id))
    return loaded.devices, results, [report.flat_row(r) for r in results]


def measure(run_id, devices, results, rows, reps, image_format):
    htmlreport.IMAGE_FORMAT = image_format
    times, size = [], None
    for _ in range(reps):
        started = time.perf_counter()
        text = htmlreport.render_report(run_id, devices, results, rows, suite="bench")
        times.append(time.perf_counter() - started)
        size = len(text.encode("utf-8"))
    return statistics.median(times), min(times), size, text.count("<img ")


def import_cost():
    code = ("import time; t = time.perf_counter(); import pandas, matplotlib.figure, "
            "matplotlib.backends.backend_svg; print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--run", help="a run folder (default: make the 7-case run)")
    parser.add_argument("--cases", default="7,50")
    args = parser.parse_args()
    if args.run:
        run_dir = args.run
    else:
        import test_report_html
        started = time.perf_counter()
        run_dir = test_report_html.make_run(tempfile.mkdtemp(prefix="bench-report-"))
        print("made the 7-case run in %.1f s: %s" % (time.perf_counter() - started, run_dir))
    loaded = rundir.load_run(run_dir)
    htmlreport.render_report(loaded.run_id, loaded.devices, loaded.results,
                             [report.flat_row(r) for r in loaded.results])   # warm
    print("import pandas + matplotlib in a fresh process: %.2f s" % import_cost())
    print("%-6s %-4s %9s %9s %10s %7s" % ("cases", "fmt", "median s", "min s", "size KB",
                                          "images"))
    for cases in (int(c) for c in args.cases.split(",")):
        devices, results, rows = widen(loaded, cases)
        for image_format in ("svg", "png"):
            median, best, size, count = measure(loaded.run_id, devices, results, rows,
                                                args.reps, image_format)
            print("%-6d %-4s %9.3f %9.3f %10.0f %7d" % (cases, image_format, median, best,
                                                        size / 1024.0, count))
    htmlreport.IMAGE_FORMAT = "svg"


if __name__ == "__main__":
    main()
