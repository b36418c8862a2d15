"""The agent protocol: job and result documents, their version and their checks.

One source of truth, stdlib only (runs on Python 3.6). The controller mirrors it with
pydantic in orchestrator/records.py; tests/test_contract.py runs golden files through both.

Format history (bump SCHEMA_VERSION and add a line; a controller reading an older version
migrates it with migrate_result):
  1  2026-11  first version: job.json, <case_id>.json results, events.jsonl, heartbeat, status.json
  1  2026-12  additions a version-1 reader accepts: job.backends (user backend files), model
              format openvino; job.cooldown always carries every DEFAULT_COOLDOWN key. The agent
              ships with its controller, so a job is only ever read by its own agent version.
  2  2026-12  measurement modes and telemetry: settings mode (back_to_back, paced, sustained)
              with target_fps, arrival, deadline_ms, on_late, duration_s, window_s; interval_ms
              and subtract_idle; timing.wall_start_unix/wall_end_unix, timing.paced,
              timing.windows, timing.sustained; telemetry has a checked layout (TELEMETRY_FIELDS)
              and may carry energy. A version-1 result migrates as it is (every field it has
              means what it meant; the validity figures are filled in from its latencies).
  2  2026-12  additions a version-2 reader accepts: runtime.background, setting op_profile,
              job.tools; environment.background and environment.op_profile in results.
  2  2026-12  additions a version-2 reader accepts: model.inputs (representative inputs, a blob
              like the model's; MODEL_INPUTS_FIELDS) and environment.inputs in results.
"""

import math
import time

from agent.backends import catalog

SCHEMA_VERSION = 2
OLDEST_MIGRATABLE = 1   # results of this version and newer are migrated by migrate_result
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
# A thermal wait ends with rewarm_s of busy CPU in the supervisor (an idle device wakes slowly: its
# governor has dropped the clocks), before the case's own warm-up.
DEFAULT_COOLDOWN = {"mode": "fixed", "seconds": 120.0, "delta_c": 3.0, "max_wait_s": 600.0,
                    "rewarm_s": 2.0}
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
    # Modes (docs/METHOD.md "Modes"): back_to_back (the next inference when the last returns),
    # paced (frames arrive at target_fps; latency from each frame's scheduled time too), or
    # sustained (duration_s of back-to-back, summarized per window_s).
    "mode": "back_to_back",
    "target_fps": 0.0,      # paced: frames per second (required there, > 0)
    "arrival": "periodic",  # paced: periodic or poisson arrivals (seeded by input_seed)
    "deadline_ms": 0.0,     # paced: a frame is late past this from its schedule; 0: the frame period
    "on_late": "skip",      # paced: skip (drop frames that a newer one overtook) or queue (run all)
    "duration_s": 300.0,    # sustained: how long
    "window_s": 10.0,       # sustained: one window of the per-window table
    # Telemetry (docs/METHOD.md "Telemetry and energy"): the sampler's period, 0 to turn it off;
    # subtract_idle: energy per inference minus the idle power sampled during the cool-down.
    "interval_ms": 100.0,
    "subtract_idle": False,
    # After the measured run, outside it: TFLite's benchmark_model --enable_op_profiling (where
    # the device has it) or the backend's own per-layer pass (TensorRT); environment.op_profile.
    "op_profile": False,
}
BOOL_SETTINGS = ("until_stable", "end_to_end", "subtract_idle", "op_profile")
# Settings that are a word from a fixed list.
ENUM_SETTINGS = {"mode": ("back_to_back", "paced", "sustained"),
                 "arrival": ("periodic", "poisson"), "on_late": ("skip", "queue")}
MODES = ENUM_SETTINGS["mode"]
# Settings added after results were first written: a result without them is still a result
# (the agent reads the default where a job lacks one).
LATER_SETTINGS = ("p50_ci_max", "drift_max", "until_stable", "end_to_end", "mode", "target_fps",
                  "arrival", "deadline_ms", "on_late", "duration_s", "window_s", "interval_ms",
                  "subtract_idle", "op_profile")
