"""The measurement harness: docs/METHOD.md steps 2-6 around one Backend, with an injectable clock.

Backends only execute; every clock read for a reported number happens here. The timed loop is
the product: one clock read before and one after each invoke, nothing else but a store.

Modes (settings "mode"; load, first inference and a back-to-back warm-up are the same in all):
  back_to_back  the next invoke when the last returns (_loop);
  paced         frames arrive on a schedule at target_fps, one synchronous backend serves them
                (_paced): latency from issue and from the frame's scheduled time;
  sustained     back-to-back for exactly duration_s, summarized per window_s (_sustained).
"""

import collections
import gc
import itertools
import math
import os
import random
import time

from agent import schema, stats

# Measurement runs in chunks so the loop can stop at max_duration_s without a clock check per
# iteration; a chunk is sized to take about this long at the latency seen so far.
CHUNK_TARGET_S = 0.05
# Paced mode's default wait sleeps until this long before a frame's scheduled time, then spins
# on the clock: a sleep's wake-up (50 us to a millisecond late) would delay the issue.
SPIN_S = 0.0015
# A sustained window's p99 is reported from this many samples on (None below): with fewer, the
# "p99" is the window's maximum or an interpolation towards it. (stats' established minimums,
# schema.CONSERVATIVE_MIN_SAMPLES, are for the conservative 99%-confidence bounds, which a
# window row does not carry.)
WINDOW_P99_MIN_SAMPLES = 100
# sustained_onset: a window whose lowest CPU frequency is more than this share below the first
# window's marks the onset of throttling.
ONSET_FREQ_DROP = 0.05


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


def run_measurement(backend, settings, clock=None, clock_scale=None, wait=None, inputs=None):
    """Load, time the first inference, warm up, measure, summarize (docs/METHOD.md steps 2-6).

    Args:
      backend: an agent.backends.base.Backend, not yet loaded.
      settings: the case settings (schema.DEFAULT_SETTINGS keys); "mode" picks the measurement.
      clock: a callable returning ticks; default perf_counter_ns (perf_counter before 3.7).
      clock_scale: seconds per tick of `clock`; default 1.0 for a given clock (seconds).
      wait: paced mode only: wait(ticks) returns once `clock` reads at least `ticks`; default
        sleeps most of the gap and spins the rest (make_wait). A fake clock needs its own.
      inputs: representative samples (agent/inputs.py load(): a list of samples, each a list of
        arrays in the model's input order), fed through backend.inputs_from(inputs) and rotated
        like the seeded pool (input_pool does not apply: the count is theirs); None: seeded
        random inputs, backend.make_inputs(input_seed, input_pool).
    Returns {"timing": schema timing dict, "memory": {...}, "extended_s": seconds until_stable
    added, "window_mono": (start, end) of the measured window on time.monotonic()}, and for
    mode sustained "windows_mono": [(start, end), ...] of each timing.windows row on
    time.monotonic() (the telemetry sampler's clock). Backend exceptions propagate.
    """
    if clock is None:
        clock, scale = default_clock()
    else:
        scale = 1.0 if clock_scale is None else float(clock_scale)
    mode = setting(settings, "mode")
    if mode not in schema.MODES:
        raise ValueError("unknown mode %r (one of %s)" % (mode, ", ".join(schema.MODES)))
    memory = {}
    memory["rss_before_load_kb"] = rss_kb()[0]

    t0 = clock()
    backend.load()
    load_s = (clock() - t0) * scale
    memory["rss_after_load_kb"] = rss_kb()[0]
    convert_s = backend.convert_seconds()

    # Inputs exist before any timed invoke: generating them must never count as latency.
    if inputs is not None:
        inputs = list(backend.inputs_from(inputs))
        if not inputs:
            raise ValueError("representative inputs: no sample to feed")
    else:
        inputs = list(backend.make_inputs(int(settings["input_seed"]),
                                          max(1, int(settings["input_pool"]))))
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
    # Warm-up is back-to-back in every mode.
    _, warm_n, warm_s, _ = _loop(run, inputs, clock, scale, int(settings["warmup_runs"]),
                                 float(settings["warmup_min_s"]), None, max(first_ticks, 1), False,
                                 stage)
    gc.collect()
    est = (warm_s / scale / warm_n) if warm_n else max(first_ticks, 1)
    staged = [] if stage is not None else None
    extra = {}       # the mode's own timing blocks (paced, windows, sustained)
    extended_s = 0.0
    windows_mono = None
    # The window's ends on the device's wall clock (an external meter's log is aligned to them)
    # and its monotonic clock (the telemetry sampler's); neither read is inside the timed region.
    wall_start, mono_start = time.time(), time.monotonic()
    if mode == "paced":
        if wait is None:
            wait = make_wait(clock, scale)
        latencies, n, measure_s, truncated, extra["paced"] = _paced(
            run, inputs, clock, scale, settings, wait, stage, staged)
    elif mode == "sustained":
        latencies, n, measure_s, extra["windows"], windows_mono = _sustained(
            run, inputs, clock, scale, settings, est, mono_start, stage, staged)
        truncated = False
        extra["sustained"] = _sustained_block(settings, extra["windows"])
    else:
        raw, n, measure_s, truncated = _loop(
            run, inputs, clock, scale, int(settings["runs"]), float(settings["min_duration_s"]),
            float(settings["max_duration_s"]), est, True, stage, staged)
        if setting(settings, "until_stable") and not truncated:
            raw, n, measure_s, truncated, extended_s = _until_stable(
                run, inputs, clock, scale, settings, raw, n, measure_s, est, stage, staged)
        # Integer ns / 1e6 is the correctly rounded ms value: JSON gets short exact decimals.
        latencies = _to_ms(raw, scale)
        del raw
    wall_end, mono_end = time.time(), time.monotonic()
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
    timing.update(extra)
    measured = {"timing": timing, "memory": memory, "extended_s": extended_s,
                "window_mono": (mono_start, mono_end)}
    if windows_mono is not None:
        measured["windows_mono"] = windows_mono
    return measured


