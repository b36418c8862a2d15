"""Strict YAML reading for inventory and suite files, and pydantic errors as `file: path: message`.

PyYAML speaks YAML 1.1: `no`/`on` become booleans, `2:00` becomes 120, `010` becomes 8, a date
becomes a datetime and a duplicate key silently wins. Here only true/false are booleans, numbers
follow YAML 1.2 core, everything else stays a string, and every duplicate key is an error.
"""

import re
from pathlib import Path

import yaml

from orchestrator.errors import ConfigError

_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE = "tag:yaml.org,2002:merge"

# YAML 1.2 core schema patterns (no sexagesimal, no 1.1 octal, no underscores).
_BOOL_RE = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT_RE = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT_RE = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")


class StrictLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core scalars that records every duplicate mapping key."""

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _INT, _FLOAT, _TIMESTAMP)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream):
        super().__init__(stream)
        self.duplicates = []   # (line, key, first line), reported together after the parse

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                self.duplicates.append((line, key, seen[key]))
            else:
                seen[key] = line
        return super().construct_mapping(node, deep=deep)

    def construct_strict_int(self, node):
        text = self.construct_scalar(node)
        if text.startswith("0o"):
            return int(text[2:], 8)
        if text.startswith("0x"):
            return int(text[2:], 16)
        return int(text, 10)  # "010" is ten, as in YAML 1.2, not eight

    def construct_strict_float(self, node):
        text = self.construct_scalar(node).lower()
        if text.endswith(".inf"):
            return float("-inf") if text.startswith("-") else float("inf")
        if text == ".nan":
            return float("nan")
        return float(text)


# Resolution order matters: bool before int before float ("1" is an int, not 1.0).
StrictLoader.add_implicit_resolver(_BOOL, _BOOL_RE, list("tTfF"))
StrictLoader.add_implicit_resolver(_INT, _INT_RE, list("-+0123456789"))
StrictLoader.add_implicit_resolver(_FLOAT, _FLOAT_RE, list("-+.0123456789"))
StrictLoader.add_constructor(_INT, StrictLoader.construct_strict_int)
StrictLoader.add_constructor(_FLOAT, StrictLoader.construct_strict_float)


def load_yaml(path, loader=StrictLoader):
    """Read one YAML file strictly.

    Args:
        path: file to read; shown in problems exactly as given.
        loader: StrictLoader or a subclass of it (the Ansible reader adds Ansible's tags).
    Returns:
        the document (None for an empty file).
    Raises:
        ConfigError: file not found, unreadable, a syntax error (with line), or duplicate keys
        (every one, with lines).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("%s: file not found" % path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("%s: cannot read: %s" % (path, exc)) from None
    loader = loader(text)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        raise ConfigError("%s: %s" % (path, _describe_yaml_error(exc))) from None
    except yaml.YAMLError as exc:
        raise ConfigError("%s: invalid YAML: %s" % (path, exc)) from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise ConfigError([
            "%s: line %d: duplicate key %r (first on line %d)" % (path, line, key, first)
            for line, key, first in loader.duplicates])
    return data


def _describe_yaml_error(exc):
    mark = exc.problem_mark or exc.context_mark
    what = exc.problem or exc.context or "invalid YAML"
    if mark is None:
        return "invalid YAML: %s" % what
    return "line %d column %d: invalid YAML: %s" % (mark.line + 1, mark.column + 1, what)


def dotted(loc, prefix=""):
    """('matrix', 1, 'threads', 0) -> 'matrix[1].threads[0]', after an optional prefix."""
    text = prefix
    for part in loc:
        if isinstance(part, int):
            text += "[%d]" % part
        elif part == "[key]":
            continue  # pydantic's marker for a dict key error; the key itself is already shown
        else:
            text += ("." if text else "") + str(part)
    return text


def format_validation_error(file, error, prefix=""):
    """A pydantic ValidationError as 'file: dotted.path: message' lines, one per error."""
    lines = []
    for item in error.errors(include_url=False):
        path = dotted(item["loc"], prefix) or "(top level)"
        lines.append("%s: %s: %s" % (file, path, error_message(item)))
    return lines


def error_message(item):
    if item["type"] == "extra_forbidden":
        return "unknown field"
    if item["type"] == "missing":
        return "field required"
    message = item["msg"]
    # A ValueError raised by our own validators already reads as a sentence.
    for noise in ("Value error, ", "Assertion failed, "):
        if message.startswith(noise):
            message = message[len(noise):]
    return message
