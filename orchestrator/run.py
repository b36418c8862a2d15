"""One `benchfleet run`: load, plan, build models, execute on every device, collect, report.

Each step is owned by its module; this one sequences them, keeps the run folder and returns a
RunSummary for the CLI to render. What a device measured is on disk (raw/<device>/) before
anything later can fail.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent import schema
from agent.fsutil import atomic_write_json, atomic_write_text
from orchestrator import __version__, escape, records
from orchestrator.errors import ConfigError, LocalWriteError, ModelBuildError


@dataclass
class RunSummary:
    """What a run produced: its folder, every result (typed, in plan order) and the table."""

    run_id: str
    run_dir: Path
    devices: list = field(default_factory=list)        # device names with cases, in plan order
    results: list = field(default_factory=list)        # records.Result
    device_errors: dict = field(default_factory=dict)
    suite: str | None = None
    history: str | None = None       # the history database it was stored in (masked URL)
    comparison: dict | None = None   # compare's document, with --compare-to
    warnings: list = field(default_factory=list)   # what went wrong after the results were in

    @functools.cached_property
    def rows(self) -> list:
        """One flat report row per result (made once, after the results are all in)."""
        from orchestrator import report
        return [report.flat_row(r) for r in self.results]

    @property
    def counts(self) -> dict:
        return {s: sum(r.status == s for r in self.results) for s in schema.STATUSES}

    @property
    def failed(self) -> bool:
        return self.counts["failed"] > 0

    def table(self):
        """(header, body) of the comparison table."""
        from orchestrator import report
        return report.comparison(self.rows, self.devices)

    def to_json(self) -> dict:
        return {"run_id": self.run_id, "run_dir": str(self.run_dir), "counts": self.counts,
                "device_errors": self.device_errors, "history": self.history,
                "comparison": self.comparison, "warnings": self.warnings, "rows": self.rows}


class Progress:
    """Live, line-based progress per device (safe from many threads; readable in CI logs too).

    Progress goes to stderr so that stdout carries only the result (the table, or --json).
    Every line is plain text (escape.terminal): agent events are a device's untrusted output, so
    a case's label is the job's (know_cases), never the event's, and a malformed field is shown
    as text or left out, never an exception that would cost the device its results.
    """

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.lock = threading.Lock()
        self.labels = {}   # device -> {case_id: label}, from the jobs the controller sent

    def know_cases(self, device: str, cases) -> None:
        """The job's cases of a device: their labels are the ones progress lines show."""
        labels = getattr(self, "labels", None)
        if labels is None:
            labels = self.labels = {}
        labels[device] = {c["case_id"]: c.get("label") or c["case_id"] for c in cases}

    def say(self, device: str, text: str) -> None:
        line = "[%s] %s" % (escape.terminal(device, limit=80), escape.terminal(text, limit=2000))
        with self.lock:
            print(line, file=self.stream, flush=True)

    def _case(self, device: str, ev: dict) -> str:
        case_id = ev.get("case_id")
        known = (getattr(self, "labels", None) or {}).get(device, {})
        if isinstance(case_id, str) and case_id in known:
            return known[case_id]
        return "unknown case %s" % escape.terminal(case_id, limit=80)

    def event(self, device: str, ev: dict) -> None:
        kind = ev.get("event")
        if kind == "case_start":
            index, total = ev.get("index"), ev.get("total")
            where = "%d/%s" % (index + 1, _count(total)) if _is_int(index) else "?/%s" % _count(total)
            self.say(device, "case %s %s" % (where, self._case(device, ev)))
        elif kind == "case_end":
            p50 = ev.get("p50_ms")
            tail = " p50 %.3f ms" % p50 if _is_number(p50) else ""
            status = ev.get("status")
            self.say(device, "  -> %s%s" % (status if status in schema.STATUSES
                                           else "status %r" % escape.terminal(status, 80), tail))
        elif kind == "cooldown":
            waited = ev.get("waited_s")
            self.say(device, "  cooled down %s s" % ("%.1f" % waited if _is_number(waited)
                                                      else "?"))
        elif kind in ("deploy", "note"):
            self.say(device, ev.get("text", kind))

    def model(self, ev: dict) -> None:
        """A model build event (orchestrator.models.zoo on_progress)."""
        from orchestrator.models import zoo
        text = zoo.progress_line(ev)
        if text:
            self.say("controller", text)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        value == value and abs(value) != float("inf")