# The smallest value each setting may take, and whether the bound itself is allowed.
SETTING_MINIMUMS = {
    "warmup_runs": (0, True), "warmup_min_s": (0.0, True), "runs": (1, True),
    "min_duration_s": (0.0, True), "max_duration_s": (0.0, False), "input_seed": (0, True),
    "input_pool": (1, True), "cv_max": (0.0, True), "case_timeout_s": (0.0, False),
    "p50_ci_max": (0.0, False), "drift_max": (0.0, False), "target_fps": (0.0, True),
    "deadline_ms": (0.0, True), "duration_s": (0.0, False), "window_s": (0.0, False),
    "interval_ms": (0.0, True),
}
# The largest (allowed): far past any real suite, near enough that a typo (1e9 s) is refused at
# load instead of hanging a run or overflowing a sleep on the device.
SETTING_MAXIMUMS = {
    "warmup_runs": 1000000, "warmup_min_s": 3600.0, "runs": 1000000,
    "min_duration_s": 43200.0, "max_duration_s": 43200.0, "input_seed": 2 ** 32 - 1,
    "input_pool": 256, "cv_max": 100.0, "case_timeout_s": 86400.0,
    "p50_ci_max": 1.0, "drift_max": 10.0, "target_fps": 10000.0, "deadline_ms": 600000.0,
    "duration_s": 43200.0, "window_s": 3600.0, "interval_ms": 60000.0,
}
# A sampler period below this (but above 0) is refused: reading sysfs more often than every 10 ms
# would cost the device what it measures.
MIN_INTERVAL_MS = 10.0
# Cool-down numbers: (lowest, whether the lowest itself is allowed, highest allowed).
COOLDOWN_LIMITS = {
    "seconds": (0.0, True, 3600.0), "delta_c": (0.0, False, 100.0),
    "max_wait_s": (0.0, False, 3600.0), "rewarm_s": (0.0, True, 600.0),
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
MODEL_FIELDS = ("name", "variant", "format", "sha256", "path", "synthetic_ms", "inputs")
# model.inputs (optional; absent or null: seeded random inputs, input_seed x input_pool): the
# suite's representative inputs, converted on the controller and shipped as one blob like a
# model: {"path": "blobs/<sha256>", "sha256", "count": samples in it, "source": the folder's name}.
MODEL_INPUTS_FIELDS = ("path", "sha256", "count", "source")
# At most this many samples (input_pool's maximum) and bytes, in the folder and in the blob.
MAX_INPUT_SAMPLES = SETTING_MAXIMUMS["input_pool"]
MAX_INPUT_BYTES = 64 * 1024 * 1024
RUNTIME_FIELDS = ("backend", "threads", "affinity", "precision", "options", "background")
# runtime.background (optional; absent or null: an otherwise idle device): load the agent runs
# beside the case from before warm-up to the end of the measurement, in its own process group.
#   {"kind": "cpu", "percent": 1-100, "cores": 1-MAX_THREADS}: that many busy processes, each
#   busy `percent` of the time;  {"kind": "command", "command": "..."}: a shell command line.
BACKGROUND_KINDS = ("cpu", "command")
MAX_BACKGROUND_COMMAND = 4096


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
        problems.extend(inputs_problems(model.get("inputs"), mp + "inputs"))
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
        problems.extend(background_problems(runtime.get("background"), rp + "background"))
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
            if key in ENUM_SETTINGS:
                _check_enum(problems, settings, sp, key, ENUM_SETTINGS[key],
                            required=key not in LATER_SETTINGS)
                continue
            value = _check_type(problems, settings, sp, key, NUMBER,
                                required=key not in LATER_SETTINGS)
            low, inclusive = SETTING_MINIMUMS[key]
            message = value is not None and range_problem(value, low, SETTING_MAXIMUMS[key],
                                                          inclusive)
            if message:
                _problem(problems, sp + key, message)
        problems.extend(mode_problems(settings, sp))
    return problems


def inputs_problems(inputs, path="model.inputs"):
    """Problems of a case's model.inputs (None: seeded random inputs)."""
    if inputs is None:
        return []
    if not isinstance(inputs, dict):
        return [path + ": expected an object"]
    problems = []
    _unknown(problems, inputs, path + ".", MODEL_INPUTS_FIELDS)
    sha = _check_type(problems, inputs, path + ".", "sha256", str)
    if sha is not None and (len(sha) != 64 or sha.strip("0123456789abcdef")):
        _problem(problems, path + ".sha256", "expected 64 lowercase hex digits")
    where = _check_type(problems, inputs, path + ".", "path", str)
    if where is not None and not where:
        _problem(problems, path + ".path", "must not be empty")
    count = _check_type(problems, inputs, path + ".", "count", int)
    message = count is not None and range_problem(count, 1, MAX_INPUT_SAMPLES)
    if message:
        _problem(problems, path + ".count", message)
    _check_type(problems, inputs, path + ".", "source", str)
    return problems


def background_problems(background, path="runtime.background"):
    """Problems of a case's runtime.background (None is an idle device)."""
    problems = []
    if background is None:
        return problems
    if not isinstance(background, dict):
        return [path + ": expected an object"]
    kind = background.get("kind")
    if kind not in BACKGROUND_KINDS:
        return ["%s.kind: must be one of %s, got %r" % (path, ", ".join(BACKGROUND_KINDS), kind)]
    # a command may carry the name it has in the device's inventory (background_commands)
    allowed = {"cpu": ("kind", "percent", "cores"), "command": ("kind", "command", "name")}[kind]
    _unknown(problems, background, path + ".", allowed)
    if kind == "cpu":
        for key, low, high in (("percent", 1, 100), ("cores", 1, MAX_THREADS)):
            value = _check_type(problems, background, path + ".", key, NUMBER if key == "percent"
                                else int)
            message = value is not None and range_problem(value, low, high)
            if message:
                _problem(problems, path + "." + key, message)
    else:
        command = _check_type(problems, background, path + ".", "command", str)
        if command is not None and not command.strip():
            _problem(problems, path + ".command", "must not be empty")
        elif command is not None and (len(command) > MAX_BACKGROUND_COMMAND or "\x00" in command):
            _problem(problems, path + ".command", "at most %d characters, no NUL"
                     % MAX_BACKGROUND_COMMAND)
    return problems


def mode_problems(settings, path="settings."):
    """What the modes need of the settings together (the suite loader and the agent alike)."""
    problems = []
    get = lambda key: settings.get(key, DEFAULT_SETTINGS[key])
    interval = get("interval_ms")
    if isinstance(interval, NUMBER) and 0 < interval < MIN_INTERVAL_MS:
        _problem(problems, path + "interval_ms", "must be 0 (no sampler) or at least %g ms (got %s)"
                 % (MIN_INTERVAL_MS, number_text(interval)))
    mode = get("mode")
    fps = get("target_fps")
    if mode == "paced" and isinstance(fps, NUMBER) and not fps > 0:
        _problem(problems, path + "target_fps", "mode paced needs target_fps above 0 (frames per "
                 "second, e.g. 100 for a camera app)")
    if mode == "sustained":
        window, duration = get("window_s"), get("duration_s")
        timeout = get("case_timeout_s")
        if isinstance(window, NUMBER) and isinstance(duration, NUMBER) and window > duration:
            _problem(problems, path + "window_s", "window_s (%s) is longer than duration_s (%s)"
                     % (number_text(window), number_text(duration)))
        if isinstance(timeout, NUMBER) and isinstance(duration, NUMBER) and timeout <= duration:
            _problem(problems, path + "case_timeout_s", "case_timeout_s (%s) must exceed duration_s "
                     "(%s): the agent would kill a sustained case that is still measuring"
                     % (number_text(timeout), number_text(duration)))
    return problems


JOB_FIELDS = ("schema_version", "kind", "run_id", "nonce", "device", "cooldown", "cases",
              "backends", "controller", "tools")
# job.tools (optional): paths of tools on the device named by its inventory entry, e.g.
# {"benchmark_model": "/opt/tflite/benchmark_model"} (op_profile; else it is looked up on PATH).
TOOL_FIELDS = ("benchmark_model",)
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
    tools = _check_type(problems, job, "", "tools", dict, required=False)
    if tools is not None:
        _unknown(problems, tools, "tools.", TOOL_FIELDS)
        for key in TOOL_FIELDS:
            _check_type(problems, tools, "tools.", key, str, required=False, allow_none=True)
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
    "latencies_ms", "summary", "conservative", "timed", "stage_ms", "wall_start_unix",
    "wall_end_unix", "paced", "windows", "sustained",
)
# timing.wall_start_unix / wall_end_unix: the device's wall clock (time.time()) at the start and
# end of the measured window, so an external power log can be aligned to it afterwards.
# timing.paced (mode paced): the schedule and what came of it. from_schedule / from_issue are
# LATENCY_SUMMARY_FIELDS of the latency from each frame's scheduled arrival (queueing included:
# no coordinated omission) and from its issue; latencies_from_schedule_ms is every processed
# frame's, in order (latencies_ms keeps the from-issue ones).
PACED_FIELDS = ("target_fps", "arrival", "deadline_ms", "on_late", "frames", "issued", "dropped",
                "late", "miss_rate", "achieved_fps", "from_schedule", "from_issue",
                "latencies_from_schedule_ms")
