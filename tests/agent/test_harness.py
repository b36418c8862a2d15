"""agent.harness run EXACTLY on a fake clock: counts, durations, first_ms, inputs, truncation."""

import os

import pytest

from agent import harness, schema

from fake_harness import MS, FakeBackend, FakeClock, SplitBackend


def settings(**kw):
    s = dict(schema.DEFAULT_SETTINGS)
    s.update(warmup_runs=50, warmup_min_s=0.0, runs=100, min_duration_s=0.0, max_duration_s=60.0)
    s.update(kw)
    return s


def run(backend, clock, **kw):
    return harness.run_measurement(backend, settings(**kw), clock=clock, clock_scale=1e-9)


def test_exact_counts_when_run_counts_dominate():
    clock = FakeClock()
    b = FakeBackend(clock, latency_ns=1 * MS, first_ns=7 * MS, load_ns=3 * MS)
    t = run(b, clock)["timing"]
    assert t["warmup_runs"] == 50 and t["runs"] == 100 and len(t["latencies_ms"]) == 100
    assert t["first_ms"] == 7.0 and t["load_s"] == pytest.approx(0.003)
    assert t["warmup_s"] == pytest.approx(0.050) and t["measure_s"] == pytest.approx(0.100)
    assert t["latencies_ms"] == [1.0] * 100  # first inference is not among the latencies
    assert len(b.seen) == 1 + 50 + 100
    assert t["truncated"] is False
    # back to back: every timing field but the other modes' blocks
    assert set(t) == set(schema.TIMING_FIELDS) - {"paced", "windows", "sustained"}
    assert 0 < t["wall_start_unix"] <= t["wall_end_unix"]


def test_min_duration_extends_measurement_exactly():
    clock = FakeClock()
    t = run(FakeBackend(clock, latency_ns=2 * MS), clock, runs=100, min_duration_s=1.0)["timing"]
    assert t["runs"] == 500 and t["measure_s"] == pytest.approx(1.0)
    assert t["truncated"] is False


def test_warmup_min_seconds_extends_warmup_exactly():
    clock = FakeClock()
    t = run(FakeBackend(clock, latency_ns=1 * MS), clock, warmup_runs=10, warmup_min_s=0.5)["timing"]
    assert t["warmup_runs"] == 500 and t["warmup_s"] == pytest.approx(0.5)
    assert t["runs"] == 100


def test_max_duration_truncates_and_invalidates():
    clock = FakeClock()
    t = run(FakeBackend(clock, latency_ns=2 * MS), clock, runs=1000, max_duration_s=1.0)["timing"]
    assert t["truncated"] is True and t["runs"] == 500
    v = harness.validity(t, settings(runs=1000, max_duration_s=1.0))
    assert v["status"] == "INVALID"
    assert any("truncated" in r for r in v["reasons"]) and any("500 runs" in r for r in v["reasons"])


def test_latencies_are_raw_and_in_order():
    clock = FakeClock()
    pattern = [1 * MS, 2 * MS, 3 * MS + 5]
    b = FakeBackend(clock, latency_ns=lambda i: pattern[i % 3])
    t = run(b, clock, warmup_runs=2, runs=9)["timing"]
    # invokes 0 (first) and 1-2 (warm-up) come before the measured ones, which start at index 3
    assert t["latencies_ms"] == [1.0, 2.0, 3.000005] * 3
    assert t["summary"]["max"] == 3.000005 and t["summary"]["n"] == 9


def test_inputs_prepared_before_timing_and_rotated():
    clock = FakeClock()
    b = FakeBackend(clock, latency_ns=1 * MS, inputs_ns=1000 * MS)
    t = run(b, clock, input_pool=3, warmup_runs=4, runs=12)["timing"]
    assert b.log[:3] == ["load", "make_inputs", "first_invoke"]
    assert t["first_ms"] == 1.0 and t["load_s"] == 0.0  # the 1 s of input making is in neither
    measured = b.seen[-12:]
    assert sorted(set(measured)) == ["x0", "x1", "x2"]
    assert all(a != b_ for a, b_ in zip(measured, measured[1:]))  # consecutive inputs differ
    assert [measured.count(x) for x in ("x0", "x1", "x2")] == [4, 4, 4]


