"""The agent protocol: job and result documents, their version and their checks.

One source of truth, stdlib only (runs on Python 3.6). The controller mirrors it with
pydantic in orchestrator/records.py; tests/test_contract.py runs golden files through both.

Format history (bump SCHEMA_VERSION and add a line; a controller reading an older version then
needs a migration, which none has needed yet):
  1  2026-11  first version: job.json, <case_id>.json results, events.jsonl, heartbeat, status.json
  1  2026-12  additions a version-1 reader accepts: job.backends (user backend files), model
              format openvino; job.cooldown always carries every DEFAULT_COOLDOWN key. The agent
              ships with its controller, so a job is only ever read by its own agent version.
"""

import math
import time

from agent.backends import catalog

SCHEMA_VERSION = 1
JOB_KIND = "benchfleet.job"
RESULT_KIND = "benchfleet.result"

# Case outcome.  ok: measured.  skipped: the device cannot run it (reason says why and how to fix).
# failed: it should have run and did not; substatus says which class of failure.
STATUSES = ("ok", "skipped", "failed")
FAILED_SUBSTATUSES = ("error", "timeout", "crashed", "bad_model", "agent_lost", "invalid_result")
VALIDITIES = ("VALID", "INVALID")

BACKENDS = catalog.names()      # plus, per job, the user backends it ships (job.backends)
MODEL_FORMATS = catalog.FORMATS
PRECISIONS = catalog.PRECISIONS
COOLDOWN_MODES = ("none", "fixed", "thermal")
# Between cases (docs/METHOD.md step 8): the seed's protocol is a fixed 120 s; thermal waits until
# every zone is within delta_c of its idle baseline, at most max_wait_s.
DEFAULT_COOLDOWN = {"mode": "fixed", "seconds": 120.0, "delta_c": 3.0, "max_wait_s": 600.0}
DEFAULT_WORKDIR = "~/.benchfleet"   # a device's folder when its inventory entry names none

# Percentiles reported, and the minimum sample counts docs/METHOD.md asks for before a conservative
# (99% confidence upper bound) percentile is called established.
PERCENTILES = (50, 90, 95, 99, 99.9)
CONSERVATIVE_MIN_SAMPLES = {90: 64, 95: 130, 99: 662, 99.9: 6636}
CONFIDENCE = 0.99

# Defaults of docs/METHOD.md; a suite may override each, the result records what was used.
DEFAULT_SETTINGS = {
    "warmup_runs": 50,
    "warmup_min_s": 1.0,
    "runs": 1000,
    "min_duration_s": 10.0,
    "max_duration_s": 600.0,
    "input_seed": 0,
    "input_pool": 4,
    "cv_max": 0.0,          # 0: CV is a figure, not a verdict; a suite may set a bound
    "case_timeout_s": 1800.0,
    "p50_ci_max": 0.01,     # INVALID when the p50's 95% interval half-width exceeds this share
    "drift_max": 0.03,      # INVALID when the two halves' p50s differ by more than this share
    "until_stable": False,  # keep measuring, up to max_duration_s, until the p50 is within p50_ci_max
    "end_to_end": False,    # time staging the input + execute together (default: execute alone)
}
BOOL_SETTINGS = ("until_stable", "end_to_end")
# Settings added after results were first written: a result without them is still a result
# (the agent reads the default where a job lacks one).
LATER_SETTINGS = ("p50_ci_max", "drift_max", "until_stable", "end_to_end")
# The smallest value each setting may take, and whether the bound itself is allowed.
SETTING_MINIMUMS = {
    "warmup_runs": (0, True), "warmup_min_s": (0.0, True), "runs": (1, True),
    "min_duration_s": (0.0, True), "max_duration_s": (0.0, False), "input_seed": (0, True),
    "input_pool": (1, True), "cv_max": (0.0, True), "case_timeout_s": (0.0, False),
    "p50_ci_max": (0.0, False), "drift_max": (0.0, False),
}
# The largest (allowed): far past any real suite, near enough that a typo (1e9 s) is refused at
# load instead of hanging a run or overflowing a sleep on the device.
SETTING_MAXIMUMS = {
    "warmup_runs": 1000000, "warmup_min_s": 3600.0, "runs": 1000000,
    "min_duration_s": 43200.0, "max_duration_s": 43200.0, "input_seed": 2 ** 32 - 1,
    "input_pool": 256, "cv_max": 100.0, "case_timeout_s": 86400.0,
    "p50_ci_max": 1.0, "drift_max": 10.0,
}
# Cool-down numbers: (lowest, whether the lowest itself is allowed, highest allowed).
COOLDOWN_LIMITS = {
    "seconds": (0.0, True, 3600.0), "delta_c": (0.0, False, 100.0),
    "max_wait_s": (0.0, False, 3600.0),
}
MAX_THREADS = 1024          # threads of one case
MAX_CPU_INDEX = 4095        # an affinity's CPU numbers
MAX_SYNTHETIC_MS = 60000.0  # one synthetic inference
MAX_CASES = 10000           # cases of one suite (a matrix entry included)