LATENCY_SUMMARY_FIELDS = ("n", "mean", "p50", "p90", "p99", "max")
# timing.windows (mode sustained): one row per window_s of the measured window, in order; the
# telemetry columns are null where the device has no such sensor.
WINDOW_FIELDS = ("start_s", "end_s", "n", "p50", "p99", "temp_max_c", "freq_min_mhz", "power_w",
                 "throttled")
# timing.sustained: drift = last window's p50 / first window's - 1; throttle_onset_s: the start of
# the first window with a throttle flag or a CPU frequency more than 5% below the first window's.
SUSTAINED_FIELDS = ("duration_s", "window_s", "drift", "throttle_onset_s", "onset_reason")
MAX_WINDOWS = 4320              # 12 h of 10 s windows

# telemetry (docs/METHOD.md "Telemetry and energy"): what the sampler read and what came of it.
#   interval_ms: the period asked; sources: each source's name, kind, method (how it is read),
#   rate_hz (achieved) and unit; series: {"t_s": seconds from the window start, channel: values},
#   at most MAX_SERIES_POINTS points; summary: TELEMETRY_SUMMARY_FIELDS over the measured window;
#   energy: ENERGY_FIELDS where a power or energy source exists (else null); error: why the
#   sampler stopped early, if it did. {} when no sampler ran (interval_ms 0, older results).
TELEMETRY_FIELDS = ("interval_ms", "sources", "series", "summary", "energy", "error")
TELEMETRY_SOURCE_FIELDS = ("name", "kind", "method", "rate_hz", "unit", "channels")
TELEMETRY_KINDS = ("thermal", "cpufreq", "throttle", "power", "energy", "gpu")
TELEMETRY_SUMMARY_FIELDS = ("temp_start_c", "temp_end_c", "temp_min_c", "temp_max_c",
                            "freq_min_mhz", "freq_max_mhz", "power_mean_w", "throttled",
                            "samples")
