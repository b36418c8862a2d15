"""`benchfleet devices add` against a real sshd on loopback: the file it writes, the host key it
shows and trusts only on confirmation, and the capability report of the probe."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

import sshlab
from orchestrator.config.inventory import load_inventory

ROOT = Path(__file__).resolve().parents[1]


def cli(tmp_path, *args, stdin=""):
    env = dict(os.environ, BENCHFLEET_CACHE=str(tmp_path / "cache"))
    return subprocess.run([sys.executable, "-m", "orchestrator"] + [str(a) for a in args],
                          cwd=ROOT, env=env, input=stdin, capture_output=True, text=True,
                          timeout=120)


def add_args(dev, tmp_path, name="newpi", known=None):
    return ["devices", "add", name, "--host", "127.0.0.1", "--port", dev.port, "--user", "root",
            "--identity-file", dev.identity_file, "--known-hosts", known or tmp_path / "kh",
            "--workdir", tmp_path / "wd", "--python", sys.executable, "--tags", "lab,arm",
            "--inventory-dir", tmp_path / "inv"]


def fingerprint(dev):
    out = subprocess.run(["ssh-keygen", "-lf", str(dev.host_key) + ".pub"], capture_output=True,
                         text=True, check=True).stdout
    return out.split()[1]   # SHA256:...


def test_add_with_yes_writes_the_file_trusts_the_key_and_reports_what_runs(tmp_path, ssh_lab):
    dev = ssh_lab.devices[0]
    proc = cli(tmp_path, *add_args(dev, tmp_path), "--yes")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert fingerprint(dev) in proc.stderr   # shown before it is trusted
    written = tmp_path / "inv" / "newpi.yaml"
    doc = yaml.safe_load(written.read_text())
    assert doc["devices"]["newpi"] == {
        "host": "127.0.0.1", "port": dev.port, "user": "root", "identity_file": dev.identity_file,
        "known_hosts": str(tmp_path / "kh"), "python": sys.executable,
        "workdir": str(tmp_path / "wd"), "tags": ["lab", "arm"]}
    assert load_inventory([tmp_path / "inv"])["newpi"].port == dev.port
    assert "[127.0.0.1]:%d" % dev.port in (tmp_path / "kh").read_text()
    assert "newpi can run: synthetic" in proc.stdout
    # This controller has TensorFlow (the device is this machine) but no NVIDIA GPU: the
    # report names what cannot run and how to fix it.
    assert "tf-trt" in proc.stdout and "needs a gpu-nvidia accelerator" in proc.stdout
    assert json.loads((tmp_path / "cache" / "probes" / "newpi.json").read_text())["python"]


def test_add_asks_before_trusting_and_a_no_writes_nothing(tmp_path, ssh_lab):
    dev = ssh_lab.devices[1]
    proc = cli(tmp_path, *add_args(dev, tmp_path), stdin="n\n")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Trust it and add it to" in proc.stderr and fingerprint(dev) in proc.stderr
    assert "not trusted; nothing was written" in proc.stderr
    assert not (tmp_path / "inv" / "newpi.yaml").exists() and not (tmp_path / "kh").exists()
    proc = cli(tmp_path, *add_args(dev, tmp_path), "--no-probe", stdin="y\n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "inv" / "newpi.yaml").exists()
    assert "can run" not in proc.stdout


def test_add_refuses_a_name_that_exists_and_a_bad_field(tmp_path, ssh_lab):
    dev = ssh_lab.devices[0]
    (tmp_path / "inv").mkdir()
    (tmp_path / "inv" / "other.yaml").write_text("devices:\n  newpi:\n    host: 10.0.0.9\n")
    proc = cli(tmp_path, *add_args(dev, tmp_path), "--yes")
    assert proc.returncode == 2 and "a device 'newpi' is already defined there" in proc.stderr
    proc = cli(tmp_path, *add_args(dev, tmp_path, name="Bad Name"), "--yes")
    assert proc.returncode == 2 and "NAME 'Bad Name'" in proc.stderr
    args = add_args(dev, tmp_path, name="fresh")
    args[args.index("--tags") + 1] = "UPPER"
    proc = cli(tmp_path, *args, "--yes")
    assert proc.returncode == 2 and "devices add fresh: tags[0]" in proc.stderr, proc.stderr
    assert not (tmp_path / "inv" / "fresh.yaml").exists()


def test_add_of_an_unreachable_host_is_a_clear_error(tmp_path):
    port = sshlab.free_port()
    proc = cli(tmp_path, "devices", "add", "gone", "--host", "127.0.0.1", "--port", port,
               "--known-hosts", tmp_path / "kh", "--inventory-dir", tmp_path / "inv", "--yes")
    assert proc.returncode == 1
    assert "gone: cannot fetch the host key of 127.0.0.1:%d" % port in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "inv").exists()
