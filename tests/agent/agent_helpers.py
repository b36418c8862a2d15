"""Shared builders for the agent tests: job documents in a device-like workdir layout.

A plain module (not conftest) so tests import it by name; the fixture lives in conftest.py.
"""

import json
import os
import subprocess
import sys

from agent import schema
from livetree import write_file  # noqa: F401 (the telemetry tests import it from here)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FAST_SETTINGS = {"warmup_runs": 5, "warmup_min_s": 0.0, "runs": 50, "min_duration_s": 0.05,
                 "max_duration_s": 5.0, "input_seed": 0, "input_pool": 4, "cv_max": 1.0,
                 "case_timeout_s": 30.0}


NOISE_REASONS = ("coefficient of variation", "p50 uncertain", "drift ")


def reasons_besides_noise(doc):
    """The validity reasons other than the noise verdicts (cv_max, the p50's interval, drift). A
    busy 2-core machine running the tests in two processes can push a short case's figures over
    any bound; what a backend test proves is that nothing it asked for was refused, so it
    asserts this list is empty."""
    return [r for r in doc["validity"]["reasons"] if not r.startswith(NOISE_REASONS)]


def synthetic_case(case_id, ms=0.05, options=None, backend="synthetic", **settings):
    merged = dict(FAST_SETTINGS)
    merged.update(settings)
    return {"case_id": case_id, "label": "synthetic %s" % case_id,
            "model": {"name": "synthetic", "variant": "busy", "format": "synthetic",
                      "sha256": None, "path": None, "synthetic_ms": ms},
            "runtime": {"backend": backend, "threads": 1, "affinity": None, "precision": "fp32",
                        "options": options or {}},
            "settings": merged}


def make_job(cases, nonce="n0nce", cooldown=None):
    cooldown = dict(schema.DEFAULT_COOLDOWN, **(cooldown or {"mode": "none", "seconds": 0.0}))
    return {"schema_version": schema.SCHEMA_VERSION, "kind": "benchfleet.job", "run_id": "20261122-000000-test",
            "nonce": nonce, "device": "localhost", "cooldown": cooldown, "cases": cases}


def workdir_writer(tmp_path):
    """A device workdir with runs/<id>/; returns a writer: write_job(job) -> (job_path, out_dir)."""
    run_dir = tmp_path / "wd" / "runs" / "r1"
    run_dir.mkdir(parents=True)

    def write_job(job):
        path = run_dir / "job.json"
        path.write_text(json.dumps(job))
        return str(path), str(run_dir / "out")
    write_job.root = str(tmp_path / "wd")
    return write_job


def run_agent(args, timeout=120, extra_env=None, **kwargs):
    """`python -m agent ARGS` from the repository tree, as the supervisor would be started
    (extra_env: variables added to its environment, e.g. BENCHFLEET_SYS_ROOT)."""
    env = dict(os.environ, PYTHONPATH=REPO, **(extra_env or {}))
    return subprocess.run([sys.executable, "-m", "agent"] + list(args), cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=timeout, **kwargs)


def read_events(out_dir):
    with open(os.path.join(out_dir, "events.jsonl")) as f:
        return [json.loads(line) for line in f]


def events_so_far(out_dir):
    """The complete lines of a running agent's events.jsonl ([] before it exists)."""
    path = os.path.join(out_dir, "events.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]