# energy: method says how (integral of sampled power, counter difference, an external meter);
# per_inference_mj = energy_j / inferences * 1000; idle_power_w was sampled during the cool-down
# before the case (null without one) and is subtracted only when idle_subtracted.
ENERGY_FIELDS = ("method", "source", "energy_j", "per_inference_mj", "power_mean_w",
                 "inferences_per_j", "idle_power_w", "idle_subtracted", "window_s", "by_source",
                 "clock_offset_s")
MAX_SERIES_POINTS = 2000
MAX_TELEMETRY_CHANNELS = 256
MAX_TELEMETRY_SOURCES = 64
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
    problems.extend(check_telemetry(doc.get("telemetry")))
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
    for key in ("wall_start_unix", "wall_end_unix"):
        _check_type(problems, timing, p, key, NUMBER, required=False, allow_none=True)
    paced = _check_type(problems, timing, p, "paced", dict, required=False, allow_none=True)
    if paced is not None:
        pp = p + "paced."
        _unknown(problems, paced, pp, PACED_FIELDS)
        _check_enum(problems, paced, pp, "arrival", ENUM_SETTINGS["arrival"])
        _check_enum(problems, paced, pp, "on_late", ENUM_SETTINGS["on_late"])
        for key in ("frames", "issued", "dropped", "late"):
            value = _check_type(problems, paced, pp, key, int)
            if value is not None and value < 0:
                _problem(problems, pp + key, "must not be negative")
        for key in ("target_fps", "deadline_ms", "miss_rate", "achieved_fps"):
            _check_type(problems, paced, pp, key, NUMBER, allow_none=True)
        for key in ("from_schedule", "from_issue"):
            _check_numbers_dict(problems, paced, pp, key, LATENCY_SUMMARY_FIELDS)
        _check_number_list(problems, paced, pp, "latencies_from_schedule_ms", MAX_RESULT_BYTES)
    windows = _check_type(problems, timing, p, "windows", list, required=False, allow_none=True)
    if windows is not None:
        for where, row in _objects(problems, windows, p + "windows", MAX_WINDOWS, "windows"):
            _unknown(problems, row, where, WINDOW_FIELDS)
            _check_type(problems, row, where, "throttled", bool, required=False, allow_none=True)
            _check_type(problems, row, where, "n", int)
            for key in WINDOW_FIELDS:
                if key not in ("throttled", "n"):
                    _check_type(problems, row, where, key, NUMBER, required=False, allow_none=True)
    sustained = _check_type(problems, timing, p, "sustained", dict, required=False,
                            allow_none=True)
    if sustained is not None:
        _unknown(problems, sustained, p + "sustained.", SUSTAINED_FIELDS)
        _check_type(problems, sustained, p + "sustained.", "onset_reason", str, required=False,
                    allow_none=True)
        for key in SUSTAINED_FIELDS[:-1]:
            _check_type(problems, sustained, p + "sustained.", key, NUMBER, required=False,
                        allow_none=True)
    return problems


