"""SSH devices that misbehave, against real things: real sockets on 127.0.0.1 that accept TCP and
never answer (or hang up, or speak something else), real sshd servers (tests/sshlab.py) with
foreign host keys in known_hosts or a permissive umask, and the real CLI in a subprocess.

Every failure ends in one clear error that names the device, the cause and the fix; nothing of
paramiko (its tracebacks, "No existing session") reaches the console.
"""

import logging
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import paramiko
import pytest
import yaml

import sshlab
from orchestrator.config.inventory import Device
from orchestrator.errors import HostKeyError, TransportError
from orchestrator.transport.hostkeys import trust_host_key
from orchestrator.transport.local import LocalTransport
from orchestrator.transport.ssh import SshTransport

ROOT = Path(__file__).resolve().parents[1]
PARAMIKO_NOISE = ("Traceback", "No existing session", "Error reading SSH protocol banner",
                  "paramiko", "Bad file descriptor")


class TcpServer:
    """A real listening socket on 127.0.0.1; each accepted connection gets `behaviour`:
    "mute" (held open, nothing ever sent), "hangup" (closed at once) or bytes (sent, then
    closed). `accepted` counts connections."""

    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.sock = socket.socket()
        self.sock.bind((sshlab.HOST, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._held = []
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            if self.behaviour == "mute":
                self._held.append(conn)
                continue
            if isinstance(self.behaviour, bytes):
                try:
                    conn.sendall(self.behaviour)
                except OSError:
                    pass
            conn.close()

    def close(self):
        self._stop = True
        self.sock.close()
        for conn in self._held:
            conn.close()


@pytest.fixture
def server(request):
    made = []

    def make(behaviour):
        made.append(TcpServer(behaviour))
        return made[-1]
    yield make
    for s in made:
        s.close()


def _device(name, port, tmp_path, **fields):
    return Device.model_validate(dict({
        "host": sshlab.HOST, "port": port, "user": "root", "connect_timeout_s": 3.0,
        "known_hosts": str(tmp_path / "known_hosts"), "workdir": str(tmp_path / "wd")},
        name=name, **fields))


def _live_paramiko_threads():
    return [t for t in threading.enumerate() if isinstance(t, paramiko.Transport) and t.is_alive()]


class _Records(logging.Handler):
    """Every paramiko log record, whatever handlers the controller installed."""

    def __init__(self):
        logging.Handler.__init__(self, logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def paramiko_records():
    handler = _Records()
    logger = logging.getLogger("paramiko")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def cli(tmp_path, *args, timeout=120):
    env = dict(os.environ, BENCHFLEET_CACHE=str(tmp_path / "cache"))
    return subprocess.run([sys.executable, "-m", "orchestrator"] + [str(a) for a in args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _fingerprint(pub):
    out = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True,
                         check=True)
    return out.stdout.split()[1]


def _assert_no_noise(text):
    for noise in PARAMIKO_NOISE:
        assert noise not in text, "%r on the console:\n%s" % (noise, text)


# -- 9: accepts TCP, never answers -------------------------------------------------------------

def test_silent_device_says_no_banner_within_the_timeout_and_gives_up_in_bounded_time(
        server, tmp_path):
    mute = server("mute")
    device = _device("mute", mute.port, tmp_path)
    start = time.monotonic()
    with pytest.raises(TransportError) as err, SshTransport(device) as t:
        t.run(["true"], timeout=10)
    elapsed = time.monotonic() - start
    msg = str(err.value)
    assert msg.startswith("mute: ")
    assert "no SSH banner from 127.0.0.1:%d within 3 s" % mute.port in msg
    assert "1 attempt" in msg and "connect_timeout_s" in msg   # how many tries, and the fix
    _assert_no_noise(msg)
    # One attempt of 3 s: generous but finite (4 attempts with back-off took 7-15 s).
    assert 2.5 <= elapsed < 8, elapsed
    assert mute.accepted == 1


def test_trust_of_a_silent_device_says_no_banner(server, tmp_path):
    mute = server("mute")
    device = _device("mute", mute.port, tmp_path)
    start = time.monotonic()
    with pytest.raises(TransportError) as err:
        trust_host_key(device)
    assert time.monotonic() - start < 8
    assert "no SSH banner from 127.0.0.1:%d within 3 s" % mute.port in str(err.value)
    _assert_no_noise(str(err.value))
    assert not (tmp_path / "known_hosts").exists()


def test_device_that_hangs_up_before_the_banner_is_retried_a_bounded_number_of_times(
        server, tmp_path):
    gone = server("hangup")
    device = _device("hangs-up", gone.port, tmp_path)
    start = time.monotonic()
    with pytest.raises(TransportError) as err, SshTransport(device) as t:
        t.run(["true"], timeout=10)
    msg = str(err.value)
    assert msg.startswith("hangs-up: ")
    assert "127.0.0.1:%d closed the connection before sending its SSH protocol banner" \
        % gone.port in msg
    assert "4 attempts" in msg and "MaxStartups" in msg
    _assert_no_noise(msg)
    assert gone.accepted == 4
    assert time.monotonic() - start < 12


def test_port_that_speaks_another_protocol_is_named_not_ssh(server, tmp_path):
    web = server(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(TransportError) as err, \
            SshTransport(_device("web", web.port, tmp_path)) as t:
        t.run(["true"], timeout=10)
    msg = str(err.value)
    assert "web: " in msg and "protocol banner" in msg and "not sshd" in msg
    _assert_no_noise(msg)


def test_tcp_connect_that_times_out_says_so(tmp_path):
    # A listener whose accept queue is full: Linux drops further SYNs, as a firewall would.
    lst = socket.socket()
    lst.bind((sshlab.HOST, 0))
    lst.listen(0)
    port = lst.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((sshlab.HOST, port))
            fillers.append(s)
        time.sleep(0.2)
        device = _device("filtered", port, tmp_path, connect_timeout_s=2.0)
        start = time.monotonic()
        with pytest.raises(TransportError) as err, SshTransport(device) as t:
            t.run(["true"], timeout=10)
        elapsed = time.monotonic() - start
    finally:
        for s in fillers:
            s.close()
        lst.close()
    msg = str(err.value)
    assert msg.startswith("filtered: ")
    # Depending on the kernel the SYN is dropped (timeout) or answered late; both are clear.
    assert ("no TCP connection to 127.0.0.1:%d within 2 s" % port in msg
            or "no SSH banner from 127.0.0.1:%d" % port in msg), msg
    _assert_no_noise(msg)
    assert elapsed < 8


def test_unresolvable_host_names_the_host(tmp_path):
    device = _device("typo", 22, tmp_path, host="no-such-host.invalid")
    with pytest.raises(TransportError) as err, SshTransport(device) as t:
        t.run(["true"], timeout=10)
    assert str(err.value).startswith("typo: cannot resolve host 'no-such-host.invalid'")


def test_wrong_key_is_an_authentication_error_naming_user_and_fix(ssh_lab, tmp_path):
    dev = ssh_lab.devices[0]
    stranger = sshlab.keygen(tmp_path / "id_stranger", "stranger")
    with pytest.raises(TransportError) as err, \
            SshTransport(dev.as_device(identity_file=str(stranger))) as t:
        t.run(["true"], timeout=10)
    msg = str(err.value)
    assert msg.startswith(dev.name + ": authentication as root at 127.0.0.1:%d failed" % dev.port)
    assert "identity_file" in msg and "Traceback" not in msg


# -- 10: paramiko's thread stops before its socket closes; its log goes to a file ---------------

def test_failed_handshake_leaves_no_transport_thread_and_no_closed_socket_under_its_reader(
        server, tmp_path, paramiko_records):
    mute = server("mute")
    with pytest.raises(TransportError), SshTransport(_device("mute", mute.port, tmp_path)) as t:
        t.run(["true"], timeout=10)
    assert _live_paramiko_threads() == []      # stopped before the error reached us
    with pytest.raises(TransportError):
        trust_host_key(_device("mute", mute.port, tmp_path))
    assert _live_paramiko_threads() == []
    time.sleep(0.3)   # anything a late thread would still log
    assert not [r for r in paramiko_records if "Bad file descriptor" in r], paramiko_records


def test_closing_a_live_connection_stops_the_thread_before_the_socket(ssh_lab, paramiko_records):
    with SshTransport(ssh_lab.devices[0].as_device()) as t:
        assert t.run(["echo", "hi"], timeout=10).stdout == "hi\n"
        assert t.exists("/")
    assert _live_paramiko_threads() == []
    time.sleep(0.3)
    assert not [r for r in paramiko_records if "Bad file descriptor" in r
                or "Socket exception" in r], paramiko_records


def test_cli_probe_and_trust_of_bad_devices_print_one_clear_line_and_no_paramiko_text(
        server, tmp_path):
    mute, gone = server("mute"), server("hangup")
    inv = tmp_path / "inv.yaml"
    fields = {"host": sshlab.HOST, "user": "root", "connect_timeout_s": 3,
              "known_hosts": str(tmp_path / "known_hosts"), "workdir": str(tmp_path / "wd")}
    inv.write_text(yaml.safe_dump({"devices": {
        "mute": dict(fields, port=mute.port), "gone": dict(fields, port=gone.port),
        "refused": dict(fields, port=sshlab.free_port())}}))
    start = time.monotonic()
    probe = cli(tmp_path, "devices", "probe", "-i", inv)
    assert time.monotonic() - start < 30
    assert probe.returncode == 1
    out = probe.stdout + probe.stderr
    _assert_no_noise(out)
    assert "mute: probe failed: mute: no SSH banner from 127.0.0.1:%d within 3 s" % mute.port in out
    assert "gone: probe failed: gone: " in out and "protocol banner" in out
    assert "refused: probe failed: refused: connection refused" in out
    trust = cli(tmp_path, "devices", "trust", "mute", "-i", inv)
    assert trust.returncode == 1
    _assert_no_noise(trust.stdout + trust.stderr)
    assert "mute: no SSH banner from 127.0.0.1:%d within 3 s" % mute.port in trust.stderr
    # paramiko's own account went to the SSH debug log, for whoever wants the details
    log = (tmp_path / "cache" / "logs" / "ssh.log").read_text()
    assert "paramiko.transport" in log


# -- 11: trust refuses a host whose known key differs, of any type ------------------------------

def _foreign_key_line(tmp_path, port, kind="ecdsa"):
    key = tmp_path / ("foreign_" + kind)
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "old", "-f", str(key)],
                   check=True, stdin=subprocess.DEVNULL)
    return sshlab.known_hosts_line(port, str(key) + ".pub"), str(key) + ".pub"


def test_trust_refuses_a_known_key_of_another_type_and_shows_both_fingerprints(ssh_lab, tmp_path):
    dev = ssh_lab.devices[0]
    line, pub = _foreign_key_line(tmp_path, dev.port)
    known = tmp_path / "known_hosts"
    known.write_text("# mine\n" + line)
    before = known.read_text()
    device = dev.as_device(known_hosts=str(known))
    with pytest.raises(HostKeyError) as err:
        trust_host_key(device, str(known))
    msg = str(err.value)
    assert msg.startswith(dev.name + ": ") and "CHANGED" in msg
    assert "ecdsa-sha2-nistp256 " + _fingerprint(pub) in msg            # what is known
    assert "ssh-ed25519 " + _fingerprint(str(dev.host_key) + ".pub") in msg   # what is offered
    assert "--replace" in msg
    assert known.read_text() == before                                   # nothing appended


def test_cli_trust_refuses_then_replace_swaps_the_key_and_run_connects(ssh_lab, tmp_path):
    dev = ssh_lab.devices[0]
    line, pub = _foreign_key_line(tmp_path, dev.port, "rsa")
    known = tmp_path / "known_hosts"
    other_host = "[10.0.0.9]:2222 " + line.split(" ", 1)[1]
    known.write_text(line + other_host)
    inv = ssh_lab.write_inventory(tmp_path / "inv.yaml", [dev], known_hosts=str(known))
    refused = cli(tmp_path, "devices", "trust", dev.name, "-i", inv)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "trusted" not in refused.stdout
    assert _fingerprint(pub) in refused.stderr
    assert _fingerprint(str(dev.host_key) + ".pub") in refused.stderr
    assert "benchfleet devices trust %s -i %s --replace" % (dev.name, inv) in refused.stderr
    _assert_no_noise(refused.stderr)
    assert known.read_text() == line + other_host
    replaced = cli(tmp_path, "devices", "trust", dev.name, "-i", inv, "--replace")
    assert replaced.returncode == 0, replaced.stderr
    assert "replaced" in replaced.stdout and _fingerprint(pub) in replaced.stdout
    lines = known.read_text().splitlines()
    assert lines[0] == other_host.strip()                     # other hosts are left alone
    assert lines[1].startswith("[127.0.0.1]:%d ssh-ed25519 " % dev.port) and len(lines) == 2
    assert stat.S_IMODE(os.stat(known).st_mode) == 0o600
    with SshTransport(dev.as_device(known_hosts=str(known))) as t:
        assert t.run(["echo", "ok"], timeout=10).stdout == "ok\n"


# -- 13: folders benchfleet creates are 0700, whatever the umask -------------------------------

@pytest.fixture(scope="module")
def loose_sshd(tmp_path_factory):
    """One sshd whose sessions and SFTP run with umask 000 (folders default to 0777)."""
    reason = sshlab.sshd_missing_reason()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("loose")
    os.chmod(root, 0o755)
    lab = sshlab.SshLab(root)
    try:
        yield lab.add("loose", umask=0o000)
    finally:
        lab.stop()


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_ssh_mkdirs_and_agent_folders_are_0700_under_a_permissive_umask(loose_sshd):
    dev = loose_sshd
    with SshTransport(dev.as_device()) as t:
        # the lab really is permissive: SFTP makes a folder without a mode 0777, and a command
        # session has login.defs' 022 (Debian's sshd), so a shell's folder would be 0755
        os.makedirs(dev.workdir, exist_ok=True)
        t._sftp().mkdir(dev.workdir + "/plain")
        assert _mode(dev.workdir + "/plain") == 0o777
        assert t.run(["sh", "-c", "umask"], timeout=10).stdout.strip() in ("0000", "0002", "0022")
        base = os.path.join(dev.workdir, "wd")
        t.mkdirs(base + "/runs/r1/out")
        t.mkdirs(base + "/runs/r1/out")    # idempotent
        for rel in ("", "/runs", "/runs/r1", "/runs/r1/out"):
            assert _mode(base + rel) == 0o700, rel
        # what the agent creates under the workdir, started the way the executor starts it
        t.start_detached(["sh", "-c", "mkdir cache && : > cache/f"], base, "log", "exit")
        deadline = time.monotonic() + 10
        while not t.exists(base + "/exit") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _mode(base + "/cache") == 0o700
        assert _mode(base + "/cache/f") == 0o600


def test_local_mkdirs_and_agent_folders_are_0700_under_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        t = LocalTransport("local")
        base = str(tmp_path / "a" / "wd")
        t.mkdirs(base + "/runs/r1/out")
        t.mkdirs(base + "/runs/r1/out")
        for rel in ("/..", "", "/runs", "/runs/r1", "/runs/r1/out"):
            assert _mode(base + rel) == 0o700, rel
        t.start_detached(["sh", "-c", "mkdir cache && : > cache/f"], base, "log", "exit")
        deadline = time.monotonic() + 10
        while not os.path.exists(base + "/exit") and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.umask(old)
    assert _mode(base + "/cache") == 0o700
    assert _mode(base + "/cache/f") == 0o600


def test_the_launch_command_makes_0700_folders_checks_the_job_and_names_missing_files(loose_sshd):
    """deploy.launch_script, the one command that deploys and starts a new run, over a device
    whose sessions have a permissive umask."""
    from orchestrator import deploy
    dev = loose_sshd
    base = os.path.join(dev.workdir, "launch")
    argv = ["sh", "-c", "mkdir -p cache && : > cache/f"]
    job = b'{"job": 1}\n'
    with SshTransport(dev.as_device()) as t:
        script = deploy.launch_script(base, "r1", len(job), ["agent/a.pyz", "blobs/b"], argv)
        # 1. files missing: named, nothing written, nothing started
        r = t.run_input(["sh", "-c", script], job, timeout=30)
        assert r.exit_code == deploy.LAUNCH_MISSING
        assert deploy.parse_launch(r.stdout) == (None, ["agent/a.pyz", "blobs/b"], False)
        assert os.listdir(base + "/runs/r1") == ["out"]
        for rel in ("", "/runs", "/runs/r1", "/runs/r1/out"):
            assert _mode(base + rel) == 0o700, rel
        # 2. a job that arrives short is refused, not started
        os.makedirs(base + "/agent")
        os.makedirs(base + "/blobs")
        open(base + "/agent/a.pyz", "w").close()
        open(base + "/blobs/b", "w").close()
        r = t.run_input(["sh", "-c", script], job[:-3], timeout=30)
        assert r.exit_code == 92 and "truncated" in r.stderr
        assert os.listdir(base + "/runs/r1") == ["out"]
        # 3. everything there: the job lands 0600 and the command starts detached
        r = t.run_input(["sh", "-c", script], job, timeout=30)
        assert r.exit_code == 0 and deploy.parse_launch(r.stdout)[2] is True, r.stderr
        with open(base + "/runs/r1/job.json", "rb") as f:
            assert f.read() == job
        assert _mode(base + "/runs/r1/job.json") == 0o600
        deadline = time.monotonic() + 10
        while not os.path.exists(base + "/runs/r1/agent.exit") and time.monotonic() < deadline:
            time.sleep(0.05)
        with open(base + "/runs/r1/agent.exit") as f:
            assert f.read().strip() == "0"
        assert _mode(base + "/cache") == 0o700 and _mode(base + "/cache/f") == 0o600
