"""The measurement harness: docs/METHOD.md steps 2-6 around one Backend, with an injectable clock.

Backends only execute; every clock read for a reported number happens here. The timed loop is
the product: one clock read before and one after each invoke, nothing else but a store.
"""

import gc
import itertools
import math
import os
import time

from agent import schema, stats

# Measurement runs in chunks so the loop can stop at max_duration_s without a clock check per
# iteration; a chunk is sized to take about this long at the latency seen so far.
CHUNK_TARGET_S = 0.05


def default_clock():
    """(clock, seconds per tick): integer nanoseconds where the interpreter has them (3.7+),
    which keeps latencies exact and makes ns -> ms a correctly rounded division."""
    clock_ns = getattr(time, "perf_counter_ns", None)
    if clock_ns is not None:
        return clock_ns, 1e-9
    return time.perf_counter, 1.0


def _timed_chunk(invoke, inputs, phase, count, clock, buf, stage=None, sbuf=None):
    """Run `count` invokes, inputs rotated from `phase`; buf[i] = raw ticks of invoke i.

    With `stage` (a backend that splits staging from execute), `invoke` is its execute(): each
    input is staged before the first clock read, and sbuf[i] gets the staging's own ticks."""
    seq = itertools.islice(itertools.cycle(inputs[phase:] + inputs[:phase]), count)
    if stage is None:
        for i, x in enumerate(seq):
            t0 = clock()
            invoke(x)
            buf[i] = clock() - t0
        return
    for i, x in enumerate(seq):
        s0 = clock()
        stage(x)
        t0 = clock()
        invoke()
        buf[i] = clock() - t0
        sbuf[i] = t0 - s0


def _chunk_size(done, need_runs, elapsed, need_ticks, max_ticks, chunk_ticks, tick_est):
    """How many invokes the next chunk does: enough to reach both minimums exactly when the
    latency is steady, never more than chunk_ticks worth (so max_duration_s is honoured)."""
    tick_est = max(tick_est, 1e-12)
    by_runs = need_runs - done
    by_time = int(math.ceil((need_ticks - elapsed) / tick_est))
    want = max(by_runs, by_time, 1)
    cap = max(1, int(min(chunk_ticks, max_ticks - elapsed) / tick_est))
    return min(want, cap)


def _loop(invoke, inputs, clock, scale, min_runs, min_s, max_s, tick_est, keep, stage=None,
          staged=None):
    """Invoke until >= min_runs and >= min_s elapsed, stopping once max_s is passed.

    Returns (raw ticks per invoke or None, count, elapsed seconds, truncated). With `stage`
    (see _timed_chunk) and `staged` a list, the staging ticks of every invoke are appended to it.
    """
    need_ticks = min_s / scale
    max_ticks = max_s / scale if max_s is not None else float("inf")
    chunk_ticks = CHUNK_TARGET_S / scale
    chunks = []
    done = 0
    truncated = False
    start = clock()
    elapsed = 0
    while done < min_runs or elapsed < need_ticks:
        if elapsed >= max_ticks:
            truncated = True
            break
        n = _chunk_size(done, min_runs, elapsed, need_ticks, max_ticks, chunk_ticks, tick_est)
        buf = [0] * n
        sbuf = [0] * n if stage is not None else None
        _timed_chunk(invoke, inputs, done % len(inputs), n, clock, buf, stage, sbuf)
        if staged is not None and sbuf is not None:
            staged.extend(sbuf)
        elapsed = clock() - start
        done += n
        # Estimate from the whole loop (overhead included) so chunks are sized in wall time.
        tick_est = float(elapsed) / done
        if keep:
            chunks.append(buf)
    raw = list(itertools.chain.from_iterable(chunks)) if keep else None
    return raw, done, elapsed * scale, truncated


def rss_kb():
    """(current RSS, peak RSS) of this process in kB; None where the platform cannot say."""
    cur = peak = None
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    cur = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    peak = int(line.split()[1])
    except (OSError, IOError, ValueError, IndexError):
        pass
    if peak is None:
        try:
            import resource
            import sys
            maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak = maxrss // 1024 if sys.platform == "darwin" else maxrss  # macOS reports bytes
        except Exception:
            pass
    return cur, peak


