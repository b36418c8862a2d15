"""The verdicts against planted faults, through the real agent, as one table (not a pytest test).

One agent run per fault (supervisor, forked worker, harness, synthetic backend; the thermal and
throttle faults on a live fake sysfs tree through BENCHFLEET_SYS_ROOT), then a line per case:
the fault, the verdict, the figures it rests on, and the first reason. Paced cases add their
miss rate. The hog fault (a CPU hog pinned to the case's core from halfway) is in
tests/agent/test_verdicts.py; it needs pinned hogs timed against the case.
Run: python tests/perf/planted_faults.py [--long]   (--long: 3 s windows instead of 1.5 s)
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests", "agent"))

from agent import fsutil  # noqa: E402
from agent_helpers import (events_so_far, make_job, run_agent, synthetic_case,  # noqa: E402
                           write_file)

THROTTLE = "sys/devices/platform/soc/soc:firmware/get_throttled"






def run(tmp, name, cases, cooldown=None, device=None):
    """One agent run of `cases`; `device(root, out, stop)` plays a fake device meanwhile."""
    run_dir = os.path.join(tmp, name, "runs", "r1")
    os.makedirs(run_dir)
    job_path, out = os.path.join(run_dir, "job.json"), os.path.join(run_dir, "out")
    with open(job_path, "w") as f:
        json.dump(make_job(cases, cooldown=cooldown), f)
    env = {}
    thread, stop = None, threading.Event()
    if device is not None:
        root = os.path.join(tmp, name, "device")
        env[fsutil.SYS_ROOT_ENV] = root
        thread = threading.Thread(target=device, args=(root, out, stop))
        thread.daemon = True
        thread.start()
        time.sleep(0.1)
    try:
        proc = run_agent(["run", job_path, "--out", out], timeout=600, extra_env=env)
    finally:
        stop.set()
        if thread is not None:
            thread.join()
    if proc.returncode != 0:
        raise SystemExit("agent failed on %s: %s" % (name, proc.stderr[-2000:]))
    return [fsutil.read_json(os.path.join(out, c["case_id"] + ".json")) for c in cases]


def hot_after_first_case(root, out, stop):
    """Thermal zone at 40 C until the first case starts, then 75 C for good."""
    write_file(root, "sys/class/thermal/thermal_zone0/type", "cpu-thermal")
    write_file(root, "sys/class/thermal/thermal_zone0/temp", 40000)
    while not stop.wait(0.01):
        if any(e["event"] == "case_start" for e in events_so_far(out)):
            write_file(root, "sys/class/thermal/thermal_zone0/temp", 75000)
            return


def throttles_mid_case(root, out, stop):
    """A Pi whose firmware raises under-voltage + frequency capped 0.5 s into the case."""
    write_file(root, THROTTLE, "0")
    started = None
    while not stop.wait(0.005):
        if started is None and any(e["event"] == "case_start" for e in events_so_far(out)):
            started = time.monotonic()
        if started is not None and time.monotonic() - started > 0.5:
            write_file(root, THROTTLE, "50005")
            return


def describe(doc):
    v = doc["validity"]
    s = doc["timing"]["summary"]
    fig = "p50 %.3f ms, +-%.2f%%, drift %+.1f%%, CV %.1f%%" % (
        s["p50"], (v["p50_ci_rel"] or 0) * 100, (v["drift"] or 0) * 100, (s["cv"] or 0) * 100)
    paced = doc["timing"].get("paced")
    if paced:
        fig += "; miss %.1f%% (late %d, dropped %d of %d), p50 from schedule %.1f ms" % (
            paced["miss_rate"] * 100, paced["late"], paced["dropped"], paced["frames"],
            paced["from_schedule"]["p50"])
    first = (v["reasons"] or [""])[0]
    return v["status"], fig, first[:90]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--long", action="store_true")
    args = ap.parse_args()
    secs = 3.0 if args.long else 1.5
    steady = dict(runs=300, min_duration_s=secs, max_duration_s=60.0, warmup_runs=20,
                  interval_ms=0.0)
    tmp = tempfile.mkdtemp(prefix="planted-")
    rows = []
    try:
        plain = [
            ("clean 1 ms (spin)", synthetic_case("c-clean", 1.0, **steady)),
            ("bimodal 2 / 2.8 ms (75/25)", synthetic_case(
                "c-phases", 1.0, options={"phases": "2:0.75,2.8:0.25", "wait": "sleep"}, **steady)),
            ("rare long invokes (jitter 0.05)", synthetic_case(
                "c-tail", 2.0, options={"jitter": 0.05, "wait": "sleep"}, **steady)),
            ("drift 20%/s", synthetic_case("c-drift", 1.0, options={"drift": 0.2}, **steady)),
            ("truncated (max_duration_s 0.2)", synthetic_case(
                "c-trunc", 1.0, **dict(steady, runs=100000, max_duration_s=0.2))),
            ("CV bound set (cv_max 0.01, bimodal)", synthetic_case(
                "c-cv", 1.0, options={"phases": "2:0.75,2.8:0.25", "wait": "sleep"},
                **dict(steady, cv_max=0.01))),
            ("paced 5 ms at 100 fps", synthetic_case(
                "c-paced5", 5.0, **dict(steady, mode="paced", target_fps=100.0, runs=200))),
            ("paced 12 ms at 100 fps, skip", synthetic_case(
                "c-paced12s", 12.0, **dict(steady, mode="paced", target_fps=100.0, runs=200))),
            ("paced 12 ms at 100 fps, queue", synthetic_case(
                "c-paced12q", 12.0, **dict(steady, mode="paced", target_fps=100.0, runs=200,
                                            on_late="queue"))),
        ]
        docs = run(tmp, "plain", [c for _, c in plain])
        rows += [(name,) + describe(d) for (name, _), d in zip(plain, docs)]
        hot = [synthetic_case("c-before", 1.0, **steady), synthetic_case("c-unsettled", 1.0,
                                                                        **steady)]
        docs = run(tmp, "thermal", hot, cooldown={"mode": "thermal", "seconds": 0.0,
                                                  "delta_c": 3.0, "max_wait_s": 1.0,
                                                  "rewarm_s": 0.5}, device=hot_after_first_case)
        rows.append(("thermal cool-down never settles",) + describe(docs[1]))
        docs = run(tmp, "throttle", [synthetic_case("c-throttle", 1.0,
                                                    **dict(steady, interval_ms=20.0))],
                   device=throttles_mid_case)
        rows.append(("Pi throttle flag raised mid-case",) + describe(docs[0]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    width = max(len(r[0]) for r in rows)
    print("%-*s  %-7s  %s" % (width, "planted fault", "verdict", "figures / first reason"))
    for name, status, fig, why in rows:
        print("%-*s  %-7s  %s" % (width, name, status, fig))
        if why:
            print("%-*s           %s" % (width, "", why))


if __name__ == "__main__":
    main()
