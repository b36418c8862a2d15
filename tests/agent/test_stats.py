"""agent.stats: known values, conservative percentiles and their docs/METHOD.md minimums."""

import math
import random
import time

import pytest

from agent import schema, stats


def test_summary_has_exactly_the_schema_fields_and_known_values():
    s = stats.summarize([4.0, 1.0, 3.0, 2.0])
    assert set(s) == set(schema.SUMMARY_FIELDS)
    assert s["n"] == 4 and s["mean"] == 2.5 and s["min"] == 1.0 and s["max"] == 4.0
    assert s["std"] == pytest.approx(math.sqrt(5.0 / 3.0))  # sample std, n - 1
    assert s["cv"] == pytest.approx(math.sqrt(5.0 / 3.0) / 2.5)
    assert s["throughput_ips"] == pytest.approx(400.0)
    # linear interpolation (numpy's default): h = (n - 1) p
    assert s["p50"] == pytest.approx(2.5)
    assert s["p90"] == pytest.approx(3.7)
    assert s["p99_9"] == pytest.approx(3.997)


def test_percentiles_match_linear_interpolation_on_1_to_101():
    s = stats.summarize(list(range(101, 0, -1)))
    assert (s["p50"], s["p90"], s["p95"], s["p99"]) == (51, 91, 96, 100)
    assert s["p99_9"] == pytest.approx(100.9)


def test_summary_of_too_few_samples_is_none_not_zero():
    assert stats.summarize([])["mean"] is None
    one = stats.summarize([5.0])
    assert one["mean"] == 5.0 and one["p99"] == 5.0
    assert one["std"] is None and one["cv"] is None


@pytest.mark.parametrize("p,minimum", sorted(schema.CONSERVATIVE_MIN_SAMPLES.items()))
def test_conservative_is_none_below_minimum_and_established_at_it(p, minimum):
    key = schema.percentile_key(p)
    assert stats.conservative(list(range(minimum - 1)))[key] is None
    assert stats.conservative(list(range(minimum)))[key] is not None


def test_conservative_rank_matches_binomial_definition_small_n():
    # Brute force: smallest k with P(Bin(n, p) <= k - 1) >= 0.99.
    def brute(n, q):
        cdf = 0.0
        for i in range(n + 1):
            cdf += math.comb(n, i) * q ** i * (1 - q) ** (n - i)
            if cdf >= 0.99:
                return i + 1 if i + 1 <= n else None
        return None
    for n in (44, 64, 100, 200, 500):
        assert stats.conservative_rank(n, 90) == brute(n, 0.9)
        assert stats.conservative_rank(n, 95) == brute(n, 0.95)


def test_conservative_value_is_the_kth_smallest_sample():
    values = [float(v) for v in range(1000)]
    random.Random(1).shuffle(values)
    k = stats.conservative_rank(1000, 99)
    assert stats.conservative(values)["p99"] == float(k - 1)
    assert stats.conservative(values)["p99"] >= stats.summarize(values)["p99"]


def test_conservative_bound_tightens_with_more_samples():
    ranks = [(n, stats.conservative_rank(n, 99)) for n in (662, 1000, 5000, 20000, 100000, 1000000)]
    ks = [k for _, k in ranks]
    assert ks == sorted(ks)  # more samples: a higher (or equal) rank is needed ...
    fractions = [float(k) / n for n, k in ranks]
    assert fractions == sorted(fractions, reverse=True)  # ... but a smaller quantile overshoot
    assert fractions[-1] < 0.9905


def test_conservative_of_a_million_samples_is_fast():
    start = time.perf_counter()
    for p in (90, 95, 99, 99.9):
        k = stats.conservative_rank(10 ** 6, p)
        assert p / 100.0 * 10 ** 6 < k < (p / 100.0 + 0.001) * 10 ** 6
    assert time.perf_counter() - start < 0.5


def test_not_established_names_the_percentiles():
    assert stats.not_established(100) == ["p95", "p99", "p99_9"]
    assert stats.not_established(7000) == []
