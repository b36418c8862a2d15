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
from pathlib import Path

from agent import schema
from agent.fsutil import atomic_write_json
from orchestrator import deploy, records
from orchestrator.escape import terminal
from orchestrator.jobs import controller_result, failed_result
from orchestrator.errors import (AgentBusy, HostKeyError, LocalWriteError, OrchestratorError,
                                 TransportError)
from orchestrator.collect import RunPoller, Verdict, loads_untrusted

log = logging.getLogger(__name__)

LOG_TAIL_CHARS = 2000
# Between two full polls, a look this often at the two files that change when a case starts or
# ends or the run finishes (events.jsonl's size, `done`): two SFTP stats, no process started on
# the device, so a finished case is seen within about this long instead of a poll interval.
LOOK_S = 0.1


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
    resume: bool = False   # the run was started before: attach to its agent, or restart it
    facts_dir: object = None   # RUN_DIR/devices/<name> (clock.json, job.json); None: from raw_dir


def run_device(transport, device, job, blobs, agent_pyz, raw_dir, on_event=None,
               poll_interval=1.0, stall_timeout_s=None, case_margin_s=60.0, max_reconnects=6,
               resume=False, wait_s=0.0, lock_poll_s=5.0, facts_dir=None):
    """Run job on device through transport; never raises (errors land in the outcome).

    Args:
        blobs: sha256 -> local Path of every artifact the job's `blobs/<sha>` paths name.
        agent_pyz: (local Path, sha256) of the agent zipapp.
        raw_dir: local folder receiving each raw <case_id>.json as it arrives.
        on_event: callable(device_name, event_dict) for agent events and controller notes.
        resume: the job was started before (same run id and nonce): an agent still running it
            is attached to, a finished one only collected, a dead one started again (it skips
            every case it already has a result for).
        wait_s: how long a device busy with another run is waited for (0: not at all); its
            cases are then `skipped` (busy), naming who holds it.
        facts_dir: where the run keeps this device's facts: the job sent (job.json) and the
            device's clock against this machine's (clock.json, for `benchfleet energy
            attach`). None: RUN_DIR/devices/<name> when raw_dir is a run folder's
            RUN_DIR/raw/<name>, else nowhere.
    """
    run = _DeviceRun(transport, device, job, raw_dir, on_event or (lambda name, ev: None),
                     facts_dir)
    stall = stall_timeout_s if stall_timeout_s is not None else max(60.0, 3 * poll_interval)
    deadline = time.monotonic() + max(0.0, wait_s)
    try:
        if resume:
            run.deploy(blobs, agent_pyz)
            if not run.attach():
                run.start(agent_pyz[1])
        else:
            run.launch(blobs, agent_pyz)
        run.keep_clock()
        while True:
            verdict = run.watch(poll_interval, stall, case_margin_s, max_reconnects)
            then = run.after_busy(deadline, lock_poll_s) if verdict.kind == "busy" else None
            if then is None:
                break
            if then == "start":
                run.start(agent_pyz[1])
        run.finish(verdict)
    except LocalWriteError as exc:  # this machine's disk, not the device: the run stops
        run.stop_local(exc)
    except Exception as exc:  # noqa: BLE001 - failure is data for this device only
        run.fail(exc)
    return run.outcome


def run_facts_dir(raw_dir, name):
    """RUN_DIR/devices/<name> when raw_dir is RUN_DIR/raw/<name> of a run folder (manifest.json
    beside raw/), else None: where the run keeps a device's facts."""
    raw = Path(str(raw_dir))
    if raw.name == name and raw.parent.name == "raw" and \
            (raw.parent.parent / "manifest.json").is_file():
        return raw.parent.parent / "devices" / name
    return None


CLOCK_KEEP = 20   # clock measurements kept per device and run (each start and resume adds one)


