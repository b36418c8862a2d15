"""What Ansible variables mean for benchfleet: Ansible's merge order (all < parent < child < host),
ansible_* / benchfleet_* -> Device fields, and a problem for every variable it cannot honour.
"""

import re

from pydantic import ValidationError

from orchestrator.config.ansible_parse import IMPLICIT_GROUPS, Vaulted
from orchestrator.config.yamlio import dotted, error_message

ANSIBLE_FIELDS = {
    "ansible_host": "host", "ansible_ssh_host": "host",
    "ansible_port": "port", "ansible_ssh_port": "port",
    "ansible_user": "user", "ansible_ssh_user": "user",
    "ansible_ssh_private_key_file": "identity_file", "ansible_private_key_file": "identity_file",
    "ansible_python_interpreter": "python",
    "ansible_connection": "transport",
}
CONNECTIONS = {"ssh": "ssh", "smart": "ssh", "paramiko": "ssh", "paramiko_ssh": "ssh",
               "local": "local"}
AUTO_PYTHON = ("auto", "auto_silent", "auto_legacy", "auto_legacy_silent")
SUPPORTED = ("benchfleet reads ansible_host, ansible_port, ansible_user, "
             "ansible_ssh_private_key_file, ansible_python_interpreter, ansible_connection, "
             "ansible_group_priority and benchfleet_<field>")
_KEYS_ONLY = "benchfleet logs in with SSH keys only: set ansible_ssh_private_key_file"
_SSH_CONFIG = ("put those options under a Host in ~/.ssh/config and set benchfleet_ssh_alias "
               "to that Host")
HINTS = {
    "ansible_password": _KEYS_ONLY, "ansible_ssh_pass": _KEYS_ONLY,
    "ansible_ssh_password": _KEYS_ONLY,
    "ansible_become": "benchfleet runs everything as the SSH user and never escalates: set "
                      "ansible_user to a user that may run the benchmarks",
    "ansible_ssh_common_args": _SSH_CONFIG, "ansible_ssh_extra_args": _SSH_CONFIG,
    "ansible_ssh_args": _SSH_CONFIG, "ansible_ssh_executable": _SSH_CONFIG,
    "ansible_shell_type": "benchfleet needs a POSIX sh on the device",
    "ansible_shell_executable": "benchfleet needs a POSIX sh on the device",
}


def _map_var(var, fields):
    """(device field or None, value, problem or None) for one variable definition."""
    key, value = var.key, var.value
    if not isinstance(key, str):
        return None, None, "variable %r: a variable name must be a string" % (key,)
    if key.startswith("benchfleet_"):
        field = key[len("benchfleet_"):]
        if field == "name":
            return None, None, "%s: the device name is the Ansible host name; rename the host" % key
        if field not in fields:
            return None, None, "%s: unknown benchfleet field %r; fields: %s" % (
                key, field, ", ".join(f for f in fields if f != "name"))
    elif key in ANSIBLE_FIELDS:
        field = ANSIBLE_FIELDS[key]
    elif key.startswith("ansible_") and key != "ansible_group_priority":
        hint = HINTS.get("ansible_become" if "become" in key else key, SUPPORTED)
        return None, None, "%s: not supported by benchfleet; %s" % (key, hint)
    else:
        return None, None, None   # playbook data (or a group's priority): not a device field
    if _contains(value, lambda v: isinstance(v, Vaulted)):
        return None, None, ("%s: vault-encrypted (!vault); benchfleet cannot decrypt Ansible "
                            "Vault: write this value in plain text" % key)
    if _contains(value, lambda v: isinstance(v, str) and ("{{" in v or "{%" in v)):
        return None, None, ("%s: %r is a Jinja template; benchfleet does not evaluate templates: "
                            "write the value itself" % (key, value))
    if field == "transport":
        name = value
        if isinstance(value, str) and value.startswith("ansible.builtin."):
            name = value[len("ansible.builtin."):]
        if not isinstance(name, str) or name not in CONNECTIONS:
            return None, None, ("%s: %r: not supported by benchfleet; it connects over ssh (ssh, "
                                "smart, paramiko) or local" % (key, value))
        value = CONNECTIONS[name]
    elif field == "port" and key.startswith("ansible_") and isinstance(value, str) \
            and value.isdigit():
        value = int(value)   # Ansible turns its port option into an int; so does benchfleet
    elif field == "python" and value in AUTO_PYTHON:
        return None, None, None   # interpreter discovery: benchfleet's default python3
    return field, value, None


def _contains(value, test):
    if isinstance(value, dict):
        return any(_contains(v, test) for v in value.values())
    if isinstance(value, list):
        return any(_contains(v, test) for v in value)
    return test(value)


