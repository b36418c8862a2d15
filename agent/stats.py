"""Statistics of raw latencies: the summary and the conservative (99%-confidence) percentiles.

Pure stdlib (the agent core runs without numpy). Percentiles use linear interpolation between
order statistics (numpy's default), so the controller can recompute them from the raw values.
"""

import math

from agent import schema


def percentile_sorted(values, p):
    """p-th percentile (0..100) of an ascending list by linear interpolation; None if empty."""
    n = len(values)
    if n == 0:
        return None
    h = (n - 1) * (p / 100.0)
    lo = int(math.floor(h))
    hi = min(lo + 1, n - 1)
    return values[lo] + (h - lo) * (values[hi] - values[lo])


def summarize(latencies_ms, _sorted=None):
    """Summary of latencies in ms: a dict with exactly schema.SUMMARY_FIELDS.

    std is the sample standard deviation (n - 1); fields that need more samples than there are
    (std and cv below 2, everything below 1) are None rather than a misleading 0.
    """
    values = _sorted if _sorted is not None else sorted(latencies_ms)
    n = len(values)
    out = dict((key, None) for key in schema.SUMMARY_FIELDS)
    out["n"] = n
    if n == 0:
        return out
    mean = math.fsum(values) / n
    out["mean"] = mean
    out["min"] = values[0]
    out["max"] = values[-1]
    out["throughput_ips"] = 1000.0 / mean if mean > 0 else None
    if n >= 2:
        # Two-pass variance: exact enough for latencies with a small spread around a large mean.
        var = math.fsum((v - mean) * (v - mean) for v in values) / (n - 1)
        out["std"] = math.sqrt(var)
        out["cv"] = out["std"] / mean if mean > 0 else None
    for p in schema.PERCENTILES:
        out[schema.percentile_key(p)] = percentile_sorted(values, p)
    return out


def _log_binom_pmf(i, n, log_p, log_q, log_n_fact):
    return (log_n_fact - math.lgamma(i + 1) - math.lgamma(n - i + 1)
            + i * log_p + (n - i) * log_q)


def conservative_rank(n, p, confidence=schema.CONFIDENCE):
    """1-based rank k of the order statistic that bounds the p-th percentile (0..100) from above
    with `confidence`, or None when even the largest sample is not enough (k > n).

    k is the smallest integer with BinomialCDF(k - 1; n, p/100) >= confidence: the k-th smallest
    sample is below the true percentile only if k or more samples fell below it.
    """
    q = p / 100.0
    if n <= 0:
        return None
    log_p, log_q, log_n_fact = math.log(q), math.log1p(-q), math.lgamma(n + 1)
    # Start 12 standard deviations below the mean: the mass left out there is < 1e-30, far
    # below the confidence resolution, and the sum costs O(sqrt(n)) terms instead of O(n).
    sigma = math.sqrt(n * q * (1.0 - q))
    start = max(0, int(n * q - 12.0 * sigma - 10))
    cdf = 0.0
    for i in range(start, n + 1):
        cdf += math.exp(_log_binom_pmf(i, n, log_p, log_q, log_n_fact))
        if cdf >= confidence:
            return i + 1 if i + 1 <= n else None
    return None


def conservative(latencies_ms, _sorted=None):
    """Conservative p90, p95, p99, p99_9 (ms): 99%-confidence upper bounds of each percentile.

    None means "not established": fewer samples than docs/METHOD.md's minimum for that percentile
    (schema.CONSERVATIVE_MIN_SAMPLES), or no order statistic reaches the confidence.
    """
    values = _sorted if _sorted is not None else sorted(latencies_ms)
    n = len(values)
    out = {}
    for p, minimum in sorted(schema.CONSERVATIVE_MIN_SAMPLES.items()):
        k = conservative_rank(n, p) if n >= minimum else None
        out[schema.percentile_key(p)] = values[k - 1] if k is not None else None
    return out


def median_ci(values, confidence=0.95):
    """(low, high) of the distribution-free interval for the median of ascending `values`: the
    order statistics at ranks n/2 -+ z*sqrt(n)/2 (the binomial's normal approximation, one rank
    wider on each side), so that the true median lies inside with about `confidence` whatever
    the distribution's shape. None when n is too small for any such pair (n < 6 at 95%).
    """
    n = len(values)
    if n < 6:
        return None
    z = {0.95: 1.959963984540054, 0.99: 2.5758293035489004}.get(confidence, 1.959963984540054)
    half = z * math.sqrt(n) / 2.0
    lo = int(math.floor(n / 2.0 - half))          # 1-based rank, rounded outwards
    hi = int(math.ceil(n / 2.0 + half)) + 1
    if lo < 1 or hi > n:
        return None
    return values[lo - 1], values[hi - 1]


def drift(latencies_ms):
    """p50 of the second half of the window (in measurement order) over the first half's, minus 1;
    None with fewer than 4 samples or a zero first half."""
    n = len(latencies_ms)
    if n < 4:
        return None
    first = percentile_sorted(sorted(latencies_ms[:n // 2]), 50)
    second = percentile_sorted(sorted(latencies_ms[n // 2:]), 50)
    if not first:
        return None
    return second / first - 1.0


def describe(latencies_ms):
    """(summary, conservative) with a single sort: 1e6 samples sort once, not twice."""
    values = sorted(latencies_ms)
    return summarize(values, _sorted=values), conservative(values, _sorted=values)


def not_established(n):
    """Keys of the conservative percentiles that n samples cannot establish (docs/METHOD.md minimums)."""
    return [schema.percentile_key(p) for p, minimum in sorted(schema.CONSERVATIVE_MIN_SAMPLES.items())
            if n < minimum or conservative_rank(n, p) is None]
