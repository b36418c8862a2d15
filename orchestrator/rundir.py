"""A run folder read back: its manifest and every checked result in raw/, in the run's order.

The tables (`benchfleet report`, `energy attach`), the history (`history import`, the store at the
end of a run), `compare` on folders and the notebook API (orchestrator/results.py) all read a run
through `load_run`, so each applies the same checks a fetched result gets: the file is parsed as
untrusted input, migrated from an older schema, checked by both the agent's schema and the
controller's model, and must carry the run's nonce. A row is named by the job the run sent
(RUN_DIR/devices/<device>/job.json), not by what the device claimed. A file that fails is
reported in `warnings` and left out; it never costs the other results.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from agent import schema


@dataclass
class LoadedRun:
    """One run folder: the manifest, the device columns in table order, the results (typed
    records.Result, in plan order per device) and what was left out and why."""

    run_dir: Path
    manifest: dict
    devices: list = field(default_factory=list)
    results: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.manifest["run_id"]

    @property
    def suite_name(self) -> str:
        return suite_name(self.manifest)

    def summary(self):
        """A run.RunSummary of these results (to write the tables again)."""
        from orchestrator.run import RunSummary
        return RunSummary(self.run_id, self.run_dir, devices=list(self.devices),
                          results=list(self.results),
                          device_errors=dict(self.manifest.get("device_errors") or {}))


def suite_name(manifest: dict) -> str:
    """The suite's name as the run recorded it; older manifests only have the suite's path, whose
    file stem is the name the suite loader gives a suite without `name:`."""
    name = manifest.get("suite_name")
    if isinstance(name, str) and name:
        return name
    return Path(str(manifest.get("suite") or "unknown")).stem


def load_doc(path: Path, nonce: str):
    """(doc, problems) of a raw result file: checked as a fetched result is."""
    from orchestrator import records
    from orchestrator.collect import loads_untrusted
    try:
        doc = schema.migrate_result(loads_untrusted(path.read_bytes()))
    except (OSError, ValueError) as exc:
        return None, ["cannot read: %s" % exc]
    problems = schema.check_result(doc) if isinstance(doc, dict) else ["not a result"]
    if not problems:
        problems = records.model_problems(doc)
    if not problems and doc.get("nonce") != nonce:
        problems = ["nonce: not this run's"]
    return doc, problems


def table_order(run_dir: Path, manifest: dict) -> list[str]:
    """Devices in the run's column order: as results.csv lists them (the plan's order), then any
    other device with cases (sorted: manifest.json does not keep the plan's order)."""
    order = []
    try:
        with open(run_dir / "results.csv", newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if row.get("device") and row["device"] not in order:
                    order.append(row["device"])
    except (OSError, csv.Error, UnicodeDecodeError):
        pass
    devices = manifest.get("devices") or {}
    order = [d for d in order if isinstance(devices.get(d), dict) and devices[d].get("cases")]
    order += sorted(d for d, v in devices.items()
                    if d not in order and isinstance(v, dict) and v.get("cases"))
    return order


def load_run(run_dir) -> LoadedRun:
    """Read a run folder (see the module's doc).

    Raises:
        ConfigError: not a run folder (no or a bad manifest.json).
    """
    from orchestrator import records
    from orchestrator.collect import loads_untrusted, parse_result
    from orchestrator.jobs import failed_result, with_job_identity
    from orchestrator.run import mark_emulated, read_manifest
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    loaded = LoadedRun(run_dir, manifest, devices=table_order(run_dir, manifest))
    for name in loaded.devices:
        job = None
        try:
            job = loads_untrusted((run_dir / "devices" / name / "job.json").read_bytes())
        except (OSError, ValueError):
            pass
        sent = {c.get("case_id"): c for c in (job or {}).get("cases") or []
                if isinstance(c, dict)} if isinstance(job, dict) else {}
        for case_id in manifest["devices"][name]["cases"]:
            path = run_dir / "raw" / name / (str(case_id) + ".json")
            if not path.is_file():
                continue
            doc, problems = load_doc(path, manifest["nonce"])
            case = sent.get(case_id)
            if problems and case is not None:   # the row the run made of a file it refused
                try:
                    problems = parse_result(path.read_bytes(), job, case_id)[1] or problems
                except OSError:
                    pass
                doc, problems = failed_result(job, case, "invalid_result",
                                              "result file failed the controller's checks: "
                                              + "; ".join(problems[:10])), []
            if problems:
                loaded.warnings.append("%s: not a checked result (%s): left out"
                                       % (path, "; ".join(problems[:3])))
                continue
            result = records.from_doc(doc)
            if case is not None:
                result = with_job_identity(result, job, case)[0]
            loaded.results.append(mark_emulated(result, manifest["devices"][name].get("emulated")))
    return loaded