def make_wait(clock, scale, spin_s=SPIN_S):
    """The paced loop's default wait(ticks): sleep until spin_s before `ticks` on `clock`, then
    spin on it, so the frame is issued within a few microseconds of its scheduled time."""
    def wait(target):
        while True:
            left = (target - clock()) * scale
            if left <= 0:
                return
            if left > spin_s:
                time.sleep(left - spin_s)
                continue
            while clock() < target:
                pass
            return
    return wait


def schedule(arrival, fps, seed):
    """Frame arrival offsets in seconds from the first frame (which is at 0): periodic k / fps,
    or poisson with exponential gaps of mean 1 / fps drawn from random.Random(seed). Endless."""
    fps = float(fps)
    if not fps > 0:
        raise ValueError("paced mode needs target_fps above 0 (got %r)" % fps)
    if arrival == "periodic":
        return (k / fps for k in itertools.count())
    if arrival == "poisson":
        return _poisson(random.Random(seed), fps)
    raise ValueError("unknown arrival %r (periodic or poisson)" % (arrival,))


def _poisson(rng, fps):
    t = 0.0
    while True:
        yield t
        t += rng.expovariate(fps)


def _paced(run, inputs, clock, scale, settings, wait, stage=None, staged=None):
    """Mode paced: frames arrive on schedule(), the one synchronous backend serves them.

    Before each frame: if its time is still to come, wait for it; with on_late "skip", when a
    newer frame has already arrived, the older ones are dropped and the newest is served (as a
    camera app takes the latest frame); with "queue" every frame is served in order, so the
    latency from schedule grows with the queue. Each served frame: one clock read before and one
    after the invoke (staging before the first read where the backend splits it), latency from
    issue = their difference, from schedule = the end minus the frame's scheduled time (queueing
    included: no coordinated omission). Late: served with a latency from schedule above
    deadline_ms (0: the frame period). Runs until at least `runs` frames have been scheduled and
    min_duration_s has passed, stopping (truncated) at max_duration_s or when the next frame is
    scheduled past it. Frames whose time had come but were not served when the measurement
    ended (the last overtaken one, a queue's backlog) count as dropped too, so that
    frames = issued + dropped and miss_rate = (late + dropped) / frames.

    Returns (latencies from issue in ms, issued, measured seconds, truncated, timing.paced).
    """
    fps = float(setting(settings, "target_fps"))
    arrival = setting(settings, "arrival")
    on_late = setting(settings, "on_late")
    if on_late not in ("skip", "queue"):
        raise ValueError("unknown on_late %r (skip or queue)" % (on_late,))
    deadline_ms = float(setting(settings, "deadline_ms")) or 1000.0 / fps
    offsets = schedule(arrival, fps, int(settings["input_seed"]))
    min_runs = int(settings["runs"])
    need_ticks = float(settings["min_duration_s"]) / scale
    max_ticks = float(settings["max_duration_s"]) / scale
    deadline_ticks = deadline_ms / 1000.0 / scale
    skip = on_late == "skip"
    pool = len(inputs)
    issue, from_sched = [], []
    dropped = late = 0
    truncated = False

    start = clock()
    whole = isinstance(start, int)   # integer ticks stay integers: exact ms in the result

    def at(offset):
        ticks = offset / scale
        return start + (int(round(ticks)) if whole else ticks)

    # Scheduled times of the frames not yet served or dropped, in order, generated up to and
    # including the first one still to come: ahead[0] is the next frame, `generated` - 1 the
    # number of frames arrived so far.
    ahead = collections.deque([at(next(offsets))])
    generated = 1
    now = start               # the latest clock read
    while True:
        while not ahead or ahead[-1] <= now:
            ahead.append(at(next(offsets)))
            generated += 1
        elapsed = now - start
        if generated - 1 >= min_runs and elapsed >= need_ticks:
            break
        cur = ahead[0]
        if elapsed >= max_ticks or cur - start > max_ticks:
            truncated = True
            break
        if cur > now:
            wait(cur)
        elif skip:
            while len(ahead) > 1 and ahead[1] <= now:   # a newer frame has arrived
                ahead.popleft()
                dropped += 1
            cur = ahead[0]
        ahead.popleft()
        x = inputs[len(issue) % pool]
        if stage is None:
            t0 = clock()
            run(x)
            t1 = clock()
        else:
            s0 = clock()
            stage(x)
            t0 = clock()
            run()
            t1 = clock()
            staged.append(t0 - s0)
        issue.append(t1 - t0)
        lat = t1 - cur
        from_sched.append(lat)
        if lat > deadline_ticks:
            late += 1
        now = t1
    frames = generated - 1               # every frame generated but the one still to come
    pending = len(ahead) - 1             # arrived, never served
    measure_s = (now - start) * scale
    latencies = _to_ms(issue, scale)
    del issue
    from_schedule = _to_ms(from_sched, scale)
    del from_sched
    issued = len(latencies)
    paced = {
        "target_fps": fps, "arrival": arrival, "deadline_ms": deadline_ms, "on_late": on_late,
        "frames": frames, "issued": issued, "dropped": dropped + pending, "late": late,
        "miss_rate": float(late + dropped + pending) / frames if frames else None,
        "achieved_fps": issued / measure_s if measure_s > 0 else None,
        "from_schedule": latency_summary(from_schedule),
        "from_issue": latency_summary(latencies),
        "latencies_from_schedule_ms": from_schedule,
    }
    return latencies, issued, measure_s, truncated, paced


