"""Watching one agent run on one device: events, result files, heartbeat, exit, per-case backstop.

RunPoller.poll_once reads the run's out folder once and says whether the run is over and why.
Result bytes are untrusted: capped, NaN refused, schema- and nonce-checked, kept raw on disk.
"""

import json
import logging
import os
import posixpath
import re
import threading
import time
from dataclasses import dataclass

from agent import schema
from orchestrator import records
from orchestrator.errors import FileTooLarge, LocalWriteError, OrchestratorError
from agent.fsutil import atomic_write_bytes  # tmp, fsync, rename, fsync folder

log = logging.getLogger(__name__)

MAX_EVENTS_READ = 8 * 1024 * 1024


@dataclass
class Verdict:
    """How a run ended: kind is done, busy (EXIT_BUSY), lost (agent gone) or timeout (backstop)."""

    kind: str
    reason: str = ""
    case_id: str | None = None


MAX_JSON_DEPTH = 64  # a result is a few levels deep; anything far deeper is not one


def loads_untrusted(raw):
    """json.loads of a device's bytes: NaN/Infinity refused, nesting capped at MAX_JSON_DEPTH.

    Raises:
        ValueError: not UTF-8, not JSON, a non-finite constant, or nested too deeply (the last
            checked on the text before parsing, so no RecursionError can come out of here).
    """
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    depth = _max_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise ValueError("nested too deeply (%d levels, the limit is %d)" % (depth, MAX_JSON_DEPTH))
    return json.loads(text, parse_constant=records.reject_constant)


_BRACKETS = re.compile(r'[\[\]{}]|"(?:[^"\\]|\\.)*"')


def _max_depth(text):
    """The deepest bracket nesting in JSON text (brackets inside strings do not count)."""
    depth = deepest = 0
    for match in _BRACKETS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif token in "]}":
            depth -= 1
    return deepest


def parse_result(raw, job, case_id):
    """(doc, problems) for the bytes of <case_id>.json; problems empty when the result is usable."""
    try:
        doc = loads_untrusted(raw)
    except UnicodeDecodeError as exc:
        return None, ["not valid JSON: %s" % exc]
    except ValueError as exc:
        message = str(exc)
        return None, [message if message.startswith("nested") else "not valid JSON: %s" % message]
    if not isinstance(doc, dict):
        return None, ["not a result: the file holds a JSON %s, not an object"
                      % type(doc).__name__]
    doc = schema.migrate_result(doc)   # an agent of an older schema version (resume)
    problems = schema.check_result(doc)
    if not problems:
        # The controller's own pydantic mirror too: the two must agree (tests/test_contract.py).
        problems = records.model_problems(doc)
    if isinstance(doc, dict):
        # A stale file from an earlier run, or one copied from another case, is not this result.
        if doc.get("nonce") != job.get("nonce"):
            problems.append("nonce: does not match this run's nonce (a stale or foreign file?)")
        if doc.get("case_id") != case_id:
            problems.append("case_id: %r in the file named %s.json" % (doc.get("case_id"), case_id))
        if doc.get("run_id") != job.get("run_id"):
            problems.append("run_id: %r, expected %r" % (doc.get("run_id"), job.get("run_id")))
    return doc, problems


def keep_local(path, data):
    """atomic_write_bytes on this machine; LocalWriteError (the run stops) if it fails."""
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise LocalWriteError(path, exc) from exc