def _objects(problems, items, path, cap, what):
    """(path[i]., item) of a list that must hold at most `cap` objects; a longer list and an item
    that is not an object are problems (the rest of the list is then not looked at)."""
    if len(items) > cap:
        _problem(problems, path, "more than %d %s" % (cap, what))
    for i, item in enumerate(items[:cap]):
        where = "%s[%d]." % (path, i)
        if not isinstance(item, dict):
            _problem(problems, where.rstrip("."), "expected an object")
            return
        yield where, item


def _check_numbers_dict(problems, doc, path, key, fields, required=False):
    """doc[key]: null or an object of `fields`, each a finite number or null."""
    value = _check_type(problems, doc, path, key, dict, required=required, allow_none=True)
    if value is not None:
        _unknown(problems, value, path + key + ".", fields)
        for name in fields:
            _check_type(problems, value, path + key + ".", name, NUMBER, required=False,
                        allow_none=True)
    return value


def _check_number_list(problems, doc, path, key, cap, allow_null_items=False):
    """doc[key]: absent, null, or a list (at most `cap` long) of finite numbers."""
    values = _check_type(problems, doc, path, key, list, required=False, allow_none=True)
    if values is None:
        return None
    if len(values) > cap:
        _problem(problems, path + key, "more than %d values" % cap)
        return values
    for i, v in enumerate(values):
        if v is None and allow_null_items:
            continue
        if isinstance(v, bool) or not isinstance(v, NUMBER) or not math.isfinite(v):
            _problem(problems, "%s%s[%d]" % (path, key, i), "expected a finite number")
            break
    return values


