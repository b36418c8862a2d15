"""One `benchfleet run`: load, plan, build artifacts, execute on every device, report.

Everything here is glue between the modules that own each step; what a step means lives there.
Results already measured are on disk (raw/<device>/) before anything later can fail.
"""

from __future__ import annotations

import json
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent import schema
from agent.fsutil import atomic_write_json, atomic_write_text
from orchestrator import __version__
from orchestrator.probes import cached_probes
from orchestrator.errors import ConfigError, ModelBuildError, OrchestratorError


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
            self.say(device, "  cooled down %.1f s" % (ev.get("waited_s") or 0))
        elif kind in ("deploy", "note"):
            self.say(device, ev.get("text", kind))


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def build_artifacts(plan, suite, progress: Progress) -> tuple[dict, dict]:
    """Build/resolve every model variant a RUN case needs, once.

    Returns (artifacts by (model, variant), build problems by (model, variant)); a variant that
    cannot be built turns its cases into skipped rows, never a crash of the whole run.
    """
    from orchestrator.models import zoo
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
                artifacts[key] = zoo.build_model(
                    spec.builtin, case.variant, representative=spec.resolved_representative())
            else:
                artifacts[key] = zoo.resolve_user_model(spec.resolved_path())
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


def _device_job(run_id, nonce, suite, dplan, artifacts, problems):
    """(job, planned result docs, blobs) for one device."""
    from orchestrator.execute import controller_result
    job = {"schema_version": schema.SCHEMA_VERSION, "kind": schema.JOB_KIND, "run_id": run_id,
           "nonce": nonce, "device": dplan.device.name,
           "cooldown": suite.cooldown.model_dump(), "cases": []}
    planned, blobs = [], {}
    for case in dplan.cases:
        artifact = artifacts.get((case.model_name, case.variant))
        jc = job_case(case, artifact)
        if case.skip_reason is not None:
            planned.append(controller_result(job, jc, "skipped", case.skip_reason,
                                             hint=case.skip_hint))
        elif (case.model_name, case.variant) in problems:
            planned.append(controller_result(job, jc, "skipped",
                                             problems[(case.model_name, case.variant)]))
        else:
            job["cases"].append(jc)
            if artifact is not None:
                blobs[artifact.sha256] = artifact.local_path
    return job, planned, blobs


def _manifest(summary: RunSummary, state: str, suite_path, inventory_paths, plan, **extra) -> None:
    doc = {"run_id": summary.run_id, "state": state, "controller_version": __version__,
           "schema_version": schema.SCHEMA_VERSION, "suite": str(suite_path),
           "inventory": [str(p) for p in inventory_paths],
           "devices": {d.device.name: {"transport": d.device.transport,
                                       "cases": [c.case_id for c in d.cases],
                                       "skipped": [c.case_id for c in d.skipped]}
                       for d in plan.devices}}
    doc.update(extra)
    atomic_write_json(str(summary.run_dir / "manifest.json"), doc)


def _write_raw(raw_dir: Path, doc: dict) -> None:
    raw_dir.mkdir(parents=True, exist_ok=True)
    path = raw_dir / (doc["case_id"] + ".json")
    if not path.exists():  # the executor already wrote what the device sent; never overwrite it
        atomic_write_json(str(path), doc)


