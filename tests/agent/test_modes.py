"""agent.harness modes paced and sustained: exact counting on a fake clock, and the synthetic
backend in real time (short cases, a spin wait) for what the schedule does on a real clock."""


import pytest

from agent import harness, schema
from agent.backends.synthetic import SyntheticBackend

from fake_harness import MS, FakeBackend, FakeClock, SplitBackend


def settings(**kw):
    s = dict(schema.DEFAULT_SETTINGS)
    s.update(warmup_runs=10, warmup_min_s=0.0, runs=100, min_duration_s=0.0, max_duration_s=60.0)
    s.update(kw)
    return s


def fake_run(latency_ns, backend=None, **kw):
    clock = FakeClock()
    b = backend(clock) if backend else FakeBackend(clock, latency_ns)
    out = harness.run_measurement(b, settings(**kw), clock=clock, clock_scale=1e-9,
                                  wait=clock.wait)
    return out, clock, b


def assert_valid_doc(out, s):
    """The timing (and its verdict) in a full result document passes schema.check_result."""
    case = {"case_id": "c1", "model": {"name": "m", "variant": "v", "format": "synthetic",
                                       "sha256": None, "path": None},
            "runtime": {"backend": "synthetic", "threads": None, "affinity": None,
                        "precision": "fp32", "options": {}},
            "settings": s}
    doc = schema.new_result({"run_id": "r1", "nonce": "n1"}, case, "ok", {}, "test")
    doc["timing"] = out["timing"]
    doc["memory"] = out["memory"]
    doc["validity"] = harness.validity(out["timing"], s)
    assert schema.check_result(doc) == []
    return doc["validity"]


def paced(fps, **kw):
    return dict(mode="paced", target_fps=fps, **kw)


# ---- paced on a fake clock: exact counts ----

def test_paced_periodic_within_budget_serves_every_frame_on_time():
    s = paced(100.0, runs=100)
    out, clock, b = fake_run(5 * MS, **s)
    t = out["timing"]
    p = t["paced"]
    assert set(p) == set(schema.PACED_FIELDS)
    assert set(t) == set(schema.TIMING_FIELDS) - {"windows", "sustained"}
    assert (p["frames"], p["issued"], p["dropped"], p["late"]) == (100, 100, 0, 0)
    assert p["miss_rate"] == 0.0 and p["deadline_ms"] == 10.0   # 0: the frame period
    assert p["latencies_from_schedule_ms"] == [5.0] * 100
    assert t["latencies_ms"] == [5.0] * 100 and t["runs"] == 100
    # the last frame is scheduled at 990 ms and ends 5 ms later
    assert t["measure_s"] == pytest.approx(0.995)
    assert p["achieved_fps"] == pytest.approx(100 / 0.995)
    assert t["summary"]["throughput_ips"] == pytest.approx(100 / 0.995)
    assert p["from_schedule"] == {"n": 100, "mean": 5.0, "p50": 5.0, "p90": 5.0, "p99": 5.0,
                                  "max": 5.0}
    assert p["from_issue"] == p["from_schedule"]
    assert "windows_mono" not in out and len(out["window_mono"]) == 2
    v = assert_valid_doc(out, settings(**s))
    assert v["status"] == "VALID"
    assert "paced 100 fps: miss rate 0.0% (late 0, dropped 0 of 100 frames), " \
           "p50 from schedule 5 ms" in v["notes"]


def test_paced_reads_the_clock_once_before_and_once_after_each_invoke():
    out, clock, b = fake_run(5 * MS, **paced(100.0, runs=200, warmup_runs=0))
    invokes = len(b.seen)
    assert 2 * invokes <= clock.reads <= 2 * invokes + 20


def test_paced_skip_over_budget_drops_overtaken_frames_and_serves_the_newest():
    s = paced(100.0, runs=300, on_late="skip")
    out, clock, b = fake_run(12 * MS, **s)
    p = out["timing"]["paced"]
    # every 60 ms: six frames arrive, five are served (each late: 12 ms > the 10 ms period),
    # the one overtaken while the fifth ran is dropped
    assert p["frames"] == p["issued"] + p["dropped"] and p["frames"] >= 300
    assert p["late"] == p["issued"] and p["miss_rate"] == 1.0
    assert p["dropped"] == pytest.approx(p["frames"] / 6.0, abs=2)
    assert set(out["timing"]["latencies_ms"]) == {12.0}
    # from schedule: 12 ms + the wait the frame had (0, 2, 4, 6, 8 ms in turn)
    assert p["latencies_from_schedule_ms"][:6] == [12.0, 14.0, 16.0, 18.0, 20.0, 12.0]
    assert max(p["latencies_from_schedule_ms"]) == 20.0
    v = assert_valid_doc(out, settings(**s))
    assert "paced 100 fps: miss rate 100.0%% (late %d, dropped %d of %d frames)" % (
        p["late"], p["dropped"], p["frames"]) in v["notes"][-1]