def _count(value) -> str:
    return str(value) if _is_int(value) else "?"


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def build_artifacts(plan, suite, progress: Progress) -> tuple[dict, dict]:
    """Build/resolve every model variant a RUN case needs, once; each built-in model's variants
    in one build process.

    Returns (artifacts by (model, variant), build problems by (model, variant)); a variant that
    cannot be built turns its cases into skipped rows, never a crash of the whole run.
    """
    from orchestrator.models import zoo
    wanted = {}
    for dplan in plan.devices:
        for case in dplan.runnable:
            if case.format != "synthetic":
                wanted.setdefault(case.model_name, []).append(case.variant)
    artifacts, problems = {}, {}
    for name, variant_list in wanted.items():
        spec = suite.model(name)
        variant_list = list(dict.fromkeys(variant_list))
        if spec.builtin:
            built, failed = zoo.build_models(spec.builtin, variant_list,
                                             representative=spec.resolved_representative(),
                                             on_progress=progress.model)
            artifacts.update(((name, v), a) for v, a in built.items())
            problems.update(((name, v), e) for v, e in failed.items())
            continue
        try:
            art = zoo.resolve_user_model(spec.resolved_path())
            artifacts.update(((name, v), art) for v in variant_list)
        except (ModelBuildError, ConfigError) as exc:
            problems.update(((name, v), str(exc)) for v in variant_list)
    return artifacts, problems


# The results folder must have this free before anything is dispatched (a run writes a few MB:
# raw results, kept profiles, the tables), and keeps RESERVE_BYTES of it while it runs so that
# a disk that fills can still take the manifest that says the run stopped.
MIN_RESULTS_FREE_BYTES = 16 * 1024 * 1024
RESERVE_BYTES = 256 * 1024


