"""A fake clock and fake backends for agent.harness: exact counting without real time.

A plain module (not conftest) so tests import it by name.
"""

MS = 1000000  # fake clock ticks are integer nanoseconds


class FakeClock(object):
    def __init__(self):
        self.now = 0
        self.reads = 0

    def __call__(self):
        self.reads += 1
        return self.now

    def wait(self, target):
        """The paced loop's wait on a fake clock: time jumps to the frame's arrival."""
        self.now = max(self.now, target)


class FakeBackend(object):
    """Advances the fake clock by a latency per invoke (a number, or a function of the invoke's
    index) and logs every call."""

    def __init__(self, clock, latency_ns=1 * MS, first_ns=None, load_ns=0, inputs_ns=0):
        self.clock, self.latency_ns, self.first_ns = clock, latency_ns, first_ns
        self.load_ns, self.inputs_ns = load_ns, inputs_ns
        self.log, self.seen = [], []

    def load(self):
        self.log.append("load")
        self.clock.now += self.load_ns

    def convert_seconds(self):
        return None

    def make_inputs(self, seed, count):
        self.log.append("make_inputs")
        self.clock.now += self.inputs_ns  # preparing inputs is slow, and must not be timed
        return ["x%d" % i for i in range(count)]

    def invoke(self, x):
        if not self.seen:
            self.log.append("first_invoke")
        lat = self.first_ns if (self.first_ns is not None and not self.seen) else self.latency_ns
        self.clock.now += lat(len(self.seen)) if callable(lat) else lat
        self.seen.append(x)


class SplitBackend(FakeBackend):
    """Stages an input in stage_ns, then executes in latency_ns (as TFLite's set_tensor, invoke)."""

    splits_staging = True

    def __init__(self, clock, stage_ns, **kw):
        FakeBackend.__init__(self, clock, **kw)
        self.stage_ns, self.staged = stage_ns, None

    def stage(self, x):
        self.clock.now += self.stage_ns
        self.staged = x

    def execute(self):
        FakeBackend.invoke(self, self.staged)

    def invoke(self, x):
        self.stage(x)
        self.execute()