def test_paced_deadline_ms_sets_what_is_late():
    out, _, _ = fake_run(12 * MS, **paced(100.0, runs=300, deadline_ms=15.0))
    p = out["timing"]["paced"]
    assert p["deadline_ms"] == 15.0
    late = sum(1 for v in p["latencies_from_schedule_ms"] if v > 15.0)
    assert p["late"] == late and 0 < late < p["issued"]   # 16, 18, 20 ms of each five


def test_paced_queue_serves_every_frame_in_order_and_counts_the_queue():
    out, _, _ = fake_run(12 * MS, **paced(100.0, runs=100, on_late="queue"))
    t = out["timing"]
    p = t["paced"]
    # frame k ends at 12 (k + 1) ms and was scheduled at 10 k: 12 + 2k ms from schedule
    assert p["latencies_from_schedule_ms"] == [12.0 + 2.0 * k for k in range(p["issued"])]
    assert set(t["latencies_ms"]) == {12.0}
    # stops once 100 frames have arrived (the 100th at 990 ms, during the 83rd invoke); the 17
    # still queued then were never served: dropped
    assert (p["frames"], p["issued"], p["dropped"]) == (100, 83, 17)
    assert p["late"] == 83 and p["miss_rate"] == 1.0


def test_paced_stops_at_max_duration_truncated():
    s = paced(10.0, runs=100, max_duration_s=1.0)
    out, _, _ = fake_run(1 * MS, **s)
    t = out["timing"]
    assert t["truncated"] is True and t["paced"]["frames"] == 10 and t["runs"] == 10
    v = harness.validity(t, settings(**s))
    assert v["status"] == "INVALID"
    assert "only 10 frames scheduled, 100 required" in v["reasons"]


def test_paced_min_duration_extends_the_schedule():
    out, _, _ = fake_run(1 * MS, **paced(50.0, runs=10, min_duration_s=2.0))
    p = out["timing"]["paced"]
    assert p["frames"] == 101 and out["timing"]["measure_s"] == pytest.approx(2.001)


def test_paced_runs_minimum_is_on_frames_so_dropped_frames_do_not_invalidate():
    s = paced(100.0, runs=300, on_late="skip", p50_ci_max=0.5)
    out, _, _ = fake_run(12 * MS, **s)
    assert out["timing"]["runs"] < 300 <= out["timing"]["paced"]["frames"]
    assert not [r for r in harness.validity(out["timing"], settings(**s))["reasons"]
                if "only" in r]