def number_text(value):
    """3600.0 -> '3600', 4294967295 -> '4294967295', 0.025 -> '0.025' (never an exponent for a
    whole number)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        value = int(value)
    return str(value) if isinstance(value, int) else "%g" % value


def range_problem(value, low, high, low_allowed=True):
    """The message for a number outside [low, high] ((low, high] when not low_allowed), else None."""
    if low <= value <= high and (low_allowed or value != low):
        return None
    if low_allowed:
        allowed = "%s to %s" % (number_text(low), number_text(high))
    else:
        allowed = "more than %s and at most %s" % (number_text(low), number_text(high))
    return "must be %s (got %s)" % (allowed, number_text(value))


# Agent process exit codes (`agent.pyz run`): distinct per failure class.
EXIT_OK = 0            # every case has a result file (whatever its status)
EXIT_USAGE = 2         # bad command line or bad job.json
EXIT_BUSY = 3          # another agent run holds the workdir lock
EXIT_INTERNAL = 4      # a bug in the agent: traceback on stderr
EXIT_DISK_FULL = 5     # the device's workdir filesystem is (nearly) full: status.json says how full
EXIT_INTERRUPTED = 130

# The agent refuses to start a case with less than this free in the workdir's filesystem (a
# result, its events and a kept profile fit in far less; a model build cache may not).
MIN_FREE_BYTES = 32 * 1024 * 1024
# Held by the agent while it runs and freed when the disk fills: room for its last status,
# events, agent.log line and the exit-code file.
RESERVE_BYTES = 1024 * 1024

# Case worker exit codes (`agent.pyz case`), read by the supervisor.
WORKER_OK = 0
WORKER_RESULT_WRITTEN_FAILED = 5

MAX_RESULT_BYTES = 64 * 1024 * 1024

# Files a backend keeps beside its result (out/<case_id>.<name>, environment.artifacts): regular
# files only, at most MAX_KEPT_FILES and MAX_KEPT_BYTES per case; the controller fetches at most
# MAX_KEPT_RUN_BYTES of them per run, over every device. A file past a cap is refused with the
# reason in environment.artifacts_refused; the result always counts.
MAX_KEPT_FILES = 4
MAX_KEPT_BYTES = 16 * 1024 * 1024
MAX_KEPT_RUN_BYTES = 64 * 1024 * 1024


def percentile_key(p):
    """50 -> 'p50', 99.9 -> 'p99_9': the field name used in summaries and CSV columns."""
    text = ("%g" % p).replace(".", "_")
    return "p" + text


def _problem(problems, path, message):
    problems.append("%s: %s" % (path, message))


def _check_type(problems, doc, path, key, types, required=True, allow_none=False):
    if key not in doc:
        if required:
            _problem(problems, path + key, "field required")
        return None
    value = doc[key]
    if value is None:
        if not allow_none:
            _problem(problems, path + key, "must not be null")
        return None
    if isinstance(value, bool) and bool not in _as_tuple(types):
        _problem(problems, path + key, "expected %s, got a boolean" % _type_names(types))
        return None
    if not isinstance(value, types):
        _problem(problems, path + key, "expected %s, got %s" % (_type_names(types), type(value).__name__))
        return None
    if isinstance(value, float) and not math.isfinite(value):
        _problem(problems, path + key, "must be a finite number")
        return None
    return value


def _as_tuple(types):
    return types if isinstance(types, tuple) else (types,)


def _type_names(types):
    return " or ".join(t.__name__ for t in _as_tuple(types))


def _check_enum(problems, doc, path, key, allowed, required=True, allow_none=False):
    value = _check_type(problems, doc, path, key, str, required, allow_none)
    if value is not None and value not in allowed:
        _problem(problems, path + key, "must be one of %s, got %r" % (", ".join(allowed), value))
    return value


NUMBER = (int, float)

CASE_FIELDS = ("case_id", "model", "runtime", "settings", "label")
MODEL_FIELDS = ("name", "variant", "format", "sha256", "path", "synthetic_ms")
RUNTIME_FIELDS = ("backend", "threads", "affinity", "precision", "options")


def check_case(case, path="cases[0].", user_backends=()):
    """Problems of one job case (a list of 'path: message' strings; empty when valid).

    user_backends: names of the user backends the job ships (their options are checked by the
    agent once it has read their files).
    """
    problems = []
    if not isinstance(case, dict):
        return [path.rstrip(".") + ": expected an object"]
    _unknown(problems, case, path, CASE_FIELDS)
    _check_type(problems, case, path, "case_id", str)
    _check_type(problems, case, path, "label", str, required=False)
    model = _check_type(problems, case, path, "model", dict)
    if model is not None:
        mp = path + "model."
        _unknown(problems, model, mp, MODEL_FIELDS)
        _check_type(problems, model, mp, "name", str)
        _check_type(problems, model, mp, "variant", str)
        _check_enum(problems, model, mp, "format", MODEL_FORMATS)
        _check_type(problems, model, mp, "sha256", str, allow_none=True)
        _check_type(problems, model, mp, "path", str, allow_none=True)
        ms = _check_type(problems, model, mp, "synthetic_ms", NUMBER, required=False,
                         allow_none=True)
        message = ms is not None and range_problem(ms, 0.0, MAX_SYNTHETIC_MS)
        if message:
            _problem(problems, mp + "synthetic_ms", message)
    runtime = _check_type(problems, case, path, "runtime", dict)
    if runtime is not None:
        rp = path + "runtime."
        _unknown(problems, runtime, rp, RUNTIME_FIELDS)
        backend = _check_enum(problems, runtime, rp, "backend", BACKENDS + tuple(user_backends))
        threads = _check_type(problems, runtime, rp, "threads", int, allow_none=True)
        message = threads is not None and range_problem(threads, 1, MAX_THREADS)
        if message:
            _problem(problems, rp + "threads", message)
        affinity = _check_type(problems, runtime, rp, "affinity", list, allow_none=True)
        for j, cpu in enumerate(affinity or []):
            ok = isinstance(cpu, int) and not isinstance(cpu, bool)
            message = range_problem(cpu, 0, MAX_CPU_INDEX) if ok else "expected a CPU number"
            if message:
                _problem(problems, "%saffinity[%d]" % (rp, j), message)
        _check_enum(problems, runtime, rp, "precision", PRECISIONS)
        options = _check_type(problems, runtime, rp, "options", dict)
        if options is not None and backend in catalog.BY_NAME:
            problems.extend(catalog.BY_NAME[backend].check_options(options, rp + "options"))
    settings = _check_type(problems, case, path, "settings", dict)
    if settings is not None:
        sp = path + "settings."
        _unknown(problems, settings, sp, tuple(DEFAULT_SETTINGS))
        for key in DEFAULT_SETTINGS:
            if key in BOOL_SETTINGS:
                _check_type(problems, settings, sp, key, bool, required=key not in LATER_SETTINGS)
                continue
            value = _check_type(problems, settings, sp, key, NUMBER,
                                required=key not in LATER_SETTINGS)
            low, inclusive = SETTING_MINIMUMS[key]
            message = value is not None and range_problem(value, low, SETTING_MAXIMUMS[key],
                                                          inclusive)
            if message:
                _problem(problems, sp + key, message)
    return problems


JOB_FIELDS = ("schema_version", "kind", "run_id", "nonce", "device", "cooldown", "cases",
              "backends", "controller")
# job.controller (optional): who started the run, shown to anyone who finds the device busy.
CONTROLLER_FIELDS = ("user", "host", "pid")
USER_BACKEND_FIELDS = ("path", "sha256", "file")


def check_job(job):
    """Problems of a job.json document (empty list when valid)."""
    problems = []
    if not isinstance(job, dict):
        return ["job: expected an object"]
    _check_header(problems, job, JOB_FIELDS, JOB_KIND)
    for key in ("run_id", "nonce", "device"):
        _check_type(problems, job, "", key, str)
    cooldown = _check_type(problems, job, "", "cooldown", dict)
    if cooldown is not None:
        _unknown(problems, cooldown, "cooldown.", tuple(DEFAULT_COOLDOWN))
        _check_enum(problems, cooldown, "cooldown.", "mode", COOLDOWN_MODES)
        for key, (low, low_allowed, high) in sorted(COOLDOWN_LIMITS.items()):
            value = _check_type(problems, cooldown, "cooldown.", key, NUMBER)
            message = value is not None and range_problem(value, low, high, low_allowed)
            if message:
                _problem(problems, "cooldown." + key, message)
    controller = _check_type(problems, job, "", "controller", dict, required=False)
    if controller is not None:
        _unknown(problems, controller, "controller.", CONTROLLER_FIELDS)
        for key in ("user", "host"):
            _check_type(problems, controller, "controller.", key, str, required=False)
        _check_type(problems, controller, "controller.", "pid", int, required=False)
    users = _check_type(problems, job, "", "backends", dict, required=False) or {}
    for name, entry in sorted(users.items()):
        where = "backends.%s." % name
        if not catalog.valid_name(name) or name in catalog.BY_NAME:
            _problem(problems, where.rstrip("."), "not a valid user backend name")
        if not isinstance(entry, dict):
            _problem(problems, where.rstrip("."), "expected an object")
            continue
        _unknown(problems, entry, where, USER_BACKEND_FIELDS)
        for key in USER_BACKEND_FIELDS:
            _check_type(problems, entry, where, key, str)
    cases = _check_type(problems, job, "", "cases", list)
    seen = set()
    for i, case in enumerate(cases or []):
        problems.extend(check_case(case, "cases[%d]." % i, tuple(users)))
        cid = case.get("case_id") if isinstance(case, dict) else None
        if cid in seen:
            _problem(problems, "cases[%d].case_id" % i, "duplicate case_id %r" % cid)
        seen.add(cid)
    return problems


def _check_header(problems, doc, fields, kind):
    """Unknown top-level fields, schema_version and kind: the same rule for jobs and results."""
    _unknown(problems, doc, "", fields)
    version = _check_type(problems, doc, "", "schema_version", int)
    if version is not None and version != SCHEMA_VERSION:
        _problem(problems, "schema_version", "this agent speaks version %d, the document is %d"
                 % (SCHEMA_VERSION, version))
    value = _check_type(problems, doc, "", "kind", str)
    if value is not None and value != kind:
        _problem(problems, "kind", "expected %r" % kind)


def _unknown(problems, doc, path, allowed):
    for key in sorted(set(doc) - set(allowed)):
        _problem(problems, path + key, "unknown field")


RESULT_FIELDS = (
    "schema_version", "kind", "run_id", "nonce", "case_id", "label", "device", "model", "runtime",
    "settings", "status", "substatus", "reason", "hint", "timing", "validity", "memory",
    "telemetry", "delegation", "environment", "cooldown", "agent_version", "started_at",
    "finished_at",
)
TIMING_FIELDS = (
    "load_s", "convert_s", "first_ms", "warmup_runs", "warmup_s", "runs", "measure_s", "truncated",
    "latencies_ms", "summary", "conservative", "timed", "stage_ms",
)
# timing.timed: what each latency covers. execute: the runtime's execute call alone, the input
# staged before the first clock read (stage_ms: the p50 of staging, apart); end_to_end: staging
# and execute together; invoke: the backend's one call (a backend that does not split them).
TIMED_REGIONS = ("execute", "end_to_end", "invoke")
# validity: the verdict, why, facts that do not invalidate, and the figures the verdict rests on
# (the p50's 95% interval in ms and its half-width over the p50; the second half's p50 over the
# first half's, minus 1). The figures are absent in results from before they existed.
VALIDITY_FIELDS = ("status", "reasons", "notes", "p50_ci_ms", "p50_ci_rel", "drift")
SUMMARY_FIELDS = ("n", "mean", "std", "cv", "min", "max", "throughput_ips") + tuple(
    percentile_key(p) for p in PERCENTILES)
CONSERVATIVE_FIELDS = tuple(percentile_key(p) for p in sorted(CONSERVATIVE_MIN_SAMPLES))


def utc_now():
    """Timestamps in results: UTC, ISO 8601, seconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def new_result(job, case, status, device, agent_version, substatus=None, reason=None, hint=None):
    """A result document with every RESULT_FIELDS key, for the agent and the controller alike.

    `case` is the job case; timing, validity and the free-form facts start empty.
    """
    now = utc_now()
    return {
        "schema_version": SCHEMA_VERSION, "kind": RESULT_KIND,
        "run_id": job.get("run_id"), "nonce": job.get("nonce"), "case_id": case.get("case_id"),
        "label": case.get("label") or case.get("case_id"), "device": device,
        "model": dict(case.get("model") or {}), "runtime": dict(case.get("runtime") or {}),
        "settings": dict(case.get("settings") or {}), "status": status, "substatus": substatus,
        "reason": reason, "hint": hint, "timing": None, "validity": None, "memory": {},
        "telemetry": {}, "delegation": {}, "environment": {}, "cooldown": {},
        "agent_version": agent_version, "started_at": now, "finished_at": now,
    }


