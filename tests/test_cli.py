"""The command line as a user meets it: listing, validating, probing, a controller without
TensorFlow, user model files, and Ctrl-C. Every test runs the real CLI in a subprocess."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from fixtures_models import TEST_ROOT, tiny_models  # noqa: F401 - pytest fixture

ROOT = Path(__file__).resolve().parents[1]

# Imported first by every Python started with this folder on PYTHONPATH: TensorFlow disappears
# (import and package metadata), as on a laptop that never installed it.
HIDE_TENSORFLOW = '''
import importlib.abc, importlib.metadata as md, sys
class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf_keras"):
            raise ImportError("No module named %r" % name)
sys.meta_path.insert(0, _Hide())
_version = md.version
def version(name):
    if name.startswith(("tensorflow", "tf-", "intel-tensorflow")):
        raise md.PackageNotFoundError(name)
    return _version(name)
md.version = version
'''


def cli(*args, env=None, timeout=300):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "orchestrator"] + [str(a) for a in args],
                          cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)


def write_yaml(path, doc):
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def local_inventory(tmp_path, python=sys.executable):
    return write_yaml(tmp_path / "local.yaml", {"devices": {"localhost": {
        "transport": "local", "python": python, "workdir": str(tmp_path / "wd")}}})


QUICK = {"warmup_runs": 2, "warmup_min_s": 0.01, "runs": 20, "min_duration_s": 0.05,
         "max_duration_s": 5, "case_timeout_s": 120}


def test_help_does_not_import_heavy_packages():
    code = ("import sys, orchestrator.cli as c; c.build_parser();"
            "print(sorted(m for m in ('pandas', 'tensorflow', 'fabric', 'paramiko', 'numpy',"
            " 'sqlalchemy', 'matplotlib', 'scipy')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_devices_list_shows_only_set_up_devices_by_default_and_examples_on_request():
    proc = cli("devices", "list")
    assert proc.returncode == 0, proc.stderr
    assert "(this machine)" in proc.stdout and "localhost" in proc.stdout
    assert "rpi4-coral" not in proc.stdout   # nobody configured it: a plain run never tries it
    proc = cli("devices", "list", "-i", "inventory/examples", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert set(rows) == {"gtx1660-host", "rpi4-coral", "jetson-nano"}
    assert rows["rpi4-coral"]["fields"]["user"] == {"value": "pi", "source": "inventory"}


def test_a_plan_without_dash_i_covers_only_the_devices_set_up_in_inventory():
    proc = cli("plan", "suites/quickstart.yaml", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [d["name"] for d in json.loads(proc.stdout)["devices"]] == ["localhost"]


def test_validate_accepts_examples_and_names_every_bad_file(tmp_path):
    ok = cli("validate", "suites/quickstart.yaml", "suites/movenet.yaml", "-i", "inventory",
             "-i", "inventory/examples")
    assert ok.returncode == 0 and "ok: 4 devices, 2 suites" in ok.stdout, ok.stderr
    bad = write_yaml(tmp_path / "bad.yaml", {"name": "x", "models": [], "matrix": []})
    proc = cli("validate", bad, "-i", tmp_path / "missing.yaml")
    assert proc.returncode == 2
    assert "missing.yaml: file not found" in proc.stderr
    assert "bad.yaml: models:" in proc.stderr


def test_devices_probe_caches_the_probe_and_plan_uses_it(tmp_path):
    env = {"BENCHFLEET_CACHE": str(tmp_path / "cache")}
    inv = local_inventory(tmp_path)
    proc = cli("devices", "probe", "-i", inv, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    probe = json.loads(proc.stdout)["localhost"]["probe"]
    cores = probe["cores"]["usable"]
    assert json.loads((tmp_path / "cache/probes/localhost.json").read_text()) == probe
    text = cli("devices", "probe", "-i", inv, env=env)
    assert "localhost can run: synthetic" in text.stdout, text.stdout + text.stderr
    suite = write_yaml(tmp_path / "s.yaml", {
        "name": "pin", "settings": QUICK, "models": [{"name": "spin", "synthetic_ms": 0.1}],
        "matrix": [{"runtime": "synthetic", "affinity": [[0], [cores + 7]]}]})
    plan = cli("plan", suite, "-i", inv, env=env)
    assert plan.returncode == 0, plan.stderr
    assert "affinity core %d is beyond the device's %d cores" % (cores + 7, cores) in plan.stdout
    assert "1 run, 1 skipped" in plan.stdout


def test_controller_without_tensorflow_runs_user_and_synthetic_models(tmp_path, tiny_models):
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(HIDE_TENSORFLOW)
    env = {"PYTHONPATH": str(hide), "BENCHFLEET_CACHE": str(tmp_path / "empty-cache")}
    suite = write_yaml(tmp_path / "s.yaml", {
        "name": "notf", "settings": QUICK, "cooldown": {"mode": "none", "seconds": 0},
        "models": [{"name": "mine", "path": str(tiny_models["tflite-fp32"].local_path)},
                   {"name": "builtin", "builtin": "movenet-tiny", "variants": ["tflite-fp32"]},
                   {"name": "spin", "synthetic_ms": 0.1}],
        "matrix": [{"runtime": "tflite"}, {"runtime": "synthetic"}]})
    results = tmp_path / "results"
    proc = cli("run", suite, "-i", local_inventory(tmp_path), "--results-dir", results, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = next(p for p in results.iterdir() if p.is_dir())
    with open(run_dir / "results.csv") as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    assert rows["mine"]["status"] == "ok" and rows["mine"]["variant"] == "file"
    assert rows["mine"]["model_sha256"] == tiny_models["tflite-fp32"].sha256
    assert rows["spin"]["status"] == "ok"
    assert rows["builtin"]["status"] == "skipped"
    assert "needs TensorFlow on the controller" in rows["builtin"]["reason"]


def test_unwritable_results_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    suite = write_yaml(tmp_path / "s.yaml", {
        "name": "s", "settings": QUICK, "models": [{"name": "spin", "synthetic_ms": 0.1}],
        "matrix": [{"runtime": "synthetic"}]})
    proc = cli("run", suite, "-i", local_inventory(tmp_path), "--results-dir", blocker)
    assert proc.returncode == 2
    assert "--results-dir %s: cannot create" % blocker in proc.stderr
    assert "Traceback" not in proc.stderr


def test_ctrl_c_exits_130_and_keeps_results_already_fetched(tmp_path):
    slow = dict(QUICK, min_duration_s=1.0, runs=10)
    suite = write_yaml(tmp_path / "s.yaml", {
        "name": "slow", "settings": slow, "cooldown": {"mode": "fixed", "seconds": 30},
        "models": [{"name": "spin", "synthetic_ms": 0.2}],
        "matrix": [{"runtime": "synthetic", "threads": [1, 2, 3]}]})
    results = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", str(suite), "-i",
                             str(local_inventory(tmp_path)), "--results-dir", str(results)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        raw = None
        deadline = time.time() + 120
        while time.time() < deadline:   # wait until the first case's result was fetched
            found = list(results.glob("*/raw/localhost/*.json"))
            if found:
                raw = found[0]
                break
            time.sleep(0.2)
        assert raw is not None, "no result fetched in time"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        _stop_local_agents(tmp_path / "wd")
    assert proc.returncode == 130, out + err
    assert "interrupted" in err
    manifest = json.loads((raw.parents[2] / "manifest.json").read_text())
    assert manifest["state"] == "interrupted"
    assert json.loads(raw.read_text())["status"] == "ok"


def _stop_local_agents(workdir):
    for status in Path(workdir).glob("runs/*/out/status.json"):
        pid = json.loads(status.read_text()).get("pid")
        try:
            os.killpg(pid, signal.SIGTERM)
        except (OSError, TypeError):
            pass


def test_suite_representative_data_calibrates_the_int8_build(tmp_path, tiny_models):
    import numpy as np
    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.RandomState(7)
    for i in range(4):   # bright images only: a different calibration than the default
        np.save(calib / ("s%d.npy" % i), rng.randint(200, 256, size=(96, 96, 3)).astype(np.uint8))
    suite = write_yaml(tmp_path / "s.yaml", {
        "name": "calib", "settings": QUICK, "cooldown": {"mode": "none", "seconds": 0},
        "models": [{"name": "tiny", "builtin": "movenet-tiny", "variants": ["tflite-int8"],
                    "representative": "calib"}],
        "matrix": [{"runtime": "tflite"}]})
    results = tmp_path / "results"
    # The shared test cache: the samples are seeded, so the calibrated build is reused next time.
    env = {"BENCHFLEET_CACHE": TEST_ROOT}
    proc = cli("run", suite, "-i", local_inventory(tmp_path), "--results-dir", results, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(next(p for p in results.iterdir() if p.is_dir()) / "results.csv") as f:
        [row] = list(csv.DictReader(f))
    assert row["status"] == "ok"
    assert row["model_sha256"] != tiny_models["tflite-int8"].sha256   # calibrated differently


def test_devices_probe_over_ssh_uploads_the_agent_and_caches_each_probe(tmp_path, ssh_lab):
    env = {"BENCHFLEET_CACHE": str(tmp_path / "cache")}
    inv = ssh_lab.write_inventory(tmp_path / "lab.yaml", python=sys.executable)
    proc = cli("devices", "probe", "-i", inv, env=env)
    assert proc.returncode == 0, proc.stderr
    for dev in ssh_lab.devices:
        cached = json.loads((tmp_path / "cache/probes" / (dev.name + ".json")).read_text())
        assert cached["python"]["executable"] == sys.executable
        assert list(Path(dev.workdir, "agent").glob("*.pyz"))   # uploaded into its own workdir
    one = cli("devices", "probe", ssh_lab.devices[0].name, "-i", inv, "--json", env=env)
    assert one.returncode == 0 and list(json.loads(one.stdout)) == [ssh_lab.devices[0].name]