def test_paced_staging_is_outside_from_issue_but_inside_from_schedule():
    out, _, _ = fake_run(None, backend=lambda c: SplitBackend(c, MS // 2, latency_ns=2 * MS),
                         **paced(100.0, runs=50))
    t = out["timing"]
    assert t["timed"] == "execute" and t["stage_ms"] == 0.5
    assert set(t["latencies_ms"]) == {2.0}
    assert set(t["paced"]["latencies_from_schedule_ms"]) == {2.5}


def test_poisson_schedule_is_seeded_with_the_right_mean_gap():
    def offsets(seed, n):
        it = harness.schedule("poisson", 100.0, seed)
        return [next(it) for _ in range(n)]
    a = offsets(7, 20001)
    assert a == offsets(7, 20001) and a != offsets(8, 20001)
    assert a[0] == 0.0 and all(y > x for x, y in zip(a, a[1:]))
    assert a[-1] / 20000 == pytest.approx(0.01, rel=0.03)   # 20000 gaps of mean 10 ms
    gaps = sorted(y - x for x, y in zip(a, a[1:]))
    # exponential: the median gap is ln 2 of the mean
    assert gaps[len(gaps) // 2] == pytest.approx(0.00693, rel=0.05)
    it = harness.schedule("periodic", 100.0, 7)
    assert [next(it) for _ in range(3)] == [0.0, 0.01, 0.02]


def test_paced_poisson_run_is_reproducible_from_input_seed():
    def once(seed):
        s = paced(100.0, runs=2000, arrival="poisson", on_late="queue", input_seed=seed)
        out, _, _ = fake_run(5 * MS, **s)
        return out, s
    (a, s), (b, _), (c, _) = once(3), once(3), once(4)
    pa = a["timing"]["paced"]
    assert pa["latencies_from_schedule_ms"] == b["timing"]["paced"]["latencies_from_schedule_ms"]
    assert pa["latencies_from_schedule_ms"] != c["timing"]["paced"]["latencies_from_schedule_ms"]
    assert pa["arrival"] == "poisson" and pa["frames"] == 2000 and pa["issued"] >= 1990
    assert pa["achieved_fps"] == pytest.approx(100.0, rel=0.07)
    # bursts queue: some frames wait, so the latency from schedule exceeds the 5 ms execute
    assert pa["from_schedule"]["max"] > 10.0 and pa["from_issue"]["max"] == 5.0
    assert 0 < pa["late"] < pa["issued"]
    assert_valid_doc(a, settings(**s))


# ---- sustained on a fake clock ----

def test_sustained_windows_their_p50s_and_drift():
    # 1 first + 10 warm-up invokes, then 5 s at 1 ms (5000 invokes), then 2 ms
    s = settings(mode="sustained", duration_s=10.0, window_s=1.0, runs=100000,
                 min_duration_s=100.0, max_duration_s=1.0)   # none of these apply
    out, clock, b = fake_run(lambda i: (1 if i < 11 + 5000 else 2) * MS, **s)
    t = out["timing"]
    assert set(t) == set(schema.TIMING_FIELDS) - {"paced"}
    w = t["windows"]
    assert len(w) == 10 and all(set(row) == set(schema.WINDOW_FIELDS) for row in w)
    assert [row["n"] for row in w] == [1000] * 5 + [500] * 5
    assert [row["p50"] for row in w] == [1.0] * 5 + [2.0] * 5
    assert [row["p99"] for row in w] == [1.0] * 5 + [2.0] * 5
    assert [(row["start_s"], row["end_s"]) for row in w] == \
        [pytest.approx((float(i), float(i + 1))) for i in range(10)]
    assert all(row[k] is None for row in w
               for k in ("temp_max_c", "freq_min_mhz", "power_w", "throttled"))
    assert t["sustained"] == {"duration_s": 10.0, "window_s": 1.0, "drift": 1.0,
                              "throttle_onset_s": None, "onset_reason": None}
    assert t["runs"] == 7500 and len(t["latencies_ms"]) == 7500
    assert t["measure_s"] == pytest.approx(10.0) and t["truncated"] is False
    mono = out["windows_mono"]
    assert len(mono) == 10 and mono[0][0] == pytest.approx(out["window_mono"][0], abs=0.5)
    assert [b_ - a for a, b_ in mono] == [pytest.approx(1.0)] * 10
    assert all(mono[i][1] == mono[i + 1][0] for i in range(9))   # contiguous
    v = assert_valid_doc(out, s)
    # runs does not apply; the verdict's own drift (halves) catches the step
    assert not [r for r in v["reasons"] if r.startswith("only")]
    assert any(r.startswith("drift +100.0%") for r in v["reasons"])


def test_sustained_last_window_is_cut_at_duration_and_small_windows_have_no_p99():
    out, _, _ = fake_run(1 * MS, mode="sustained", duration_s=0.25, window_s=0.1)
    w = out["timing"]["windows"]
    assert [row["n"] for row in w] == [100, 100, 50]
    assert [row["p99"] for row in w] == [1.0, 1.0, None]   # fewer than 100 samples: no p99
    assert w[-1]["end_s"] == pytest.approx(0.25)
    out, _, _ = fake_run(1 * MS, mode="sustained", duration_s=0.25, window_s=0.25)
    assert len(out["timing"]["windows"]) == 1 and out["timing"]["sustained"]["drift"] is None


def test_sustained_invokes_longer_than_a_window_make_longer_rows():
    out, _, _ = fake_run(250 * MS, mode="sustained", duration_s=1.0, window_s=0.1)
    w = out["timing"]["windows"]
    assert [row["n"] for row in w] == [1, 1, 1, 1]
    assert [row["end_s"] for row in w] == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_sustained_onset_finds_a_throttle_flag_or_a_frequency_drop():
    def rows(freqs, flags=None):
        flags = flags or [None] * len(freqs)
        return [{"start_s": 10.0 * i, "end_s": 10.0 * (i + 1), "freq_min_mhz": f,
                 "throttled": fl} for i, (f, fl) in enumerate(zip(freqs, flags))]
    assert harness.sustained_onset(rows([1500, 1500, 1450, 1200, 1500])) == \
        (30.0, "CPU frequency 1500 -> 1200 MHz")           # 1450 is within 5%
    assert harness.sustained_onset(rows([1500, 1500, 1500], [False, True, None])) == \
        (10.0, "throttle flag")
    assert harness.sustained_onset(rows([None, 2000, 1000])) == \
        (20.0, "CPU frequency 2000 -> 1000 MHz")            # the first window with a frequency
    assert harness.sustained_onset(rows([1500, 1480, None], [False, False, False])) == \
        (None, None)
    assert harness.sustained_onset([]) == (None, None)


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError):
        fake_run(1 * MS, mode="bursty")


# ---- real time: the synthetic backend (spin) ----

def synthetic(ms, **kw):
    s = settings(warmup_runs=10, **kw)
    case = {"case_id": "c", "model": {"synthetic_ms": ms}, "runtime": {"options": {}},
            "settings": s}
    return harness.run_measurement(SyntheticBackend(case, None), s), s


def test_real_time_paced_within_budget_misses_almost_nothing():
    out, s = synthetic(5.0, **paced(100.0, runs=150, min_duration_s=1.5))
    p = out["timing"]["paced"]
    assert p["miss_rate"] < 0.02, p["miss_rate"]
    assert p["achieved_fps"] == pytest.approx(100.0, rel=0.03)
    assert p["from_issue"]["p50"] == pytest.approx(5.0, abs=0.3)
    # issued on time: from schedule is the execute and a little wake-up
    assert p["from_schedule"]["p50"] - p["from_issue"]["p50"] < 0.5
    assert_valid_doc(out, s)


def test_real_time_paced_skip_over_budget_misses_nearly_everything():
    out, s = synthetic(12.0, **paced(100.0, runs=100, min_duration_s=1.0, on_late="skip"))
    p = out["timing"]["paced"]
    assert p["miss_rate"] > 0.95 and p["dropped"] > 0, p
    assert p["frames"] == p["issued"] + p["dropped"]
    assert_valid_doc(out, s)


def test_real_time_paced_queue_latency_from_schedule_grows():
    out, s = synthetic(12.0, **paced(100.0, runs=100, min_duration_s=1.0, on_late="queue"))
    t = out["timing"]
    sched = t["paced"]["latencies_from_schedule_ms"]
    tenth = len(sched) // 10

    def p50(values):
        return sorted(values)[len(values) // 2]
    assert p50(sched[-tenth:]) > 4 * p50(sched[:tenth])   # about 160 ms vs 20 ms
    assert p50(t["latencies_ms"]) == pytest.approx(12.0, abs=0.5)
    assert p50(t["latencies_ms"][-tenth:]) == pytest.approx(12.0, abs=0.5)
    assert_valid_doc(out, s)


def test_real_time_sustained_windows_follow_the_monotonic_clock():
    out, s = synthetic(1.0, mode="sustained", duration_s=1.0, window_s=0.25)
    t = out["timing"]
    w = t["windows"]
    # at most 250 one-millisecond invokes fit in a window; a loaded machine's preemptions take
    # some of them, never the window itself
    assert len(w) == 4 and all(100 <= row["n"] <= 250 for row in w)
    assert sum(row["n"] for row in w) == t["runs"]
    assert t["measure_s"] == pytest.approx(1.0, abs=0.01)
    assert w[-1]["end_s"] == pytest.approx(1.0, abs=0.01)
    assert all(row["p50"] == pytest.approx(1.0, abs=0.1) for row in w)
    lo, hi = out["window_mono"]
    mono = out["windows_mono"]
    assert lo <= mono[0][0] < mono[-1][1] <= hi
    assert_valid_doc(out, s)


def test_the_default_wait_issues_on_time():
    clock, scale = harness.default_clock()
    wait = harness.make_wait(clock, scale)
    late = []
    for _ in range(20):
        target = clock() + 0.004 / scale
        wait(target)
        late.append((clock() - target) * scale)
    assert min(late) >= 0
    assert sorted(late)[10] < 0.0005   # the median wake-up within half a millisecond
