"""`benchfleet plan suites/movenet.yaml` for the three seed devices, each probed for real by the
agent on a fake root tree (tests/fixtures/trees.py) standing in for its hardware.

The probe reads hardware facts from the tree; installed Python runtimes come from the Python
that runs it, so each device's software is declared here, as that device would have it.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fixtures import trees

ROOT = Path(__file__).resolve().parents[1]

TF_TRT = {"available": True, "version": "2.16.1", "reason": None, "hint": None,
          "tensorrt": {"built_with_tensorrt": True, "usable": True, "reason": None}}
MISSING = {"available": False, "version": None}
SOFTWARE = {   # what each device has installed, as its probe would report it
    "gtx1660-host": {"tensorflow": {   # pip's TensorFlow: no TensorRT in the build
        "available": True, "version": "2.16.1", "reason": None, "hint": None,
        "tensorrt": {"built_with_tensorrt": False, "trt_convert": True, "libnvinfer": None,
                     "usable": False, "reason": "tensorflow built without TensorRT"}}},
    "rpi4-coral": {"tensorflow": dict(MISSING, reason="tensorflow not installed"),
                   "tflite_runtime": {"available": True, "version": "2.14.0"},
                   "pycoral": {"available": True, "version": "2.0.0"}},
    "jetson-nano": {"tensorflow": TF_TRT,
                    "tensorrt": dict(MISSING, reason="tensorrt not installed")},
}
TREES = {"gtx1660-host": trees.make_gtx1660_host, "rpi4-coral": trees.make_pi4_coral,
         "jetson-nano": trees.make_jetson_nano_jp4}


@pytest.fixture(scope="module")
def seed_plan(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    for name, build in TREES.items():
        tree = build(str(tmp_path_factory.mktemp(name)))
        out = subprocess.run([sys.executable, "-m", "agent", "probe", "--root", str(tree)],
                             cwd=ROOT, capture_output=True, text=True, check=True, timeout=60)
        probe = json.loads(out.stdout)
        probe["runtimes"].update(SOFTWARE[name] or {})
        (cache / "probes").mkdir(exist_ok=True)
        (cache / "probes" / (name + ".json")).write_text(json.dumps(probe))
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "plan", "suites/movenet.yaml",
                           "-i", "inventory/examples"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=dict(__import__("os").environ, BENCHFLEET_CACHE=str(cache)))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def section(text, device):
    block = text.split("\n\n")
    return next(b for b in block if b.startswith(device + " "))


def line(block, label):
    """The RUN/SKIP line of a case: '  RUN   c-<id>  <label>[  <reason>]'."""
    for text in block.splitlines():
        parts = text.split(None, 2)
        if len(parts) == 3 and parts[0] in ("RUN", "SKIP"):
            rest = parts[2]
            if rest == label or rest.startswith(label + "  "):
                return text
    raise AssertionError("no case %r in:\n%s" % (label, block))


def test_gtx1660_fake_tree_plan_runs_tf_and_skips_tftrt_without_tensorrt(seed_plan):
    gpu = section(seed_plan, "gtx1660-host")
    assert "not probed" not in gpu
    assert line(gpu, "thunder/savedmodel tensorflow").startswith("  RUN")
    trt = line(gpu, "thunder/savedmodel tf-trt")
    assert trt.startswith("  SKIP") and "tensorflow cannot use TensorRT" in trt
    assert "install a TensorFlow build with TensorRT" in trt


def test_pi4_coral_fake_tree_plan_explains_tensorflow_and_tftrt_skips(seed_plan):
    pi = section(seed_plan, "rpi4-coral")
    tf = line(pi, "thunder/savedmodel tensorflow")
    assert tf.startswith("  SKIP") and "tensorflow not installed; pip install tensorflow" in tf
    assert "tf-trt needs a gpu-nvidia accelerator" in line(pi, "thunder/savedmodel tf-trt")
    for label in ("lightning/int8-edgetpu edgetpu", "thunder/int8-edgetpu edgetpu",
                  "lightning/tflite-int8 tflite t4"):
        assert line(pi, label).startswith("  RUN"), label


def test_jetson_nano_fake_tree_plan_skips_tensorrt_with_jetpack_hint(seed_plan):
    jetson = section(seed_plan, "jetson-nano")
    assert line(jetson, "thunder/savedmodel tf-trt fp16").startswith("  RUN")
    assert line(jetson, "thunder/savedmodel tensorflow").startswith("  RUN")
    trt = line(jetson, "thunder/onnx tensorrt fp16")
    assert trt.startswith("  SKIP") and "tensorrt not installed" in trt
    assert "python3-libnvinfer" in trt