class _DeviceRun:
    def __init__(self, transport, device, job, raw_dir, on_event, facts_dir=None):
        self.t, self.device, self.job, self.on_event = transport, device, job, on_event
        self.raw_dir = str(raw_dir)
        self.facts_dir = Path(str(facts_dir)) if facts_dir is not None else \
            run_facts_dir(raw_dir, device.name)
        self.clock = None   # one measurement of the device's clock (clock.json's fields)
        self.outcome = DeviceOutcome(device.name)
        self.docs = {}
        self.started = False
        self.workdir = self.run_dir = None
        self.poller = None
        self.agent_sha = None
        self.busy_holder = None
        self.resumed = False
        self.looks = True   # False once the transport has no file_size: plain polling
        self.woke_at = None   # events.jsonl's size at the last look that woke a poll

    def note(self, text, kind="note"):
        self.on_event(self.device.name, {"t": time.time(), "event": kind, "text": text})

    # -- deploy and start ------------------------------------------------------------------
    def _prepare(self, blobs, agent_pyz):
        """Check the job; the (local path, workdir-relative path) of every file it needs."""
        problems = schema.check_job(self.job)
        if problems:
            raise ValueError("invalid job for %s: %s" % (self.device.name, "; ".join(problems)))
        os.makedirs(self.raw_dir, exist_ok=True)
        self._keep_fact("job.json", self.job)
        self.agent_sha = agent_pyz[1]
        wanted = [(agent_pyz[0], deploy.agent_rel_path(agent_pyz[1]))]
        for sha in _job_blobs(self.job):
            if sha not in blobs:
                raise ValueError("job names blobs/%s but no local file was given for it" % sha)
            wanted.append((blobs[sha], "blobs/" + sha))
        return wanted

    def _set_workdir(self, workdir):
        self.workdir = workdir
        self.run_dir = posixpath.join(self.workdir, "runs", self.job["run_id"])

    def deploy(self, blobs, agent_pyz):
        """Folders, missing files and job.json in separate steps (a resumed run: then attach)."""
        self._deploy_steps(self._prepare(blobs, agent_pyz))
        self.note("deployed (%d file(s) uploaded)" % len(self.outcome.uploads), "deploy")

    def _deploy_steps(self, wanted):
        self._set_workdir(self.t.expand(self.device.workdir))
        self.t.mkdirs(posixpath.join(self.run_dir, "out"))
        self.outcome.uploads = deploy.upload_missing(self.t, self.workdir, wanted)
        self._put_job()

    def launch(self, blobs, agent_pyz):
        """Deploy and start a new run with one command on the device (deploy.launch_script):
        folders, job.json from stdin, a check that every file is there, the agent started. Only
        when files are missing are they uploaded and the command run once more. A transport
        without stdin commands takes the separate steps (folders, uploads, job, start)."""
        wanted = self._prepare(blobs, agent_pyz)
        data = json.dumps(self.job, indent=1, allow_nan=False).encode("utf-8")
        missing = self._launch_once(wanted, data)
        if missing:
            self.outcome.uploads = deploy.upload_missing(
                self.t, self.workdir, [(local, rel) for local, rel in wanted if rel in missing])
            missing = self._launch_once(wanted, data)
            if missing:
                raise TransportError(self.device.name, "%s still missing in %s after uploading"
                                     % (", ".join(sorted(missing)), self.workdir))
        self.note("deployed (%d file(s) uploaded)" % len(self.outcome.uploads), "deploy")

    def _launch_once(self, wanted, data):
        """Run the launch script once: the set of files the device lacks (nothing was started
        then), or an empty set once the agent is started."""
        rel = posixpath.join("runs", self.job["run_id"])
        argv = [self.device.python, deploy.agent_rel_path(self.agent_sha), "run",
                rel + "/job.json", "--out", rel + "/out"]
        script = deploy.launch_script(self.device.workdir, self.job["run_id"], len(data),
                                      [path for _, path in wanted], argv,
                                      env=dict(self.device.env),
                                      clock_python=self.device.python)
        sent, sent_mono = time.time(), time.monotonic()
        try:
            result = self.t.run_input(["sh", "-c", script], data, timeout=120)
        except NotImplementedError:   # no stdin on this transport: the separate steps
            self._deploy_steps(wanted)
            self.start(self.agent_sha)
            return set()
        home, missing, started = deploy.parse_launch(result.stdout)
        if started:
            self._clock_from(result.stdout, sent, time.monotonic() - sent_mono, "launch")
        workdir = self.device.workdir
        if workdir == "~" or workdir.startswith("~/"):
            if not home:
                raise TransportError(self.device.name, "could not deploy the agent: the device "
                                     "did not say its home folder (exit %d): %s"
                                     % (result.exit_code, _short(result)))
            workdir = home + workdir[1:]
        self._set_workdir(workdir)
        if result.exit_code == deploy.LAUNCH_MISSING and missing:
            return set(missing)
        if result.exit_code != 0 or not started:
            raise TransportError(self.device.name, "could not deploy and start the agent in %s "
                                 "(exit %d): %s" % (workdir, result.exit_code, _short(result)))
        self.started = True
        return set()

    # -- the device's clock (for `benchfleet energy attach`) -----------------------------------
    def _clock_from(self, stdout, sent, elapsed, how):
        """One measurement from a command's output: offset = device - controller at the midpoint
        of the round trip, uncertain by half of it (the device read its clock somewhere in it)."""
        found = deploy.parse_clock(stdout)
        if found is None:
            return
        device_unix, method = found
        middle = sent + elapsed / 2.0
        self.clock = {"offset_s": round(device_unix - middle, 6),
                      "uncertainty_s": round(elapsed / 2.0, 6), "device_unix": device_unix,
                      "controller_unix": round(middle, 6), "how": how, "method": method,
                      "at": schema.utc_now()}

    def measure_clock(self):
        """The device's clock by one short command (a resumed run, a transport without stdin
        commands: no launch command carried it); a device that cannot say is a note, never a
        failure."""
        sent, sent_mono = time.time(), time.monotonic()
        try:
            result = self.t.run(["sh", "-c", deploy.clock_line(self.device.python,
                                                               dict(self.device.env))],
                                timeout=self.device.command_timeout_s)
        except Exception as exc:  # noqa: BLE001 - a fact for energy attach, never the run's end
            self.note("could not read the device's clock (%s); energy attach assumes offset 0"
                      % (exc if isinstance(exc, OrchestratorError) else type(exc).__name__))
            return
        self._clock_from(result.stdout, sent, time.monotonic() - sent_mono, "command")
        if self.clock is None:
            self.note("the device did not say its clock (neither date +%s.%N nor its Python "
                      "printed it); energy attach assumes offset 0")

    def keep_clock(self):
        """clock.json in the facts folder: every measurement of this run (a resume adds one)."""
        if self.facts_dir is None:
            return
        if self.clock is None:
            self.measure_clock()
        if self.clock is None:
            return
        path = self.facts_dir / "clock.json"
        kept = []
        try:
            doc = loads_untrusted(path.read_bytes())
            kept = [m for m in doc.get("measurements") or [] if isinstance(m, dict)]
        except (OSError, ValueError, AttributeError):
            pass
        kept = (kept + [self.clock])[-CLOCK_KEEP:]
        self._keep_fact("clock.json", {
            "device": self.device.name, "run_id": self.job["run_id"],
            "offset_s": self.clock["offset_s"], "uncertainty_s": self.clock["uncertainty_s"],
            "measurements": kept,
            "meaning": "offset_s = the device's clock minus this machine's (seconds), measured "
                       "at each start of the run; uncertainty_s: half the round trip"})

    def _keep_fact(self, name, doc):
        if self.facts_dir is None:
            return
        path = self.facts_dir / name
        try:
            self.facts_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(str(path), doc)
        except OSError as exc:
            raise LocalWriteError(path, exc) from exc

    def _put_job(self):
        fd, tmp = tempfile.mkstemp(prefix="job-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.job, f, indent=1, allow_nan=False)
            self.t.put(tmp, posixpath.join(self.run_dir, "job.json"))
        finally:
            os.unlink(tmp)

    def start(self, agent_sha):
        self.agent_sha = agent_sha
        rel = posixpath.join("runs", self.job["run_id"])
        if self.started or self.resumed:
            # What an earlier start of this run left (resume, or a start that found the lock
            # held) must not pass for this start's outcome.
            self._remove("agent.exit", "out/busy.json")
        argv = [self.device.python, deploy.agent_rel_path(agent_sha), "run", rel + "/job.json",
                "--out", rel + "/out"]
        self.t.start_detached(argv, self.workdir, rel + "/agent.log", rel + "/agent.exit",
                              env=dict(self.device.env))
        self.started = True

    def _remove(self, *names):
        paths = [posixpath.join(self.run_dir, n) for n in names]
        self.t.run(["rm", "-f", "--"] + paths, timeout=self.device.command_timeout_s)

    def lock_state(self):
        """{"held", "holder"} of the device's agent.lock (the agent's `lock` command)."""
        from orchestrator.status import read_lock
        agent = posixpath.join(self.workdir, deploy.agent_rel_path(self.agent_sha))
        return read_lock(self.t, self.device, agent, self.workdir)

    def attach(self):
        """For a resumed run: True when nothing needs starting (the agent of this run still
        holds the lock, or it finished: `done`); False when it must be started (again)."""
        self.resumed = True
        if self.t.exists(posixpath.join(self.run_dir, "out", "done")):
            self.note("resume: the agent had finished this run; collecting its results")
            self.started = True
            return True
        state = self.lock_state()
        holder = state["holder"] or {}
        if state["held"] and holder.get("run_id") == self.job["run_id"]:
            self.note("resume: re-attached to the agent still running this run (%s)"
                      % describe_holder(holder))
            self.started = True
            return True
        self.note("resume: the agent of this run is gone; starting it again (it skips every "
                  "case it has a result for)")
        return False

    def after_busy(self, deadline, poll_s):
        """What to do after a start found the lock held: "start" once it is free, "watch" when
        the holder is this very run (a resume racing its own agent), None when the wait is
        over or was not asked for (the cases are then skipped as busy)."""
        holder = self.busy_holder = self.holder()
        if holder.get("run_id") == self.job["run_id"]:
            self.note("the agent of this run holds the device; attaching to it")
            self._remove("agent.exit", "out/busy.json")   # ours; the agent writes its own
            return "watch"
        if time.monotonic() >= deadline:
            return None
        self.note("busy: %s; waiting up to %.0f s" % (describe_holder(holder),
                                                      deadline - time.monotonic()))
        while time.monotonic() < deadline:
            if not self.lock_state()["held"]:
                self.note("the device is free; starting")
                return "start"
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
        return None

    def holder(self):
        """Who holds the device, from out/busy.json (written by the agent that found it busy)."""
        try:
            raw = self.t.read_bytes(posixpath.join(self.run_dir, "out", "busy.json"), 64 * 1024)
            doc = loads_untrusted(raw.decode("utf-8", "replace")) if raw else None
        except (OrchestratorError, ValueError):
            doc = None
        return doc if isinstance(doc, dict) else {}

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
                if verdict is None:
                    self._pause(poll_interval)
                    continue
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
            return verdict

    def _pause(self, poll_interval):
        """Wait up to poll_interval for the next full poll, ending early when a cheap look
        (LOOK_S) finds events.jsonl grown past what the poller has read or `done` present."""
        deadline = time.monotonic() + poll_interval
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(LOOK_S, left) if self.looks else left)
            if self.looks and self._changed():
                return

    def _changed(self):
        poller = self.poller
        if poller.events_off:   # events.jsonl is no longer read: its size says nothing
            self.looks = False
            return False
        out = posixpath.join(self.run_dir, "out")
        try:
            size = self.t.file_size(posixpath.join(out, "events.jsonl"))
            if size is not None and size > poller.offset and size != self.woke_at:
                self.woke_at = size   # a half-written last line wakes one poll, not every look
                return True
            return self.t.file_size(posixpath.join(out, "done")) is not None
        except NotImplementedError:
            self.looks = False
            return False

    def _on_result(self, case_id, doc, problems):
        if problems:
            doc = failed_result(self.job, self.poller.cases[case_id], "invalid_result",
                                     "result file failed the controller's checks: "
                                     + "; ".join(problems[:10]))
        self.docs[case_id] = doc

    def finish(self, verdict: Verdict):
        if verdict.kind == "busy":
            self._busy()
            return
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

    def _busy(self):
        """Another run holds the device: its cases are skipped (busy), never failed."""
        holder = getattr(self, "busy_holder", None) or self.holder()
        reason = "device busy: %s" % describe_holder(holder)
        hint = ("wait for it with `benchfleet run ... --wait SECONDS`; `benchfleet devices "
                "status` shows who holds each device")
        self.outcome.error = "%s: %s" % (self.device.name, reason)
        for case in self.job.get("cases") or []:
            if case.get("case_id") not in self.docs:
                self.docs[case["case_id"]] = controller_result(self.job, case, "skipped", reason,
                                                               "busy", hint)
        self._order()

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


