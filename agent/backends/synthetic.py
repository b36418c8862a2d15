"""The synthetic backend: busy-waits a set time per invoke, for tests and overhead measurement.

It spins on perf_counter instead of sleeping because a sleep's wake-up jitter (50 us and more)
would swamp the harness overhead it exists to expose; `wait: sleep` sleeps instead (fan-out
benchmarks: many simulated devices on a few cores) and `wait: work` computes (a CPU hog slows
it). `phases`, `jitter` and `drift` plant what the verdicts must catch. Options prefixed `test_`
are fault hooks for the agent's own tests; a real suite never sets them.

Two hooks in the device's environment plant what the history's verdicts must catch without
changing the suite (so the case ids and the facts of docs/METHOD.md stay the same):
BENCHFLEET_SYNTHETIC_SCALE=1.10 makes every wait 10% longer (a device that became slower) and
BENCHFLEET_SYNTHETIC_VERSION=X reports runtime version X (a runtime that was upgraded).
"""

import os
import random
import sys
import time

from agent import AGENT_VERSION
from agent.backends.base import BackendUnavailable, Backend, BadModel


class SyntheticBackend(Backend):
    """Options: test_crash (os.abort() in load), test_stdout (text printed to stdout, as chatty
    frameworks do), test_raise ("bad_model", "error" or "unavailable": raise in load)."""

    name = "synthetic"

    def __init__(self, case, model_path):
        Backend.__init__(self, case, model_path)
        ms = (case.get("model") or {}).get("synthetic_ms") or 0.0
        self._wait_s = float(ms) / 1000.0 * _env_scale()
        self._printed = False
        self._mode = self.options.get("wait") or "spin"
        # work mode: loop iterations per second, calibrated now, before the worker starts any
        # background load (calibrated under load, the work would shrink with it)
        self._per_s = _calibrate() if self._mode == "work" else None
        self._jitter = float(self.options.get("jitter") or 0.0)
        self._drift = float(self.options.get("drift") or 0.0)
        self._phases = _parse_phases(self.options.get("phases"))
        self._rng = random.Random((case.get("settings") or {}).get("input_seed") or 0)
        self._t0 = None
        self._planted = bool(self._jitter or self._drift or self._phases)

    def load(self):
        opts = self.options
        if opts.get("test_stdout"):
            print(opts["test_stdout"])
            sys.stdout.flush()
            os.write(1, (str(opts["test_stdout"]) + "\n").encode("utf-8"))  # C-level chatter
        if opts.get("test_crash"):
            os.abort()
        if opts.get("test_raise") == "bad_model":
            raise BadModel("synthetic test_raise: bad model requested")
        if opts.get("test_raise") == "unavailable":
            raise BackendUnavailable("synthetic test_raise: unavailable requested",
                                     hint="drop test_raise from the case options")
        if opts.get("test_raise") == "error":
            raise RuntimeError("synthetic test_raise: error requested")

    def make_inputs(self, seed, count):
        rng = random.Random(seed)
        return [rng.randint(0, 255) for _ in range(count)]

    def inputs_from(self, samples):
        """Any representative samples: the busy-wait does not depend on them."""
        if not samples:
            raise BadModel("synthetic: the representative inputs hold no sample")
        return list(samples)

    def _wait(self):
        """This invoke's wait in seconds, with the planted jitter, drift and phases."""
        wait = self._wait_s
        if self._phases:
            pick = self._rng.random() * self._phases[-1][0]
            wait = next(ms for bound, ms in self._phases if pick < bound) / 1000.0
        if self._drift:
            now = time.perf_counter()
            if self._t0 is None:
                self._t0 = now
            wait *= 1.0 + self._drift * (now - self._t0)
        if self._jitter:
            wait *= 1.0 + self._jitter * self._rng.expovariate(1.0)
        return wait

    def invoke(self, inputs):
        # Without planted faults the wait is a constant: nothing more inside the timed invoke.
        wait = self._wait() if self._planted else self._wait_s
        if wait <= 0.0:
            return inputs
        if self._mode == "sleep":
            time.sleep(wait)
            return inputs
        if self._mode == "work":
            _work(int(wait * self._per_s))
            return inputs
        end = time.perf_counter() + wait
        while time.perf_counter() < end:
            pass
        return inputs

    def describe(self):
        return {"version": os.environ.get("BENCHFLEET_SYNTHETIC_VERSION") or AGENT_VERSION,
                "delegate": None, "provider": None,
                "delegation": {"ops_total": None, "ops_delegated": None}}


def _env_scale():
    """BENCHFLEET_SYNTHETIC_SCALE as a factor (1.0 when unset; a bad value is a BadModel)."""
    text = os.environ.get("BENCHFLEET_SYNTHETIC_SCALE")
    if not text:
        return 1.0
    try:
        scale = float(text)
    except ValueError:
        scale = -1.0
    if not 0.0 < scale < 1000.0:
        raise BadModel("BENCHFLEET_SYNTHETIC_SCALE=%r: expected a factor such as 1.10" % text)
    return scale


def _work(n):
    x = 0
    for i in range(n):
        x += i
    return x


def _calibrate():
    """Iterations of _work per second on this device now (the fastest of three 20 ms tries)."""
    n = 10000
    while True:
        t0 = time.perf_counter()
        _work(n)
        if time.perf_counter() - t0 >= 0.02 or n > 1 << 30:
            break
        n *= 2
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        _work(n)
        best = max(best, n / max(time.perf_counter() - t0, 1e-9))
    return best


def _parse_phases(text):
    """[(cumulative weight, ms), ...] from 'MS:WEIGHT,MS:WEIGHT'; None when not given."""
    if not text:
        return None
    out, total = [], 0.0
    for part in str(text).split(","):
        try:
            ms, weight = (float(x) for x in part.split(":"))
        except ValueError:
            raise BadModel("synthetic phases: %r is not MS:WEIGHT (write e.g. '5:0.7,6.6:0.3')"
                           % part.strip())
        if ms < 0 or weight <= 0:
            raise BadModel("synthetic phases: %r needs ms >= 0 and a weight above 0" % part)
        total += weight
        out.append((total, ms))
    return out
