"""A device whose probe lies: `benchfleet devices probe` and `plan` with the real CLI, against a
local device whose `python` is a script printing chosen bytes instead of the agent's probe.

Every probe that is not usable ends in one line naming the device and why (no traceback); a
probe of the wrong shape is read as far as it is right; device text shown on the console holds
no control characters.
"""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ESC = "\x1b"
HOSTILE = ESC + "[2J" + ESC + "]8;;http://evil.example" + "\x07click" + ESC + "]8;;\x07\r\nforged: ok"


def fake_device(tmp_path, output, **fields):
    """An inventory with one local device whose interpreter prints `output` (bytes) and exits 0."""
    data = tmp_path / "probe-output"
    data.write_bytes(output)
    python = tmp_path / "fakepython"
    python.write_text("#!/bin/sh\ncat %s\n" % data)
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    inv = tmp_path / "inv.yaml"
    inv.write_text(yaml.safe_dump({"devices": {"liar": {
        "transport": "local", "python": str(python), "workdir": str(tmp_path / "wd"),
        **fields}}}))
    return inv


def cli(tmp_path, *args):
    env = dict(os.environ, BENCHFLEET_CACHE=str(tmp_path / "cache"))
    return subprocess.run([sys.executable, "-m", "orchestrator"] + [str(a) for a in args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def probe_doc(**parts):
    doc = {"agent_version": "x", "cores": {"listed": 2, "usable": 2, "os_cpu_count": 2},
           "runtimes": {"tflite_runtime": {"available": False, "reason": "missing",
                                           "hint": "pip install tflite-runtime"}}}
    doc.update(parts)
    return json.dumps(doc).encode()


UNUSABLE = [
    ("nested", b"[" * 100000 + b"]" * 100000, "nested too deeply"),
    ("not-an-object", b"[1, 2, 3]", "not a JSON object"),
    ("not-json", b"Segmentation fault\n", "unusable"),
    ("nan", b'{"cores": NaN}', "unusable"),
    ("huge", b'{"pad": "' + b"x" * (5 * 1024 * 1024) + b'"}', "past the"),
]


@pytest.mark.parametrize("output,words", [c[1:] for c in UNUSABLE], ids=[c[0] for c in UNUSABLE])
def test_an_unusable_probe_is_one_clear_line_not_a_traceback(tmp_path, output, words):
    proc = cli(tmp_path, "devices", "probe", "-i", fake_device(tmp_path, output))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    [line] = [l for l in proc.stderr.splitlines() if l.startswith("liar: probe failed: ")]
    assert words in line, line
    assert not (tmp_path / "cache" / "probes" / "liar.json").exists()   # nothing cached


def test_a_probe_of_the_wrong_shape_is_read_as_far_as_it_is_right(tmp_path):
    doc = probe_doc(runtimes={"tflite_runtime": "yes", "ai_edge_litert": [1],
                              "tensorflow": {"available": "true", "version": 7,
                                             "tensorrt": "on"}},
                    cores=[64], gpu="GTX", coral=["present"], jetson=5)
    inv = fake_device(tmp_path, doc)
    proc = cli(tmp_path, "devices", "probe", "-i", inv)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # "available": "true" is not True: nothing is called available on a string's word
    [can] = [l for l in proc.stdout.splitlines() if l.startswith("liar can run: ")]
    assert "tensorflow" not in can and "tflite" not in can, can
    plan = cli(tmp_path, "plan", ROOT / "suites" / "quickstart.yaml", "-i", inv)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "Traceback" not in plan.stderr and "liar" in plan.stdout


def test_device_words_reach_the_console_without_control_characters(tmp_path):
    # The device's own words reach the console where a rule quotes them: the GPU's reason.
    doc = probe_doc(gpu={"gpus": [], "reason": HOSTILE},
                    runtimes={"tensorrt": {"available": True, "version": "10.8"}})
    inv = fake_device(tmp_path, doc, accelerators=["gpu-nvidia"])
    proc = cli(tmp_path, "devices", "probe", "-i", inv)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout + proc.stderr
    assert ESC not in text and "\x07" not in text and "\r" not in text
    assert "click" in text                                      # the words stay, inert
    assert not any(l.startswith("forged: ok") for l in text.splitlines())   # no forged line
    plan = cli(tmp_path, "plan", ROOT / "suites" / "quickstart.yaml", "-i", inv)
    assert plan.returncode == 0, plan.stderr
    assert ESC not in plan.stdout and "\r" not in plan.stdout
    # the cached probe (kept as the device sent it) still says what it said
    cached = json.loads((tmp_path / "cache" / "probes" / "liar.json").read_text())
    assert cached["gpu"]["reason"] == HOSTILE


def test_a_damaged_cached_probe_is_planned_as_unprobed(tmp_path):
    inv = fake_device(tmp_path, probe_doc())
    probes = tmp_path / "cache" / "probes"
    probes.mkdir(parents=True)
    (probes / "liar.json").write_text("[" * 50000 + "]" * 50000)
    plan = cli(tmp_path, "plan", ROOT / "suites" / "quickstart.yaml", "-i", inv)
    assert plan.returncode == 0, plan.stderr
    assert "not probed" in plan.stdout and "Traceback" not in plan.stderr