def _short(result):
    """The last of a device command's stderr (else stdout), for an error message."""
    text = (result.stderr or "").strip() or (result.stdout or "").strip() or "no output"
    return terminal(text[-500:])


def describe_holder(holder):
    """'run R of user@host (controller pid P), agent pid N, since T' from an agent.lock holder."""
    if not holder:
        return "held by another agent run (who: unknown)"
    ctl = holder.get("controller") if isinstance(holder.get("controller"), dict) else {}
    who = "%s@%s" % (ctl.get("user") or "?", ctl.get("host") or "?") if ctl else "an unknown controller"
    parts = ["run %s of %s" % (holder.get("run_id") or "?", who)]
    if ctl.get("pid"):
        parts[0] += " (controller pid %s)" % ctl["pid"]
    parts.append("agent pid %s" % holder.get("pid", "?"))
    if holder.get("since"):
        parts.append("since %s" % holder["since"])
    return terminal(", ".join(parts))


def _job_blobs(job):
    """sha256 of every `blobs/<sha>` the job names (models, their inputs, user backend files),
    once each."""
    paths = [(case.get("model") or {}).get("path") or "" for case in job.get("cases") or []]
    paths += [((case.get("model") or {}).get("inputs") or {}).get("path") or ""
              for case in job.get("cases") or []]
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
                              spec.raw_dir, on_event, resume=spec.resume,
                              facts_dir=getattr(spec, "facts_dir", None), **kwargs)

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
