"""An emulated Raspberry Pi 4 for the test lab, reached over real SSH.

How it works (the choice the tests rely on):
- The root file system is Debian Bookworm arm64 (`debootstrap --arch=arm64 --variant=minbase
  bookworm` with python3 and python3-venv: Raspberry Pi OS Bookworm's user space, Python 3.11).
  numpy and the real tflite-runtime 2.14.0 (cp311 manylinux_2_34_aarch64 wheel) are installed the
  way a Pi user does it: `python3 -m venv` and `pip install` inside the image, from wheels the host
  downloads with pip's --platform option. No pycoral, no libedgetpu.
- The board identity is a fake device-tree model, "Raspberry Pi 4 Model B Rev 1.4", at
  /sys/firmware/devicetree/base/model (a real Pi has it there and at /proc/device-tree/model; the
  chroot mounts a real procfs, where no file can be faked, and the probe reads the sysfs path first).
- Every aarch64 binary runs on this x86 machine through qemu-user-static registered in binfmt_misc
  with the F (fix-binary) flag, so the kernel finds the emulator even inside a chroot.
- SSH is the host's OpenSSH: a new sshd from tests/sshlab.py on a free 127.0.0.1 port whose
  config has `ChrootDirectory <rootfs>` and `Subsystem sftp internal-sftp`, so a command session
  and the controller's SFTP uploads both land inside the aarch64 root file system, where the
  agent runs under /root/pi-venv/bin/python (an aarch64 Python 3.11 under emulation).
- The image is built once and cached as a tarball keyed by a hash of this recipe under
  $BENCHFLEET_TEST_CACHE (default /tmp/benchfleet-test-cache). Each session extracts it under
  /var/lib/benchfleet-test (sshd wants every component of a ChrootDirectory root-owned and not
  group/world-writable, which rules out /tmp), mounts /proc there, and removes it at the end.

What the emulation proves: the agent's architecture detection (aarch64), Python 3.11, the real
tflite_runtime package on ARM (import, Interpreter, XNNPACK threads), the Edge TPU's absence and
its hint, and the agent's supervisor/worker/heartbeat/atomic writes on a very slow device.
What it cannot: a Coral (no USB device, no libedgetpu), real timings (emulation is ~2000x slower
than a Pi), thermal behaviour and throttling (no thermal zones, no vcgencmd), real memory limits.

Enabled only when BENCHFLEET_EMULATED_PI=1 (CI sets it) and qemu-user-static, debootstrap and sshd
are present; otherwise the tests skip with the reason.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENABLE = "BENCHFLEET_EMULATED_PI"
CACHE = Path(os.environ.get("BENCHFLEET_TEST_CACHE", "/tmp/benchfleet-test-cache"))
RUN_ROOT = Path("/var/lib/benchfleet-test")
MODEL = "Raspberry Pi 4 Model B Rev 1.4"
PI_PYTHON = "/root/pi-venv/bin/python"
QEMU = "/usr/bin/qemu-aarch64-static"
BINFMT = Path("/proc/sys/fs/binfmt_misc")
BINFMT_CONF = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")

# A Pi 4's /proc/cpuinfo (Raspberry Pi OS, 64-bit kernel), bind-mounted over the chroot's.
PI4_CPUINFO = "".join(
    "processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
    "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\n"
    "CPU revision\t: 3\n\n" % i for i in range(4)) + (
    "Revision\t: c03114\nSerial\t\t: 10000000emulated\nModel\t\t: %s\n" % MODEL)

# The recipe: change anything here and the cache key changes, so the image is rebuilt.
SUITE_NAME = "bookworm"
MIRROR = "http://deb.debian.org/debian"
INCLUDE = ["python3", "python3-venv"]
WHEELS = ["tflite-runtime==2.14.0", "numpy==1.26.4"]
PIP_PLATFORM = ["--platform", "manylinux_2_34_aarch64", "--platform", "manylinux2014_aarch64",
                "--platform", "manylinux_2_17_aarch64", "--only-binary=:all:",
                "--python-version", "3.11", "--implementation", "cp"]
RECIPE_VERSION = 1


def recipe_key():
    text = repr((RECIPE_VERSION, SUITE_NAME, MIRROR, INCLUDE, WHEELS, PIP_PLATFORM, MODEL,
                 PI_PYTHON))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def tarball_path():
    return CACHE / ("emulated-pi-%s.tar" % recipe_key())


def ensure_binfmt():
    """Register qemu-aarch64 in binfmt_misc (mounting it first) if it is not there yet."""
    entry = BINFMT / "qemu-aarch64"
    if entry.exists():
        return
    if not (BINFMT / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], check=True)
    if not entry.exists():
        (BINFMT / "register").write_text(BINFMT_CONF.read_text().strip() + "\n")


def missing_reason():
    """Why the emulated Pi cannot run here, or None."""
    if os.environ.get(ENABLE) != "1":
        return "%s is not 1 (the emulated Raspberry Pi 4 takes minutes to build)" % ENABLE
    if os.geteuid() != 0:
        return "needs root (debootstrap, mount, ChrootDirectory)"
    for tool, hint in (("debootstrap", "apt-get install -y debootstrap"),
                       (QEMU, "apt-get install -y qemu-user-static")):
        if not shutil.which(tool):
            return "%s not found: %s" % (tool, hint)
    if not BINFMT_CONF.exists():
        return "%s missing: reinstall qemu-user-static" % BINFMT_CONF
    import sshlab
    return sshlab.sshd_missing_reason()


def _run(cmd, log, **kw):
    log.write(("$ %s\n" % " ".join(map(str, cmd))).encode())
    log.flush()
    subprocess.run([str(c) for c in cmd], check=True, stdout=log, stderr=subprocess.STDOUT, **kw)


def build(log_path=None):
    """Build the image (3 to 6 min) into the cached tarball unless it is there; returns its path.
    Test processes side by side (pytest -n 2) build it once: the second waits on a file lock."""
    import fcntl
    tar = tarball_path()
    if tar.exists():
        return tar
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ("emulated-pi-%s.lock" % recipe_key()), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tar.exists():
            return tar
        return _build(tar, log_path)


def _build(tar, log_path):
    ensure_binfmt()
    work = Path(tempfile.mkdtemp(prefix="emulated-pi-build-", dir=CACHE))
    rootfs, wheels = work / "rootfs", work / "wheels"
    log = open(log_path or (CACHE / ("emulated-pi-%s.log" % recipe_key())), "ab")
    try:
        _run([sys.executable, "-m", "pip", "download", "-q", "-d", wheels] + PIP_PLATFORM + WHEELS,
             log)
        _run(["debootstrap", "--arch=arm64", "--variant=minbase",
              "--include=" + ",".join(INCLUDE), SUITE_NAME, rootfs, MIRROR], log)
        shutil.copytree(wheels, rootfs / "tmp" / "wheels")
        venv = PI_PYTHON.rsplit("/bin/", 1)[0]
        _run(["chroot", rootfs, "/usr/bin/python3", "-m", "venv", venv], log)
        _run(["chroot", rootfs, PI_PYTHON, "-m", "pip", "install", "-q", "--no-index",
              "--find-links", "/tmp/wheels"] + WHEELS, log)
        _run(["chroot", rootfs, PI_PYTHON, "-c",
              "import tflite_runtime.interpreter as t, numpy; print(t.Interpreter, numpy.__version__)"],
             log)
        shutil.rmtree(rootfs / "tmp" / "wheels")
        shutil.rmtree(rootfs / "var" / "cache" / "apt" / "archives", ignore_errors=True)
        model = rootfs / "sys" / "firmware" / "devicetree" / "base" / "model"
        model.parent.mkdir(parents=True, exist_ok=True)
        model.write_bytes(MODEL.encode() + b"\x00")
        partial = tar.with_suffix(".tar.partial")
        _run(["tar", "-C", rootfs, "--numeric-owner", "-cf", partial, "."], log)
        os.replace(partial, tar)
        return tar
    except subprocess.CalledProcessError as exc:
        log.flush()
        tail = Path(log.name).read_text(errors="replace")[-3000:]
        raise RuntimeError("building the emulated Pi failed: %s\n(log %s):\n%s"
                           % (exc, log.name, tail)) from exc
    finally:
        log.close()
        for mount in ("proc", "dev/pts", "sys"):   # debootstrap may leave these behind on failure
            subprocess.run(["umount", "-l", str(rootfs / mount)], stderr=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL)
        _rmtree_unmounted(work)


def _mounted_under(path):
    path = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    return [p for p in points if p == path or p.startswith(path + "/")]


def _rmtree_unmounted(path):
    """rmtree, unless something is still mounted below (never delete through a mount)."""
    if not os.path.exists(path):
        return
    if _mounted_under(path):
        raise RuntimeError("not removing %s: still mounted: %s" % (path, _mounted_under(path)))
    shutil.rmtree(path)


class EmulatedPi:
    """Extracts the cached image, mounts /proc in it and starts a chrooting sshd (start())."""

    def __init__(self, lab_root):
        self.lab_root = Path(lab_root)
        self.rootfs = None
        self.lab = None
        self.device = None
        self.extract_s = None

    def start(self):
        import sshlab
        tar = build()
        ensure_binfmt()
        RUN_ROOT.mkdir(parents=True, exist_ok=True)
        os.chown(RUN_ROOT, 0, 0)
        os.chmod(RUN_ROOT, 0o755)
        t0 = time.monotonic()
        self.rootfs = Path(tempfile.mkdtemp(prefix="pi-", dir=RUN_ROOT))
        os.chmod(self.rootfs, 0o755)
        subprocess.run(["tar", "-C", str(self.rootfs), "--numeric-owner", "-xf", str(tar)],
                       check=True)
        os.chmod(self.rootfs, 0o755)
        self.extract_s = time.monotonic() - t0
        subprocess.run(["mount", "-t", "proc", "proc", str(self.rootfs / "proc")], check=True)
        # The Pi's own /proc/cpuinfo over the host's (a real procfs is the host's CPU otherwise).
        fake = self.rootfs / "etc" / "benchfleet-pi4-cpuinfo"
        fake.write_text(PI4_CPUINFO)
        subprocess.run(["mount", "--bind", str(fake), str(self.rootfs / "proc" / "cpuinfo")],
                       check=True)
        (self.rootfs / "root").mkdir(mode=0o700, exist_ok=True)
        self.lab = sshlab.SshLab(self.lab_root)
        self.device = self.lab.add("emulated-pi4", chroot=str(self.rootfs),
                                   workdir="/root/benchfleet")
        return self

    def fields(self):
        """A Pi 4 + Coral as the seed's inventory declares it (accelerators: [edgetpu]), whose
        Coral is absent: the probe must say so, with the fix."""
        return dict(self.device.fields(), python=PI_PYTHON, emulated=True, connect_timeout_s=30.0,
                    command_timeout_s=300.0, accelerators=["edgetpu"], tags=["pi4", "emulated"])

    def write_inventory(self, path, **overrides):
        import yaml
        doc = {"devices": {self.device.name: dict(self.fields(), **overrides)}}
        Path(path).write_text(yaml.safe_dump(doc, sort_keys=False))
        return Path(path)

    def stop(self):
        if self.lab:
            self.lab.stop()
        if self.rootfs:
            # Agents detached from the sessions may still run in the chroot: kill them first.
            for pid in _pids_rooted_at(self.rootfs):
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            time.sleep(0.5)
            subprocess.run(["umount", str(self.rootfs / "proc" / "cpuinfo")], check=False)
            subprocess.run(["umount", str(self.rootfs / "proc")], check=False)
            for point in sorted(_mounted_under(self.rootfs), reverse=True):
                subprocess.run(["umount", "-l", point], check=False)
            _rmtree_unmounted(self.rootfs)


def _pids_rooted_at(rootfs):
    rootfs = os.path.realpath(rootfs)
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink("/proc/%s/root" % entry) == rootfs:
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


if __name__ == "__main__":   # python3 tests/emulated_pi.py: build (or find) the cached image
    t0 = time.monotonic()
    print(build(), "%.0fs" % (time.monotonic() - t0))
