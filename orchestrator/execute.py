"""Running one job on one device (deploy, start the agent detached, poll, collect), and many
devices in parallel. Every failure ends as rows with a reason; one device never stops another.
"""

import concurrent.futures
import json
import logging
import os
import posixpath
import tempfile
import time
from dataclasses import dataclass, field

from agent import schema
from orchestrator import deploy, records
from orchestrator.jobs import failed_result
from orchestrator.errors import (AgentBusy, HostKeyError, LocalWriteError, OrchestratorError,
                                 TransportError)
from orchestrator.collect import RunPoller, Verdict

log = logging.getLogger(__name__)

LOG_TAIL_CHARS = 2000


@dataclass
class DeviceOutcome:
    device: str
    results: list = field(default_factory=list)   # records.Result, in job case order
    error: str | None = None
    uploads: list = field(default_factory=list)   # remote paths uploaded (empty on a rerun)
    exception: BaseException | None = field(default=None, repr=False)


@dataclass
class DeviceRun:
    """What run_devices needs for one device; transport None: make_transport(device)."""

    device: object
    job: dict
    blobs: dict
    agent_pyz: tuple
    raw_dir: object
    transport: object = None


def run_device(transport, device, job, blobs, agent_pyz, raw_dir, on_event=None,
               poll_interval=1.0, stall_timeout_s=None, case_margin_s=60.0, max_reconnects=6):
    """Run job on device through transport; never raises (errors land in the outcome).

    Args:
        blobs: sha256 -> local Path of every artifact the job's `blobs/<sha>` paths name.
        agent_pyz: (local Path, sha256) of the agent zipapp.
        raw_dir: local folder receiving each raw <case_id>.json as it arrives.
        on_event: callable(device_name, event_dict) for agent events and controller notes.
    """
    run = _DeviceRun(transport, device, job, raw_dir, on_event or (lambda name, ev: None))
    stall = stall_timeout_s if stall_timeout_s is not None else max(60.0, 3 * poll_interval)
    try:
        run.deploy(blobs, agent_pyz)
        run.start(agent_pyz[1])
        verdict = run.watch(poll_interval, stall, case_margin_s, max_reconnects)
        run.finish(verdict)
    except LocalWriteError as exc:  # this machine's disk, not the device: the run stops
        run.stop_local(exc)
    except Exception as exc:  # noqa: BLE001 - failure is data for this device only
        run.fail(exc)
    return run.outcome


