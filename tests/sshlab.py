"""A lab of real sshd instances on 127.0.0.1 for integration tests: one config, host key, client
key, pid file, known_hosts entry and workdir per device. Needs /usr/sbin/sshd (run as root here).
"""

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
HOST = "127.0.0.1"
PORT_TRIES = 3


def sshd_missing_reason():
    """Why the lab cannot run here, or None."""
    if not os.path.exists(SSHD):
        return "%s not found: apt-get install -y openssh-server" % SSHD
    if not shutil.which("ssh-keygen"):
        return "ssh-keygen not found"
    return None


def free_port():
    """A port nothing listens on right now (sshd refuses Port 0, so pick one first)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def keygen(path, comment):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)
    os.chmod(path, 0o600)
    return path


def known_hosts_line(port, pub_path):
    kind, blob = Path(pub_path).read_text().split()[:2]
    return "[%s]:%d %s %s\n" % (HOST, port, kind, blob)


@dataclass
class LabDevice:
    """One running sshd; fields mirror the inventory's Device."""

    name: str
    host: str
    port: int
    user: str
    identity_file: str
    known_hosts: str
    workdir: str
    folder: Path
    host_key: Path
    proc: subprocess.Popen = field(repr=False, default=None)
    transport: str = "ssh"

    def fields(self):
        """Inventory fields for this device (no name: the name is the YAML mapping key)."""
        return {"transport": "ssh", "host": self.host, "port": self.port, "user": self.user,
                "identity_file": self.identity_file, "known_hosts": self.known_hosts,
                "workdir": self.workdir, "connect_timeout_s": 5.0}

    def as_device(self, **overrides):
        """The real inventory Device for this lab device, with fields overridden."""
        from orchestrator.config.inventory import Device
        return Device.model_validate(dict(self.fields(), name=self.name, **overrides))

    def drop_connections(self):
        """SIGKILL every process under this sshd (its sessions), like a dropped link; the listener
        stays up. Detached agents were reparented away from sshd, so they keep running."""
        pids = _descendants(self.proc.pid)
        for pid in pids:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        return pids

    def log(self):
        return (self.folder / "sshd.log").read_text(errors="replace")


class SshLab:
    """Start devices with add(); stop() kills every sshd this lab started."""

    def __init__(self, root):
        self.root = Path(root)
        # StrictModes is off too, but a 0755 lab folder keeps sshd happy either way.
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        self.known_hosts = self.root / "known_hosts"
        self.known_hosts.touch(mode=0o600)
        self.devices = []

    def add(self, name, umask=None, chroot=None, workdir=None):
        """A device; umask: the one its SFTP server runs with (None: sshd's default). A command
        session gets login.defs' umask either way (022 on Debian). chroot: a root-owned root file
        system every session runs in (sshd's ChrootDirectory; workdir is then a path inside it)."""
        folder = self.root / name
        folder.mkdir(mode=0o755)
        os.chmod(folder, 0o755)
        host_key = keygen(folder / "ssh_host_ed25519_key", "host-" + name)
        client_key = keygen(folder / "id_ed25519", "client-" + name)
        shutil.copy(str(client_key) + ".pub", folder / "authorized_keys")
        os.chmod(folder / "authorized_keys", 0o600)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        workdir = workdir or folder / "workdir"
        for attempt in range(PORT_TRIES):
            # Another test process may take the free port before sshd binds it: pick again.
            port = free_port()
            config = folder / "sshd_config"
            config.write_text(_config_text(port, folder, host_key, umask, chroot))
            device = LabDevice(name, HOST, port, "root", str(client_key), str(self.known_hosts),
                               str(workdir), folder, host_key)
            device.proc = _start_sshd(config, folder / "sshd.log")
            try:
                _wait_for_banner(device)
                break
            except RuntimeError:
                if device.proc.poll() is None or attempt == PORT_TRIES - 1:
                    raise
        with open(self.known_hosts, "a") as f:
            f.write(known_hosts_line(port, str(host_key) + ".pub"))
        self.devices.append(device)
        return device

    def write_inventory(self, path, devices=None, **overrides):
        """Write an inventory YAML (`devices:` name -> fields) for lab devices; returns path."""
        import yaml
        devices = self.devices if devices is None else devices
        doc = {"devices": {d.name: dict(d.fields(), **overrides) for d in devices}}
        Path(path).write_text(yaml.safe_dump(doc, sort_keys=False))
        return Path(path)

    def stop(self):
        for device in self.devices:
            if device.proc and device.proc.poll() is None:
                device.proc.terminate()
                try:
                    device.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    device.proc.kill()
                    device.proc.wait()


def _config_text(port, folder, host_key, umask=None, chroot=None):
    return "\n".join([
        "Port %d" % port,
        "ListenAddress %s" % HOST,
        "HostKey %s" % host_key,
        "PidFile %s" % (folder / "sshd.pid"),
        "AuthorizedKeysFile %s" % (folder / "authorized_keys"),
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "UsePAM no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "Subsystem sftp internal-sftp" + ("" if umask is None else " -u %03o" % umask),
        "MaxStartups 100",
        "LogLevel VERBOSE",
        "StrictModes no",
    ] + (["ChrootDirectory %s" % chroot] if chroot else []) + [
        "",
    ])


def _descendants(root_pid):
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], list(children.get(root_pid, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _start_sshd(config, log_path):
    log = open(log_path, "ab")
    try:
        # -D: stay in the foreground so the test owns the process; -e: log to stderr (our file).
        return subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def _wait_for_banner(device, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if device.proc.poll() is not None:
            raise RuntimeError("sshd for %s exited %s:\n%s" % (device.name, device.proc.returncode,
                                                              device.log()))
        try:
            with socket.create_connection((HOST, device.port), timeout=1) as s:
                if s.recv(64).startswith(b"SSH-2.0-"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("sshd for %s sent no SSH-2.0- banner in %gs:\n%s"
                       % (device.name, timeout, device.log()))
