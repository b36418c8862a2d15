"""One `benchfleet run`: load, plan, build artifacts, execute on every device, report.

Everything here is glue between the modules that own each step; what a step means lives there.
Results already measured are on disk (raw/<device>/) before anything later can fail.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent import schema
from agent.fsutil import atomic_write_json
from orchestrator import __version__
from orchestrator.errors import ModelBuildError, OrchestratorError


def cache_root() -> Path:
    env = os.environ.get("BENCHFLEET_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "benchfleet"


def probe_cache_path(device_name: str) -> Path:
    return cache_root() / "probes" / (device_name + ".json")


def cached_probes(inventory) -> dict:
    """Probe documents cached by `benchfleet devices probe`, by device name (missing: absent)."""
    probes = {}
    for dev in inventory:
        path = probe_cache_path(dev.name)
        try:
            probes[dev.name] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return probes


@dataclass
class RunSummary:
    run_id: str
    run_dir: Path
    rows: list = field(default_factory=list)
    device_errors: dict = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return any(r["status"] == "failed" for r in self.rows)


class Progress:
    """Live, line-based progress per device (safe from many threads; readable in CI logs too)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.lock = threading.Lock()

    def say(self, device: str, text: str) -> None:
        with self.lock:
            print("[%s] %s" % (device, text), file=self.stream, flush=True)

    def event(self, device: str, ev: dict) -> None:
        kind = ev.get("event")
        if kind == "case_start":
            self.say(device, "case %s/%s %s" % (ev.get("index", 0) + 1, ev.get("total"),
                                                ev.get("label") or ev.get("case_id")))
        elif kind == "case_end":
            p50 = ev.get("p50_ms")
            tail = " p50 %.3f ms" % p50 if isinstance(p50, (int, float)) else ""
            self.say(device, "  -> %s%s" % (ev.get("status"), tail))
        elif kind == "cooldown":
            self.say(device, "  cool-down %.0f s" % (ev.get("seconds") or 0))
        elif kind in ("deploy", "note"):
            self.say(device, ev.get("text", kind))


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def build_artifacts(plan, suite, progress: Progress) -> tuple[dict, dict]:
    """Build/resolve every model variant a RUN case needs, once.

    Returns (artifacts by (model, variant), build problems by (model, variant)); a variant that
    cannot be built turns its cases into skipped rows, never a crash of the whole run.
    """
    from orchestrator import modelzoo
    needed = {}
    for dplan in plan.devices:
        for case in dplan.cases:
            if case.skip_reason is None and case.format != "synthetic":
                needed[(case.model_name, case.variant)] = case
    artifacts, problems = {}, {}
    for key, case in needed.items():
        spec = suite.model(case.model_name)
        try:
            if spec.builtin:
                progress.say("controller", "model %s/%s (built once, then cached)" % key)
                artifacts[key] = modelzoo.build_model(spec.builtin, case.variant)
            else:
                artifacts[key] = modelzoo.resolve_user_model(spec.resolved_path())
        except ModelBuildError as exc:
            problems[key] = str(exc)
    return artifacts, problems


def job_case(case, artifact) -> dict:
    """A planned case as a job.json case (agent/schema.py check_case)."""
    model = {"name": case.model_name, "variant": case.variant, "format": case.format,
             "sha256": artifact.sha256 if artifact else None,
             "path": "blobs/" + artifact.sha256 if artifact else None,
             "synthetic_ms": case.synthetic_ms}
    return {"case_id": case.case_id, "label": case.label, "model": model,
            "runtime": dict(case.runtime), "settings": dict(case.settings)}


def controller_result(job: dict, case: dict, status: str, reason: str, hint=None,
                      substatus=None) -> dict:
    """A result the controller writes itself (planned skip, model build problem)."""
    from orchestrator.executor import make_failed_result
    doc = make_failed_result(job, case, substatus or "error", reason)
    doc.update(status=status, substatus=substatus, reason=reason, hint=hint)
    problems = schema.check_result(doc)
    if problems:
        raise AssertionError("controller-made result is invalid: %s" % problems)
    return doc


def _device_job(run_id, nonce, suite, dplan, artifacts, problems):
    """(job, planned result docs, blobs) for one device."""
    job = {"schema_version": schema.SCHEMA_VERSION, "kind": schema.JOB_KIND, "run_id": run_id,
           "nonce": nonce, "device": dplan.device.name,
           "cooldown": suite.cooldown.model_dump(), "cases": []}
    planned, blobs = [], {}
    for case in dplan.cases:
        artifact = artifacts.get((case.model_name, case.variant))
        jc = job_case(case, artifact)
        if case.skip_reason is not None:
            planned.append(controller_result(job, jc, "skipped", case.skip_reason, case.skip_hint))
        elif (case.model_name, case.variant) in problems:
            planned.append(controller_result(job, jc, "skipped",
                                             problems[(case.model_name, case.variant)]))
        else:
            job["cases"].append(jc)
            if artifact is not None:
                blobs[artifact.sha256] = artifact.local_path
    return job, planned, blobs
