"""Per-operator profiles (setting op_profile: true): which operators the time goes to.

After the measured run and outside it, a TFLite model is run once more by TFLite's own
benchmark_model binary with --enable_op_profiling=true, on the same model, threads and delegate,
and its tables are parsed into result["environment"]["op_profile"]; the raw output is kept beside
the result (out/<case_id>.op_profile.txt). A backend with a profiler of its own (TensorRT's
IProfiler) gives its per-layer table through its op_profile() method instead (from_backend).

The tables are TensorFlow's StatsCalculator output (tensorflow/core/util/stats_calculator.cc,
later xla/tsl/util/stats_calculator.cc), printed by tensorflow/lite/tools/benchmark/
profiling_listener.cc under "Operator-wise Profiling Info for Regular Benchmark Runs:": a
"Run Order" and a "Top by Computation Time" table with the columns
  [node type] [start] [first] [avg ms] [%] [cdf%] [mem KB] [times called] [Name]
([start] only in releases before the tsl move), then "Summary by node type":
  [Node type] [count] [avg ms] [avg %] [cdf %] [mem KB] [times called]
each field a tab and a right-aligned value; a model with more subgraphs prints "Primary graph
profile:" and "Subgraph (index: N) profile:" blocks, delegate-internal events a "Delegate
internal:" block (tensorflow/lite/profiling/profile_summary_formatter.cc).

The binary and what it prints are untrusted: at most MAX_OUTPUT_BYTES are read, the run is
killed (its whole process group) at its timeout, parse() never raises, and nothing here ever
fails the measured case. Stdlib only, Python 3.6+.
"""

import glob
import json
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
import traceback

from agent import fsutil, schema

# The names TFLite's prebuilt nightly binaries carry (ai.google.dev/edge/litert/models/
# measurement#native_benchmark_binary), after the plain name a source build gives.
BINARY_NAMES = ("benchmark_model", "linux_aarch64_benchmark_model",
                "linux_x86-64_benchmark_model", "linux_arm_benchmark_model",
                "linux_aarch64_benchmark_model_plus_flex",
                "linux_x86-64_benchmark_model_plus_flex", "linux_arm_benchmark_model_plus_flex")
# Where distributions install it off the PATH: Yocto's meta-tensorflow-lite, ST's X-LINUX-AI.
KNOWN_LOCATIONS = ("/usr/share/tensorflow/lite/tools/benchmark/benchmark_model",
                   "/usr/local/bin/tensorflow-lite-*/tools/benchmark_model")
HINT = ("put TFLite's benchmark_model on the device: a prebuilt nightly binary "
        "(linux_aarch64_benchmark_model, linux_x86-64_benchmark_model or "
        "linux_arm_benchmark_model, from "
        "https://ai.google.dev/edge/litert/models/measurement#native_benchmark_binary), or build "
        "it: bazel build -c opt //tensorflow/lite/tools/benchmark:benchmark_model; then put it on "
        "the device's PATH or give its path in the inventory: benchmark_model: PATH")
NOTE = ("measured apart, after the case, by TFLite's benchmark_model (its own C++ interpreter, "
        "profiler on): per-operator shares of its run, not the case's latency")

WARMUP_RUNS = 10
NUM_RUNS = 50
TIMEOUT_S = 600.0           # the longest one profile may take (less when the case has less left)
MIN_TIMEOUT_S = 10.0        # below this there is no time left for a profile
RESERVE_S = 15.0            # kept back from case_timeout_s: the result must still be written
MAX_OUTPUT_BYTES = 4 * 1024 * 1024
MAX_OPS = 500               # rows of the run-order table kept in the result
MAX_TYPES = 200
MAX_PROBLEMS = 20
MAX_TEXT = 300              # characters of one name or type kept
RAW_NAME = "op_profile.txt"  # kept as out/<case_id>.op_profile.txt

REGULAR = "Operator-wise Profiling Info for Regular Benchmark Runs"
INIT = "Profiling Info for Benchmark Initialization"


