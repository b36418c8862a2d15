"""How long `benchfleet compare` takes for two runs of 50 cases (and a baseline of 5 runs).

The runs are made from one real synthetic result of this machine's agent (a tiny real run),
copied to 50 cases per run with 2000 latencies each (the nightly protocol's measured runs), a
few cases planted 10% slower in B. Timed side by side in one process: compare of two run folders,
of two run ids from a SQLite history, and of B against a baseline of five stored runs.

    python3 tests/perf/bench_compare.py [--cases 50] [--samples 2000] [--reps 5]
"""

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def real_run(tmp: Path) -> Path:
    """One real run of one synthetic case on this machine (the agent's own result layout)."""
    inv = tmp / "inv.yaml"
    inv.write_text(yaml.safe_dump({"devices": {"bench": {
        "transport": "local", "python": sys.executable, "workdir": str(tmp / "wd")}}}))
    suite = tmp / "s.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "perf", "settings": {"warmup_runs": 2, "warmup_min_s": 0.01, "runs": 50,
                                     "min_duration_s": 0.1, "max_duration_s": 5,
                                     "interval_ms": 0},
        "cooldown": {"mode": "fixed", "seconds": 0},
        "models": [{"name": "spin", "synthetic_ms": 0.2}], "matrix": [{"runtime": "synthetic"}]}))
    env = dict(os.environ, BENCHFLEET_CACHE=str(tmp / "cache"), BENCHFLEET_HISTORY="off")
    subprocess.run([sys.executable, "-m", "orchestrator", "run", str(suite), "-i", str(inv),
                    "--results-dir", str(tmp / "seed")], check=True, env=env, cwd=str(ROOT),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return next(p for p in (tmp / "seed").iterdir() if (p / "manifest.json").exists())


def clone_run(seed: Path, out: Path, run_id: str, started: str, cases: int, samples: int,
              rng, slow=()):
    """A run folder of `cases` copies of the seed's result (new case ids, new latencies)."""
    manifest = json.loads((seed / "manifest.json").read_text())
    [doc0] = [json.loads(p.read_text()) for p in (seed / "raw" / "bench").glob("*.json")]
    ids = ["c-%010x" % (i + 1) for i in range(cases)]
    manifest.update(run_id=run_id, started_at=started)
    manifest["devices"]["bench"]["cases"] = ids
    raw = out / run_id / "raw" / "bench"
    raw.mkdir(parents=True)
    (out / run_id / "devices").mkdir()
    from agent import stats
    for i, case_id in enumerate(ids):
        doc = copy.deepcopy(doc0)
        base = 1.0 + 0.1 * i
        if i in slow:
            base *= 1.10
        lat = np.round(rng.normal(base, base * 0.02, samples).clip(min=0.01), 6).tolist()
        doc.update(case_id=case_id, run_id=run_id, label="case %d" % i)
        doc["timing"]["latencies_ms"] = lat
        doc["timing"]["runs"] = len(lat)
        doc["timing"]["summary"] = dict(doc["timing"]["summary"], **stats.summarize(lat))
        (raw / (case_id + ".json")).write_text(json.dumps(doc))
    (out / run_id / "manifest.json").write_text(json.dumps(manifest))
    return out / run_id


def timed(fn, reps):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=50)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    from orchestrator import compare
    from orchestrator.history import History
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        seed = real_run(tmp)
        out = tmp / "results"
        runs = [clone_run(seed, out, "20261201-00000%d-beef" % i, "2026-12-0%dT00:00:00Z" % (i + 1),
                          args.cases, args.samples, rng) for i in range(6)]
        b = clone_run(seed, out, "20261209-000000-beef", "2026-12-09T00:00:00Z", args.cases,
                      args.samples, rng, slow={3, 17, 41})
        t_folders, doc = timed(lambda: compare.compare(str(runs[-1]), str(b)), args.reps)
        counts = doc["counts"]
        with History("sqlite:///%s" % (out / "history.sqlite")) as h:
            t0 = time.perf_counter()
            for run in runs + [b]:
                h.import_path(run)
            t_store = time.perf_counter() - t0
            t_ids, _ = timed(lambda: compare.compare(runs[-1].name, b.name, out, h), args.reps)
            t_base, base = timed(lambda: compare.compare("baseline", b.name, out, h), args.reps)
            from orchestrator.trends import trends
            t_trends, series = timed(lambda: trends(h, suite="perf"), args.reps)
            marked = sum(1 for s in series for p in s["points"] if p["change"])
        size = (out / "history.sqlite").stat().st_size

        def cli():
            subprocess.run([sys.executable, "-m", "orchestrator", "compare", runs[-1].name,
                            b.name, "--results-dir", str(out)], cwd=str(ROOT),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t_cli, _ = timed(cli, args.reps)
    print("compare of two runs of %d cases x %d latencies (median of %d):"
          % (args.cases, args.samples, args.reps))
    print("  two run folders:          %.3f s  (verdicts: %s)" % (t_folders, counts))
    print("  two run ids (history):    %.3f s" % t_ids)
    print("  baseline of 5 runs:       %.3f s  (verdicts: %s)" % (t_base, base["counts"]))
    print("  the command (a new process): %.3f s" % t_cli)
    print("  history trends, %d cases x 7 runs: %.3f s (%d changes marked)"
          % (len(series), t_trends, marked))
    print("  storing the 7 runs:       %.3f s; history.sqlite %.1f MB for %d results"
          % (t_store, size / 1e6, 7 * args.cases))


if __name__ == "__main__":
    main()
