"""One case in this process (`agent case JOB CASE_ID --out DIR`): readiness, backend, harness, result.

The supervisor (runner.py) starts one worker per case, so a framework that crashes or hangs
takes only its own case down. Every path out of run_case writes a result that passes
schema.check_result, or exits without one (the supervisor then writes failed/error).
"""

import glob
import json
import os
import platform
import shutil
import socket
import sys
import tarfile
import tempfile
import time
import traceback

from agent import AGENT_VERSION, background, fsutil, harness, opprofile, probe_hw, schema
from agent import inputs as case_inputs
from agent.backends import get_backend_class, userfile
from agent.backends.base import BackendUnavailable, BadModel

COOLDOWN_ENV = "BENCHFLEET_COOLDOWN"  # JSON the supervisor passes: the wait before this case


def device_facts(job):
    return {"name": job.get("device"), "hostname": socket.gethostname(),
            "platform": platform.platform(), "machine": platform.machine(),
            "python": platform.python_version(), "cpu_count": os.cpu_count()}


def thermal_temps(root="/"):
    """{zone name: degrees C} of every readable thermal zone; {} where there are none."""
    temps = {}
    for path in sorted(glob.glob(os.path.join(root, "sys/class/thermal/thermal_zone*/temp"))):
        text = fsutil.read_text(path)
        try:
            temps[os.path.basename(os.path.dirname(path))] = int(text) / 1000.0
        except (TypeError, ValueError):
            continue
    return temps


def readiness(root="/"):
    """docs/METHOD.md step 1: what could distort the numbers, recorded (warnings, never refusals)."""
    cpu = os.path.join(root, "sys/devices/system/cpu")
    load = fsutil.read_text(os.path.join(root, "proc/loadavg"))
    return {
        "governor": fsutil.read_text(os.path.join(cpu, "cpu0/cpufreq/scaling_governor")),
        "isolcpus": fsutil.read_text(os.path.join(cpu, "isolated")),
        "loadavg": load.split()[:3] if load else None,
        "cores": os.cpu_count(),
        "cur_freq_khz": _cur_freqs(cpu),
        "temps_c": thermal_temps(root),
        # Jetson numbers mean nothing without the power mode and clocks; a Pi's throttle flags
        # say whether it slowed itself down. Both None on other devices.
        "jetson": probe_hw.jetson_info(root),
        "raspberry_pi": probe_hw.raspberry_pi(root),
    }


def _cur_freqs(cpu_dir):
    """{cpuN: scaling_cur_freq kHz} of every core that reports one (empty without cpufreq)."""
    out = {}
    try:
        names = sorted(n for n in os.listdir(cpu_dir) if n.startswith("cpu") and n[3:].isdigit())
    except OSError:
        return out
    for name in names:
        text = fsutil.read_text(os.path.join(cpu_dir, name, "cpufreq/scaling_cur_freq"))
        if text and text.strip().isdigit():
            out[name] = int(text.strip())
    return out