def run_suite(suite_path, inventory_paths, devices=None, results_dir="results",
              max_parallel=8, progress: Progress | None = None) -> RunSummary:
    """Run a suite end to end and write results/<run-id>/. Bad input raises ConfigError first."""
    from orchestrator import deploy
    from orchestrator import execute
    from orchestrator.config.inventory import load_inventory
    from orchestrator.plan import plan as make_plan
    from orchestrator.config.suite import load_suite

    progress = progress or Progress()
    suite = load_suite(suite_path)
    inventory = load_inventory(inventory_paths)
    the_plan = make_plan(suite, inventory, devices=devices, probes=cached_probes(inventory))
    summary = _open_run(results_dir)
    manifest = dict(suite_path=suite_path, inventory_paths=inventory_paths, plan=the_plan,
                    started_at=_utc(), nonce=secrets.token_hex(16))
    _manifest(summary, state="running", **manifest)
    progress.say("controller", "run %s: %s" % (summary.run_id, summary.run_dir))

    artifacts, problems = build_artifacts(the_plan, suite, progress)
    pyz = deploy.local_agent()
    runs, planned = [], {}
    for dplan in the_plan.devices:
        job, done_docs, blobs = _device_job(summary.run_id, manifest["nonce"], suite, dplan,
                                            artifacts, problems)
        raw_dir = summary.run_dir / "raw" / dplan.device.name
        planned[dplan.device.name] = done_docs
        for doc in done_docs:
            _write_raw(raw_dir, doc)
            progress.say(dplan.device.name, "%s: %s: %s" % (doc["label"], doc["status"], doc["reason"]))
        if job["cases"]:
            runs.append(execute.DeviceRun(dplan.device, job, blobs, (Path(pyz[0]), pyz[1]), raw_dir))
    try:
        outcomes = {o.device: o for o in execute.run_devices(runs, max_parallel, progress.event)}
    except KeyboardInterrupt:
        _manifest(summary, state="interrupted", **manifest)
        progress.say("controller", "interrupted: results fetched so far are in %s/raw; agents "
                     "already started keep running on their devices" % summary.run_dir)
        raise
    _gather(summary, the_plan, planned, outcomes, progress)
    counts = _report(summary, the_plan)
    _manifest(summary, state="finished", finished_at=_utc(), counts=counts,
              device_errors=summary.device_errors, agent_sha256=pyz[1],
              artifacts={"%s/%s" % k: a.sha256 for k, a in artifacts.items()}, **manifest)
    return summary


def _utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _open_run(results_dir) -> RunSummary:
    run_id = new_run_id()
    summary = RunSummary(run_id, Path(results_dir) / run_id)
    try:
        (summary.run_dir / "raw").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError("--results-dir %s: cannot create %s: %s; pick a writable folder"
                          % (results_dir, summary.run_dir, exc.strerror or exc)) from None
    return summary


def _gather(summary, the_plan, planned, outcomes, progress) -> None:
    """Every device's result docs (planned skips + what it ran) into summary.rows, in plan order."""
    from orchestrator import report
    for dplan in the_plan.devices:
        name = dplan.device.name
        outcome = outcomes.get(name)
        docs = {d["case_id"]: d for d in planned[name] + (outcome.results if outcome else [])}
        if outcome and outcome.error:
            summary.device_errors[name] = outcome.error
            progress.say(name, "device error: %s" % outcome.error)
        for case in dplan.cases:   # plan order: the table reads like the suite
            doc = docs.get(case.case_id)
            if doc is not None:
                _write_raw(summary.run_dir / "raw" / name, doc)
                summary.rows.append(report.flat_row(doc, name))


def _report(summary, the_plan) -> dict:
    """results.csv, comparison.md and the printed table; returns the counts per status."""
    from orchestrator import report
    names = [d.device.name for d in the_plan.devices if d.cases]
    header, body = report.comparison(summary.rows, names)
    report.write_csv(summary.rows, summary.run_dir / "results.csv")
    atomic_write_text(str(summary.run_dir / "comparison.md"),
                      report.render_markdown(header, body, summary.rows, summary.run_id))
    counts = {s: sum(r["status"] == s for r in summary.rows) for s in schema.STATUSES}
    print("", flush=True)
    print(report.render_text(header, body))
    print("\ncells: p50 / p99 (99%-confidence upper bound; n/e = too few samples) / first, ms;"
          " * = INVALID (see comparison.md)")
    print("%d ok, %d skipped, %d failed -> %s" % (counts["ok"], counts["skipped"], counts["failed"],
                                                   summary.run_dir))
    return counts
