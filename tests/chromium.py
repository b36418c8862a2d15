"""Headless Chromium for the report tests: does a page render, with every image decoded?

    missing_reason()                    why Chromium cannot run here (None when it can)
    images(page, workdir)               (loaded, total): the page's <img> elements that decoded
    screenshot(page, png, width, height)

A page is opened from a file; `images` loads it in an <iframe> of a wrapper page whose script,
once the frame has loaded, counts the frame's images that are complete with a natural width and
writes the two numbers into its own DOM, which --dump-dom prints. The report itself has no
script (its Content-Security-Policy forbids one), so the counting is the wrapper's.
Every run gets a throwaway profile (--user-data-dir) and a timeout; Chromium's stderr noise
(D-Bus, GPU) is ignored. Root needs --no-sandbox.
"""

import os
import re
import shutil
import subprocess
import tempfile

INSTALL = "apt-get install chromium"
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_S = 90

WRAPPER = """<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>
<pre id="result">pending</pre>
<iframe id="frame" style="width:1400px;height:900px" src="%(src)s"></iframe>
<script>
document.getElementById("frame").addEventListener("load", function () {
  var out = document.getElementById("result");
  try {
    var doc = this.contentDocument;
    var all = Array.prototype.slice.call(doc.images);
    var ok = all.filter(function (i) { return i.complete && i.naturalWidth > 0; });
    out.textContent = "images " + ok.length + " of " + all.length + " title " +
        JSON.stringify(doc.title);
  } catch (e) {
    out.textContent = "error " + e;
  }
});
</script></body></html>
"""


def binary():
    """The Chromium executable, or None."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def missing_reason():
    if binary() is None:
        return "chromium is not installed (%s)" % INSTALL
    return None


def _run(args, timeout=TIMEOUT_S):
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        argv = [binary(), "--headless", "--no-sandbox", "--disable-gpu",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--user-data-dir=" + profile] + list(args)
        return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=timeout, check=False)


def images(page, workdir, budget_ms=10000):
    """(loaded, total, title) of the <img> elements of the HTML file `page` once loaded."""
    page = os.path.abspath(str(page))
    wrapper = os.path.join(str(workdir), "chromium-wrapper.html")
    with open(wrapper, "w") as f:
        f.write(WRAPPER % {"src": "file://" + page.replace('"', "%22")})
    proc = _run(["--allow-file-access-from-files", "--virtual-time-budget=%d" % budget_ms,
                 "--dump-dom", "file://" + wrapper])
    dom = proc.stdout.decode("utf-8", "replace")
    found = re.search(r"images (\d+) of (\d+) title (\"[^<]*\")", dom)
    if found is None:
        raise AssertionError("chromium did not report the images (exit %d): %s\nstderr: %s"
                             % (proc.returncode, dom[-2000:],
                                proc.stderr.decode("utf-8", "replace")[-2000:]))
    import html
    import json
    return int(found.group(1)), int(found.group(2)), json.loads(html.unescape(found.group(3)))


def screenshot(page, png, width=1400, height=3000):
    """A PNG of the HTML file `page` at width x height; its path."""
    page = os.path.abspath(str(page))
    png = os.path.abspath(str(png))
    proc = _run(["--hide-scrollbars", "--window-size=%d,%d" % (width, height),
                 "--virtual-time-budget=5000", "--screenshot=" + png, "file://" + page])
    if not os.path.isfile(png):
        raise AssertionError("chromium wrote no screenshot (exit %d): %s"
                             % (proc.returncode, proc.stderr.decode("utf-8", "replace")[-2000:]))
    return png