def test_timed_loop_reads_the_clock_once_before_and_once_after_each_invoke():
    clock = FakeClock()
    b = FakeBackend(clock, latency_ns=1 * MS)
    run(b, clock, warmup_runs=10, runs=100)
    invokes = len(b.seen)
    # 2 per invoke, plus a few per phase and per chunk for the stop checks (load, first, ...)
    assert 2 * invokes <= clock.reads <= 2 * invokes + 20


def test_float_seconds_clock_is_the_default_unit():
    clock = FakeClock()
    clock.now = 0.0
    b = FakeBackend(clock, latency_ns=2.0 ** -10)  # binary-exact seconds on a float clock
    t = harness.run_measurement(b, settings(warmup_runs=3, runs=20), clock=clock)["timing"]
    assert t["runs"] == 20 and t["latencies_ms"] == [1000.0 * 2.0 ** -10] * 20


def _verdict(latency, runs=1000, **overrides):
    clock = FakeClock()
    t = run(FakeBackend(clock, latency_ns=latency), clock, runs=runs)["timing"]
    return t, harness.validity(t, settings(runs=runs, **overrides))


def test_a_steady_p50_is_valid_with_its_figures_and_unestablished_percentiles_noted():
    t, v = _verdict(1 * MS, runs=100)
    assert v == {"status": "VALID", "reasons": [], "p50_ci_ms": [1.0, 1.0], "p50_ci_rel": 0.0,
                 "drift": 0.0,
                 "notes": ["conservative p95 not established with 100 samples",
                           "conservative p99 not established with 100 samples",
                           "conservative p99_9 not established with 100 samples"]}


def test_an_even_split_between_two_latencies_leaves_the_p50_uncertain():
    t, v = _verdict(lambda i: (1 if i % 2 else 3) * MS, runs=200)
    assert v["status"] == "INVALID" and len(v["reasons"]) == 1, v
    assert v["reasons"][0].startswith("p50 uncertain: its 95% interval 1-3 ms is +-50.00%")
    assert v["p50_ci_ms"] == [1.0, 3.0] and v["p50_ci_rel"] == 0.5
    # with a cv_max set by the suite, CV becomes a verdict too; otherwise it is only a figure
    v = harness.validity(t, settings(runs=200, cv_max=0.025), ["throttled"])
    assert v["reasons"][0] == "throttled" and v["reasons"][1].startswith("p50 uncertain")
    assert v["reasons"][2].startswith("coefficient of variation")
    assert v["notes"] == ["conservative p99 not established with 200 samples",
                          "conservative p99_9 not established with 200 samples"]


def test_fast_and_slow_phases_with_a_steady_p50_are_valid_though_cv_is_high():
    # the seed's app: mostly 5 ms with a slow 6.6 ms phase, three frames in ten
    t, v = _verdict(lambda i: (6.6 if i % 10 in (3, 6, 9) else 5.0) * MS)
    assert t["summary"]["cv"] > 0.1 and v["status"] == "VALID", v
    assert v["p50_ci_rel"] == 0.0 and v["drift"] == 0.0


def test_rare_outliers_do_not_invalidate_a_steady_p50():
    t, v = _verdict(lambda i: (50.0 if i % 100 == 99 else 1.0) * MS)
    assert t["summary"]["cv"] > 1.0 and v["status"] == "VALID", v


def test_a_p50_that_rises_over_the_window_is_invalid_with_its_drift():
    t, v = _verdict(lambda i: int((5.0 + 0.001 * i) * MS))   # +0.1 ms every 100 runs
    assert v["status"] == "INVALID"
    [reason] = [r for r in v["reasons"] if r.startswith("drift")]
    assert 0.08 < v["drift"] < 0.11   # about 5.3 ms in the first half, 5.8 ms in the second
    assert reason.startswith("drift +%.1f%%: the p50 of the second half" % (v["drift"] * 100))
    assert "drift_max 3.0%" in reason
    # a looser drift_max (a suite's choice) accepts it
    assert not [r for r in harness.validity(t, settings(runs=1000, drift_max=0.1, p50_ci_max=0.1))
                ["reasons"]]


