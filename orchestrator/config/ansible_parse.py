"""Ansible inventory syntax: INI and YAML files -> groups, hosts and variables with their lines.

Follows Ansible's own parsers (host ranges, `host:port`, inline values through ast.literal_eval);
what the variables mean for benchfleet is ansible_vars.py's business.
"""

import ast
import re
import shlex
import string
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

SECTION_RE = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?$")
GROUP_NAME_RE = re.compile(r"^([^:\]\s]+)\s*(?:#.*)?$")
_RANGE_RE = re.compile(r"^(.*?)\[([^\]]*:[^\]]*)\](.*)$")
_PORT_RE = re.compile(r"^(.*[^:]):([0-9]+)$")
IMPLICIT_GROUPS = ("all", "ungrouped")


@dataclass
class Var:
    """One variable definition: its value, the line it is on (None: unknown) and who owns it."""

    key: Any
    value: Any
    line: Optional[int]
    owner: str          # "host pi4" or "group pis"


@dataclass
class Group:
    name: str
    line: Optional[int]
    vars: dict = field(default_factory=dict)
    parents: list = field(default_factory=list)


@dataclass
class Host:
    name: str
    line: Optional[int]
    vars: dict = field(default_factory=dict)
    groups: list = field(default_factory=list)


class Parsed:
    """Groups, hosts and every variable definition of one file, plus its problems."""

    def __init__(self, file):
        self.file = file
        self.groups = {name: Group(name, None) for name in IMPLICIT_GROUPS}
        self.hosts = {}
        self.definitions = []
        self.problems = []

    def problem(self, line, text):
        where = "line %d: " % line if line else ""
        self.problems.append((line or 0, "%s: %s%s" % (self.file, where, text)))

    def messages(self):
        """Every problem once (a group's bad value is found per host), by line."""
        return list(dict.fromkeys(text for _, text in sorted(self.problems, key=lambda p: p[0])))

    def group(self, name, line):
        if name not in self.groups:
            self.groups[name] = Group(name, line)
        return self.groups[name]

    def add_child(self, parent, child, line):
        group = self.group(child, line)
        if parent not in group.parents:
            group.parents.append(parent)

    def set_var(self, owner, key, value, line, label=None):
        """Define one variable on a Group or Host (label: how problems name the owner)."""
        kind = "host" if isinstance(owner, Host) else "group"
        var = Var(key, value, line, "%s %s" % (kind, label or owner.name))
        owner.vars[key] = var
        self.definitions.append(var)
        return var

    def add_hosts(self, pattern, line, group, variables):
        """Hosts of one pattern (`pi[01:04]`, `pi:2222`) into group, with their variables."""
        try:
            names, port = expand_hosts(pattern)
        except ValueError as exc:
            self.problem(line, "host pattern %r: %s" % (pattern, exc))
            return
        if port is not None:   # as Ansible: the pattern's port wins over an inline one
            variables = dict(variables, ansible_port=(port, line))
        hosts = [self.hosts.setdefault(name, Host(name, line)) for name in names]
        for host in hosts:
            if group not in host.groups:
                host.groups.append(group)
        # One definition per pattern, shared by its hosts: a bad value is reported once.
        for key, (value, vline) in variables.items():
            var = self.set_var(hosts[0], key, value, vline, label=pattern)
            for host in hosts[1:]:
                host.vars[key] = var


def expand_hosts(pattern):
    """(host names, port or None) for an Ansible host pattern; raises ValueError with the fix."""
    port = None
    match = _PORT_RE.match(pattern)
    if match and ":" not in re.sub(r"\[[^\]]*\]", "", match.group(1)):
        pattern, port = match.group(1), int(match.group(2))
    elif pattern.endswith(":"):
        raise ValueError("ends in ':' with no port")
    return _expand_ranges(pattern), port


def _expand_ranges(pattern):
    match = _RANGE_RE.match(pattern)
    if not match:
        return [pattern]
    head, bounds, tail = match.groups()
    parts = bounds.split(":")
    if len(parts) not in (2, 3) or not parts[1]:
        raise ValueError("a range is [begin:end] or [begin:end:step]")
    begin, end = parts[0] or "0", parts[1]
    step = parts[2] if len(parts) == 3 else "1"
    if not step.isdigit() or int(step) < 1:
        raise ValueError("range step must be a positive number")
    if begin.isdigit() and end.isdigit():
        width = len(begin) if begin.startswith("0") and len(begin) > 1 else 0
        if width and len(end) != width:
            raise ValueError("a zero-padded range needs begin and end of equal length")
        items = [str(i).zfill(width) for i in range(int(begin), int(end) + 1, int(step))]
    elif len(begin) == 1 and len(end) == 1 and begin in string.ascii_letters and \
            end in string.ascii_letters:
        first, last = string.ascii_letters.index(begin), string.ascii_letters.index(end)
        items = list(string.ascii_letters[first:last + 1:int(step)])
    else:
        raise ValueError("range bounds must be both numbers or both single letters")
    if not items:
        raise ValueError("range begins after it ends")
    return [head + item + rest for item in items for rest in _expand_ranges(tail)]