def apply_affinity(cores):
    """Pin this process (and the threads a backend creates later) to `cores`.

    Returns {"requested", "applied", "reason"}: applied is the set the kernel reports back, or
    None with the reason when pinning is impossible here. Call before load(): threads inherit it.
    """
    record = {"requested": cores, "applied": None, "reason": None}
    if cores is None:
        record["reason"] = "not requested"
        return record
    setter = getattr(os, "sched_setaffinity", None)
    if setter is None:
        record["reason"] = "os.sched_setaffinity not available on this platform"
        return record
    try:
        setter(0, [int(c) for c in cores])
        record["applied"] = sorted(os.sched_getaffinity(0))
    except (OSError, ValueError, TypeError) as exc:
        record["reason"] = "sched_setaffinity(%r) failed: %s" % (cores, exc)
    return record


def run_measurement(backend, settings, clock=None, clock_scale=None):
    """Load, time the first inference, warm up, measure, summarize (docs/METHOD.md steps 2-6).

    Args:
      backend: an agent.backends.base.Backend, not yet loaded.
      settings: the case settings (schema.DEFAULT_SETTINGS keys).
      clock: a callable returning ticks; default perf_counter_ns (perf_counter before 3.7).
      clock_scale: seconds per tick of `clock`; default 1.0 for a given clock (seconds).
    Returns {"timing": schema timing dict, "memory": {...}}. Backend exceptions propagate.
    """
    if clock is None:
        clock, scale = default_clock()
    else:
        scale = 1.0 if clock_scale is None else float(clock_scale)
    memory = {}
    memory["rss_before_load_kb"] = rss_kb()[0]

    t0 = clock()
    backend.load()
    load_s = (clock() - t0) * scale
    memory["rss_after_load_kb"] = rss_kb()[0]
    convert_s = backend.convert_seconds()

    # Inputs exist before any timed invoke: generating them must never count as latency.
    inputs = list(backend.make_inputs(int(settings["input_seed"]), max(1, int(settings["input_pool"]))))
    invoke = backend.invoke
    # The timed region (docs/METHOD.md step 5): execute alone where the backend stages apart,
    # staging then reported as stage_ms; staging and execute together when end_to_end is set.
    split = bool(getattr(backend, "splits_staging", False))
    timed = "invoke" if not split else ("end_to_end" if setting(settings, "end_to_end")
                                        else "execute")
    stage = backend.stage if timed == "execute" else None
    run = backend.execute if timed == "execute" else invoke

    t0 = clock()
    invoke(inputs[0])
    first_ticks = clock() - t0
    first_ms = first_ticks * scale * 1000.0

    # Garbage from load() collected now rather than as a pause inside the measured window.
    gc.collect()
    _, warm_n, warm_s, _ = _loop(run, inputs, clock, scale, int(settings["warmup_runs"]),
                                 float(settings["warmup_min_s"]), None, max(first_ticks, 1), False,
                                 stage)
    gc.collect()
    est = (warm_s / scale / warm_n) if warm_n else max(first_ticks, 1)
    staged = [] if stage is not None else None
    # The window's ends on the device's wall clock (an external meter's log is aligned to them)
    # and its monotonic clock (the telemetry sampler's); neither read is inside the timed region.
    wall_start, mono_start = time.time(), time.monotonic()
    raw, n, measure_s, truncated = _loop(
        run, inputs, clock, scale, int(settings["runs"]), float(settings["min_duration_s"]),
        float(settings["max_duration_s"]), est, True, stage, staged)

    extended_s = 0.0
    if setting(settings, "until_stable") and not truncated:
        raw, n, measure_s, truncated, extended_s = _until_stable(
            run, inputs, clock, scale, settings, raw, n, measure_s, est, stage, staged)
    wall_end, mono_end = time.time(), time.monotonic()
    # Integer ns / 1e6 is the correctly rounded ms value: JSON gets short exact decimals.
    latencies = _to_ms(raw, scale)
    del raw
    summary, cons = stats.describe(latencies)
    # Throughput is what the window achieved (inferences over its wall time), not 1000 / mean:
    # the loop's own time between invokes counts against it, as it would in an application.
    if measure_s > 0:
        summary["throughput_ips"] = n / measure_s
    cur, peak = rss_kb()
    memory["rss_after_run_kb"] = cur
    memory["peak_rss_kb"] = peak
    timing = {
        "load_s": load_s, "convert_s": convert_s, "first_ms": first_ms,
        "warmup_runs": warm_n, "warmup_s": warm_s, "runs": n, "measure_s": measure_s,
        "truncated": truncated, "latencies_ms": latencies, "summary": summary, "conservative": cons,
        "timed": timed,
        "stage_ms": stats.percentile_sorted(sorted(_to_ms(staged, scale)), 50) if staged else None,
        "wall_start_unix": wall_start, "wall_end_unix": wall_end,
    }
    return {"timing": timing, "memory": memory, "extended_s": extended_s,
            "window_mono": (mono_start, mono_end)}