def check_result(doc):
    """Problems of one case result document (empty list when valid).

    A result is untrusted input on the controller: types, enums, finite numbers and the shape
    of timing are all checked here, the nonce against the job by the caller.
    """
    problems = []
    if not isinstance(doc, dict):
        return ["result: expected an object"]
    _check_header(problems, doc, RESULT_FIELDS, RESULT_KIND)
    for key in ("run_id", "nonce", "case_id", "agent_version", "started_at", "finished_at"):
        _check_type(problems, doc, "", key, str)
    _check_type(problems, doc, "", "label", str, required=False)
    for key in ("device", "model", "runtime", "settings", "memory", "telemetry", "delegation",
                "environment", "cooldown"):
        _check_type(problems, doc, "", key, dict)
    status = _check_enum(problems, doc, "", "status", STATUSES)
    substatus = _check_type(problems, doc, "", "substatus", str, allow_none=True)
    reason = _check_type(problems, doc, "", "reason", str, allow_none=True)
    _check_type(problems, doc, "", "hint", str, allow_none=True)
    if status == "failed" and substatus not in FAILED_SUBSTATUSES:
        _problem(problems, "substatus", "a failed result needs one of %s" % ", ".join(FAILED_SUBSTATUSES))
    if status in ("failed", "skipped") and not reason:
        _problem(problems, "reason", "a %s result must say why" % status)
    timing = _check_type(problems, doc, "", "timing", dict, allow_none=True)
    validity = _check_type(problems, doc, "", "validity", dict, allow_none=True)
    if status == "ok":
        if timing is None:
            _problem(problems, "timing", "an ok result needs timing")
        if validity is None:
            _problem(problems, "validity", "an ok result needs validity")
    if timing is not None:
        problems.extend(_check_timing(timing))
    if validity is not None:
        _unknown(problems, validity, "validity.", VALIDITY_FIELDS)
        _check_enum(problems, validity, "validity.", "status", VALIDITIES)
        for key in ("p50_ci_rel", "drift"):
            _check_type(problems, validity, "validity.", key, NUMBER, required=False,
                        allow_none=True)
        ci = _check_type(problems, validity, "validity.", "p50_ci_ms", list, required=False,
                         allow_none=True)
        if ci is not None and (len(ci) != 2 or not all(
                isinstance(v, NUMBER) and not isinstance(v, bool) and math.isfinite(v)
                for v in ci)):
            _problem(problems, "validity.p50_ci_ms", "expected [low, high] in ms")
        for key in ("reasons", "notes"):
            items = _check_type(problems, validity, "validity.", key, list, required=key == "reasons")
            for i, r in enumerate(items or []):
                if not isinstance(r, str):
                    _problem(problems, "validity.%s[%d]" % (key, i), "expected str")
    return problems