# ---------------------------------------------------------------- finding and running it

def find_benchmark_model(job, path=None):
    """(path, where it came from, why not) of the benchmark_model binary to run.

    job["tools"]["benchmark_model"] when the inventory gives one (no fallback: a wrong path is
    said, never replaced by another binary); else the first of BINARY_NAMES on PATH (`path`,
    default $PATH); else a KNOWN_LOCATIONS install. (None, None, reason) when there is none.
    """
    given = ((job or {}).get("tools") or {}).get("benchmark_model")
    if given:
        given = str(given)
        if not os.path.isfile(given):
            return None, "tools.benchmark_model", "tools.benchmark_model %s not found" % given
        if not os.access(given, os.X_OK):
            return None, "tools.benchmark_model", ("tools.benchmark_model %s is not executable "
                                                   "(chmod +x)" % given)
        return given, "tools.benchmark_model", None
    for name in BINARY_NAMES:
        found = shutil.which(name, path=path)
        if found:
            return found, "PATH", None
    for pattern in KNOWN_LOCATIONS:
        for found in sorted(glob.glob(pattern)):
            if os.path.isfile(found) and os.access(found, os.X_OK):
                return found, "known location", None
    return None, None, "benchmark_model not found"


def command(binary, model_path, threads=None, xnnpack=True, delegate=None, delegate_options=None,
            use_gpu=False, warmup_runs=WARMUP_RUNS, num_runs=NUM_RUNS, max_secs=None):
    """benchmark_model's argv for one profiled run (flags of tensorflow/lite/tools/benchmark and
    tools/delegates: --graph, --num_threads, --enable_op_profiling, --use_xnnpack, --use_gpu,
    --external_delegate_path/--external_delegate_options 'k:v;k:v').

    threads None leaves the binary's default (as the measured Interpreter got num_threads=None).
    A delegate option whose key or value holds ':' or ';' cannot be written in that syntax
    (benchmark_model drops a pair that does not split in two): it is left out; the caller says so.
    """
    argv = [str(binary), "--graph=%s" % model_path, "--enable_op_profiling=true",
            "--warmup_runs=%d" % int(warmup_runs), "--num_runs=%d" % int(num_runs)]
    if threads is not None:
        argv.append("--num_threads=%d" % int(threads))
    # benchmark_model applies delegates in the order of their flags; the Interpreter applies a
    # case's own delegates first and XNNPACK (its default) after them: the same order here.
    if use_gpu:
        argv.append("--use_gpu=true")
    if delegate:
        argv.append("--external_delegate_path=%s" % delegate)
        pairs = ["%s:%s" % (k, _option_text(v)) for k, v in sorted((delegate_options or {}).items())
                 if _writable(k) and _writable(_option_text(v))]
        if pairs:
            argv.append("--external_delegate_options=%s" % ";".join(pairs))
    argv.append("--use_xnnpack=%s" % ("true" if xnnpack else "false"))
    if max_secs is not None:
        argv.append("--max_secs=%g" % float(max_secs))
    return argv


def _option_text(value):
    return {True: "true", False: "false"}.get(value, value) if isinstance(value, bool) else \
        str(value)


def _writable(text):
    return ":" not in str(text) and ";" not in str(text)


