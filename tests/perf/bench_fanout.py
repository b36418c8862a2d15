"""Fan-out overhead of `benchfleet run` against a raw Fabric ThreadingGroup (not a pytest test).

Both sides start as a fresh process, as a user would start them, on the same real sshd devices
on 127.0.0.1 (tests/sshlab.py):
  benchfleet: `python -m orchestrator run` of one synthetic case of about SECONDS s per device,
              steady state (the agent is already on the devices from a first, untimed run); the
              case sleeps between invokes (`wait: sleep`), as `sleep` does on the raw side, so
              the figure is the tool's overhead. With --wait spin the case busy-waits as a real
              benchmark computes: N simulated devices on a machine with fewer cores then
              measure their fight for the CPU, not the fan-out;
  raw:        a Python process running fabric.ThreadingGroup(...).run("sleep SECONDS").
Repetitions alternate the two sides; medians of wall seconds and their ratio are printed, for 8
devices and for 1.

Run: python tests/perf/bench_fanout.py [--reps 5] [--devices 8,1] [--seconds 2] [--wait sleep]
Needs sshd (apt-get install openssh-server). Prints figures; asserts nothing about them.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

import yaml  # noqa: E402

import sshlab  # noqa: E402

RAW = r"""
import sys
from fabric import ThreadingGroup
seconds, hosts = sys.argv[1], sys.argv[2:]
group = ThreadingGroup(*hosts)   # user, port and key of each come from ~/.ssh/config
for host, result in group.run("sleep " + seconds, hide=True).items():
    assert result.exited == 0, host
group.close()
"""


def write_suite(folder, seconds, wait="sleep"):
    doc = {"name": "fanout",
           "settings": {"warmup_runs": 1, "warmup_min_s": 0.0, "runs": 1,
                        "min_duration_s": float(seconds), "max_duration_s": seconds + 30.0,
                        "case_timeout_s": seconds + 120.0},
           "cooldown": {"mode": "fixed", "seconds": 0.0},
           "models": [{"name": "spin", "synthetic_ms": 5.0}],
           "matrix": [{"runtime": "synthetic", "options": {"wait": wait}}]}
    path = Path(folder) / "fanout.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def ssh_config(folder, devices):
    """An ssh_config naming each lab device, so the raw side connects as plainly as possible."""
    lines = []
    for d in devices:
        lines += ["Host %s" % d.name, "  HostName %s" % d.host, "  Port %d" % d.port,
                  "  User root", "  IdentityFile %s" % d.identity_file,
                  "  UserKnownHostsFile %s" % d.known_hosts, ""]
    path = Path(folder) / "ssh_config"
    path.write_text("\n".join(lines))
    return path


def timed(argv, env, cwd):
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit("failed (%d): %s\n%s%s" % (proc.returncode, " ".join(argv), proc.stdout,
                                            proc.stderr))
    return wall


def bench(lab, count, seconds, reps, folder, wait):
    devices = lab.devices[:count]
    inv = lab.write_inventory(Path(folder) / ("inv%d.yaml" % count), devices,
                              python=sys.executable)
    suite = write_suite(folder, seconds, wait)
    results = Path(folder) / ("results%d" % count)
    env = dict(os.environ)
    env["HOME"] = str(Path(folder) / "home")   # fabric reads ~/.ssh/config: use ours
    os.makedirs(Path(env["HOME"]) / ".ssh", exist_ok=True)
    Path(env["HOME"], ".ssh", "config").write_text(ssh_config(folder, devices).read_text())
    ours = [sys.executable, "-m", "orchestrator", "run", str(suite), "-i", str(inv),
            "--results-dir", str(results), "--forks", str(max(8, count))]
    raw = [sys.executable, "-c", RAW, "%g" % seconds] + [d.name for d in devices]
    timed(ours, env, ROOT)   # deploys the agent: not timed
    timed(raw, env, ROOT)
    times = {"benchfleet": [], "raw": []}
    for rep in range(reps):
        order = [("benchfleet", ours), ("raw", raw)]
        for name, argv in order if rep % 2 == 0 else order[::-1]:
            times[name].append(timed(argv, env, ROOT))
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--devices", default="8,1", help="device counts, comma separated")
    ap.add_argument("--seconds", type=float, default=2.0, help="length of the one case")
    ap.add_argument("--wait", choices=("sleep", "spin"), default="sleep",
                    help="the synthetic case sleeps (overhead only) or busy-waits")
    args = ap.parse_args()
    reason = sshlab.sshd_missing_reason()
    if reason:
        sys.exit(reason)
    counts = [int(c) for c in args.devices.split(",")]
    folder = tempfile.mkdtemp(prefix="bench-fanout-")
    os.chmod(folder, 0o755)
    lab = sshlab.SshLab(Path(folder) / "lab")
    try:
        for i in range(max(counts)):
            lab.add("dev%d" % (i + 1))
        print("one %g s synthetic case (wait: %s) per device; %d interleaved repetitions; "
              "wall seconds; %d CPU cores" % (args.seconds, args.wait, args.reps, os.cpu_count()))
        print("%-8s %-12s %-12s %s" % ("devices", "benchfleet", "raw fabric", "ratio of medians"))
        for count in counts:
            times = bench(lab, count, args.seconds, args.reps, folder, args.wait)
            ours, raw = (statistics.median(times[k]) for k in ("benchfleet", "raw"))
            print("%-8d %-12.2f %-12.2f %.2fx   (benchfleet %s; raw %s)"
                  % (count, ours, raw, ours / raw,
                     " ".join("%.2f" % t for t in times["benchfleet"]),
                     " ".join("%.2f" % t for t in times["raw"])), flush=True)
    finally:
        lab.stop()


if __name__ == "__main__":
    main()