def _check_timing(timing):
    problems = []
    p = "timing."
    _unknown(problems, timing, p, TIMING_FIELDS)
    for key in ("load_s", "convert_s", "first_ms", "warmup_s", "measure_s"):
        value = _check_type(problems, timing, p, key, NUMBER, allow_none=True)
        if value is not None and value < 0:
            _problem(problems, p + key, "must not be negative")
    for key in ("warmup_runs", "runs"):
        _check_type(problems, timing, p, key, int)
    _check_type(problems, timing, p, "truncated", bool)
    if timing.get("timed") is not None:
        _check_enum(problems, timing, p, "timed", TIMED_REGIONS)
    stage = _check_type(problems, timing, p, "stage_ms", NUMBER, required=False, allow_none=True)
    if stage is not None and stage < 0:
        _problem(problems, p + "stage_ms", "must not be negative")
    lat = _check_type(problems, timing, p, "latencies_ms", list)
    if lat is not None:
        for i, v in enumerate(lat):
            if isinstance(v, bool) or not isinstance(v, NUMBER) or not math.isfinite(v) or v < 0:
                _problem(problems, "%slatencies_ms[%d]" % (p, i), "expected a finite number >= 0")
                break
        runs = timing.get("runs")
        if isinstance(runs, int) and runs != len(lat):
            _problem(problems, p + "runs", "runs=%d but %d latencies" % (runs, len(lat)))
    summary = _check_type(problems, timing, p, "summary", dict)
    if summary is not None:
        _unknown(problems, summary, p + "summary.", SUMMARY_FIELDS)
        for key in SUMMARY_FIELDS:
            _check_type(problems, summary, p + "summary.", key, NUMBER, allow_none=True)
    cons = _check_type(problems, timing, p, "conservative", dict)
    if cons is not None:
        _unknown(problems, cons, p + "conservative.", CONSERVATIVE_FIELDS)
        for key in CONSERVATIVE_FIELDS:
            _check_type(problems, cons, p + "conservative.", key, NUMBER, allow_none=True)
    return problems
