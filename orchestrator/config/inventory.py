"""The device inventory: inventory/*.yaml files -> one Inventory of named Devices.

Each file holds a top-level `devices:` mapping of name -> fields, so adding a device is adding a file.
Every problem in every file is collected and raised at once as one ConfigError.
"""

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, StringConstraints, ValidationError
from pydantic import model_validator

from agent.schema import DEFAULT_WORKDIR
from orchestrator.errors import ConfigError
from orchestrator.config import ansible
from orchestrator.config.fields import (Alias, BackgroundCommand, Host, ProxyJump, Python,
                                        ToolPath, User, Workdir, bounded)
from orchestrator.config.yamlio import format_validation_error, load_yaml

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
ENV_KEY_PATTERN = r"^[A-Z_][A-Z0-9_]*$"
ACCELERATORS = ("cpu", "gpu-nvidia", "edgetpu", "jetson", "npu")
# What `-i` means when it is not given: the devices a user has set up. Example devices for the
# seed hardware live in inventory/examples/, which a folder load does not descend into.
DEFAULT_INVENTORY = ("inventory",)

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
EnvKey = Annotated[str, StringConstraints(pattern=ENV_KEY_PATTERN)]
# A connect or command timeout: more than 0, at most an hour (a typo's 1e9 s would hang a run).
Seconds = bounded(float, 0.0, 3600.0, low_allowed=False)


class Device(BaseModel):
    """One device as declared in an inventory file. `name` is the mapping key.

    The SSH fields ssh_config can also supply (port, user, identity_file, connect_timeout_s,
    proxy_jump) stay None unless written, so that ~/.ssh/config wins where the file is silent
    (transport/target.py resolves them).
    """

    # strict: a quoted "22" is not a port and `yes` is not a boolean; allow_inf_nan: no .inf timeouts
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    name: Name
    description: str = ""
    transport: Literal["ssh", "local"] = "ssh"
    host: Optional[Host] = None
    port: Optional[Annotated[int, Field(ge=1, le=65535)]] = None
    user: Optional[User] = None
    identity_file: Optional[str] = None
    ssh_alias: Optional[Alias] = None
    proxy_jump: Optional[ProxyJump] = None
    known_hosts: str = "~/.ssh/known_hosts"
    python: Python = "python3"
    workdir: Workdir = DEFAULT_WORKDIR   # relative: stored as ~/relative (the device's home)
    tags: list[Name] = []
    accelerators: list[Literal[ACCELERATORS]] = []
    env: dict[EnvKey, str] = {}
    sensors: dict[str, Any] = {}
    connect_timeout_s: Optional[Seconds] = None
    command_timeout_s: Seconds = 60.0
    # TFLite's benchmark_model on the device (op_profile: true); unset: looked up on its PATH
    benchmark_model: Optional[ToolPath] = None
    # Commands a suite's `background: [{inventory: NAME}]` runs beside a case on this device
    # (its own capture pipeline, say): {NAME: "a shell command line"}.
    background_commands: dict[Name, BackgroundCommand] = {}
    # An emulated device (qemu user-mode, say): its rows say so (results.csv `emulated`, a note in
    # comparison.md) and `compare` never sets its numbers against a real device's.
    emulated: bool = False

    _source: str = PrivateAttr(default="")
    _given_as: str = PrivateAttr(default="")   # the -i argument it was loaded through

    @model_validator(mode="after")
    def _ssh_needs_a_target(self):
        if self.transport == "ssh" and not self.host and not self.ssh_alias:
            raise ValueError("transport ssh needs host (or ssh_alias, an ssh_config Host)")
        return self

    @property
    def source(self):
        """The inventory file this device came from ('' when built in code)."""
        return self._source

    @property
    def cli_flag(self):
        """' -i PATH' for a command printed as a hint, '' when the default inventory holds it."""
        return " -i %s" % self._given_as if self._given_as else ""

    @property
    def known_hosts_path(self):
        return os.path.expanduser(self.known_hosts)


