"""ssh_config wins where the inventory is silent: a real ~/.ssh/config, real sshd devices on
non-default loopback ports, the real CLI. Also ProxyJump through one lab device to the other,
with the jump host's key checked as strictly as the device's."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def home_with_ssh_config(tmp_path, text):
    """A HOME whose ~/.ssh/config is `text` (the CLI reads it as `ssh` would)."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(text)
    return home


def cli(home, tmp_path, *args):
    env = dict(os.environ, HOME=str(home), BENCHFLEET_CACHE=str(tmp_path / "cache"))
    return subprocess.run([sys.executable, "-m", "orchestrator"] + [str(a) for a in args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def inventory(tmp_path, devices):
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump({"devices": devices}))
    return path


def lab_entry(dev, **fields):
    """Only what ssh_config cannot say: where host keys and the workdir are, which Python."""
    return dict({"known_hosts": dev.known_hosts, "workdir": dev.workdir,
                 "python": sys.executable}, **fields)


def test_ssh_config_supplies_port_user_key_and_timeout_the_inventory_leaves_out(tmp_path, ssh_lab):
    dev = ssh_lab.devices[0]
    home = home_with_ssh_config(tmp_path, (
        "Host pi\n  HostName 127.0.0.1\n  Port %d\n  User root\n  IdentityFile %s\n"
        "  ConnectTimeout 3\n" % (dev.port, dev.identity_file)))
    inv = inventory(tmp_path, {"pi": lab_entry(dev, host="pi")})
    listed = cli(home, tmp_path, "devices", "list", "-v", "--json", "-i", inv)
    assert listed.returncode == 0, listed.stderr
    fields = json.loads(listed.stdout)[0]["fields"]
    assert fields["host"] == {"value": "127.0.0.1", "source": "ssh_config"}
    assert fields["port"] == {"value": dev.port, "source": "ssh_config"}
    assert fields["user"] == {"value": "root", "source": "ssh_config"}
    assert fields["connect_timeout_s"] == {"value": 3.0, "source": "ssh_config"}
    assert fields["identity_file"] == {"value": dev.identity_file, "source": "ssh_config"}
    text = cli(home, tmp_path, "devices", "list", "-v", "-i", inv).stdout
    assert "root@127.0.0.1:%d" % dev.port in text
    assert any(l.split()[:3] == ["port", str(dev.port), "ssh_config"] for l in text.splitlines())
    probe = cli(home, tmp_path, "devices", "probe", "-i", inv, "--json")
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout)["pi"]["probe"]["python"]["executable"] == sys.executable


def test_a_field_written_in_the_inventory_wins_over_ssh_config(tmp_path, ssh_lab):
    dev = ssh_lab.devices[0]
    home = home_with_ssh_config(tmp_path, (
        "Host pi\n  HostName 127.0.0.1\n  Port 1\n  User nobody\n  IdentityFile %s\n"
        % dev.identity_file))
    inv = inventory(tmp_path, {"pi": lab_entry(dev, host="pi", port=dev.port, user="root")})
    fields = json.loads(cli(home, tmp_path, "devices", "list", "--json", "-i", inv).stdout)[0]["fields"]
    assert fields["port"] == {"value": dev.port, "source": "inventory"}
    assert fields["user"] == {"value": "root", "source": "inventory"}
    probe = cli(home, tmp_path, "devices", "probe", "-i", inv, "--json")
    assert probe.returncode == 0, probe.stderr


def test_ssh_alias_shows_the_port_of_its_entry_not_22(tmp_path, ssh_lab):
    dev = ssh_lab.devices[1]
    home = home_with_ssh_config(tmp_path, (
        "Host lab-b\n  HostName 127.0.0.1\n  Port %d\n  User root\n  IdentityFile %s\n"
        % (dev.port, dev.identity_file)))
    inv = inventory(tmp_path, {"b": lab_entry(dev, ssh_alias="lab-b")})
    listed = cli(home, tmp_path, "devices", "list", "-i", inv)
    assert "root@127.0.0.1:%d" % dev.port in listed.stdout, listed.stdout + listed.stderr
    assert cli(home, tmp_path, "devices", "probe", "-i", inv, "--json").returncode == 0


def test_proxy_jump_through_one_lab_device_reaches_the_other(tmp_path, ssh_lab):
    jump, dev = ssh_lab.devices
    home = home_with_ssh_config(tmp_path, (
        "Host jump\n  HostName 127.0.0.1\n  Port %d\n  User root\n  IdentityFile %s\n"
        % (jump.port, jump.identity_file)))
    inv = inventory(tmp_path, {"inner": lab_entry(dev, host="127.0.0.1", port=dev.port,
                                                  user="root", identity_file=dev.identity_file,
                                                  proxy_jump="jump")})
    fields = json.loads(cli(home, tmp_path, "devices", "list", "--json", "-i", inv).stdout)[0]["fields"]
    assert fields["proxy_jump"] == {"value": "jump", "source": "inventory"}
    probe = cli(home, tmp_path, "devices", "probe", "-i", inv, "--json")
    assert probe.returncode == 0, probe.stdout + probe.stderr
    # The jump host's key must be known too: with only the device's own entry, refused.
    own = tmp_path / "only_inner"
    own.write_text("".join(l for l in Path(dev.known_hosts).read_text().splitlines(True)
                           if ":%d]" % dev.port in l))
    inv = inventory(tmp_path, {"inner": lab_entry(dev, host="127.0.0.1", port=dev.port,
                                                  user="root", identity_file=dev.identity_file,
                                                  proxy_jump="jump", known_hosts=str(own))})
    refused = cli(home, tmp_path, "devices", "probe", "-i", inv, "--json")
    error = json.loads(refused.stdout)["inner"]["error"]
    assert refused.returncode == 1 and "jump host [127.0.0.1]:%d" % jump.port in error, error