def _to_ms(raw, scale):
    return [t / 1e6 for t in raw] if scale == 1e-9 else [t * scale * 1000.0 for t in raw]


def _until_stable(invoke, inputs, clock, scale, settings, raw, n, measure_s, est, stage=None,
                  staged=None):
    """`until_stable: true`: past the minimums, measure on in steps (a tenth of what was measured,
    at least a second) until the p50's 95% interval is within p50_ci_max, or max_duration_s is
    reached (then the verdict says the p50 is uncertain). The checks between steps are not
    timed. Returns (raw, n, measure_s, truncated, seconds added)."""
    limit = float(settings["max_duration_s"])
    ci_max = float(setting(settings, "p50_ci_max"))
    added = 0.0
    while True:
        values = sorted(_to_ms(raw, scale))
        ci = stats.median_ci(values)
        p50 = stats.percentile_sorted(values, 50)
        if ci is not None and p50 and (ci[1] - ci[0]) / 2.0 / p50 <= ci_max:
            return raw, n, measure_s, False, added
        left = limit - measure_s
        if left <= 0:
            return raw, n, measure_s, False, added
        step = min(left, max(1.0, 0.1 * measure_s))
        more, more_n, more_s, _ = _loop(invoke, inputs, clock, scale, 1, step, left, est, True,
                                        stage, staged)
        raw = raw + more
        n += more_n
        measure_s += more_s
        added += more_s


def setting(settings, key):
    """settings[key], or the default for a setting a job from an older controller lacks."""
    value = settings.get(key)
    return schema.DEFAULT_SETTINGS[key] if value is None else value


def validity(timing, settings, extra_reasons=()):
    """VALID or INVALID with reasons (docs/METHOD.md step 7), notes that do not invalidate, and
    the figures the verdict rests on (p50_ci_ms, p50_ci_rel, drift).

    The question is "can this p50 be trusted and compared?", not "is the distribution narrow?":
    INVALID when the p50's 95% distribution-free interval is wider than p50_ci_max of the p50 on
    either side, when the two halves of the window disagree by more than drift_max (warming,
    throttling, background load), on too few runs or truncation, and, only where a suite sets
    cv_max above 0, on a CV above it. A device with fast and slow phases but a steady p50 is
    VALID. A percentile without enough samples is a note (reported as empty, never a number).
    """
    reasons = list(extra_reasons)
    summary = timing.get("summary") or {}
    latencies = timing.get("latencies_ms") or []
    n = timing.get("runs") or 0
    if n < int(settings["runs"]):
        reasons.append("only %d runs measured, %d required" % (n, int(settings["runs"])))
    p50 = summary.get("p50")
    ci = stats.median_ci(sorted(latencies)) if latencies else None
    ci_rel = None
    ci_max = float(setting(settings, "p50_ci_max"))
    if ci is None:
        reasons.append("p50 interval not established with %d samples (at least 6 needed)"
                       % len(latencies))
    elif p50:
        ci_rel = (ci[1] - ci[0]) / 2.0 / p50
        if ci_rel > ci_max:
            reasons.append("p50 uncertain: its 95%% interval %.4g-%.4g ms is +-%.2f%% of the p50, "
                           "above p50_ci_max %.2f%% (measure longer, or quiet the device)"
                           % (ci[0], ci[1], ci_rel * 100.0, ci_max * 100.0))
    moved = stats.drift(latencies)
    drift_max = float(setting(settings, "drift_max"))
    if moved is not None and abs(moved) > drift_max:
        reasons.append("drift %+.1f%%: the p50 of the second half of the window is %.1f%% %s "
                       "than the first half's (drift_max %.1f%%: warming, throttling or "
                       "background load)" % (moved * 100.0, abs(moved) * 100.0,
                                             "higher" if moved > 0 else "lower",
                                             drift_max * 100.0))
    cv = summary.get("cv")
    cv_max = float(settings.get("cv_max") or 0.0)
    if cv_max > 0 and cv is not None and cv > cv_max:
        reasons.append("coefficient of variation %.2f%% above cv_max %.2f%%"
                       % (cv * 100.0, cv_max * 100.0))
    if timing.get("truncated"):
        reasons.append("measurement truncated at max_duration_s=%g s before reaching its minimums"
                       % float(settings["max_duration_s"]))
    notes = ["conservative %s not established with %d samples" % (key, n)
             for key in stats.not_established(n)]
    return {"status": "INVALID" if reasons else "VALID", "reasons": reasons, "notes": notes,
            "p50_ci_ms": list(ci) if ci is not None else None, "p50_ci_rel": ci_rel,
            "drift": moved}