def test_too_few_samples_leave_the_p50_interval_unestablished():
    t, v = _verdict(1 * MS, runs=5)
    assert v["status"] == "INVALID" and v["p50_ci_ms"] is None
    assert "p50 interval not established with 5 samples" in v["reasons"][0]


def test_throughput_is_inferences_over_the_measured_wall_time():
    clock = FakeClock()
    t = run(FakeBackend(clock, latency_ns=1 * MS), clock, runs=100)["timing"]
    assert t["summary"]["throughput_ips"] == pytest.approx(t["runs"] / t["measure_s"])


def test_memory_fields_are_recorded():
    clock = FakeClock()
    mem = run(FakeBackend(clock), clock)["memory"]
    assert set(mem) == {"rss_before_load_kb", "rss_after_load_kb", "rss_after_run_kb", "peak_rss_kb"}
    if os.path.exists("/proc/self/status"):
        assert all(isinstance(v, int) and v > 0 for v in mem.values())
        assert mem["peak_rss_kb"] >= mem["rss_after_run_kb"]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no sched_setaffinity here")
def test_affinity_applied_or_reason_recorded():
    before = os.sched_getaffinity(0)
    try:
        core = min(before)
        rec = harness.apply_affinity([core])
        assert rec["applied"] == [core] and rec["reason"] is None
        bad = harness.apply_affinity([100000])
        assert bad["applied"] is None and "sched_setaffinity" in bad["reason"]
        assert harness.apply_affinity(None)["reason"] == "not requested"
    finally:
        os.sched_setaffinity(0, before)


def test_until_stable_measures_on_until_the_p50_is_tight_and_stops_at_max_duration():
    # alternating 1 and 3 ms, then from the 600th invoke on only 1 ms: the interval tightens
    clock = FakeClock()
    b = FakeBackend(clock, latency_ns=lambda i: (3 if i % 2 and i < 600 else 1) * MS)
    out = harness.run_measurement(b, settings(runs=200, warmup_runs=0, until_stable=True,
                                              max_duration_s=60.0),
                                  clock=clock, clock_scale=1e-9)
    t = out["timing"]
    assert t["runs"] > 200 and out["extended_s"] > 0
    v = harness.validity(t, settings(runs=200, drift_max=10.0))
    assert v["p50_ci_rel"] <= 0.01 and v["status"] == "VALID", v
    # never past max_duration_s: an interval that cannot tighten ends uncertain, not truncated
    clock = FakeClock()
    b = FakeBackend(clock, latency_ns=lambda i: (1 if i % 2 else 3) * MS)
    out = harness.run_measurement(b, settings(runs=100, warmup_runs=0, until_stable=True,
                                              max_duration_s=3.0),
                                  clock=clock, clock_scale=1e-9)
    t = out["timing"]
    assert 3.0 <= t["measure_s"] < 3.2 and not t["truncated"]
    assert harness.validity(t, settings(runs=100))["reasons"][0].startswith("p50 uncertain")
    # off (the default): the minimums and no more
    clock = FakeClock()
    out = harness.run_measurement(FakeBackend(clock, latency_ns=lambda i: (1 if i % 2 else 3) * MS),
                                  settings(runs=100, warmup_runs=0), clock=clock, clock_scale=1e-9)
    assert out["timing"]["runs"] == 100 and out["extended_s"] == 0.0



def test_the_timed_region_is_execute_with_staging_reported_apart():
    clock = FakeClock()
    t = run(SplitBackend(clock, stage_ns=MS // 2, latency_ns=2 * MS), clock, runs=50)["timing"]
    assert t["timed"] == "execute" and t["stage_ms"] == 0.5
    assert set(t["latencies_ms"]) == {2.0}          # staging is not in any latency
    # end_to_end: staging and execute timed together, nothing reported apart
    clock = FakeClock()
    t = run(SplitBackend(clock, stage_ns=MS // 2, latency_ns=2 * MS), clock, runs=50,
            end_to_end=True)["timing"]
    assert t["timed"] == "end_to_end" and t["stage_ms"] is None
    assert set(t["latencies_ms"]) == {2.5}
    # a backend with one call: that call is timed, and the result says so
    clock = FakeClock()
    t = run(FakeBackend(clock, latency_ns=2 * MS), clock, runs=50)["timing"]
    assert (t["timed"], t["stage_ms"]) == ("invoke", None)