def devices(parsed):
    """(name, Device or None) for every host of a parsed file; appends problems to `parsed`."""
    from orchestrator.config import inventory   # inventory imports this module
    fields = list(inventory.Device.model_fields)
    mapped = {}
    for var in parsed.definitions:
        field, value, problem = _map_var(var, fields)
        if problem:
            parsed.problem(var.line, "%s: %s" % (var.owner, problem))
        elif field:
            mapped[id(var)] = (field, value)
    order = _group_order(parsed)
    bad_tags = set()
    for name in {g for host in parsed.hosts.values() for g in order(host)} - set(IMPLICIT_GROUPS):
        if not re.match(inventory.NAME_PATTERN, name):
            bad_tags.add(name)
            parsed.problem(parsed.groups[name].line, "group %s: a group becomes a device tag, so "
                           "its name must match %s" % (name, inventory.NAME_PATTERN))
    return [(host.name, _device(parsed, host, order(host), mapped, bad_tags, inventory))
            for host in parsed.hosts.values()]


def _group_order(parsed):
    """order(host): its groups and their ancestors, in Ansible's merge order (all first, then by
    depth, ansible_group_priority, name); later groups' variables win."""
    depth, priority = {"all": 0}, {}

    def visit(name, path):
        if name not in depth:
            if name in path:
                cycle = path[path.index(name):] + [name]
                parsed.problem(parsed.groups[name].line, "group %s: group cycle %s; a group "
                               "cannot be its own ancestor" % (name, " -> ".join(cycle)))
                return 1
            parents = [p for p in parsed.groups[name].parents if p != "all"] or ["all"]
            depth[name] = 1 + max(visit(p, path + [name]) for p in parents)
        return depth[name]

    for name, group in parsed.groups.items():
        visit(name, [])
        var = group.vars.get("ansible_group_priority")
        value = var.value if var else 1
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            parsed.problem(var.line, "%s: ansible_group_priority: expected a number, got %r"
                           % (var.owner, value))
            value = 1
        priority[name] = value

    def order(host):
        seen, todo = {"all"}, list(host.groups)
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(parsed.groups[name].parents)
        return sorted(seen, key=lambda g: (depth.get(g, 1), priority.get(g, 1), g))
    return order


def _device(parsed, host, groups, mapped, bad_tags, inventory):
    """The Device for one host from its merged variables, or None (problems appended)."""
    if not re.match(inventory.NAME_PATTERN, host.name):
        parsed.problem(host.line, "host %s: device name must match %s (lowercase letters, digits, "
                       ". _ -); rename the host and keep its address in ansible_host"
                       % (host.name, inventory.NAME_PATTERN))
        return None
    merged = {}
    for name in groups:
        merged.update(parsed.groups[name].vars)
    merged.update(host.vars)
    fields, origin, clash = {}, {}, False
    for var in merged.values():
        if id(var) not in mapped:
            continue
        field, value = mapped[id(var)]
        if field in origin:
            first = origin[field]
            parsed.problem(host.line, "host %s: %s (%s) and %s (%s) both set %s; keep one"
                           % (host.name, first.key, _at(first), var.key, _at(var), field))
            clash = True
            continue
        fields[field], origin[field] = value, var
    tags = [g for g in groups if g not in IMPLICIT_GROUPS and g not in bad_tags]
    extra = fields.pop("tags", [])
    # benchfleet_tags adds to the groups; anything but a list goes to the model to be refused.
    fields["tags"] = tags + [t for t in extra if t not in tags] if isinstance(extra, list) \
        else extra
    if fields.get("transport", "ssh") == "ssh" and not (fields.keys() & {"host", "ssh_alias"}):
        fields["host"] = host.name
    try:
        device = inventory.Device.model_validate(dict(fields, name=host.name))
    except ValidationError as exc:
        for item in exc.errors(include_url=False):
            _validation_problem(parsed, host, origin, item)
        return None
    device._source = str(parsed.file)
    return None if clash or bad_tags.intersection(groups) else device


def _at(var):
    return "%s, line %d" % (var.owner, var.line) if var.line else var.owner


def _validation_problem(parsed, host, origin, item):
    loc = item["loc"]
    var = origin.get(loc[0]) if loc else None
    if var is None:
        parsed.problem(host.line, "host %s: %s" % (host.name, error_message(item)))
        return
    rest = "" if loc[0] == "tags" else dotted(loc[1:])   # tags are re-indexed after the groups
    if loc[0] == "tags" and len(loc) > 1:
        rest = ": %r" % (item["input"],)
    elif rest and not rest.startswith("["):
        rest = "." + rest
    message = error_message(item)
    if item["type"] in ("list_type", "dict_type") and isinstance(item["input"], str):
        message += " (got the text %r)" % item["input"]   # INI quoting is easy to get wrong
    parsed.problem(var.line, "%s: %s%s: %s" % (var.owner, var.key, rest, message))
