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