def check_results_space(results_dir, floor=None) -> None:
    """ConfigError naming --results-dir when its filesystem has less than the floor free."""
    floor = MIN_RESULTS_FREE_BYTES if floor is None else floor
    folder = Path(results_dir).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(str(folder)).free
    except OSError:
        return  # cannot tell: creating the run folder will say what is wrong
    if free < floor:
        raise ConfigError("--results-dir %s: only %d MB free in its filesystem; a run needs %d MB "
                          "before it dispatches anything; free space there or pick another "
                          "--results-dir" % (results_dir, free // (1 << 20), floor // (1 << 20)))


@dataclass
class _Run:
    """The files of one run: manifest.json, raw/<device>/<case_id>.json, the tables."""

    summary: RunSummary
    manifest: dict

    lock: object = None   # runlock.FileLock on the run folder while this controller runs it

    @classmethod
    def open(cls, results_dir, suite_path, inventory_paths, the_plan, selected=None,
             run_id=None, suite_name=None) -> "_Run":
        from orchestrator.runlock import controller_identity
        run_id = run_id or new_run_id()
        summary = RunSummary(run_id, Path(results_dir) / run_id,
                             devices=[d.device.name for d in the_plan.devices if d.cases])
        try:
            (summary.run_dir / "raw").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError("--results-dir %s: cannot create %s: %s; pick a writable folder"
                              % (results_dir, summary.run_dir, exc.strerror or exc)) from None
        manifest = {
            "run_id": run_id, "controller_version": __version__,
            "schema_version": schema.SCHEMA_VERSION, "suite": str(suite_path),
            "suite_name": suite_name or Path(str(suite_path)).stem,
            "inventory": [str(p) for p in inventory_paths], "started_at": schema.utc_now(),
            # what a resume needs to plan the same cases again, from any folder
            "suite_path": os.path.abspath(str(suite_path)),
            "inventory_paths": [os.path.abspath(str(p)) for p in inventory_paths],
            "selected": list(selected) if selected else None,
            "controller": controller_identity(),
            "nonce": secrets.token_hex(16),
            "devices": {d.device.name: dict({"transport": d.device.transport,
                                             "cases": [c.case_id for c in d.cases],
                                             "skipped": [c.case_id for c in d.skipped]},
                                            **({"emulated": True} if d.device.emulated else {}))
                        for d in the_plan.devices}}
        run = cls(summary, manifest)
        run.take_lock()
        run.write_manifest("running")
        run.hold_reserve()
        return run

    @classmethod
    def reopen(cls, run_dir, manifest, the_plan) -> "_Run":
        """The run folder of an interrupted or killed run, to be finished by this controller."""
        from orchestrator.runlock import controller_identity
        summary = RunSummary(manifest["run_id"], Path(run_dir),
                             devices=[d.device.name for d in the_plan.devices if d.cases])
        run = cls(summary, manifest)
        run.take_lock()
        resumes = list(manifest.get("resumed") or [])
        resumes.append({"at": schema.utc_now(), "controller": controller_identity(),
                        "state_before": manifest.get("state")})
        run.write_manifest("running", resumed=resumes)
        run.hold_reserve()
        return run

    def take_lock(self) -> None:
        from orchestrator.errors import SweepBusy
        from orchestrator.runlock import FileLock, controller_identity, describe, run_lock_path
        lock = FileLock(run_lock_path(self.summary.run_dir))
        holder = lock.acquire(dict(controller_identity(), run_id=self.summary.run_id))
        if holder is not None:
            raise SweepBusy("run %s is still being run by %s; resume it once that controller "
                            "has ended" % (self.summary.run_id, describe(holder)))
        self.lock = lock

    def kept_results(self) -> dict:
        """{device: {case_id: Result}} of what the devices measured for this run (its nonce),
        from raw/. A row the controller wrote itself for a case that never ran (agent_lost, a
        device error) is not a result: its file is removed so that the case runs again."""
        from orchestrator.collect import loads_untrusted
        kept = {}
        for device in self.manifest.get("devices") or {}:
            folder = self.raw_dir(device)
            for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
                try:
                    doc = schema.migrate_result(loads_untrusted(path.read_bytes()))
                except (OSError, ValueError):
                    continue
                if not isinstance(doc, dict) or schema.check_result(doc) or \
                        doc.get("nonce") != self.manifest["nonce"]:
                    continue
                if doc["status"] == "failed" and (doc.get("device") or {}).get("source") == \
                        "controller":
                    path.unlink()
                    continue
                kept.setdefault(device, {})[doc["case_id"]] = records.from_doc(doc)
        return kept

    def write_manifest(self, state: str, **extra) -> None:
        self.manifest.update(extra, state=state)
        path = self.summary.run_dir / "manifest.json"
        try:
            atomic_write_json(str(path), self.manifest)
        except OSError as exc:
            raise LocalWriteError(path, exc) from exc

    def hold_reserve(self) -> None:
        try:
            with open(self.summary.run_dir / ".reserve", "wb") as f:
                f.write(b"\0" * RESERVE_BYTES)
        except OSError:
            self.release_reserve()

    def release_reserve(self) -> None:
        try:
            os.unlink(self.summary.run_dir / ".reserve")
        except OSError:
            pass

    def stop(self, exc: LocalWriteError, progress) -> LocalWriteError:
        """The run cannot write its results: manifest 'stopped', and an error that says where
        the measured results are (still on the devices)."""
        self.release_reserve()
        where = ", ".join(sorted(self.manifest["devices"])) or "none"
        message = ("%s. The run stopped; what the devices measured stays on them under "
                   "WORKDIR/runs/%s/out (devices: %s). Free space in %s, then finish it "
                   "with: benchfleet resume %s"
                   % (exc, self.summary.run_id, where, self.summary.run_dir.parent,
                      self.summary.run_dir))
        try:
            self.write_manifest("stopped", stopped_at=schema.utc_now(), reason=message)
        except LocalWriteError:
            message += " (the manifest could not be updated either: it still reads 'running')"
        progress.say("controller", message)
        stopped = LocalWriteError(exc.path, exc.cause)
        stopped.args = (message,)
        return stopped

    def raw_dir(self, device: str) -> Path:
        return self.summary.run_dir / "raw" / device

    def keep_raw(self, device: str, doc: dict) -> None:
        folder = self.raw_dir(device)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (doc["case_id"] + ".json")
        if not path.exists():  # what a device sent is already there; never overwrite it
            try:
                atomic_write_json(str(path), doc)
            except OSError as exc:
                raise LocalWriteError(path, exc) from exc


DEFAULT_FORKS = 32   # devices in session at once (Ansible's forks); the others wait their turn


def _load(suite_path, inventory_paths, devices):
    from orchestrator.config.inventory import load_inventory
    from orchestrator.config.suite import load_suite
    from orchestrator.plan import plan as make_plan
    from orchestrator.probes import cached_probes
    suite = load_suite(suite_path)
    inventory = load_inventory(inventory_paths)
    return suite, make_plan(suite, inventory, devices=devices, probes=cached_probes(inventory))


def run_suite(suite_path, inventory_paths, devices=None, results_dir="results",
              max_parallel=DEFAULT_FORKS, progress: Progress | None = None,
              wait_s: float = 0.0, after: "AfterRun | None" = None) -> RunSummary:
    """Run a suite end to end and write results/<run-id>/. Bad input raises ConfigError first;
    another controller running this suite into results_dir raises SweepBusy (exit 75).
    after: the history and comparison to do once the results are in (default: store in
    RESULTS_DIR/history.sqlite or $BENCHFLEET_HISTORY, no comparison)."""
    from orchestrator.runlock import sweep_lock
    progress = progress or Progress()
    suite, the_plan = _load(suite_path, inventory_paths, devices)
    after = after or AfterRun()
    after.check(results_dir)
    check_results_space(results_dir)
    run_id = new_run_id()
    lock = sweep_lock(results_dir, suite.name, run_id)
    try:
        run = _Run.open(results_dir, suite_path, inventory_paths, the_plan, devices, run_id,
                        suite.name)
        progress.say("controller", "run %s: %s" % (run.summary.run_id, run.summary.run_dir))
        return _finish(run, suite, the_plan, progress, max_parallel, wait_s, {}, after)
    finally:
        lock.release()


def resume_run(run_dir, max_parallel=DEFAULT_FORKS, progress: Progress | None = None,
               wait_s: float = 0.0, after: "AfterRun | None" = None) -> RunSummary:
    """Finish an interrupted or killed run in its own folder: attach to agents still running it,
    collect every result already on the devices, run only the cases without one.

    Raises:
        ConfigError: not a run folder, or its suite/inventory now plan other cases.
        SweepBusy: a controller is still running it (or this suite into its results folder).
    """
    from orchestrator.runlock import sweep_lock
    progress = progress or Progress()
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    suite_path = manifest.get("suite_path") or manifest["suite"]
    inventory_paths = manifest.get("inventory_paths") or manifest["inventory"]
    suite, the_plan = _load(suite_path, inventory_paths, manifest.get("selected"))
    _check_same_cases(run_dir, manifest, the_plan)
    after = after or AfterRun()
    after.check(run_dir.parent)
    check_results_space(run_dir.parent)
    lock = sweep_lock(run_dir.parent, suite.name, manifest["run_id"])
    try:
        run = _Run.reopen(run_dir, manifest, the_plan)
        kept = run.kept_results()
        progress.say("controller", "resuming run %s (%s): %d result(s) already here"
                     % (manifest["run_id"], run_dir, sum(len(v) for v in kept.values())))
        return _finish(run, suite, the_plan, progress, max_parallel, wait_s, kept, after)
    finally:
        lock.release()


def read_manifest(run_dir) -> dict:
    path = Path(run_dir) / "manifest.json"
    try:
        from orchestrator.collect import loads_untrusted
        manifest = loads_untrusted(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError("%s: no manifest.json: not a run folder (benchfleet runs lists them)"
                          % run_dir) from None
    except (OSError, ValueError) as exc:
        raise ConfigError("%s: cannot read: %s" % (path, exc)) from None
    need = ("run_id", "nonce", "devices", "suite", "inventory")
    if not isinstance(manifest, dict) or any(k not in manifest for k in need):
        raise ConfigError("%s: not a benchfleet manifest (needs %s)" % (path, ", ".join(need)))
    return manifest


def _check_same_cases(run_dir, manifest, the_plan) -> None:
    """A resume must plan the cases the run started with: same case ids on the same devices."""
    problems = []
    for dplan in the_plan.devices:
        before = (manifest["devices"].get(dplan.device.name) or {}).get("cases")
        now = [c.case_id for c in dplan.cases]
        if before is None and now:
            problems.append("device %s was not in the run" % dplan.device.name)
        elif before is not None and sorted(before) != sorted(now):
            problems.append("device %s: cases %s now, %s when the run started"
                            % (dplan.device.name, len(now), len(before)))
    missing = set(manifest["devices"]) - {d.device.name for d in the_plan.devices}
    problems += ["device %s is no longer in the inventory" % n for n in sorted(missing)]
    if problems:
        raise ConfigError(["%s: cannot resume: the suite or inventory changed since the run "
                           "started (%s); a resume measures the same cases. Start a new run "
                           "instead" % (run_dir, p) for p in problems])


def _finish(run, suite, the_plan, progress, max_parallel, wait_s, kept, after):
    """Execute (devices with cases left), gather, write the tables and the manifest; then store
    the run in the history, compare it and write report.html (after.finish)."""
    run.summary.suite = suite.name
    try:
        outcomes, jobs, extra = _execute(run, suite, the_plan, progress, max_parallel, wait_s,
                                         kept)
        for outcome in outcomes.values():
            if isinstance(outcome.exception, LocalWriteError):
                raise outcome.exception
        _gather(run, the_plan, jobs, outcomes, progress, kept)
        write_tables(run.summary)
        run.release_reserve()
        run.write_manifest("finished", finished_at=schema.utc_now(), counts=run.summary.counts,
                           device_errors=run.summary.device_errors, **extra)
        after.finish(run.summary, run.manifest, progress)
    except KeyboardInterrupt:
        run.release_reserve()
        run.write_manifest("interrupted")
        progress.say("controller", "interrupted: results fetched so far are in %s/raw; agents "
                     "already started keep running on their devices. Finish it with: "
                     "benchfleet resume %s" % (run.summary.run_dir, run.summary.run_dir))
        raise
    except LocalWriteError as exc:
        raise run.stop(exc, progress) from None
    finally:
        if run.lock is not None:
            run.lock.release()
    return run.summary


def _execute(run, suite, the_plan, progress, max_parallel, wait_s=0.0, kept=None):
    """Build models, make each device's job, run every device with cases left (kept: results
    already here, for a resume); (outcomes, jobs, manifest facts)."""
    from orchestrator import deploy, execute
    from orchestrator import inputs as case_inputs
    from orchestrator.jobs import device_job
    from orchestrator.runlock import controller_identity
    kept = kept or {}

    artifacts, problems = build_artifacts(the_plan, suite, progress)
    blobs = case_inputs.prepare_plan(the_plan, suite, artifacts,
                                     lambda text: progress.say("controller", text))
    agent = deploy.local_agent()
    jobs, runs = {}, []
    for dplan in the_plan.devices:
        name = dplan.device.name
        djob = jobs[name] = device_job(run.summary.run_id, run.manifest["nonce"], suite, dplan,
                                       artifacts, problems, controller_identity(), blobs)
        know = getattr(progress, "know_cases", None)
        if know is not None:
            know(name, djob.job["cases"])
        for doc in djob.planned:
            mark_emulated(doc, dplan.device.emulated)
            run.keep_raw(name, doc)
            progress.say(name, "%s: %s: %s" % (doc["label"], doc["status"], doc["reason"]))
        left = [c for c in djob.job["cases"] if c["case_id"] not in kept.get(name, {})]
        if left:
            runs.append(execute.DeviceRun(dplan.device, djob.job, djob.blobs,
                                          (Path(agent[0]), agent[1]), run.raw_dir(name),
                                          resume=name in run.manifest.get("devices", {})
                                          and bool(run.manifest.get("resumed"))))
        elif djob.job["cases"]:
            progress.say(name, "resume: every case has its result already; nothing to run")
    outcomes = {o.device: o for o in execute.run_devices(runs, max_parallel, progress.event,
                                                         wait_s=wait_s)}
    extra = {"agent_sha256": agent[1],
             "artifacts": {"%s/%s" % k: a.sha256 for k, a in artifacts.items()}}
    made = {"%s/%s %s" % (k[0], k[1], Path(k[2]).name): b.sha256 for k, b in blobs.items()
            if hasattr(b, "sha256")}
    if made:   # which blob fed which model variant (the case ids hash the folders' content)
        extra["inputs"] = made
    return outcomes, jobs, extra


def _gather(run, the_plan, jobs, outcomes, progress, kept=None) -> None:
    """Every device's results (planned skips + what it ran) into the summary, in plan order.

    A device's result names its case, model and runtime, but those are the job's to say: the
    rows take them from the job sent (jobs.with_job_identity), and a result that claimed
    otherwise gets a progress line.
    """
    from orchestrator.jobs import with_job_identity
    summary = run.summary
    for dplan in the_plan.devices:
        name = dplan.device.name
        outcome = outcomes.get(name)
        found = {d["case_id"]: records.from_doc(d) for d in jobs[name].planned}
        sent = {c["case_id"]: c for c in jobs[name].job["cases"]}
        for case_id, result in (kept or {}).get(name, {}).items():   # a resume's earlier results
            if case_id in sent:
                found[case_id] = with_job_identity(result, jobs[name].job, sent[case_id])[0]
        for result in outcome.results if outcome else []:
            case = sent.get(result.case_id)
            if case is None:
                continue
            result, changed = with_job_identity(result, jobs[name].job, case)
            if changed:
                progress.say(name, "%s: the device's result gave its own %s; the row shows the "
                             "job's" % (case.get("label") or result.case_id, ", ".join(changed)))
            found[result.case_id] = result
        if outcome and outcome.error:
            summary.device_errors[name] = outcome.error
            progress.say(name, "device error: %s" % outcome.error)
        for case in dplan.cases:   # plan order: the table reads like the suite
            result = found.get(case.case_id)
            if result is not None:
                result = mark_emulated(result, dplan.device.emulated)
                run.keep_raw(name, result.to_doc())
                summary.results.append(result)


def mark_emulated(result, emulated):
    """A result (doc or records.Result) of an `emulated: true` device with device.emulated set:
    the controller's word, from the inventory (the manifest keeps it per device, so tables
    rebuilt from raw/ say so too; the raw files stay the device's words). Other results are
    returned as they are."""
    if emulated is not True:
        return result
    if isinstance(result, dict):
        result["device"] = dict(result.get("device") or {}, emulated=True)
        return result
    doc = result.to_doc()
    doc["device"] = dict(doc.get("device") or {}, emulated=True)
    return records.from_doc(doc)


@dataclass
class AfterRun:
    """What a run does once its results and tables are on disk: store it in the history
    (history: a URL, None for the default, "off" for none), compare it (compare_to: "baseline",
    a run id or folder; None for no comparison) and write report.html with the history's trends
    and the comparison. Nothing here can cost a result: a failure is a warning in the summary
    (and on the console) that says how to do it again by hand."""

    history: str | None = None
    compare_to: str | None = None
    threshold: float | None = None
    baseline_runs: int | None = None
    html: bool = True
    url: str | None = field(default=None, init=False)           # resolved by check()
    results_dir: Path | None = field(default=None, init=False)  # the run's results folder

    def check(self, results_dir) -> None:
        """Before the run: the history URL resolves and what --compare-to names exists, so a
        mistake there costs no measurement (ConfigError)."""
        from orchestrator.errors import HistoryError
        from orchestrator.history import History, history_url
        self.results_dir = Path(results_dir)
        self.url = history_url(self.history, results_dir)
        if self.url is not None:
            try:
                History.check_url(self.url)
            except HistoryError as exc:
                raise ConfigError("--history / BENCHFLEET_HISTORY: %s" % exc) from None
        if self.compare_to is None:
            return
        if self.compare_to == "baseline":
            if self.url is None:
                raise ConfigError("--compare-to baseline: the baseline comes from the history, "
                                  "and history is off; drop --history off (or "
                                  "BENCHFLEET_HISTORY=off), or compare to a run folder")
            return
        if (Path(self.compare_to) / "manifest.json").is_file() or \
                (self.results_dir / self.compare_to / "manifest.json").is_file():
            return
        if self.url is not None:
            from orchestrator.compare import history_run
            from orchestrator.history import History
            with History(self.url) as h:
                if history_run(h, self.compare_to) is not None:
                    return
        raise ConfigError("--compare-to %s: no such run (not a run folder, not in %s%s): give "
                          "baseline, a run folder or a run id (benchfleet runs lists them)"
                          % (self.compare_to, self.results_dir,
                             ", not in the history" if self.url else ""))

    def _warn_to(self, summary, progress):
        return lambda text: self._warn(summary, progress, text)

    def _warn(self, summary, progress, text) -> None:
        summary.warnings.append(text)
        progress.say("controller", "warning: " + text)

    def finish(self, summary, manifest, progress) -> None:
        from orchestrator import compare
        from orchestrator.errors import HistoryError
        from orchestrator.rundir import LoadedRun
        trends, history = None, None
        if self.url is not None:
            from orchestrator.history import History
            try:
                history = History(self.url)
                done = history.store_run(LoadedRun(summary.run_dir, manifest,
                                                   list(summary.devices), list(summary.results)))
                summary.history = history.url
                progress.say("controller", "history: %d result(s) stored in %s"
                             % (done["added"], history.url))
            except HistoryError as exc:
                self._warn(summary, progress, "history: not stored (%s); the run folder has "
                           "every result: benchfleet history import %s stores it later"
                           % (exc, summary.run_dir))
                history = None
        try:
            if self.compare_to is not None:
                try:
                    summary.comparison = compare.compare(
                        self.compare_to, summary.run_dir, self.results_dir, history,
                        threshold=self.threshold or compare.DEFAULT_THRESHOLD,
                        baseline_runs=self.baseline_runs or compare.DEFAULT_BASELINE_RUNS)
                except (ConfigError, HistoryError) as exc:
                    self._warn(summary, progress, "compare: %s" % exc)
                else:
                    keep_comparison(summary.run_dir, summary.comparison, self._warn_to(summary,
                                                                                      progress))
            if history is not None and self.html:
                trends = run_trends(history, summary)
        finally:
            if history is not None:
                history.close()
        if self.html:
            write_html(summary, trends=trends, comparison=summary.comparison,
                       warn=lambda text: self._warn(summary, progress, text))


COMPARISON_FILE = "compare.json"   # run --compare-to's comparison, kept for `report --html`


def keep_comparison(run_dir, doc, warn) -> None:
    """The comparison beside the run's tables (COMPARISON_FILE); a failure is a warning."""
    try:
        atomic_write_json(str(Path(run_dir) / COMPARISON_FILE), doc)
    except OSError as exc:
        warn("%s not written (%s)" % (Path(run_dir) / COMPARISON_FILE, exc.strerror or exc))


def kept_comparison(run_dir) -> dict | None:
    """The comparison run --compare-to kept in the run folder, or None (absent or unreadable)."""
    from orchestrator.collect import loads_untrusted
    try:
        doc = loads_untrusted((Path(run_dir) / COMPARISON_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    ok = isinstance(doc, dict) and doc.get("kind") == "benchfleet.comparison" and \
        isinstance(doc.get("rows"), list) and isinstance(doc.get("counts"), dict)
    return doc if ok else None


def run_trends(history, summary) -> list:
    """The history's trends of a run's own device x case pairs (report.html's)."""
    from orchestrator.trends import trends
    return trends(history, suite=summary.suite,
                  keys={(r.device_name, r.case_id) for r in summary.results})


def rewrite_report(summary, history=None, store=False, warn=None) -> Path | None:
    """report.html of a run written again (`report --html`, `energy attach`): the trends from the
    history (--history, $BENCHFLEET_HISTORY, else the run's results folder's history.sqlite when
    there is one), the comparison run --compare-to kept. store: also store the run's results
    again where the history holds the run (what changed in raw/ replaces what it had). A
    history that cannot be opened is a warning; the page is written without trends."""
    from orchestrator.errors import HistoryError
    from orchestrator.history import History, history_url, sqlite_missing
    from orchestrator.rundir import LoadedRun
    warn = warn or (lambda text: print("warning: " + escape.terminal(text), file=sys.stderr))
    url, trends = history_url(history, summary.run_dir.parent), None
    if sqlite_missing(url):
        url = None   # no history beside this run: do not make an empty one
    if url is not None:
        try:
            with History(url) as h:
                info = h.run(summary.run_id)
                if store and info is not None:
                    manifest = read_manifest(summary.run_dir)
                    h.store_run(LoadedRun(summary.run_dir, manifest, list(summary.devices),
                                          list(summary.results)))
                trends = run_trends(h, summary)
        except HistoryError as exc:
            warn("history: %s; report.html has no trends" % exc)
    return write_html(summary, trends=trends, comparison=kept_comparison(summary.run_dir))


def write_html(summary, trends=None, comparison=None, warn=None) -> Path | None:
    """report.html beside comparison.md (htmlreport.write_report); a failure to write it is a
    warning (warn), never the run's end: every number is in results.csv already."""
    from orchestrator import htmlreport
    try:
        return htmlreport.write_report(summary.run_dir, summary.run_id, summary.devices,
                                       summary.results, summary.rows, suite=summary.suite,
                                       comparison=comparison, trends=trends)
    except OSError as exc:
        if warn is None:
            raise LocalWriteError(summary.run_dir / "report.html", exc) from exc
        warn("report.html not written (%s); benchfleet report %s --html writes it"
             % (exc.strerror or exc, summary.run_dir))
        return None


def write_tables(summary) -> None:
    """results.csv and comparison.md beside the raw results."""
    from orchestrator import report
    rows = summary.rows
    header, body = report.comparison(rows, summary.devices)
    try:
        report.write_csv(rows, summary.run_dir / "results.csv")
        atomic_write_text(str(summary.run_dir / "comparison.md"),
                          report.render_markdown(header, body, rows, summary.run_id))
    except OSError as exc:
        raise LocalWriteError(summary.run_dir, exc) from exc


def render_summary(summary: RunSummary) -> str:
    """The console text of a finished run: the table, its legend and the counts."""
    from orchestrator import report
    header, body = summary.table()
    counts = summary.counts
    return "\n".join([
        report.render_text(header, body), "",
        "cells: p50 / p99 (99%-confidence upper bound; n/e = too few samples) / first, ms;"
        " * = INVALID (see comparison.md)",
        "%s, %d skipped, %d failed -> %s" % (verdict_counts(summary.results), counts["skipped"],
                                              counts["failed"], summary.run_dir)]
        + (["plots: %s" % (summary.run_dir / "report.html")]
           if (summary.run_dir / "report.html").is_file() else []))


def verdict_counts(results) -> str:
    """'6 measured: 5 VALID, 1 INVALID (drift +4.1%)': the ok results by verdict, with the
    first words of the INVALID reasons (at most three kinds)."""
    ok = [r for r in results if r.status == "ok"]
    invalid = [r for r in ok if r.validity is not None and r.validity.status == "INVALID"]
    text = "%d measured: %d VALID, %d INVALID" % (len(ok), len(ok) - len(invalid), len(invalid))
    why = []
    for r in invalid:
        for reason in r.validity.reasons:
            tag = escape.terminal(reason.split(":", 1)[0].strip()[:40])
            if tag not in why:
                why.append(tag)
    if why:
        text += " (%s%s)" % (", ".join(why[:3]), ", ..." if len(why) > 3 else "")
    return text
