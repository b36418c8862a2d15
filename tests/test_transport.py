"""Transports against real things: LocalTransport and SshTransport over a real sshd (tests/sshlab)."""

import os
import subprocess
import time
import uuid

import pytest

import sshlab
from orchestrator.errors import CommandTimeout, HostKeyError, TransportError
from orchestrator.transport.hostkeys import trust_host_key
from orchestrator.transport.ssh import SshTransport
from orchestrator.transport import make_transport
from orchestrator.transport.local import LocalTransport


@pytest.fixture(params=["local", "ssh"])
def tr(request, tmp_path):
    """(transport, base folder on the 'device') for each kind of transport."""
    if request.param == "local":
        with LocalTransport("local") as t:
            yield t, str(tmp_path / "dev")
        return
    lab = request.getfixturevalue("ssh_lab")
    device = lab.devices[0]
    with make_transport(device.as_device()) as t:
        yield t, os.path.join(device.workdir, "t-" + uuid.uuid4().hex[:8])


def _fingerprint(pub):
    out = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True)
    return out.stdout.split()[1]


def _device(lab_device, **overrides):
    return lab_device.as_device(**overrides)


def test_run_passes_nasty_args_verbatim(tr):
    t, base = tr
    t.mkdirs(base)
    script = 'cd "$0" && printf "%s\\n" "$@"'
    r = t.run(["sh", "-c", script, base, "a b", "$(touch x)", "-n", "it's"], timeout=20)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines() == ["a b", "$(touch x)", "-n", "it's"]
    assert not t.exists(base + "/x")


def test_run_quotes_env_values_and_returns_exit_code(tr):
    t, _ = tr
    value = "it's $(touch y) `z` \"q\" ; exit 9"
    r = t.run(["sh", "-c", 'printf "%s|%s" "$A" "$B_2"; exit 7'], timeout=20,
              env={"A": value, "B_2": "-n"})
    assert (r.exit_code, r.stdout) == (7, value + "|-n")


def test_bad_env_name_is_refused(tr):
    t, _ = tr
    with pytest.raises(TransportError, match="bad environment variable name"):
        t.run(["true"], timeout=10, env={"A;rm -rf /": "x"})


def test_files_roundtrip_and_atomic_put_leaves_no_tmp(tr, tmp_path):
    t, base = tr
    local = tmp_path / "payload.bin"
    data = os.urandom(200_000)
    local.write_bytes(data)
    t.mkdirs(base + "/sub/deeper")
    t.mkdirs(base + "/sub/deeper")  # idempotent
    dest = base + "/sub/deeper/payload.bin"
    assert not t.exists(dest)
    t.put(local, dest)
    t.put(local, dest)  # replacing an existing file is fine too
    assert t.exists(dest)
    assert t.listdir(base + "/sub/deeper") == ["payload.bin"]
    assert t.read_bytes(dest, len(data)) == data
    assert t.read_bytes(dest, len(data), offset=199_990) == data[199_990:]
    assert t.read_bytes(base + "/absent", 10) is None
    assert t.file_size(dest) == len(data) and t.file_size(base + "/absent") is None
    with pytest.raises(TransportError, match="more than the 100 allowed"):
        t.read_bytes(dest, 100)
    back = tmp_path / "back.bin"
    t.get(dest, back)
    assert back.read_bytes() == data
    assert [p for p in os.listdir(tmp_path) if ".tmp-" in p] == []


def test_home_relative_paths_expand_to_the_device_home(tr):
    t, _ = tr
    home = t.run(["sh", "-c", 'printf %s "$HOME"'], timeout=10).stdout
    assert t.expand("~") == home
    assert t.expand("~/.benchfleet") == home + "/.benchfleet"


def test_command_timeout_raises_command_timeout(tr):
    t, _ = tr
    start = time.monotonic()
    with pytest.raises(CommandTimeout, match="within 1s"):
        t.run(["sleep", "10"], timeout=1)
    assert time.monotonic() - start < 6
    assert t.run(["echo", "still usable"], timeout=10).stdout == "still usable\n"


def test_put_of_missing_local_file_names_device(tr):
    t, base = tr
    t.mkdirs(base)
    with pytest.raises(TransportError) as err:
        t.put("/nonexistent/file", base + "/f")
    assert err.value.device == t.name
    assert [n for n in t.listdir(base) if n.startswith(".tmp-")] == []


# -- SSH only: host keys, connection errors, aliases -------------------------------------------

