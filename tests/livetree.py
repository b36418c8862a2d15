"""A live fake device tree for the telemetry tests: files written atomically (a sysfs read never
sees half a value) and a thread that keeps changing them, as a warming, drawing device would.
Tests point the agent at the tree with BENCHFLEET_SYS_ROOT."""

import os
import threading
import time


def write_file(root, rel, text):
    """root/rel holds `text` and a newline, written atomically, its folders made."""
    from agent import fsutil
    path = os.path.join(str(root), rel)
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        os.makedirs(folder)
    fsutil.atomic_write_text(path, "%s\n" % text, fsync=False)
    return path


class Live(object):
    """Calls fn(seconds since start) every period_s on a thread until stop(); .marks is a dict
    fn may fill with the monotonic time something happened. A context manager too."""

    def __init__(self, fn, period_s=0.002):
        self.fn, self.period_s, self.marks = fn, period_s, {}
        self._stop = threading.Event()
        self.t0 = time.monotonic()
        fn(0.0)
        self._thread = threading.Thread(target=self._run)
        self._thread.daemon = True
        self._thread.start()

    def _run(self):
        while not self._stop.wait(self.period_s):
            self.fn(time.monotonic() - self.t0)

    def stop(self):
        self._stop.set()
        self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