def runtime_flags(case):
    """({command() keyword arguments}, notes) that run the case's model as its backend did, or
    (None, reason) when benchmark_model cannot (not a TFLite model, LiteRT's NPU)."""
    model = case.get("model") or {}
    runtime = case.get("runtime") or {}
    if model.get("format") != "tflite":
        return None, ("op_profile runs TFLite's benchmark_model, which takes .tflite models; this "
                      "case's model is %s" % (model.get("format") or "none"))
    name = runtime.get("backend")
    options = dict(runtime.get("options") or {})
    try:
        from agent.backends import catalog
        if name in catalog.BY_NAME:
            options = catalog.BY_NAME[name].resolve_options(options)
    except Exception:  # a catalog problem must not cost the profile
        pass
    flags = {"threads": runtime.get("threads"),
             "xnnpack": options.get("xnnpack", True) is not False}
    notes = []
    if name == "edgetpu":
        flags["delegate"] = _edgetpu_library()
        if options.get("device"):
            flags["delegate_options"] = {"device": options["device"]}
        notes.append("the Edge TPU through %s as benchmark_model's external delegate (a "
                     "libedgetpu built against an older TFLite than the binary may refuse or "
                     "crash)" % flags["delegate"])
    elif name == "litert":
        accelerator = options.get("accelerator") or "cpu"
        if accelerator == "npu":
            return None, ("benchmark_model runs TFLite's interpreter, which has no LiteRT NPU "
                          "dispatch: no per-operator profile for accelerator npu")
        if accelerator == "gpu":
            flags["use_gpu"] = True
        notes.append("LiteRT's CompiledModel case profiled in TFLite's interpreter "
                     "(accelerator %s)" % accelerator)
    else:
        if options.get("delegate"):
            flags["delegate"] = options["delegate"]
            flags["delegate_options"] = options.get("delegate_options") or {}
    dropped = sorted(k for k, v in (flags.get("delegate_options") or {}).items()
                     if not (_writable(k) and _writable(_option_text(v))))
    if dropped:
        notes.append("delegate option(s) %s not passed: benchmark_model's "
                     "--external_delegate_options cannot hold ':' or ';'" % ", ".join(dropped))
    return flags, notes


def _edgetpu_library():
    try:
        from agent.backends.edgetpu import EDGETPU_LIBRARY
        return EDGETPU_LIBRARY
    except Exception:
        return "libedgetpu.so.1"


def _die_with_parent():
    """A preexec_fn: the profiled binary is killed if the worker dies (PR_SET_PDEATHSIG), as the
    worker's own process group is when the supervisor kills a case past its timeout. Resolved
    before the fork, so the child only makes one call."""
    try:
        import ctypes
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec():
        prctl(1, signal.SIGKILL, 0, 0, 0)
    return preexec


def run_capped(argv, timeout_s, max_bytes=MAX_OUTPUT_BYTES, env=None):
    """Run argv in a session of its own, stdout and stderr together (TFLite logs to stderr).

    Returns (exit code or None, output bytes (at most max_bytes), timed out, truncated, seconds).
    Past timeout_s, or past max_bytes of output, the whole process group is killed. Raises
    OSError when argv cannot be started.
    """
    start = time.monotonic()
    deadline = start + float(timeout_s)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                            preexec_fn=_die_with_parent(), env=env)
    chunks, size, timed_out, truncated = [], 0, False, False
    fd = proc.stdout.fileno()
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not ready:
                continue
            data = os.read(fd, 65536)
            if not data:
                break
            if size + len(data) > max_bytes:
                chunks.append(data[:max_bytes - size])
                size, truncated = max_bytes, True
                break
            chunks.append(data)
            size += len(data)
        if not (timed_out or truncated):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
    finally:
        if proc.poll() is None:
            _kill_group(proc)
        proc.stdout.close()
    return proc.returncode, b"".join(chunks), timed_out, truncated, time.monotonic() - start


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        try:
            proc.kill()
        except OSError:
            pass
    proc.wait()


def time_left(case, started, clock=time.monotonic):
    """Seconds a profile may take in this case: what case_timeout_s leaves since `started` (the
    worker's start, clock()), less RESERVE_S, at most TIMEOUT_S."""
    try:
        limit = float(((case or {}).get("settings") or {}).get("case_timeout_s")
                      or schema.DEFAULT_SETTINGS["case_timeout_s"])
    except (TypeError, ValueError):
        limit = schema.DEFAULT_SETTINGS["case_timeout_s"]
    return min(TIMEOUT_S, limit - (clock() - started) - RESERVE_S)


