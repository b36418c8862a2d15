"""Figures of the history database (orchestrator/history.py); not a pytest test.

  size       bytes of history.sqlite per 1000 results with 300 and with 3000 latency samples
             each (as stored, and after VACUUM)
  store      seconds to store one run of 1000 results (300 samples each), median of --reps
  query      one device x case over 100 runs (what compare's baseline and the trends read):
             results(device, case_id, latencies=True), and runs(device, limit=30) followed
             by results(run_ids, device, latencies=True); median of 20, milliseconds

The results are one real run's (the controller and agent on this machine, transport local,
synthetic backend) copied onto other devices and cases, each given new latencies: log-normal
around the real p50 with a slow tail, in the harness's resolution (1 ns = 1e-6 ms), so that
they compress as real ones do. With --postgres (or when tests/pglab.py finds the server
binaries and --no-postgres is not given) the same figures on a throwaway PostgreSQL server.

Run: python tests/perf/bench_history.py [--runs 100] [--reps 3] [--no-postgres]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from orchestrator import history  # noqa: E402
from orchestrator.history import History  # noqa: E402
from orchestrator.rundir import LoadedRun, load_run  # noqa: E402


def real_run(root: Path) -> LoadedRun:
    """One real run: a local device, one synthetic model, about 300 timed runs."""
    from orchestrator import run as runner
    os.environ["BENCHFLEET_CACHE"] = str(root / "cache")
    os.environ[history.HISTORY_ENV] = "off"
    inventory = root / "inv.yaml"
    inventory.write_text(yaml.safe_dump({"devices": {"localhost": {
        "transport": "local", "python": sys.executable, "workdir": str(root / "wd")}}}))
    suite = root / "suite.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "bench", "cooldown": {"mode": "none"},
        "settings": {"warmup_runs": 5, "warmup_min_s": 0.01, "runs": 300, "min_duration_s": 0.05,
                     "max_duration_s": 10, "case_timeout_s": 120, "interval_ms": 0},
        "models": [{"name": "spin", "synthetic_ms": 0.5}],
        "matrix": [{"runtime": "synthetic"}]}, sort_keys=False))
    kwargs = {}
    import inspect
    if "after" in inspect.signature(runner.run_suite).parameters:
        kwargs["after"] = runner.AfterRun(history="off", html=False)
    with open(os.devnull, "w") as quiet:
        summary = runner.run_suite(suite, [inventory], results_dir=root / "results",
                                   progress=runner.Progress(quiet), **kwargs)
    return load_run(summary.run_dir)


def with_latencies(result, values, device, case_id):
    """The result on another device and case, measured as `values` (ms)."""
    timing = result.timing
    summary = timing.summary.model_copy(update={
        "n": len(values), "mean": float(values.mean()), "std": float(values.std()),
        "min": float(values.min()), "max": float(values.max()),
        "cv": float(values.std() / values.mean()),
        **{key: float(np.percentile(values, float(key[1:].replace("_", "."))))
           for key in ("p50", "p90", "p95", "p99", "p99_9")}})
    timing = timing.model_copy(update={"latencies_ms": values.tolist(), "runs": len(values),
                                       "summary": summary})
    return result.model_copy(update={"timing": timing, "case_id": case_id,
                                     "label": "%s #%s" % (result.label, case_id[-4:]),
                                     "device": dict(result.device, name=device)})


def synthetic_run(template: LoadedRun, run_id, devices, cases, samples, rng, day=0) -> LoadedRun:
    base = template.results[0]
    p50 = base.timing.summary.p50
    results = []
    for d in range(devices):
        for c in range(cases):
            values = p50 * (1.0 + 0.02 * d) * rng.lognormal(0.0, 0.03, samples)
            values[rng.random(samples) < 0.01] *= 3.0   # a slow tail
            results.append(with_latencies(base, np.round(values, 6), "dev%02d" % d,
                                          "c-%010x" % (c + 1)))
    manifest = dict(template.manifest, run_id=run_id,
                    started_at="2026-01-%02dT%02d:%02d:00Z" % (1 + day // 96,
                                                               (day % 96) // 4,
                                                               (day % 4) * 15))
    return LoadedRun(template.run_dir, manifest, ["dev%02d" % d for d in range(devices)],
                     results)


def sqlite_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def vacuumed(url: str, path: Path) -> int:
    import sqlite3
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("VACUUM")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return sqlite_size(path)


def pg_size(url: str) -> int:
    import sqlalchemy
    engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
    with engine.connect() as conn:
        size = conn.execute(sqlalchemy.text(
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c WHERE c.relname LIKE "
            "'bf\\_%' AND c.relkind = 'r'")).scalar()
    engine.dispose()
    return int(size)


def median_ms(fn, reps=20):
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def figures(kind, new_url, template, args, rng):
    """Every figure on one kind of database; new_url() gives a fresh (url, sqlite path)."""
    print("\n== %s" % kind)
    for samples in (300, 3000):
        url, path = new_url()
        run = synthetic_run(template, "size-%d" % samples, 10, 100, samples, rng)
        with History(url) as h:
            start = time.perf_counter()
            h.store_run(run)
            took = time.perf_counter() - start
        if path is not None:
            size, after = sqlite_size(path), vacuumed(url, path)
            print("size, 1000 results x %4d samples: %6.2f MB stored, %6.2f MB after VACUUM "
                  "(%.2f KB per result; stored in %.2f s)"
                  % (samples, size / 1e6, after / 1e6, after / 1000 / 1e3, took))
        else:
            size = pg_size(url)
            print("size, 1000 results x %4d samples: %6.2f MB in the bf_ tables (stored in "
                  "%.2f s)" % (samples, size / 1e6, took))
    url, _ = new_url()
    times = []
    with History(url) as h:
        for rep in range(args.reps):
            run = synthetic_run(template, "store-%d" % rep, 10, 100, 300, rng, day=rep)
            start = time.perf_counter()
            h.store_run(run)
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        h.store_run(run)
        again = time.perf_counter() - start
    print("store 1000 results (300 samples): median %.3f s of %d (%s); storing it again "
          "(all known): %.3f s" % (statistics.median(times), len(times),
                                   ", ".join("%.3f" % t for t in times), again))
    url, _ = new_url()
    with History(url) as h:
        start = time.perf_counter()
        for day in range(args.runs):
            h.store_run(synthetic_run(template, "q-%03d" % day, 10, 10, 300, rng, day=day))
        filled = time.perf_counter() - start
        one = median_ms(lambda: h.results(device="dev03", case_id="c-0000000005",
                                          latencies=True))
        got = h.results(device="dev03", case_id="c-0000000005", latencies=True)
        assert len(got) == args.runs and all(len(r["latencies_ms"]) == 300 for r in got)

        def trend():
            ids = [r["run_id"] for r in h.runs(device="dev03", limit=30)]
            return h.results(run_ids=ids, device="dev03", latencies=True)
        both = median_ms(trend)
        plain = median_ms(lambda: h.results(device="dev03", case_id="c-0000000005"))
    print("query one device x case over %d runs (%d results stored in %.1f s): %.2f ms with "
          "latencies, %.2f ms without; runs(device, limit=30) + results(those, device): "
          "%.2f ms (300 results)" % (args.runs, args.runs * 100, filled, one, plain, both))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        root = Path(tmp)
        template = real_run(root)
        print("template: run %s, %d result(s), %d samples, p50 %.4f ms"
              % (template.run_id, len(template.results), template.results[0].timing.runs,
                 template.results[0].timing.summary.p50))
        count = [0]

        def new_sqlite():
            count[0] += 1
            path = root / ("h%d" % count[0]) / "history.sqlite"
            return "sqlite:///%s" % path, path
        figures("SQLite %s" % __import__("sqlite3").sqlite_version, new_sqlite, template, args,
                rng)
        if args.no_postgres:
            return
        import pglab
        reason = pglab.missing_reason()
        if reason:
            print("\n(PostgreSQL skipped: %s)" % reason)
            return
        lab = pglab.PgLab()
        try:
            lab.start()
            figures("PostgreSQL (tests/pglab.py, fsync off)",
                    lambda: (lab.create_database()[1], None), template, args, rng)
        finally:
            lab.stop()


if __name__ == "__main__":
    main()
