"""The `devices` verbs' work: what each device resolves to, adding a device, what it can run.

`devices add` writes inventory/NAME.yaml, shows the host key and trusts it on confirmation,
then probes the device and says which backends it can run and how to fix the others.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

from agent.backends import catalog
from agent.fsutil import atomic_write_text
from orchestrator.escape import terminal
from orchestrator.config.inventory import NAME_PATTERN, Device, load_inventory
from orchestrator.errors import ConfigError


def effective(dev) -> dict:
    """A device as it will be reached: {"name", "transport", "source", "fields": [(field, value,
    source)]}; ssh devices are resolved through ssh_config (transport/target.py)."""
    out = {"name": dev.name, "transport": dev.transport, "inventory": dev.source,
           "tags": list(dev.tags), "accelerators": list(dev.accelerators), "fields": []}
    if dev.transport == "ssh":
        from orchestrator.transport.target import resolve_target
        out["fields"] = resolve_target(dev).describe()
    out["fields"] += [("python", dev.python, "inventory"), ("workdir", dev.workdir, "inventory")]
    return out


def list_lines(devices, verbose=False) -> list[str]:
    """`devices list` text: one line per device; -v adds each effective field and its source."""
    rows = [effective(d) for d in devices]
    lines = ["%-16s %-9s %-30s %-20s %s" % ("NAME", "TRANSPORT", "TARGET", "TAGS", "ACCELERATORS")]
    for row in rows:
        lines.append("%-16s %-9s %-30s %-20s %s" % (
            row["name"], row["transport"], _target_text(row), ",".join(row["tags"]) or "-",
            ",".join(row["accelerators"]) or "-"))
        if verbose:
            lines.append("    inventory: %s" % (row["inventory"] or "-"))
            for name, value, source in row["fields"]:
                shown = "-" if value in (None, "") else value
                lines.append("    %-18s %-34s %s" % (name, shown, source))
    return lines


def _target_text(row):
    if row["transport"] == "local":
        return "(this machine)"
    f = dict((k, v) for k, v, _ in row["fields"])
    return "%s@%s:%s" % (f["user"], f["host"], f["port"])


def to_json(devices) -> list[dict]:
    out = []
    for d in devices:
        row = effective(d)
        row["fields"] = {k: {"value": v, "source": s} for k, v, s in row["fields"]}
        out.append(row)
    return out


def capabilities(dev, probe) -> tuple[list, list]:
    """([(backend, version or None)], [(backend, reason, hint)]): what a probed device can run
    by the planner's own rules, and what it cannot with the fix."""
    from orchestrator.plan import backend_skip
    runtimes = probe.get("runtimes") or {}
    can, cannot = [], []
    for spec in catalog.BACKENDS:
        skip = backend_skip(spec, dev, probe)
        if skip:
            cannot.append((spec.name, skip[0], skip[1]))
            continue
        versions = [(runtimes.get(m) or {}).get("version") for m in spec.modules
                    if (runtimes.get(m) or {}).get("available")]
        can.append((spec.name, versions[0] if versions else None))
    return can, cannot


def capability_lines(name, can, cannot) -> list[str]:
    # Versions and reasons may be the device's words: each made one inert line.
    lines = ["%s can run: %s" % (name, ", ".join(
        "%s (%s)" % (b, terminal(v, 80)) if v else b for b, v in can) or "nothing")]
    if cannot:
        lines.append("%s cannot run:" % name)
        lines += ["  %-12s %s" % (b, terminal(why + ("; fix: %s" % hint if hint else "")))
                  for b, why, hint in cannot]
    return lines


def new_device(name, fields, folder) -> tuple[Device, Path]:
    """The Device `devices add` would write, checked, and the file it goes to.

    Raises:
        ConfigError: a bad name or field, or a device of that name already in the folder.
    """
    path = Path(folder) / (name + ".yaml")
    problems = []
    if not re.match(NAME_PATTERN, name):
        problems.append("NAME %r: use lowercase letters, digits, . _ - (pattern %s)"
                        % (name, NAME_PATTERN))
    elif path.exists():
        problems.append("%s already exists; edit it, or pick another NAME" % path)
    elif Path(folder).is_dir():
        try:
            if name in load_inventory([folder]):
                problems.append("%s: a device %r is already defined there" % (folder, name))
        except ConfigError:
            pass   # an empty folder, or other files' problems: this device is new either way
    if problems:
        raise ConfigError(problems)
    from pydantic import ValidationError
    from orchestrator.config.yamlio import format_validation_error
    try:
        device = Device.model_validate(dict(fields, name=name))
    except ValidationError as exc:
        raise ConfigError(format_validation_error("devices add %s" % name, exc)) from None
    device._source = str(path)
    return device, path


def write_device(device, path) -> None:
    """inventory/NAME.yaml holding only the fields that were given."""
    fields = device.model_dump(exclude_defaults=True, exclude={"name"})
    text = ("# Added by `benchfleet devices add %s`; edit freely (see README: Inventory).\n"
            % device.name) + yaml.safe_dump({"devices": {device.name: fields}}, sort_keys=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(str(path), text)


def ask(question, stream=None) -> bool:
    """y/N on the terminal; no terminal (or EOF) is a no."""
    stream = stream or sys.stderr
    print(question + " [y/N] ", end="", file=stream, flush=True)
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")