def readiness_warnings(before, after):
    """Notes, never verdicts (docs/METHOD.md step 7): a load average above the core count at the
    start, a governor other than performance, a CPU frequency that changed during the case."""
    notes = []
    before, after = before or {}, after or {}
    load, cores = before.get("loadavg"), before.get("cores")
    try:
        one = float(load[0]) if load else None
    except (TypeError, ValueError):
        one = None
    if one is not None and cores and one > cores:
        notes.append("warning: load average %.2f at the start, above the %d cores (background "
                     "load?)" % (one, cores))
    governor = before.get("governor")
    if governor and governor != "performance":
        notes.append("warning: CPU governor %s, not performance: the clock may change under the "
                     "case" % governor)
    old, new = before.get("cur_freq_khz") or {}, after.get("cur_freq_khz") or {}
    moved = ["%s %d->%d MHz" % (c, old[c] // 1000, new[c] // 1000) for c in sorted(old)
             if c in new and old[c] and abs(new[c] - old[c]) > 0.05 * old[c]]
    if moved:
        notes.append("warning: CPU frequency changed during the case: %s%s"
                     % (", ".join(moved[:4]), ", ..." if len(moved) > 4 else ""))
    return notes


def throttle_reasons(before, after):
    """INVALID reasons when the device throttled during the case (Pi vcgencmd flags)."""
    def flags(snapshot):
        pi = (snapshot or {}).get("raspberry_pi") or {}
        return pi.get("throttled") or {}
    old, new = flags(before), flags(after)
    reasons = []
    if new.get("now"):
        reasons.append("throttling active after the run: %s" % ", ".join(new["now"]))
    if old.get("value") is not None and new.get("value") is not None and \
            set(new.get("occurred") or []) - set(old.get("occurred") or []):
        reasons.append("throttle counters changed during the run: %s"
                       % ", ".join(sorted(set(new["occurred"]) - set(old["occurred"] or []))))
    return reasons


def base_result(job, case, status, substatus=None, reason=None, hint=None):
    """A result document of this device (schema.new_result with the device's facts)."""
    return schema.new_result(job, case, status, device_facts(job), AGENT_VERSION,
                             substatus, reason, hint)


def write_result(out_dir, doc):
    """Check then write <out>/<case_id>.json atomically. A document failing the schema is an agent
    bug: it is replaced by failed/invalid_result naming the problems, so the row is never lost."""
    problems = schema.check_result(doc)
    if problems:
        sys.stderr.write("agent: BUG: invalid result for %s: %s\n" % (doc.get("case_id"), problems))
        bad = dict(doc, status="failed", substatus="invalid_result", timing=None, validity=None,
                   reason="agent produced an invalid result: " + "; ".join(problems[:5]), hint=None)
        doc = bad
    path = os.path.join(out_dir, "%s.json" % doc["case_id"])
    try:
        fsutil.atomic_write_json(path, doc)
    except ValueError as exc:  # NaN/inf slipped in: same treatment as a schema problem
        doc = dict(doc, status="failed", substatus="invalid_result", timing=None, validity=None,
                   reason="agent produced an invalid result: %s" % exc, hint=None)
        fsutil.atomic_write_json(path, doc)
    return doc


def _safe_members(tar, dest):
    # A blob is untrusted: refuse absolute paths, '..' and links, which could write outside dest.
    base = os.path.realpath(dest)
    for member in tar.getmembers():
        target = os.path.realpath(os.path.join(dest, member.name))
        inside = target == base or target.startswith(base + os.sep)
        if not (member.isfile() or member.isdir()) or not inside:
            raise BadModel("model tar has an unsafe member: %r" % member.name)
        yield member


def unpack_tar_blob(path):
    """Folder of a tar blob (a SavedModel, an OpenVINO IR): unpacked once to '<path>.d' (temp
    folder + rename, so a half-unpacked folder is never used). A tar holding one top folder
    resolves into it."""
    dest = path + ".d"
    if not os.path.isdir(dest):
        tmp = tempfile.mkdtemp(prefix=os.path.basename(dest) + ".", dir=os.path.dirname(dest))
        try:
            with tarfile.open(path, "r:") as tar:
                members = list(_safe_members(tar, tmp))
                if hasattr(tarfile, "data_filter"):  # 3.12+: also drop modes/owners from the tar
                    tar.extractall(tmp, members=members, filter="data")
                else:
                    tar.extractall(tmp, members=members)
            os.rename(tmp, dest)
        except (tarfile.TarError, OSError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if not os.path.isdir(dest):  # another worker may have won the rename race
                raise BadModel("cannot unpack model tar blob %s: %s" % (path, exc))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    if os.path.exists(os.path.join(dest, "saved_model.pb")):
        return dest
    entries = os.listdir(dest)
    if len(entries) == 1 and os.path.isdir(os.path.join(dest, entries[0])):
        return os.path.join(dest, entries[0])
    return dest


def user_backend_files(job_path, job):
    """{name: local path} of the user backend files a job ships (paths relative to the workdir)."""
    root = fsutil.workdir_for_job(job_path)
    return dict((name, os.path.join(root, entry["path"]))
                for name, entry in (job.get("backends") or {}).items())


def resolve_model_path(job_path, case):
    """Local path of the case's model (relative paths from the workdir), or None (synthetic)."""
    model = case.get("model") or {}
    rel = model.get("path")
    if not rel:
        return None
    path = rel if os.path.isabs(rel) else os.path.join(fsutil.workdir_for_job(job_path), rel)
    if not os.path.exists(path):
        raise BadModel("model file not found: %s" % path)
    if model.get("format") == "savedmodel" and os.path.isfile(path):
        return unpack_tar_blob(path)
    if model.get("format") == "openvino" and os.path.isfile(path):
        # artifacts.pack_openvino_ir names the pair model.xml + model.bin inside the tar
        return os.path.join(unpack_tar_blob(path), "model.xml")
    return path


def keep_artifacts(backend, out_dir, case_id, with_refused=False):
    """Copy the files a backend lists in `artifacts` ({name: path}, e.g. a profile) to
    out/<case_id>.<name>, next to the result; returns {name: file name in out} (with_refused:
    and {name: why} of those not kept).

    Only regular files (a symbolic link is never followed), at most schema.MAX_KEPT_FILES and
    schema.MAX_KEPT_BYTES per case: what is refused is said, never a failed case.
    """
    kept, refused, total = {}, {}, 0
    for name, path in sorted((getattr(backend, "artifacts", None) or {}).items()):
        target = "%s.%s" % (case_id, name)
        if not out_dir or not path:
            continue
        if len(kept) >= schema.MAX_KEPT_FILES:
            refused[name] = "a case keeps at most %d files" % schema.MAX_KEPT_FILES
            continue
        try:
            total += fsutil.copy_regular_file(path, os.path.join(out_dir, target),
                                              schema.MAX_KEPT_BYTES - total)
        except ValueError as exc:
            refused[name] = "%s: %s (a case keeps at most %d bytes)" % (
                path, exc, schema.MAX_KEPT_BYTES)
            continue
        except (OSError, IOError) as exc:
            refused[name] = "%s: cannot be copied: %s" % (path, exc)
            continue
        kept[name] = target
    return (kept, refused) if with_refused else kept


_LIFTED_FACTS = ("version", "delegate", "provider", "providers_missing", "delegation",
                 "validity_reasons")


def _jsonable(value):
    """`value` as plain JSON types; anything else becomes its str() (never a failed result)."""
    return fsutil.jsonable(value)


def _backend(job_path, job, case):
    """The case's backend instance (a user backend's options are checked here, once its file is
    read; built-in ones were checked with the job)."""
    name = case["runtime"]["backend"]
    cls = get_backend_class(name, user_backend_files(job_path, job))
    if cls.spec is not None and cls.spec.path is not None:
        problems = cls.spec.check_options(case["runtime"]["options"], "runtime.options")
        if problems:
            raise ValueError("; ".join(problems))
    return cls(case, resolve_model_path(job_path, case))


def _measure(job_path, job, case, doc, out_dir=None):
    """Fill `doc` for an ok case: affinity, backend, harness, validity. Exceptions propagate."""
    started = time.monotonic()
    profile_ops = bool(harness.setting(case["settings"], "op_profile"))
    runtime = case.get("runtime") or {}
    env = doc["environment"]
    env["affinity"] = harness.apply_affinity(runtime.get("affinity"))
    env["readiness"] = readiness(fsutil.sys_root())
    samples = case_inputs.load(job_path, case)   # None: the seeded random pool
    env["inputs"] = case_inputs.describe(case)
    backend = _backend(job_path, job, case)
    doc["runtime"]["options"] = _jsonable(backend.options)  # with the defaults it ran with
    backend.workdir = fsutil.workdir_for_job(job_path)  # device-side build caches: WORKDIR/cache
    load = background.start(runtime.get("background"), out_dir, "%s.background" % case["case_id"])
    sampler = _start_sampler(case["settings"], doc)
    try:
        try:
            measured = harness.run_measurement(backend, case["settings"], inputs=samples)
        finally:
            env["background"] = background.stop(load)   # kills and reaps it; never raises
            if sampler is not None:
                sampler.stop()
        if profile_ops:  # a backend's own per-layer pass (TensorRT), after the measurement
            env["op_profile"] = opprofile.from_backend(backend, opprofile.time_left(case, started))
        facts = backend.describe() or {}
        env["artifacts"], refused = keep_artifacts(backend, out_dir, case.get("case_id"),
                                                   with_refused=True)
        if refused:
            env["artifacts_refused"] = refused
    finally:
        backend.close()
    env["readiness_after"] = readiness(fsutil.sys_root())
    if profile_ops and env.get("op_profile") is None:  # benchmark_model, the backend closed
        opprofile.attach(doc, job, case, backend.model_path, out_dir,
                         opprofile.time_left(case, started))
    for key in ("version", "delegate", "provider"):
        doc["runtime"][key] = facts.get(key)
    if facts.get("providers_missing"):  # asked for but silently not used (onnxruntime)
        doc["runtime"]["providers_missing"] = list(facts["providers_missing"])
    doc["delegation"] = facts.get("delegation") or {}
    # Everything else a backend says (cache hit/miss, GPU, what is timed) stays with the result.
    env["backend"] = _jsonable({k: v for k, v in facts.items() if k not in _LIFTED_FACTS})
    doc["timing"] = measured["timing"]
    doc["memory"] = measured["memory"]
    extra = _telemetry(sampler, measured, case["settings"], doc)
    if doc["cooldown"].get("settled") is False:
        extra.append("not settled: the thermal cool-down ended at its %g s limit with %s still "
                     "above the idle baseline + %g C (raise cooldown.max_wait_s, or cool the "
                     "device)" % (float(doc["cooldown"].get("max_wait_s") or
                                        doc["cooldown"].get("waited_s") or 0.0),
                                  ", ".join(doc["cooldown"].get("hot") or ["a zone"]),
                                  float(doc["cooldown"].get("delta_c") or 0.0)))
    if env["affinity"]["requested"] is not None and env["affinity"]["applied"] is None:
        extra.append("affinity not applied: %s" % env["affinity"]["reason"])
    extra.extend(throttle_reasons(env["readiness"], env["readiness_after"]))
    # A backend may invalidate its own run (e.g. delegate fallback under require_full_delegation).
    extra.extend(facts.get("validity_reasons") or [])
    doc["validity"] = harness.validity(doc["timing"], case["settings"], extra)
    doc["validity"].setdefault("notes", []).extend(
        readiness_warnings(env["readiness"], env["readiness_after"]))
    if measured.get("extended_s"):
        doc["validity"]["notes"].append(
            "until_stable: measured %.1f s more than the minimums for a steady p50"
            % measured["extended_s"])
    for name, why in sorted((env.get("artifacts_refused") or {}).items()):
        doc["validity"].setdefault("notes", []).append("kept file %s not kept: %s" % (name, why))


def _start_sampler(settings, doc):
    """The telemetry sampler for this case (docs/METHOD.md "Telemetry and energy"), running;
    None with interval_ms 0. Discovery problems become notes in the result, never a failure."""
    interval = float(harness.setting(settings, "interval_ms"))
    if interval <= 0:
        return None
    try:
        from agent import telemetry
        sources, notes = telemetry.discover(fsutil.sys_root())
        if notes:
            doc["environment"]["telemetry_notes"] = [str(n)[:500] for n in notes][:20]
        sampler = telemetry.Sampler(sources, interval)
        sampler.start()
    except Exception as exc:   # telemetry is beside the measurement: it never costs the case
        traceback.print_exc()
        doc["telemetry"] = {"interval_ms": interval, "error": "sampler not started: %s: %s"
                            % (type(exc).__name__, exc)}
        return None
    return sampler


def _telemetry(sampler, measured, settings, doc):
    """Fill doc["telemetry"] (and a sustained case's per-window columns) from the sampler, over
    the measured window; returns the INVALID reasons it finds (throttling seen by the sampler)."""
    if sampler is None:
        return []
    try:
        return _fill_telemetry(sampler, measured, settings, doc)
    except Exception as exc:
        traceback.print_exc()
        doc["telemetry"] = {"interval_ms": float(harness.setting(settings, "interval_ms")),
                            "error": "telemetry not summarized: %s: %s" % (type(exc).__name__, exc)}
        return []


def _fill_telemetry(sampler, measured, settings, doc):
    t0, t1 = measured["window_mono"]
    idle = (doc.get("cooldown") or {}).get("idle_power_w")
    timing = doc["timing"]
    record = sampler.record(t0, t1, timing["runs"], idle_power_w=idle if isinstance(idle, dict)
                            else None, subtract_idle=bool(harness.setting(settings,
                                                                          "subtract_idle")))
    doc["telemetry"] = _jsonable(record)
    for row, (w0, w1) in zip(timing.get("windows") or [], measured.get("windows_mono") or []):
        row.update(_jsonable(sampler.window_stats(w0, w1)))
    if timing.get("sustained") is not None and timing.get("windows"):
        onset, why = harness.sustained_onset(timing["windows"])
        timing["sustained"].update(throttle_onset_s=onset, onset_reason=why)
    if (record.get("summary") or {}).get("throttled"):
        names = [s["name"] for s in record.get("sources") or []
                 if s.get("kind") in ("throttle", "gpu")]
        return ["throttling during the measured window (seen by the telemetry sampler: %s)"
                % (", ".join(names) or "a throttle source")]
    return []


def _cooldown_record():
    text = os.environ.get(COOLDOWN_ENV)
    try:
        record = json.loads(text) if text else {}
    except ValueError:
        record = {"error": "bad %s value" % COOLDOWN_ENV}
    return record if isinstance(record, dict) else {}


def run_case(job_path, case_id, out_dir):
    """Run one case and write its result. Returns schema.WORKER_OK or WORKER_RESULT_WRITTEN_FAILED.

    Raises ValueError for a job or case id that cannot be found (a usage error).
    """
    # Frameworks print to fd 1 from C code (TF's logging, TFLite's delegate banners); pointing
    # fd 1 at stderr for the whole case means no byte of theirs can reach a data channel.
    from agent.runner import die_with_supervisor
    die_with_supervisor()
    sys.stdout.flush()
    os.dup2(2, 1)
    job = fsutil.read_json(job_path)
    case = next((c for c in job.get("cases", []) if c.get("case_id") == case_id), None)
    if case is None:
        raise ValueError("%s: no case with case_id %r" % (job_path, case_id))
    doc = base_result(job, case, "ok")
    doc["cooldown"] = _cooldown_record()
    try:
        _measure(job_path, job, case, doc, out_dir)
    except BackendUnavailable as exc:
        doc.update(status="skipped", reason=exc.reason, hint=exc.hint, timing=None, validity=None)
    except userfile.BadBackendFile as exc:
        doc.update(status="failed", substatus="error", reason=str(exc), timing=None, validity=None)
    except BadModel as exc:
        doc.update(status="failed", substatus="bad_model", reason=str(exc) or "bad model",
                   timing=None, validity=None)
    except Exception as exc:
        traceback.print_exc()
        doc.update(status="failed", substatus="error", timing=None, validity=None,
                   reason="%s: %s" % (type(exc).__name__, exc))
    doc["finished_at"] = schema.utc_now()
    doc = write_result(out_dir, doc)
    return schema.WORKER_RESULT_WRITTEN_FAILED if doc["status"] == "failed" else schema.WORKER_OK