class Inventory:
    """Devices by name, in file order (files sorted by name within a folder)."""

    def __init__(self, devices):
        self.devices = dict(devices)

    def __iter__(self):
        return iter(self.devices.values())

    def __len__(self):
        return len(self.devices)

    def __contains__(self, name):
        return name in self.devices

    def __getitem__(self, name):
        return self.devices[name]

    def names(self):
        return list(self.devices)

    def tags(self):
        return sorted({tag for d in self for tag in d.tags})

    def select(self, spec=None, where="devices"):
        """Devices named by `spec`: names and/or "tag:X"; None or [] means every device.

        Returns devices in spec order, each once. Raises ConfigError naming every unknown
        name (with the known names) and every tag no device carries; `where` starts each line.
        """
        if not spec:
            return list(self)
        chosen, problems = {}, []
        for i, item in enumerate(spec):
            matched, problem = self._match(item)
            if problem:
                problems.append("%s[%d]: %s" % (where, i, problem))
            for device in matched:
                chosen.setdefault(device.name, device)
        if problems:
            raise ConfigError(problems)
        return list(chosen.values())

    def _match(self, item):
        """(devices, problem) for one selector."""
        if item.startswith("tag:"):
            tag = item[4:]
            found = [d for d in self if tag in d.tags]
            if not found:
                return [], "no device has tag %r; tags: %s" % (tag, ", ".join(self.tags()) or "none")
            return found, None
        if item not in self.devices:
            return [], "unknown device %r; known: %s" % (item, ", ".join(self.names()) or "none")
        return [self.devices[item]], None


def load_inventory(paths=DEFAULT_INVENTORY):
    """Load every device from files and folders (a folder: its *.yaml, *.yml and *.ini, sorted; not
    its subfolders, so inventory/examples/ stays out of a default run).

    Raises:
        ConfigError: every problem of every file at once (missing file, empty folder, YAML syntax,
        bad or unknown field, a device name used twice, naming both files).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    problems, files = [], []
    for path in paths:
        found, problem = _expand(Path(path))
        # Hints printed later (devices probe NAME, devices trust NAME) repeat a non-default -i.
        given = "" if os.path.normpath(str(path)) in DEFAULT_INVENTORY else str(path)
        files.extend((f, given) for f in found)
        if problem:
            problems.append(problem)
    devices, first_file = {}, {}
    for file, given in files:
        # Names are checked even when the entry itself is invalid: both problems are reported.
        for name, device in _load_file(file, problems):
            if name in first_file:
                problems.append("%s: devices.%s: duplicate device name, also defined in %s"
                                % (file, name, first_file[name]))
                continue
            first_file[name] = file
            if device is not None:
                device._given_as = given
                devices[name] = device
    if problems:
        raise ConfigError(problems)
    return Inventory(devices)


def _expand(path):
    """([files], problem) for one command-line path."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and (
            p.suffix in (".yaml", ".yml") or ansible.is_candidate(p)))
        if not files:
            return [], "%s: no *.yaml, *.yml or *.ini files in this folder" % path
        return files, None
    if not path.exists():
        return [], "%s: file not found" % path
    return [path], None


def _load_file(file, problems):
    """(name, Device or None when invalid) for each entry of one file; appends its problems."""
    entries = ansible.load_if_ansible(file, problems)   # an Ansible INI or YAML inventory
    if entries is not None:
        return entries
    try:
        data = load_yaml(file)
    except ConfigError as exc:
        problems.extend(exc.problems)
        return []
    if not isinstance(data, dict) or not isinstance(data.get("devices"), dict):
        problems.append("%s: expected a top-level `devices:` mapping of name -> fields" % file)
        return []
    for key in data:
        if key != "devices":
            problems.append("%s: %s: unknown field (an inventory file holds only `devices:`)"
                            % (file, key))
    return [(name, _load_device(file, name, fields, problems))
            for name, fields in data["devices"].items()]


def _load_device(file, name, fields, problems):
    where = "devices.%s" % name
    if not isinstance(name, str) or not re.match(NAME_PATTERN, name):
        problems.append("%s: %s: device name must match %s (lowercase letters, digits, . _ -)"
                        % (file, where, NAME_PATTERN))
        return None
    if fields is None:
        fields = {}
    if not isinstance(fields, dict):
        problems.append("%s: %s: expected a mapping of fields" % (file, where))
        return None
    if "name" in fields:
        problems.append("%s: %s.name: the name is the mapping key; remove this field" % (file, where))
        return None
    try:
        device = Device.model_validate(dict(fields, name=name))
    except ValidationError as exc:
        problems.extend(format_validation_error(file, exc, where))
        return None
    device._source = str(file)
    return device