def check_telemetry(telemetry):
    """Problems of a result's telemetry object (untrusted on the controller: shapes and caps)."""
    problems = []
    p = "telemetry."
    if not isinstance(telemetry, dict):
        return problems   # its type is checked with the other top-level objects
    _unknown(problems, telemetry, p, TELEMETRY_FIELDS)
    value = _check_type(problems, telemetry, p, "interval_ms", NUMBER, required=False,
                        allow_none=True)
    if value is not None and value < 0:
        _problem(problems, p + "interval_ms", "must not be negative")
    _check_type(problems, telemetry, p, "error", str, required=False, allow_none=True)
    sources = _check_type(problems, telemetry, p, "sources", list, required=False) or []
    for where, src in _objects(problems, sources, p + "sources", MAX_TELEMETRY_SOURCES, "sources"):
        _unknown(problems, src, where, TELEMETRY_SOURCE_FIELDS)
        for key in ("name", "method"):
            _check_type(problems, src, where, key, str)
        _check_enum(problems, src, where, "kind", TELEMETRY_KINDS)
        _check_type(problems, src, where, "unit", str, required=False, allow_none=True)
        _check_type(problems, src, where, "rate_hz", NUMBER, required=False, allow_none=True)
        channels = _check_type(problems, src, where, "channels", list, required=False) or []
        if len(channels) > MAX_TELEMETRY_CHANNELS or not all(isinstance(c, str) for c in channels):
            _problem(problems, where + "channels", "expected at most %d channel names"
                     % MAX_TELEMETRY_CHANNELS)
    series = _check_type(problems, telemetry, p, "series", dict, required=False) or {}
    if len(series) > MAX_TELEMETRY_CHANNELS + 1:
        _problem(problems, p + "series", "more than %d channels" % MAX_TELEMETRY_CHANNELS)
        series = {}
    points = None
    for name in sorted(series):
        values = _check_number_list(problems, series, p + "series.", name, MAX_SERIES_POINTS,
                                    allow_null_items=name != "t_s")
        if values is not None and len(values) <= MAX_SERIES_POINTS:
            if points is None:
                points = len(values)
            elif len(values) != points:
                _problem(problems, p + "series." + name, "%d points, other channels have %d"
                         % (len(values), points))
    if series and "t_s" not in series:
        _problem(problems, p + "series.t_s", "field required with a series")
    summary = _check_type(problems, telemetry, p, "summary", dict, required=False)
    if summary is not None:
        _unknown(problems, summary, p + "summary.", TELEMETRY_SUMMARY_FIELDS)
        _check_type(problems, summary, p + "summary.", "throttled", bool, required=False,
                    allow_none=True)
        _check_type(problems, summary, p + "summary.", "samples", int, required=False,
                    allow_none=True)
        for key in TELEMETRY_SUMMARY_FIELDS:
            if key not in ("throttled", "samples"):
                _check_type(problems, summary, p + "summary.", key, NUMBER, required=False,
                            allow_none=True)
    energy = _check_type(problems, telemetry, p, "energy", dict, required=False, allow_none=True)
    if energy is not None:
        ep = p + "energy."
        _unknown(problems, energy, ep, ENERGY_FIELDS)
        for key in ("method", "source"):
            _check_type(problems, energy, ep, key, str)
        _check_type(problems, energy, ep, "idle_subtracted", bool, required=False)
        for key in ("energy_j", "per_inference_mj", "power_mean_w", "inferences_per_j",
                    "idle_power_w", "window_s", "clock_offset_s"):
            _check_type(problems, energy, ep, key, NUMBER, required=False, allow_none=True)
        by_source = _check_type(problems, energy, ep, "by_source", dict, required=False,
                                allow_none=True) or {}
        if len(by_source) > MAX_TELEMETRY_SOURCES:
            _problem(problems, ep + "by_source", "more than %d sources" % MAX_TELEMETRY_SOURCES)
        else:
            for name in sorted(by_source):
                _check_type(problems, by_source, ep + "by_source.", name, NUMBER,
                            allow_none=True)
    return problems


def migrate_result(doc):
    """A result document of an older schema version as this version's (a new dict), or `doc`
    itself when it is current or not a result this controller can migrate.

    1 -> 2: nothing a version-1 result holds changed meaning; telemetry was always {}. The
    validity figures (added late in version 1) are computed from the kept latencies where the
    document lacks them, and the verdict itself is left as it was measured.
    """
    if not isinstance(doc, dict) or doc.get("kind") != RESULT_KIND:
        return doc
    version = doc.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or \
            not OLDEST_MIGRATABLE <= version < SCHEMA_VERSION:
        return doc
    doc = dict(doc)
    if version == 1:
        validity = doc.get("validity")
        timing = doc.get("timing")
        if isinstance(validity, dict) and isinstance(timing, dict) and \
                "p50_ci_ms" not in validity:
            from agent import stats
            lat = timing.get("latencies_ms")
            if isinstance(lat, list) and all(isinstance(v, NUMBER) and not isinstance(v, bool)
                                             and math.isfinite(v) for v in lat):
                values = sorted(lat)
                ci = stats.median_ci(values) if values else None
                p50 = stats.percentile_sorted(values, 50) if values else None
                validity = dict(validity, p50_ci_ms=list(ci) if ci else None,
                                p50_ci_rel=(ci[1] - ci[0]) / 2.0 / p50 if ci and p50 else None,
                                drift=stats.drift(lat))
                validity["notes"] = list(validity.get("notes") or []) + [
                    "migrated from result schema 1: p50_ci_ms, p50_ci_rel and drift computed "
                    "from its latencies afterwards"]
                doc["validity"] = validity
        version = 2
    doc["schema_version"] = version
    return doc