def ini_value(text):
    """An INI value as Ansible reads it: a Python literal when it is one ('22' is 22, "'22'" the
    string), otherwise the text itself. Tuples and sets become lists, exotic literals stay text."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    if isinstance(value, (tuple, set)):
        return list(value)
    if value is None or isinstance(value, (str, int, float, list, dict)):
        return value
    return text


def parse_ini(parsed, text):
    """Fill `parsed` from an Ansible INI file; every problem (with its line) goes to parsed."""
    group, state = "ungrouped", "hosts"
    declared, references = set(IMPLICIT_GROUPS), []   # groups need a [g] or [g:children]
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        match = SECTION_RE.match(line)
        if match:
            group, state = match.group(1), match.group(2) or "hosts"
            if state not in ("hosts", "vars", "children"):
                parsed.problem(number, "section %s: unknown section type %r; Ansible has [group], "
                               "[group:vars] and [group:children]" % (line, state))
                state = None
                continue
            parsed.group(group, number)
            if state == "vars":
                references.append((group, number, "[%s:vars] is for an undefined group" % group))
            else:
                declared.add(group)
        elif line.startswith("["):
            parsed.problem(number, "invalid section header %s: no spaces, one optional :vars or "
                           ":children" % line)
            state = None
        elif state == "hosts":
            _ini_host_line(parsed, number, line, group)
        elif state == "vars":
            _ini_var_line(parsed, number, line, group)
        elif state == "children":
            child = GROUP_NAME_RE.match(line)
            if not child:
                parsed.problem(number, "[%s:children]: expected a group name, got %r"
                               % (group, line))
                continue
            parsed.add_child(group, child.group(1), number)
            references.append((child.group(1), number, "[%s:children] includes undefined group"
                               % group))
    for name, number, text in references:
        if name not in declared:
            parsed.problem(number, "%s %r: add a [%s] section" % (text, name, name))


def _ini_host_line(parsed, number, line, group):
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError as exc:
        parsed.problem(number, "cannot read host line: %s (quote values that hold spaces)" % exc)
        return
    variables = {}
    for token in tokens[1:]:
        if "=" not in token:
            parsed.problem(number, "expected key=value host variable, got %r" % token)
            continue
        key, value = token.split("=", 1)
        variables[key] = (ini_value(value), number)
    if tokens:
        parsed.add_hosts(tokens[0], number, group, variables)


def _ini_var_line(parsed, number, line, group):
    if "=" not in line:
        parsed.problem(number, "[%s:vars]: expected key=value, got %r" % (group, line))
        return
    key, value = [part.strip() for part in line.split("=", 1)]
    parsed.set_var(parsed.groups[group], key, ini_value(value), number)


@dataclass
class Vaulted:
    """A `!vault` value: encrypted with Ansible Vault, which benchfleet cannot decrypt."""

    line: int


def _line(mapping, key):
    return getattr(mapping, "lines", {}).get(key)


def parse_yaml(parsed, data):
    """Fill `parsed` from an Ansible YAML inventory (top-level keys are groups)."""
    for name, body in data.items():
        _yaml_group(parsed, name, body, None, _line(data, name))


def _yaml_group(parsed, name, body, parent, line):
    if not isinstance(name, str):
        parsed.problem(line, "group %r: a group name must be a string" % (name,))
        return
    group = parsed.group(name, line)
    if parent is not None:
        parsed.add_child(parent, name, line)
    if body is None:
        return
    if not isinstance(body, dict):
        parsed.problem(line, "group %s: expected a mapping of hosts, children and vars" % name)
        return
    for key, value in body.items():
        where = _line(body, key)
        if key not in ("hosts", "children", "vars"):
            parsed.problem(where, "group %s: %s: unexpected key; an Ansible group holds only "
                           "hosts, children and vars" % (name, key))
            continue
        if isinstance(value, str) and key != "vars":
            value = {value: None}   # Ansible allows `hosts: pi1`
        if value is None:
            continue
        if not isinstance(value, dict):
            parsed.problem(where, "group %s: %s: expected a mapping" % (name, key))
        elif key == "vars":
            for var, val in value.items():
                parsed.set_var(group, var, val, _line(value, var))
        elif key == "children":
            for child, child_body in value.items():
                _yaml_group(parsed, child, child_body, name, _line(value, child))
        else:
            for pattern, host_vars in value.items():
                _yaml_host(parsed, str(pattern), host_vars, name, _line(value, pattern))


def _yaml_host(parsed, pattern, host_vars, group, line):
    if host_vars is not None and not isinstance(host_vars, dict):
        parsed.problem(line, "host %s: expected a mapping of variables (or nothing)" % pattern)
        return
    variables = {key: (val, _line(host_vars, key)) for key, val in (host_vars or {}).items()}
    parsed.add_hosts(pattern, line, group, variables)