def latency_summary(values_ms):
    """A dict of schema.LATENCY_SUMMARY_FIELDS (n, mean, p50, p90, p99, max) of `values_ms`;
    every field but n None when there are none."""
    values = sorted(values_ms)
    n = len(values)
    out = {"n": n, "mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    if n:
        out["mean"] = math.fsum(values) / n
        for p in (50, 90, 99):
            out["p%d" % p] = stats.percentile_sorted(values, p)
        out["max"] = values[-1]
    return out


def _sustained(run, inputs, clock, scale, settings, est, mono_start, stage=None, staged=None):
    """Mode sustained: back-to-back for exactly duration_s (runs, min_duration_s and
    max_duration_s do not apply; the suite checks case_timeout_s > duration_s), in windows on
    the grid of window_s from the measurement's start. Chunks are sized to end at the next
    boundary (at most one invoke past it when the latency is steady); the read that closes a
    window opens the next, so windows are contiguous. An invoke longer than a window makes a
    longer row (the next one starts at the next boundary past it). Each window's raw ticks
    become ms in the one latency list as soon as the window closes.

    Returns (latencies ms, count, measured seconds, timing.windows rows,
    [(start, end) of each row on time.monotonic()]), the monotonic ends mapped from `clock`
    through mono_start, read just before the measurement's first clock read.
    """
    duration_s = float(setting(settings, "duration_s"))
    window_s = float(setting(settings, "window_s"))
    dur_ticks = duration_s / scale
    win_ticks = window_s / scale
    chunk_ticks = CHUNK_TARGET_S / scale
    pool = len(inputs)
    latencies, rows, mono = [], [], []
    chunks = []
    done = 0
    tick_est = max(est, 1e-12)
    start = clock()
    elapsed = 0
    w_start = 0
    bound = min(win_ticks, dur_ticks)
    while elapsed < dur_ticks:
        n = _chunk_size(0, 1, elapsed, bound, float("inf"), chunk_ticks, tick_est)
        buf = [0] * n
        sbuf = [0] * n if stage is not None else None
        _timed_chunk(run, inputs, done % pool, n, clock, buf, stage, sbuf)
        now = clock() - start
        if sbuf is not None and staged is not None:
            staged.extend(sbuf)
        done += n
        # The last chunk's wall time per invoke: a latency that steps up resizes the next chunk.
        tick_est = max(float(now - elapsed) / n, 1e-12)
        elapsed = now
        chunks.append(buf)
        if elapsed < bound:
            continue
        raw = list(itertools.chain.from_iterable(chunks))
        chunks = []
        rows.append(_window_row(raw, w_start * scale, elapsed * scale, scale))
        mono.append((mono_start + w_start * scale, mono_start + elapsed * scale))
        latencies.extend(_to_ms(raw, scale))
        del raw
        w_start = elapsed
        # The next grid boundary past this read (the 1e-9 keeps a float clock's k*window - eps
        # from opening a window of one invoke).
        bound = min((math.floor(elapsed / win_ticks + 1e-9) + 1) * win_ticks, dur_ticks)
    return latencies, done, elapsed * scale, rows, mono


def _window_row(raw, start_s, end_s, scale):
    """One timing.windows row (schema.WINDOW_FIELDS) of a window's raw ticks; the telemetry
    columns are None here (the worker fills them from the sampler with windows_mono)."""
    values = sorted(raw)
    n = len(values)
    p50 = stats.percentile_sorted(values, 50) if n else None
    p99 = stats.percentile_sorted(values, 99) if n >= WINDOW_P99_MIN_SAMPLES else None
    return {"start_s": start_s, "end_s": end_s, "n": n,
            "p50": _tick_ms(p50, scale), "p99": _tick_ms(p99, scale),
            "temp_max_c": None, "freq_min_mhz": None, "power_w": None, "throttled": None}


def _tick_ms(value, scale):
    if value is None:
        return None
    return value / 1e6 if scale == 1e-9 else value * scale * 1000.0


def _sustained_block(settings, windows):
    """timing.sustained (schema.SUSTAINED_FIELDS): drift = last window's p50 / first's - 1
    (None with fewer than two windows); the onset fields stay None until the worker has the
    telemetry columns (sustained_onset)."""
    drift = None
    if len(windows) >= 2 and windows[0]["p50"] and windows[-1]["p50"] is not None:
        drift = windows[-1]["p50"] / windows[0]["p50"] - 1.0
    return {"duration_s": float(setting(settings, "duration_s")),
            "window_s": float(setting(settings, "window_s")), "drift": drift,
            "throttle_onset_s": None, "onset_reason": None}


def sustained_onset(windows):
    """(start_s, reason) of the first window with a throttle flag or a lowest CPU frequency more
    than ONSET_FREQ_DROP below the first window's (the first window that has one), e.g.
    (120.0, "CPU frequency 1500 -> 1200 MHz"); (None, None) when no window shows either."""
    base = None
    for row in windows:
        if row.get("throttled") is True:
            return row.get("start_s"), "throttle flag"
        freq = row.get("freq_min_mhz")
        if freq is None:
            continue
        if base is None:
            base = freq
        elif freq < base * (1.0 - ONSET_FREQ_DROP):
            return row.get("start_s"), "CPU frequency %.0f -> %.0f MHz" % (base, freq)
    return None, None


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

    The verdict is on the from-issue latencies (timing.latencies_ms) in every mode. Paced: the
    runs minimum is on frames scheduled, and the miss rate is a note (paced_note); sustained:
    runs does not apply (the case measures for duration_s).
    """
    reasons = list(extra_reasons)
    summary = timing.get("summary") or {}
    latencies = timing.get("latencies_ms") or []
    n = timing.get("runs") or 0
    paced = timing.get("paced")
    if paced:
        # `runs` is a minimum of frames scheduled: dropped frames are the miss rate's business.
        frames = paced.get("frames") or 0
        if frames < int(settings["runs"]):
            reasons.append("only %d frames scheduled, %d required"
                           % (frames, int(settings["runs"])))
    elif timing.get("sustained") is None and n < int(settings["runs"]):
        # (sustained measures for duration_s: runs does not apply)
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
    if paced:
        notes.append(paced_note(paced))
    return {"status": "INVALID" if reasons else "VALID", "reasons": reasons, "notes": notes,
            "p50_ci_ms": list(ci) if ci is not None else None, "p50_ci_rel": ci_rel,
            "drift": moved}


def paced_note(paced):
    """'paced 100 fps: miss rate 0.4% (late 3, dropped 1 of 1000 frames), p50 from schedule
    5.12 ms' for a timing.paced block."""
    rate = paced.get("miss_rate")
    p50 = (paced.get("from_schedule") or {}).get("p50")
    return ("paced %s fps: miss rate %s (late %d, dropped %d of %d frames), p50 from schedule %s"
            % (schema.number_text(paced.get("target_fps")),
               "%.1f%%" % (rate * 100.0) if rate is not None else "n/a",
               paced.get("late") or 0, paced.get("dropped") or 0, paced.get("frames") or 0,
               "%.4g ms" % p50 if p50 is not None else "n/a"))
