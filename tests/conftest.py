"""Shared fixtures. ssh_lab: real sshd devices on 127.0.0.1 (tests/sshlab.py)."""

import os

import pytest

import sshlab


@pytest.fixture(scope="session")
def ssh_lab(tmp_path_factory):
    """An SshLab with 2 running sshd devices (lab.devices); skipped only if sshd is missing."""
    reason = sshlab.sshd_missing_reason()
    if reason and os.environ.get("BENCHFLEET_REQUIRE_SSHD"):
        pytest.fail("BENCHFLEET_REQUIRE_SSHD is set: %s" % reason)
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("sshlab")
    os.chmod(root, 0o755)
    lab = sshlab.SshLab(root)
    try:
        lab.add("lab1")
        lab.add("lab2")
        yield lab
    finally:
        lab.stop()


@pytest.fixture(scope="session")
def emulated_pi(tmp_path_factory):
    """A started tests/emulated_pi.EmulatedPi (aarch64 Debian Bookworm under qemu-user, reached
    over a chrooting sshd); skipped unless BENCHFLEET_EMULATED_PI=1 and qemu-user-static,
    debootstrap and sshd are here. The first run builds the image (about 3 to 6 min), later ones
    extract the cached tarball (under a second)."""
    import emulated_pi as epi
    reason = epi.missing_reason()
    if reason and os.environ.get(epi.ENABLE) == "1":
        pytest.fail("%s=1 but the emulated Pi cannot run: %s" % (epi.ENABLE, reason))
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("emulated-pi-lab")
    os.chmod(root, 0o755)
    pi = epi.EmulatedPi(root)
    try:
        yield pi.start()
    finally:
        pi.stop()
