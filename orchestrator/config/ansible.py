"""Ansible inventories given with -i: which files are Ansible's (INI, YAML, or refused: scripts,
plugins, vault files, group_vars/), read into devices by ansible_parse and ansible_vars.
"""

from pathlib import Path

import yaml

from orchestrator.errors import ConfigError
from orchestrator.config.ansible_parse import SECTION_RE, Parsed, Vaulted, parse_ini, parse_yaml
from orchestrator.config.ansible_vars import devices
from orchestrator.config.yamlio import StrictLoader, load_yaml

_FLATTEN = "save the merged hosts with `ansible-inventory -i %s --list --yaml > hosts.yaml`"


class LinedDict(dict):
    """A YAML mapping that remembers the line of each of its keys (`lines`)."""

    lines: dict


class AnsibleYamlLoader(StrictLoader):
    """StrictLoader that knows Ansible's tags (!vault kept as Vaulted, !unsafe as its text) and
    records key lines, so problems in a YAML inventory can name their line."""

    def construct_lined_map(self, node):
        data = LinedDict()
        data.lines = {}
        yield data
        data.update(self.construct_mapping(node))
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                data.lines.setdefault(self.construct_object(key_node), key_node.start_mark.line + 1)

    def construct_vault(self, node):
        return Vaulted(node.start_mark.line + 1)


AnsibleYamlLoader.add_constructor("tag:yaml.org,2002:map", AnsibleYamlLoader.construct_lined_map)
AnsibleYamlLoader.add_constructor("!vault", AnsibleYamlLoader.construct_vault)
AnsibleYamlLoader.add_constructor("!unsafe", StrictLoader.construct_scalar)


def is_candidate(path):
    """True for a file in an inventory folder that this module reads or refuses: *.ini, a
    suffixless Ansible INI such as `hosts`, or an executable (a dynamic inventory script).
    *.yaml files are listed by the caller and offered to load_if_ansible like any other."""
    path = Path(path)
    if path.suffix in (".yaml", ".yml") or not path.is_file():
        return False
    return path.suffix == ".ini" or _executable(path) or (not path.suffix and _looks_ini(path))


def load_if_ansible(file, problems):
    """[(name, Device or None when invalid)] when `file` is an Ansible inventory, else None (a
    benchfleet YAML file). Every problem of the file is appended to `problems`."""
    kind, data = _sniff(Path(file))
    if kind is None:
        return None
    if kind == "refused":
        problems.append("%s: %s" % (file, data))
        return []
    parsed = Parsed(file)
    (parse_ini if kind == "ini" else parse_yaml)(parsed, data)
    for folder in ("group_vars", "host_vars"):
        if (Path(file).parent / folder).is_dir():
            parsed.problem(None, "%s/ next to this file is not read by benchfleet; move those "
                           "variables into this file, or %s" % (folder, _FLATTEN % file))
    entries = devices(parsed)
    problems.extend(parsed.messages())
    return entries


def _sniff(path):
    """(kind, data): ("ini", text), ("yaml", document), ("refused", why) or (None, None)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return ("refused", "cannot read: %s" % exc) if path.suffix == ".ini" else (None, None)
    if raw.lstrip().startswith(b"$ANSIBLE_VAULT;"):
        return "refused", ("encrypted with Ansible Vault, which benchfleet cannot decrypt; keep "
                           "the hosts in a plain file (benchfleet needs no passwords)")
    if path.suffix == ".ini":
        try:
            return "ini", raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return "refused", "cannot read: %s" % exc
    if path.suffix in (".yaml", ".yml"):
        return _sniff_yaml(path)
    if _executable(path) or raw.startswith(b"#!"):
        return "refused", ("an executable (dynamic) inventory script is not run by benchfleet; "
                           + _FLATTEN % path + " and pass that file")
    if not path.suffix and _looks_ini(path):
        return "ini", raw.decode("utf-8", errors="replace")
    return None, None


def _sniff_yaml(path):
    try:
        data = load_yaml(path, loader=AnsibleYamlLoader)
    except ConfigError:
        return None, None   # the benchfleet reader reports the same syntax error
    if not isinstance(data, dict) or "devices" in data:
        return None, None
    if "plugin" in data:
        return "refused", ("plugin: %s: an Ansible inventory plugin (a dynamic inventory) is not "
                           "run by benchfleet; %s and pass that file"
                           % (data["plugin"], _FLATTEN % path))
    sections = ("hosts", "children", "vars")
    if any(isinstance(body, dict) and any(k in body for k in sections) for body in data.values()):
        return "yaml", data
    return None, None


def _executable(path):
    try:
        return path.is_file() and bool(path.stat().st_mode & 0o111)
    except OSError:
        return False


def _looks_ini(path):
    """True when the first meaningful line is an INI section header (Ansible's `hosts` file)."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line and line[0] not in "#;":
                    return bool(SECTION_RE.match(line))
    except (OSError, UnicodeDecodeError):
        pass
    return False