class RunPoller:
    """State of polling one run: event offset, results seen, heartbeat age, case start times.

    Ages are measured on the controller's monotonic clock from when a change was *seen*, never
    by comparing the device's epoch with ours, so clock skew between them cannot fake a stall.
    """

    def __init__(self, transport, job, run_dir, raw_dir, on_result, on_event,
                 stall_timeout_s, case_margin_s, clock=time.monotonic):
        self.t, self.job, self.run_dir = transport, job, run_dir
        self.out = posixpath.join(run_dir, "out")
        self.raw_dir, self.on_result, self.on_event = raw_dir, on_result, on_event
        self.stall_timeout_s, self.case_margin_s, self.clock = stall_timeout_s, case_margin_s, clock
        self.cases = {c["case_id"]: c for c in job["cases"]}
        self.collected = set()
        self.offset = 0
        self.case_started = {}
        self.beat = (None, clock())
        self.status = {}
        self.events_off = False  # events.jsonl outgrew MAX_EVENTS_READ between two reads
        self.last_step = clock()  # the run's start, a case_start or a result: the gap watch

    def poll_once(self):
        """Read the out folder once; a Verdict when the run is over, else None."""
        self._read_events()
        names = set(self.t.listdir(self.out))
        self._collect(names)
        if "done" in names:
            self._read_events()   # run_end is written just before `done`: show it too
            return Verdict("done")
        ended = self._ended()
        if ended is not None:
            # The agent may have written its last result and `done` since our listing.
            names = set(self.t.listdir(self.out))
            self._collect(names)
            return Verdict("done") if "done" in names else ended
        return self._stalled() or self._overdue()

    def _note(self, text):
        self.on_event(self.t.name, {"t": time.time(), "event": "note", "text": text})

    def missing(self):
        return [cid for cid in self.cases if cid not in self.collected]

    def _read_events(self):
        if self.events_off:
            return
        try:
            data = self.t.read_bytes(posixpath.join(self.out, "events.jsonl"), MAX_EVENTS_READ,
                                     offset=self.offset)
        except FileTooLarge as exc:
            # Progress lines only: results, heartbeat and exit are read apart from this file.
            self.events_off = True
            self._note("events.jsonl grew by %d bytes since the last read (more than %d): agent "
                       "events are no longer shown for this run; results are still collected"
                       % (exc.size, MAX_EVENTS_READ))
            return
        if not data:
            return
        # Only whole lines: the agent appends, and a line may be half-written right now.
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].splitlines():
            try:
                event = loads_untrusted(line)
            except ValueError:
                log.warning("%s: ignoring a bad events.jsonl line: %r", self.t.name, line[:200])
                continue
            if not isinstance(event, dict):
                continue
            if event.get("event") == "case_start" and event.get("case_id") in self.cases:
                self.case_started[event["case_id"]] = self.last_step = self.clock()
            self.on_event(self.t.name, event)

    def _collect(self, names):
        for case_id in self.cases:
            if case_id in self.collected or case_id + ".json" not in names:
                continue
            path = posixpath.join(self.out, case_id + ".json")
            try:
                raw = self.t.read_bytes(path, schema.MAX_RESULT_BYTES)
            except FileTooLarge as exc:  # that file's row, not the device's connection
                self.collected.add(case_id)
                self.on_result(case_id, None, ["%s.json is %d bytes, over the %d-byte cap"
                                               % (case_id, exc.size, exc.max_bytes)])
                continue
            if raw is None:
                continue
            keep_local(os.path.join(self.raw_dir, case_id + ".json"), raw)
            doc, problems = parse_result(raw, self.job, case_id)
            self.collected.add(case_id)
            self.last_step = self.clock()
            if not problems:
                self._fetch_kept_files(case_id, doc)
            self.on_result(case_id, doc, problems)

    def _fetch_kept_files(self, case_id, doc):
        """Files the agent kept beside a result (a profile trace): fetched next to the raw result.

        Names come from an untrusted result, so only `<case_id>.<name>` in the out folder counts,
        only a regular file (checked on the device, links not followed: _kept_file_kind), and at
        most schema.MAX_KEPT_FILES and MAX_KEPT_BYTES per case and MAX_KEPT_RUN_BYTES per run
        (every device's poller together). A file refused is named with why in the result's
        environment.artifacts_refused and its reason (the row says it) and in a progress note;
        environment.artifacts keeps only the files fetched. The result always counts: nothing
        here raises but LocalWriteError (this machine's disk). Returns {name: why} refused.
        """
        env = doc.get("environment")
        env = env if isinstance(env, dict) else {}
        kept = env.get("artifacts")
        kept = kept if isinstance(kept, dict) else {}
        pattern = re.compile(r"%s\.[A-Za-z0-9_.-]+" % re.escape(case_id))
        wanted, refused = {}, {}
        for name, target in sorted(kept.items(), key=lambda item: str(item[0])):
            if not isinstance(target, str) or not pattern.fullmatch(target) or ".." in target:
                refused[name] = "%r is not a file name of this case (%s.NAME)" % (target, case_id)
            elif target == case_id + ".json":
                refused[name] = "%s is the result itself" % target
            elif target not in wanted.values() and \
                    len(set(wanted.values())) >= schema.MAX_KEPT_FILES:
                refused[name] = "%s: a case keeps at most %d files" % (target, schema.MAX_KEPT_FILES)
            else:
                wanted[name] = target
        fetched, case_bytes = {}, 0
        for name, target in wanted.items():
            if target in fetched.values():
                fetched[name] = target
                continue
            why, size = self._kept_file_kind(target)
            if why is None and case_bytes + size > schema.MAX_KEPT_BYTES:
                why = "%s: %d bytes would take this case past its %d-byte cap on kept files" % (
                    target, size, schema.MAX_KEPT_BYTES)
            if why is None and not self._take_run_bytes(size):
                why = "%s: %d bytes would take the run past its per-run %d-byte cap on kept " \
                      "files" % (target, size, schema.MAX_KEPT_RUN_BYTES)
            if why is None:
                data, why = self._read_kept_file(target, size)
                self._take_run_bytes((len(data) if data is not None else 0) - size)
            if why is not None:
                refused[name] = why
                continue
            keep_local(os.path.join(self.raw_dir, target), data)
            case_bytes += len(data)
            fetched[name] = target
        if refused:
            self._refuse_kept_files(case_id, doc, env, fetched, refused)
        return refused

    # Bytes of kept files fetched per run ((run_id, nonce): one benchfleet run, all its devices).
    _kept_run_bytes = {}
    _kept_lock = threading.Lock()

    def _take_run_bytes(self, size):
        """Count `size` more kept bytes for this run (negative: give some back); False, counting
        nothing, when that would pass schema.MAX_KEPT_RUN_BYTES."""
        key = (self.job.get("run_id"), self.job.get("nonce"))
        with RunPoller._kept_lock:
            used = RunPoller._kept_run_bytes.get(key, 0)
            if size > 0 and used + size > schema.MAX_KEPT_RUN_BYTES:
                return False
            RunPoller._kept_run_bytes[key] = max(0, used + size)
            return True

    def _kept_file_kind(self, target):
        """(None, size) when out/<target> is a regular file on the device, else (why, None).

        `ls -lndq` (POSIX) describes the entry itself, never what a symbolic link points at;
        -q prints a name's or link target's odd characters as '?', so its one line cannot be
        forged by them; C locale for the fields.
        """
        path = posixpath.join(self.out, target)
        try:
            result = self.t.run(["ls", "-lndq", "--", path], timeout=30, env={"LC_ALL": "C"})
        except OrchestratorError as exc:
            return "%s: could not be checked on the device: %s" % (target, exc), None
        lines = [l for l in result.stdout.splitlines()
                 if l.endswith(" " + path) or (" " + path + " -> ") in l]
        fields = lines[0].split() if len(lines) == 1 else []
        if len(fields) < 6:
            if result.exit_code != 0:
                return "%s: not in the out folder" % target, None
            return "%s: could not be checked on the device (ls said %r)" % (
                target, result.stdout[:200]), None
        kind = fields[0][:1]
        if kind != "-":
            what = {"l": "a symbolic link", "d": "a folder", "p": "a pipe", "s": "a socket",
                    "c": "a device", "b": "a device"}.get(kind, "of type %r" % kind)
            return "%s: not a regular file (%s)" % (target, what), None
        if not fields[4].isdigit():
            return "%s: could not be checked on the device (size %r)" % (target, fields[4]), None
        return None, int(fields[4])

    def _read_kept_file(self, target, size):
        """(bytes, None), or (None, why): never more than the `size` checked (a file that grew
        since is refused, not read)."""
        try:
            data = self.t.read_bytes(posixpath.join(self.out, target), size)
        except FileTooLarge as exc:
            return None, "%s: grew to %d bytes after it was checked" % (target, exc.size)
        except OrchestratorError as exc:
            return None, "%s: could not be fetched: %s" % (target, exc)
        if data is None:
            return None, "%s: gone before it could be fetched" % target
        return data, None

    def _refuse_kept_files(self, case_id, doc, env, fetched, refused):
        """Say in the result (its reason, environment.artifacts_refused) and in a progress note
        which kept files were refused and why."""
        env["artifacts"] = fetched
        env["artifacts_refused"] = {str(k): v for k, v in refused.items()}
        whys = sorted(set(refused.values()))
        text = "; ".join(whys[:5]) + ("; and %d more" % (len(whys) - 5) if len(whys) > 5 else "")
        note = "kept files refused (the result still counts): " + text
        doc["reason"] = "%s; %s" % (doc["reason"], note) if doc.get("reason") else note
        log.warning("%s: %s: %s", self.t.name, case_id, note)
        if self.on_event is not None:
            self._note("%s: %s" % (case_id, note))

    def _read_json(self, name, max_bytes=1 << 20):
        """The small JSON file `name` (agent.exit, status.json), None if absent or not usable."""
        try:
            raw = self.t.read_bytes(posixpath.join(self.run_dir, name), max_bytes)
        except FileTooLarge:
            log.warning("%s: ignoring %s: over %d bytes", self.t.name, name, max_bytes)
            return None
        if raw is None:
            return None
        try:
            return loads_untrusted(raw.decode("utf-8", "replace"))
        except ValueError:
            return None

    def _ended(self):
        """Verdict when the agent process is gone without `done` (exit-code file or status.json)."""
        code = self._read_json("agent.exit", 64)
        status = self._read_json("out/status.json")
        self.status = status if isinstance(status, dict) else self.status
        if code == schema.EXIT_BUSY:
            return Verdict("busy", "agent exited %d (busy)" % code)
        full = self._disk_full(code)
        if full:
            return Verdict("lost", full)
        if isinstance(code, int):
            return Verdict("lost", "agent exited with code %d%s without finishing"
                           % (code, " (killed by signal %d)" % (code - 128) if code > 128 else ""))
        # status.json says done a moment before `done` is created: exit 0 is a run completing.
        if self.status.get("state") == "done" and self.status.get("exit_code") != schema.EXIT_OK:
            return Verdict("lost", "agent stopped (exit %s, signal %s, error %s) without finishing"
                           % (self.status.get("exit_code"), self.status.get("signal"),
                              self.status.get("error")))
        return None

    def _disk_full(self, code):
        """The agent's own 'device disk full (...)' reason when it stopped for that, else None."""
        error = self.status.get("error") if self.status.get("state") == "done" else None
        if isinstance(error, str) and error.startswith("device disk full"):
            return error[:500]
        if code == schema.EXIT_DISK_FULL or self.status.get("exit_code") == schema.EXIT_DISK_FULL:
            return "device disk full (%s): the agent stopped (exit %d); free space on the " \
                   "device, then rerun" % (posixpath.dirname(posixpath.dirname(self.run_dir)),
                                           schema.EXIT_DISK_FULL)
        return None

    def _stalled(self):
        try:
            beat = self.t.read_bytes(posixpath.join(self.out, "heartbeat"), 4096)
        except FileTooLarge as exc:  # not a heartbeat the agent writes; its size still changes
            beat = b"oversized %d" % exc.size
        now = self.clock()
        if beat is not None and beat != self.beat[0]:
            self.beat = (beat, now)
        age = now - self.beat[1]
        if age > self.stall_timeout_s:
            what = "no heartbeat change" if beat is not None else "no heartbeat file"
            free = self._free_mb()
            if free is not None and free * 1024 * 1024 < schema.MIN_FREE_BYTES:
                return Verdict("lost", "device disk full (%s, %d MB free): %s for %.0f s; free "
                               "space on the device, then rerun" % (self.run_dir, free, what, age))
            return Verdict("lost", "%s for %.0f s (agent hung or killed)" % (what, age))
        return None

    def _free_mb(self):
        """MB free in the run folder's filesystem (POSIX `df -Pk`), None if it cannot be told."""
        try:
            result = self.t.run(["df", "-Pk", self.run_dir], timeout=15)
            return int(result.stdout.strip().splitlines()[-1].split()[3]) // 1024
        except (OrchestratorError, ValueError, IndexError, AttributeError):
            return None

    def gap_limit_s(self):
        """Longest the agent may take between two steps (start, a result, the next case_start):
        its longest cool-down (fixed seconds; thermal at most max_wait_s) plus the margin."""
        cfg = self.job.get("cooldown") or {}
        mode = cfg.get("mode")
        wait = 0.0
        if mode in ("fixed", "thermal"):
            wait = float(cfg.get("seconds") or 0.0)
        if mode == "thermal":
            wait = max(wait, float(cfg.get("max_wait_s") or 0.0)) + float(cfg.get("rewarm_s") or 0.0)
        if self.events_off:  # case_start is no longer seen: a running case looks like a gap
            wait += max(float(c["settings"].get("case_timeout_s", 1800.0))
                        for c in self.cases.values())
        return wait + self.case_margin_s

    def _overdue(self):
        now = self.clock()
        running = [c for c in self.case_started if c not in self.collected]
        waiting = [c for c in self.cases if c not in self.collected and c not in self.case_started]
        if not running and waiting and now - self.last_step > self.gap_limit_s():
            # Between cases (a cool-down) or before the first: alive, but not moving on.
            return Verdict("timeout", "no case started %.0f s after the last step (the longest "
                           "cool-down is %g s, margin %g s): the agent did not move on"
                           % (now - self.last_step, self.gap_limit_s() - self.case_margin_s,
                              self.case_margin_s), waiting[0])
        for case_id, started in self.case_started.items():
            if case_id in self.collected:
                continue
            limit = float(self.cases[case_id]["settings"].get("case_timeout_s", 1800.0))
            if now - started > limit + self.case_margin_s:
                return Verdict("timeout", "no result %.0f s after case_start (case_timeout_s %g + "
                               "margin %g; the agent did not enforce its own timeout)"
                               % (now - started, limit, self.case_margin_s), case_id)
        return None
