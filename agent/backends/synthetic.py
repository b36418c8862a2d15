"""The synthetic backend: busy-waits a set time per invoke, for tests and overhead measurement.

It spins on perf_counter instead of sleeping because a sleep's wake-up jitter (50 us and more)
would swamp the harness overhead it exists to expose; `wait: sleep` sleeps instead, for
benchmarks of the fan-out where many simulated devices share a few cores. Options prefixed `test_` are fault
hooks for the agent's own tests; a real suite never sets them.
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
        self._wait_s = float(ms) / 1000.0
        self._printed = False
        self._sleep = self.options.get("wait") == "sleep"

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

    def invoke(self, inputs):
        if self._wait_s <= 0.0:
            return inputs
        if self._sleep:
            time.sleep(self._wait_s)
            return inputs
        end = time.perf_counter() + self._wait_s
        while time.perf_counter() < end:
            pass
        return inputs

    def describe(self):
        return {"version": AGENT_VERSION, "delegate": None, "provider": None,
                "delegation": {"ops_total": None, "ops_delegated": None}}