def run(job, case, model_path, out_dir, timeout_s=TIMEOUT_S, path=None):
    """Profile the case's model with benchmark_model; returns (record, kept files {name: path}).

    record is result["environment"]["op_profile"]: status "ok" with the parsed tables, or
    "not applicable" / "unavailable" (with a hint) / "skipped" / "failed" / "timeout" with the
    reason; never an exception for anything the binary does. The raw output is written to
    out_dir/op_profile.txt and listed in the kept files (the caller copies it beside the result).
    """
    flags, notes = runtime_flags(case)
    if flags is None:
        return {"status": "not applicable", "reason": notes}, {}
    binary, source, why = find_benchmark_model(job, path=path)
    if binary is None:
        return {"status": "unavailable", "reason": why, "hint": HINT, "binary_from": source}, {}
    if not model_path or not os.path.isfile(str(model_path)):
        return {"status": "failed", "reason": "model file %s not found" % model_path}, {}
    if timeout_s < MIN_TIMEOUT_S:
        return {"status": "skipped", "binary": binary,
                "reason": "no time left under case_timeout_s for a profile (%.0f s); raise "
                          "case_timeout_s" % max(0.0, timeout_s)}, {}
    argv = command(binary, model_path, max_secs=max(1.0, timeout_s / 3.0), **flags)
    record = {"tool": "benchmark_model", "binary": binary, "binary_from": source,
              "command": argv, "warmup_runs": WARMUP_RUNS, "num_runs": NUM_RUNS,
              "timeout_s": round(timeout_s, 1), "note": NOTE}
    if hasattr(os, "sched_getaffinity"):  # inherited from the worker: the case's affinity
        record["cpus"] = sorted(os.sched_getaffinity(0))
    if notes:
        record["notes"] = notes
    try:
        rc, data, timed_out, truncated, seconds = run_capped(argv, timeout_s)
    except OSError as exc:
        record.update(status="failed", reason="benchmark_model %s cannot be started: %s"
                      % (binary, exc))
        return record, {}
    raw = os.path.join(out_dir, RAW_NAME)
    with open(raw, "wb") as f:
        f.write(data)
    text = data.decode("utf-8", "replace")
    parsed = parse(text)
    record.update(parsed)
    record.update(exit_code=rc, seconds=round(seconds, 3), output_bytes=len(data),
                  output_truncated=truncated)
    if truncated:
        record["problems"] = (record.get("problems") or []) + [
            "output past %d bytes: benchmark_model stopped there" % MAX_OUTPUT_BYTES]
    if timed_out:
        record.update(status="timeout", reason="benchmark_model ran past %.0f s; killed"
                      % timeout_s)
    elif rc != 0 and not truncated:
        record.update(status="failed", reason="benchmark_model exited with %s%s" % (
            "code %d" % rc if rc is not None and rc >= 0 else "signal %d" % -(rc or 0),
            _error_tail(text)))
    elif not parsed["ops"]:
        record.update(status="failed", reason="no per-operator table in benchmark_model's "
                      "output (%s)" % ("; ".join(parsed["problems"][:2]) or "nothing parsed"))
    else:
        record["status"] = "ok"
    return record, {RAW_NAME: raw}


def _error_tail(text):
    """': <the last ERROR line>' of benchmark_model's output (else its last line saying
    'failed'), or ''."""
    lines = [_printable(l).strip() for l in text.splitlines()[-200:]]
    for wanted in (lambda l: l.startswith(("ERROR", "FATAL", "Error")),
                   lambda l: "failed" in l.lower()):
        for line in reversed(lines):
            if wanted(line):
                return ": " + line[:MAX_TEXT]
    return ""