def test_unknown_host_key_is_refused_with_fingerprint_and_fix(ssh_lab, tmp_path):
    dev = ssh_lab.devices[0]
    known = tmp_path / "known_hosts"
    known.write_text("# nothing trusted yet\n")
    with pytest.raises(HostKeyError) as err, SshTransport(_device(dev, known_hosts=str(known))) as t:
        t.run(["true"], timeout=10)
    msg = str(err.value)
    assert "127.0.0.1:%d" % dev.port in msg
    assert "ssh-ed25519 " + _fingerprint(str(dev.host_key) + ".pub") in msg
    assert "benchfleet devices trust %s" % dev.name in msg
    assert "ssh-keyscan -p %d 127.0.0.1 >> %s" % (dev.port, known) in msg
    assert known.read_text() == "# nothing trusted yet\n"  # refused, never auto-added


def test_changed_host_key_is_refused(ssh_lab, tmp_path):
    dev = ssh_lab.devices[0]
    other = sshlab.keygen(tmp_path / "other_key", "impostor")
    known = tmp_path / "known_hosts"
    known.write_text(sshlab.known_hosts_line(dev.port, str(other) + ".pub"))
    before = known.read_text()
    device = _device(dev, known_hosts=str(known))
    with pytest.raises(HostKeyError, match="CHANGED") as err, SshTransport(device) as t:
        t.run(["true"], timeout=10)
    assert "do not trust it blindly" in str(err.value)
    assert _fingerprint(str(other) + ".pub") in str(err.value)
    with pytest.raises(HostKeyError, match="CHANGED"):
        trust_host_key(device, str(known))
    assert known.read_text() == before


def test_trust_host_key_then_connect_works(ssh_lab, tmp_path):
    dev = ssh_lab.devices[1]
    known = tmp_path / "ssh" / "known_hosts"
    device = _device(dev, known_hosts=str(known))
    fp = trust_host_key(device, str(known))
    assert fp == _fingerprint(str(dev.host_key) + ".pub")
    assert trust_host_key(device, str(known)) == fp  # already there: not appended twice
    lines = known.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("[127.0.0.1]:%d ssh-ed25519 " % dev.port)
    with SshTransport(device) as t:
        assert t.run(["echo", "ok"], timeout=10).stdout == "ok\n"


def test_closed_port_gives_transport_error_naming_device_quickly(ssh_lab):
    device = _device(ssh_lab.devices[0], port=sshlab.free_port())
    start = time.monotonic()
    with pytest.raises(TransportError, match="connection refused") as err, \
            SshTransport(device) as t:
        t.run(["true"], timeout=10)
    assert time.monotonic() - start < 5
    assert str(err.value).startswith(device.name + ": ")
    assert not isinstance(err.value, HostKeyError)


def test_ssh_config_alias_resolves_host_port_user(ssh_lab, tmp_path):
    dev = ssh_lab.devices[0]
    cfg = tmp_path / "ssh_config"
    cfg.write_text("Host lab-alias\n  HostName 127.0.0.1\n  Port %d\n  User root\n"
                   "  IdentityFile %s\n  ForwardAgent yes\n" % (dev.port, dev.identity_file))
    from orchestrator.config.inventory import Device
    device = Device(name="aliased", ssh_alias="lab-alias", known_hosts=dev.known_hosts)
    with SshTransport(device, ssh_config_path=str(cfg)) as t:
        assert (t.target.host, t.target.port, t.target.user) == ("127.0.0.1", dev.port, "root")
        assert t.run(["whoami"], timeout=10).stdout == "root\n"
        assert t._conn.forward_agent is False  # `ForwardAgent yes` in ssh_config is overridden


def test_close_then_next_call_reconnects(ssh_lab):
    with SshTransport(ssh_lab.devices[0].as_device()) as t:
        assert t.run(["echo", "1"], timeout=10).stdout == "1\n"
        t.close()
        assert not t.is_active()
        assert t.run(["echo", "2"], timeout=10).stdout == "2\n"
        assert t.is_active()


def test_lab_inventory_yaml_loads_and_connects(ssh_lab, tmp_path):
    from orchestrator.config.inventory import load_inventory
    inv = load_inventory(ssh_lab.write_inventory(tmp_path / "lab.yaml"))
    assert inv.names() == ["lab1", "lab2"]
    for device in inv:
        with make_transport(device) as t:
            assert t.run(["echo", device.name], timeout=10).stdout == device.name + "\n"
