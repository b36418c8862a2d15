"""Job documents: one device's planned cases as job.json (agent/schema.py), and the results the
controller writes itself (planned skips, devices that failed). Both are built here and only here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agent import schema
from agent.backends.catalog import BY_NAME
from orchestrator.models.artifacts import sha256_file

CONTROLLER_VERSION = "controller"


@dataclass
class DeviceJob:
    """What one device is sent: the job, the files it names (sha256 -> local path) and the
    results already known without running anything (skips), in plan order."""

    job: dict
    blobs: dict = field(default_factory=dict)
    planned: list = field(default_factory=list)


def controller_result(job, case, status, reason, substatus=None, hint=None) -> dict:
    """A result the controller writes itself (a planned skip, a case its device never ran)."""
    device = {"name": job.get("device"), "source": "controller"}
    doc = schema.new_result(job, case, status, device, CONTROLLER_VERSION, substatus, reason, hint)
    problems = schema.check_result(doc)
    if problems:   # a bug in the caller, not bad input: keep the traceback
        raise AssertionError("controller-made result is invalid: %s" % "; ".join(problems))
    return doc


def failed_result(job, case, substatus, reason) -> dict:
    return controller_result(job, case, "failed", reason, substatus)


IDENTITY_RUNTIME = ("backend", "threads", "affinity", "precision", "background")


def with_job_identity(result, job, case):
    """(result, changed): `result` with what names its row taken from the job the controller
    sent, never from the device: label, model, device name and the runtime's backend, threads,
    affinity and precision (run_id, nonce and case_id are checked against the job on fetch).
    What the device measured or said about its run (timing, versions, provider, reasons) is
    left as it is. `changed` names the fields the device's result had otherwise."""
    from orchestrator import records
    doc = result.to_doc()
    label = case.get("label") or case.get("case_id")
    model = dict(case.get("model") or {})
    runtime = dict(doc.get("runtime") or {})
    sent = case.get("runtime") or {}
    runtime.update((k, sent.get(k)) for k in IDENTITY_RUNTIME if k in sent or k in runtime)
    device = dict(doc.get("device") or {}, name=job.get("device"))
    changed = [what for what, ours, theirs in (
        ("label", label, doc.get("label")), ("model", model, doc.get("model")),
        ("runtime", runtime, doc.get("runtime")),
        ("device name", device["name"], (doc.get("device") or {}).get("name")))
        if ours != theirs]
    if not changed:
        return result, []
    doc.update(label=label, model=model, runtime=runtime, device=device)
    return records.from_doc(doc), changed


def job_case(case, artifact, inputs=None) -> dict:
    """A planned case as a job.json case (agent/schema.py check_case); inputs: its
    orchestrator.inputs.InputsBlob (model.inputs), None for seeded random inputs."""
    model = {"name": case.model_name, "variant": case.variant, "format": case.format,
             "sha256": artifact.sha256 if artifact else None,
             "path": "blobs/" + artifact.sha256 if artifact else None,
             "synthetic_ms": case.synthetic_ms}
    if inputs is not None:
        model["inputs"] = inputs.job_entry()
    return {"case_id": case.case_id, "label": case.label, "model": model,
            "runtime": dict(case.runtime), "settings": dict(case.settings)}


def device_job(run_id: str, nonce: str, suite, dplan, artifacts: dict, problems: dict,
               controller: dict | None = None, inputs: dict | None = None) -> DeviceJob:
    """The job of one device plan.

    artifacts/problems: by (model name, variant), from the model builds; a case whose model could
    not be built is a skipped row with the build's reason, never a crash of the run.
    controller: who runs it (user, host, pid), shown to anyone who finds the device busy.
    inputs: by (model name, variant, folder), orchestrator.inputs.prepare_plan's InputsBlob or
    the reason it could not be made (the case is then a skipped row with it).
    """
    job = {"schema_version": schema.SCHEMA_VERSION, "kind": schema.JOB_KIND, "run_id": run_id,
           "nonce": nonce, "device": dplan.device.name,
           "cooldown": suite.cooldown.model_dump(), "cases": []}
    if controller:
        job["controller"] = {k: controller[k] for k in schema.CONTROLLER_FIELDS if k in controller}
    if dplan.device.benchmark_model:
        job["tools"] = {"benchmark_model": dplan.device.benchmark_model}
    out = DeviceJob(job)
    for case in dplan.cases:
        key = (case.model_name, case.variant)
        artifact = artifacts.get(key)
        problem = problems.get(key)
        blob = None
        if case.inputs is not None and case.skip_reason is None and problem is None:
            blob = (inputs or {}).get(key + (case.inputs,))
            if not hasattr(blob, "job_entry"):
                problem = blob or "inputs %s were not prepared" % Path(case.inputs).name
                blob = None
        jc = job_case(case, artifact, blob)
        if case.skip_reason is not None:
            out.planned.append(controller_result(job, jc, "skipped", case.skip_reason,
                                                 hint=case.skip_hint))
        elif problem is not None:
            out.planned.append(controller_result(job, jc, "skipped", problem))
        else:
            job["cases"].append(jc)
            if artifact is not None:
                out.blobs[artifact.sha256] = artifact.local_path
            if blob is not None:
                out.blobs[blob.sha256] = blob.local_path
            _ship_user_backend(out, suite, case.runtime["backend"])
    return out


def _ship_user_backend(out: DeviceJob, suite, name: str) -> None:
    """A user backend's file travels as a blob and is named in job.backends."""
    if name in BY_NAME or name in out.job.get("backends", {}):
        return
    spec = suite.backend(name)
    sha = sha256_file(spec.path)
    out.job.setdefault("backends", {})[name] = {
        "path": "blobs/" + sha, "sha256": sha, "file": Path(spec.path).name}
    out.blobs[sha] = Path(spec.path)