def keep_files(files, out_dir, case_id, env):
    """Copy `files` ({name: path}) to out/<case_id>.<name> within what the case may still keep
    (schema.MAX_KEPT_FILES and MAX_KEPT_BYTES, counting env["artifacts"] already kept); adds
    them to env["artifacts"] and any refusal to env["artifacts_refused"]."""
    kept = env.setdefault("artifacts", {})
    used = 0
    for target in kept.values():
        try:
            used += os.path.getsize(os.path.join(out_dir, target))
        except (OSError, TypeError):
            continue
    for name, path in sorted(files.items()):
        if not out_dir or not path:
            continue
        if len(kept) >= schema.MAX_KEPT_FILES:
            env.setdefault("artifacts_refused", {})[name] = (
                "a case keeps at most %d files" % schema.MAX_KEPT_FILES)
            continue
        target = "%s.%s" % (case_id, name)
        try:
            used += fsutil.copy_regular_file(path, os.path.join(out_dir, target),
                                             schema.MAX_KEPT_BYTES - used)
        except ValueError as exc:
            env.setdefault("artifacts_refused", {})[name] = (
                "%s: %s (a case keeps at most %d bytes)" % (path, exc, schema.MAX_KEPT_BYTES))
            continue
        except (OSError, IOError) as exc:
            env.setdefault("artifacts_refused", {})[name] = "%s: cannot be copied: %s" % (path, exc)
            continue
        kept[name] = target


def attach(doc, job, case, model_path, out_dir, timeout_s=TIMEOUT_S, path=None):
    """The worker's hook (backend closed, measurement over): run() into a temporary folder, keep
    the raw output beside the result, set doc["environment"]["op_profile"]. Never raises."""
    env = doc["environment"]
    tmp = None
    try:
        tmp = tempfile.mkdtemp(prefix="benchfleet-opprofile-")
        record, files = run(job, case, model_path, tmp, timeout_s, path=path)
        if files and out_dir:
            keep_files(files, out_dir, case.get("case_id"), env)
            if RAW_NAME in env.get("artifacts", {}):
                record["raw"] = env["artifacts"][RAW_NAME]
    except Exception as exc:  # a profile is beside the measurement: it never costs the case
        traceback.print_exc()
        record = {"status": "failed", "reason": "op profile not taken: %s: %s"
                  % (type(exc).__name__, exc)}
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    env["op_profile"] = _jsonable(record)
    return env["op_profile"]


def from_backend(backend, timeout_s=TIMEOUT_S):
    """The backend's own per-layer profile (a method op_profile(max_s) after the measurement,
    e.g. TensorRT's IProfiler pass), or None when the backend has none. Never raises."""
    method = getattr(backend, "op_profile", None)
    if method is None:
        return None
    try:
        record = method(max_s=max(1.0, min(60.0, timeout_s)))
    except Exception as exc:
        traceback.print_exc()
        record = {"status": "failed", "reason": "%s per-layer profile failed: %s: %s"
                  % (getattr(backend, "name", "backend"), type(exc).__name__, exc)}
    return None if record is None else _jsonable(record)


def _jsonable(value):
    """The record as plain JSON types; a float that is not a number becomes null."""
    return fsutil.jsonable(value, lambda _: None)


# ---------------------------------------------------------------- parsing its output

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?nan|[-+]?inf"
_TITLE = re.compile(r"^=+ (.+?) =+$")
_TIMINGS = re.compile(r"^(?:Subgraph \(index: \d+\) )?Timings \(microseconds\): (.*)$")
_SUBGRAPH = re.compile(r"^(Subgraph \(index: \d+\)) profile:$")
_NODES = re.compile(r"^Number of nodes executed: (\d+)$")
_PREFIX = re.compile(r"^(?:INFO|WARNING|WARN|ERROR|VERBOSE): ")
_VERSION = re.compile(r"(?i)\b(?:tflite|tf ?lite|tensorflow lite|litert|tensorflow)\b[^\n]{0,40}?"
                      r"\bversion\b[:\s=]*\[?v?(\d+\.\d+(?:\.\d+)?[\w.+-]{0,20})")