class _DeviceRun:
    def __init__(self, transport, device, job, raw_dir, on_event):
        self.t, self.device, self.job, self.on_event = transport, device, job, on_event
        self.raw_dir = str(raw_dir)
        self.outcome = DeviceOutcome(device.name)
        self.docs = {}
        self.started = False
        self.workdir = self.run_dir = None
        self.poller = None

    def note(self, text, kind="note"):
        self.on_event(self.device.name, {"t": time.time(), "event": kind, "text": text})

    # -- deploy and start ------------------------------------------------------------------
    def deploy(self, blobs, agent_pyz):
        problems = schema.check_job(self.job)
        if problems:
            raise ValueError("invalid job for %s: %s" % (self.device.name, "; ".join(problems)))
        os.makedirs(self.raw_dir, exist_ok=True)
        self.workdir = self.t.expand(self.device.workdir)
        self.run_dir = posixpath.join(self.workdir, "runs", self.job["run_id"])
        self.t.mkdirs(posixpath.join(self.run_dir, "out"))
        wanted = [(agent_pyz[0], deploy.agent_rel_path(agent_pyz[1]))]
        for sha in _job_blobs(self.job):
            if sha not in blobs:
                raise ValueError("job names blobs/%s but no local file was given for it" % sha)
            wanted.append((blobs[sha], "blobs/" + sha))
        self.outcome.uploads = deploy.upload_missing(self.t, self.workdir, wanted)
        self._put_job()
        self.note("deployed (%d file(s) uploaded)" % len(self.outcome.uploads), "deploy")

    def _put_job(self):
        fd, tmp = tempfile.mkstemp(prefix="job-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.job, f, indent=1, allow_nan=False)
            self.t.put(tmp, posixpath.join(self.run_dir, "job.json"))
        finally:
            os.unlink(tmp)

    def start(self, agent_sha):
        rel = posixpath.join("runs", self.job["run_id"])
        argv = [self.device.python, deploy.agent_rel_path(agent_sha), "run", rel + "/job.json",
                "--out", rel + "/out"]
        self.t.start_detached(argv, self.workdir, rel + "/agent.log", rel + "/agent.exit",
                              env=dict(self.device.env))
        self.started = True

    # -- watch -----------------------------------------------------------------------------
    def watch(self, poll_interval, stall, margin, max_reconnects):
        self.poller = RunPoller(self.t, self.job, self.run_dir, self.raw_dir, self._on_result,
                                self.on_event, stall, margin)
        failures = 0
        while True:
            try:
                verdict = self.poller.poll_once()
                if failures:
                    self.note("reconnected after %d attempt%s" % (failures, "s"[:failures > 1]))
                failures = 0
            except HostKeyError:
                raise
            except TransportError as exc:
                # The agent keeps running remotely: reconnect with backoff and carry on.
                failures += 1
                if failures > max_reconnects:
                    raise TransportError(self.device.name, "connection lost during the run; gave "
                                         "up after %d reconnect attempts: %s" % (max_reconnects, exc))
                self.t.close()
                cause = str(exc)
                if cause.startswith(self.device.name + ": "):
                    cause = cause[len(self.device.name) + 2:]
                self.note("connection lost (%s); reconnecting, attempt %d of %d"
                          % (cause, failures, max_reconnects))
                time.sleep(min(30.0, poll_interval * 2 ** failures))
                continue
            if verdict is not None:
                return verdict
            time.sleep(poll_interval)

    def _on_result(self, case_id, doc, problems):
        if problems:
            doc = failed_result(self.job, self.poller.cases[case_id], "invalid_result",
                                     "result file failed the controller's checks: "
                                     + "; ".join(problems[:10]))
        self.docs[case_id] = doc

    def finish(self, verdict: Verdict):
        if verdict.kind == "busy":
            raise AgentBusy("%s: another agent run holds %s/agent.lock; %s"
                            % (self.device.name, self.workdir, self._log_tail()))
        if verdict.kind == "timeout":
            self._stop_agent()
            self.docs[verdict.case_id] = failed_result(
                self.job, self.poller.cases[verdict.case_id], "timeout", verdict.reason)
        if verdict.kind != "done" or self.poller.missing():
            reason = verdict.reason or "agent finished without a result for this case"
            self.outcome.error = None if verdict.kind == "done" else "%s: %s" % (
                self.device.name, reason)
            self._fill("agent_lost", "%s; agent.log tail:\n%s" % (reason, self._log_tail()))
        self._order()

    def _stop_agent(self):
        pid = (self.poller.status or {}).get("pid")
        if isinstance(pid, int) and pid > 1:
            try:  # SIGTERM: the agent kills its worker and releases the lock
                self.t.run(["kill", "-TERM", str(pid)], timeout=15)
            except OrchestratorError as exc:
                log.warning("%s: could not stop agent pid %d: %s", self.device.name, pid, exc)

    def _log_tail(self):
        if self.run_dir is None:
            return "(no agent.log)"
        try:
            raw = self.t.read_bytes(posixpath.join(self.run_dir, "agent.log"), 16 << 20)
        except OrchestratorError as exc:
            return "(agent.log unreadable: %s)" % exc
        if raw is None:
            return "(no agent.log)"
        return raw.decode("utf-8", "replace")[-LOG_TAIL_CHARS:].strip() or "(agent.log empty)"

    # -- failure ---------------------------------------------------------------------------
    def stop_local(self, exc):
        """Results could not be written here: leave the agent and its results on the device."""
        where = posixpath.join(self.run_dir, "out") if self.run_dir else self.device.workdir
        message = "%s: %s; stopped watching. What it measured stays on the device in %s" % (
            self.device.name, exc, where)
        self.outcome.error, self.outcome.exception = message, exc
        self._fill("error", message)
        self._order()

    def fail(self, exc):
        if not isinstance(exc, OrchestratorError):
            log.error("%s: internal error", self.device.name, exc_info=exc)
        message = str(exc) if isinstance(exc, OrchestratorError) else "internal error: %s: %s" % (
            type(exc).__name__, exc)
        if not message.startswith(self.device.name + ":"):
            message = "%s: %s" % (self.device.name, message)
        self.outcome.error, self.outcome.exception = message, exc
        lost = self.started and not isinstance(exc, AgentBusy)
        self._fill("agent_lost" if lost else "error", message)
        self._order()

    def _fill(self, substatus, reason):
        for case in self.job.get("cases") or []:
            if case.get("case_id") not in self.docs:
                self.docs[case.get("case_id")] = failed_result(self.job, case, substatus, reason)

    def _order(self):
        self.outcome.results = [records.from_doc(self.docs[c["case_id"]])
                                for c in self.job.get("cases") or [] if c.get("case_id") in self.docs]


def _job_blobs(job):
    """sha256 of every `blobs/<sha>` the job names (models, user backend files), once each."""
    paths = [(case.get("model") or {}).get("path") or "" for case in job.get("cases") or []]
    paths += [entry.get("path") or "" for entry in (job.get("backends") or {}).values()]
    seen = []
    for path in paths:
        if path.startswith("blobs/") and path[6:] not in seen:
            seen.append(path[6:])
    return seen


def run_devices(runs, max_workers=8, on_event=None, **kwargs):
    """run_device for every DeviceRun in parallel (bounded pool); outcomes in the order given."""
    from orchestrator.transport import make_transport

    def one(spec):
        transport = spec.transport
        try:
            transport = transport or make_transport(spec.device)
        except Exception as exc:  # noqa: BLE001 - a bad device is that device's outcome
            run = _DeviceRun(None, spec.device, spec.job, spec.raw_dir, on_event)
            run.fail(exc)
            return run.outcome
        with transport:
            return run_device(transport, spec.device, spec.job, spec.blobs, spec.agent_pyz,
                              spec.raw_dir, on_event, **kwargs)

    if not runs:
        return []
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(runs))),
                                                 thread_name_prefix="device")
    try:
        return list(pool.map(one, runs))
    finally:
        # On Ctrl-C do not wait for devices that are still polling: the agents run detached
        # and every result already fetched is on disk.
        pool.shutdown(wait=False, cancel_futures=True)