_INFERENCE = re.compile(r"Inference timings in us: (.*)$")
_PERCENT_COLUMNS = ("%", "cdf%", "avg %", "cdf %")
# Header column -> key in the result.
_KEYS = {"node type": "type", "start": "start_ms", "first": "first_ms", "avg ms": "avg_ms",
         "%": "percent", "cdf%": "cdf_percent", "avg %": "percent", "cdf %": "cdf_percent",
         "mem kb": "mem_kb", "times called": "times_called", "count": "count", "name": "name"}
_INTEGERS = ("times_called", "count")


def _printable(line):
    """A line without control characters (but tabs) and trailing blanks."""
    return "".join(c for c in line if c == "\t" or c >= " ").rstrip()


def _clean(line):
    """A printable line without its log prefix (INFO: ...)."""
    return _PREFIX.sub("", _printable(line), count=1)


def _number(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if value == value and value not in (float("inf"), float("-inf")) else None


class _Table(object):
    """One table: its title, its columns (from the [bracketed] header) and a row pattern: the
    first column is text (a type may hold blanks and commas), the last ([Name]) the rest of the
    line, every other a number (with '%' in the percent columns). None without a [node type]
    first column."""

    def __init__(self, title, header):
        self.title = title
        self.columns = [c.strip().lower() for c in re.findall(r"\[([^\]]*)\]", header)]
        self.keys = [_KEYS.get(c) or (re.sub(r"\W+", "_", c).strip("_") or "column")
                     for c in self.columns]
        self.rows, self.bad = [], 0
        self.pattern = None
        if len(self.columns) >= 2 and self.columns[0] == "node type":
            parts = [r"^\s*(\S.*?)"]
            for col in self.columns[1:]:
                if col == "name":
                    parts.append(r"(?:\s+(.*?))?")
                elif col in _PERCENT_COLUMNS:
                    parts.append(r"\s+(%s)%%" % _NUM)
                elif col in _KEYS:
                    parts.append(r"\s+(%s)" % _NUM)
                else:  # a column of a later release: a number, perhaps a share
                    parts.append(r"\s+(%s)%%?" % _NUM)
            self.pattern = re.compile("".join(parts) + r"\s*$")

    def add(self, line):
        match = self.pattern.match(line) if self.pattern else None
        if match is None:
            self.bad += 1
            return False
        row = {}
        for key, value in zip(self.keys, match.groups()):
            if key in ("type", "name"):
                row[key] = (value or "").strip()[:MAX_TEXT]
            elif key in _INTEGERS:
                number = _number(value)
                row[key] = int(number) if number is not None else None
            else:
                row[key] = _number(value)
        self.rows.append(row)
        return True


def _op_row(row):
    out = dict((k, row.get(k)) for k in ("type", "name", "avg_ms", "percent", "cdf_percent",
                                        "first_ms", "times_called", "mem_kb"))
    if "start_ms" in row:
        out["start_ms"] = row["start_ms"]
    return out


def _type_row(row):
    return dict((k, row.get(k)) for k in ("type", "count", "avg_ms", "percent", "cdf_percent",
                                        "mem_kb", "times_called"))


def _stat_fields(text):
    """'count=50 first=1 ... avg=79732 std=1929' -> {'count': 50.0, ...} (numbers only)."""
    out = {}
    for key, value in re.findall(r"(\w+)=(%s)" % _NUM, text):
        number = _number(value)
        if number is not None:
            out[key] = number
    return out


def _blocks(lines):
    """[(label, lines)] of the regular-runs section: 'primary' first, then each
    'Subgraph (index: N)' and 'Delegate internal' block."""
    blocks, label, current = [], "primary", []
    for line in lines:
        sub = _SUBGRAPH.match(line)
        if sub or line.startswith("Delegate internal:"):
            blocks.append((label, current))
            label, current = (sub.group(1) if sub else "Delegate internal"), []
            continue
        if line == "Primary graph profile:":
            continue
        current.append(line)
    blocks.append((label, current))
    return blocks


def _tables(lines, problems):
    """({title: _Table}, {'timings': {...}, 'nodes': N}) of one block. A table runs from its
    header to a blank line; a row it cannot read is skipped (and said, three per table); of two
    tables with one title the first is kept."""
    tables, extra, table, pending = {}, {}, None, None
    for line in lines:
        stripped = line.strip()
        title = _TITLE.match(stripped)
        if title:
            pending, table = title.group(1), None
            continue
        if pending is not None:
            if not stripped:
                continue
            table, pending = _Table(pending, line), None
            if table.pattern is None:
                problems.append("%s: header not understood: %r" % (table.title, stripped[:120]))
                table = None
            else:
                tables.setdefault(table.title, table)
            continue
        if not stripped:
            table = None
            continue
        timings = _TIMINGS.match(stripped)
        nodes = _NODES.match(stripped)
        if timings or nodes:
            if timings:
                extra["timings"] = _stat_fields(timings.group(1))
            else:
                extra["nodes"] = int(nodes.group(1))
            table = None
            continue
        if table is not None and not table.add(line) and table.bad <= 3:
            problems.append("%s: row not understood: %r" % (table.title, stripped[:120]))
    return tables, extra


def parse(text, max_ops=MAX_OPS):
    """benchmark_model's output -> {"ops", "by_type", "top", "total_ms", ...}; never raises.

    ops: the primary graph's "Run Order" rows (at most max_ops; ops_total says how many there
    were), each {type, name, avg_ms (per call), percent, cdf_percent, first_ms, times_called
    (per run), mem_kb[, start_ms]}. by_type: "Summary by node type" rows {type, count, avg_ms
    (per run), percent, cdf_percent, mem_kb, times_called}. top: the first three of "Top by
    Computation Time" (the binary's order: avg ms per call), else of ops by avg_ms. total_ms:
    the mean per-run time of its "Timings (microseconds)" line, else the ops' sum. problems:
    what could not be read (the rest is still returned).
    """
    result = {"ops": [], "ops_total": 0, "ops_truncated": False, "by_type": [], "top": [],
              "total_ms": None, "runs": None, "nodes": None, "columns": None, "version": None,
              "inference_avg_ms": None, "other_blocks": [], "problems": []}
    problems = result["problems"]
    try:
        _parse_into(result, text if isinstance(text, str) else str(text or ""), max_ops)
    except Exception as exc:  # never: the output is untrusted, the parser must not fail the case
        problems.append("parser error: %s: %s" % (type(exc).__name__, exc))
    result["problems"] = [str(p)[:200] for p in problems[:MAX_PROBLEMS]] + (
        ["... %d more problems" % (len(problems) - MAX_PROBLEMS)]
        if len(problems) > MAX_PROBLEMS else [])
    return result


def _parse_into(result, text, max_ops):
    problems = result["problems"]
    text = text[:MAX_OUTPUT_BYTES]
    lines = [_clean(l) for l in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    for line in lines:
        if result["version"] is None:
            found = _VERSION.search(line)
            if found:
                result["version"] = found.group(1)
        inference = _INFERENCE.search(line)
        if inference:
            fields = dict((k.strip().lower(), _number(v)) for k, v in
                          re.findall(r"([A-Za-z][A-Za-z ()]*?):\s*(%s)" % _NUM, inference.group(1)))
            result["inference_avg_ms"] = _ms(fields.get("inference (avg)",
                                                        fields.get("inference")))
        elif line.startswith("Average inference timings in us:"):  # releases before 2.3
            found = re.search(r"Inference: (%s)" % _NUM, line)
            result["inference_avg_ms"] = _ms(_number(found.group(1)) if found else None)
        lower = line.lower()
        if "buffer is full" in lower or ("profiling buffer" in lower and "exceed" in lower):
            problems.append("benchmark_model's profiling buffer filled: some operators may be "
                            "missing (%s)" % line[:120])
    start = next((i for i, l in enumerate(lines) if REGULAR in l), None)
    if start is None:
        problems.append("no '%s' section (was --enable_op_profiling=true honoured?)" % REGULAR)
        return
    section = []
    for line in lines[start + 1:]:
        if INIT in line or REGULAR in line:
            break
        section.append(line)
    blocks = _blocks(section)
    for index, (label, block) in enumerate(blocks):
        tables, extra = _tables(block, problems)
        order = tables.get("Run Order")
        if index == 0:
            _fill_primary(result, tables, extra, max_ops)
        elif order is not None or tables:
            top = _top(tables, [_op_row(r) for r in order.rows] if order else [])
            result["other_blocks"].append({
                "label": label, "ops_total": len(order.rows) if order else 0,
                "top": top, "total_ms": _ms((extra.get("timings") or {}).get("avg"))})
    if not result["ops"]:
        problems.append("no rows in the primary graph's Run Order table")


def _ms(us):
    return round(us / 1000.0, 6) if us is not None else None


def _top(tables, ops, count=3):
    table = tables.get("Top by Computation Time")
    if table is not None and table.rows:
        return [_op_row(r) for r in table.rows[:count]]
    ranked = sorted((o for o in ops if o.get("avg_ms") is not None),
                    key=lambda o: -o["avg_ms"])
    return ranked[:count]


def _fill_primary(result, tables, extra, max_ops):
    order = tables.get("Run Order")
    ops = [_op_row(r) for r in order.rows] if order is not None else []
    if order is not None:
        result["columns"] = order.columns
    result["ops_total"] = len(ops)
    result["ops_truncated"] = len(ops) > max_ops
    result["ops"] = ops[:max_ops]
    types = tables.get("Summary by node type")
    result["by_type"] = [_type_row(r) for r in types.rows[:MAX_TYPES]] if types else []
    result["top"] = _top(tables, ops)
    timings = extra.get("timings") or {}
    result["runs"] = int(timings["count"]) if "count" in timings else None
    result["nodes"] = extra.get("nodes")
    if timings.get("avg") is not None:
        result["total_ms"] = _ms(timings["avg"])
    elif timings.get("curr") is not None:
        result["total_ms"] = _ms(timings["curr"])
    elif ops:
        result["total_ms"] = round(sum((o["avg_ms"] or 0.0) * (o["times_called"] or 1)
                                       for o in ops), 6)


# ---------------------------------------------------------------- a backend's own layer times

def layer_table(totals, calls, order, executions, max_rows=MAX_OPS):
    """A per-layer record body from summed times: totals {layer: ms over every execution},
    calls {layer: reports}, order [layers as first reported]. Rows are in `order` with the
    TFLite table's keys (type None: a layer name only); top by percent."""
    grand = sum(totals.values())
    rows, cdf = [], 0.0
    for name in order:
        share = 100.0 * totals[name] / grand if grand > 0 else None
        cdf += share or 0.0
        rows.append({"type": None, "name": str(name)[:MAX_TEXT],
                     "avg_ms": round(totals[name] / calls[name], 6) if calls[name] else None,
                     "percent": round(share, 3) if share is not None else None,
                     "cdf_percent": round(cdf, 3) if share is not None else None,
                     "first_ms": None,
                     "times_called": int(round(calls[name] / float(executions)))
                     if executions else None,
                     "mem_kb": None})
    top = sorted((r for r in rows if r["percent"] is not None), key=lambda r: -r["percent"])[:3]
    return {"ops": rows[:max_rows], "ops_total": len(rows), "ops_truncated": len(rows) > max_rows,
            "by_type": [], "top": top, "runs": executions,
            "total_ms": round(grand / executions, 6) if executions else None}


def write_json(path, record):
    """The record as a kept file (a backend's layer table)."""
    with open(path, "w") as f:
        json.dump(_jsonable(record), f, indent=1, sort_keys=True)
    return path
