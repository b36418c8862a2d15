"""Strict YAML reading for inventory and suite files, and pydantic errors as `file: path: message`.

PyYAML speaks YAML 1.1: `no`/`on` become booleans, `2:00` becomes 120, `010` becomes 8, a date
becomes a datetime and a duplicate key silently wins. Here only true/false are booleans, numbers
follow YAML 1.2 core, everything else stays a string, and every duplicate key is an error.

A file is also held to limits no real suite or inventory comes near, so a hostile or mistaken one
is refused with its name instead of eating the controller's memory or stack: at most MAX_BYTES,
nesting at most MAX_DEPTH levels (counted through aliases), and aliases adding at most
MAX_ALIAS_NODES nodes to the document in all (a "billion laughs" adds 10**9 from a few lines).
An alias that refers to a node containing it (a recursive structure) is refused too.
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

# Limits of one file (module constants: load_yaml reads them at each call).
MAX_BYTES = 4 * 1024 * 1024     # a suite or an inventory is a few KB
MAX_DEPTH = 64                  # levels of nesting, the top-level mapping being the first
MAX_ALIAS_NODES = 10000         # nodes all the aliases of a file may add when expanded

# YAML 1.2 core schema patterns (no sexagesimal, no 1.1 octal, no underscores).
_BOOL_RE = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT_RE = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT_RE = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")


class LimitError(yaml.MarkedYAMLError):
    """A file past one of the limits above; `where` is the dotted path of the node."""

    def __init__(self, problem, mark, where):
        super().__init__(problem=problem, problem_mark=mark)
        self.where = where


class StrictLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core scalars that records every duplicate mapping key, and holds
    a document to MAX_DEPTH and MAX_ALIAS_NODES while composing it (before anything is built)."""

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _INT, _FLOAT, _TIMESTAMP)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream):
        super().__init__(stream)
        self.duplicates = []   # (line, key, first line), reported together after the parse
        self.max_depth, self.max_alias_nodes = MAX_DEPTH, MAX_ALIAS_NODES
        self._depth = 0          # levels open around the node being composed
        self._path = []          # keys and indexes down to it
        self._done = set()       # ids of nodes fully composed (an alias to any other is a loop)
        self._measures = {}      # id(node) -> (nodes, levels) of the node expanded
        self._alias_nodes = 0    # nodes added by the aliases so far

    def compose_node(self, parent, index):
        part = index if isinstance(index, int) else (
            index.value if isinstance(index, yaml.ScalarNode) else None)
        if part is not None:
            self._path.append(part)
        try:
            if self.check_event(yaml.AliasEvent):
                self._check_alias(self.peek_event())
                return super().compose_node(parent, index)
            self._depth += 1
            try:
                if self._depth > self.max_depth:
                    raise LimitError(
                        "nested deeper than %d levels; a benchfleet file needs only a few: "
                        "flatten this value" % self.max_depth,
                        self.peek_event().start_mark, self._where())
                node = super().compose_node(parent, index)
            finally:
                self._depth -= 1
            self._done.add(id(node))
            return node
        finally:
            if part is not None:
                self._path.pop()

    def _check_alias(self, event):
        node = self.anchors.get(event.anchor)
        if node is None:
            return   # an undefined alias: the composer reports it
        if id(node) not in self._done:
            raise LimitError("alias *%s refers to a node that contains it (a recursive "
                             "structure); write the value out instead" % event.anchor,
                             event.start_mark, self._where())
        nodes, levels = self._measure(node)
        if self._depth + levels > self.max_depth:
            raise LimitError("nested deeper than %d levels once alias *%s is expanded; a "
                             "benchfleet file needs only a few: flatten this value"
                             % (self.max_depth, event.anchor), event.start_mark, self._where())
        self._alias_nodes += nodes
        if self._alias_nodes > self.max_alias_nodes:
            raise LimitError("alias *%s expands to %d nodes, past the %d that aliases may add to "
                             "one file (a YAML alias bomb?); write the values out, or use fewer "
                             "aliases" % (event.anchor, nodes, self.max_alias_nodes),
                             event.start_mark, self._where())

    def _measure(self, node):
        """(nodes, levels) of a composed, loop-free node with every alias in it expanded."""
        key = id(node)
        if key not in self._measures:
            if isinstance(node, yaml.ScalarNode):
                children = []
            elif isinstance(node, yaml.SequenceNode):
                children = node.value
            else:
                children = [n for pair in node.value for n in pair]
            nodes, levels = 1, 0
            for child in children:
                n, l = self._measure(child)
                nodes, levels = nodes + n, max(levels, l)
            self._measures[key] = (nodes, levels + 1)
        return self._measures[key]

    def _where(self):
        parts = self._path if len(self._path) <= 12 else self._path[:10] + ["..."]
        return dotted(parts) or "(top level)"

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
        ConfigError: file not found, unreadable, larger than MAX_BYTES, a syntax error (with
        line), past MAX_DEPTH or MAX_ALIAS_NODES (with line and field), or duplicate keys (every
        one, with lines).
    """
    path = Path(path)
    text = read_capped(path)
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


def read_capped(path, limit=None):
    """The text of a file of at most `limit` bytes (default MAX_BYTES); never reads more than
    limit + 1 bytes, so /dev/zero or a 50 MB file is refused at once.

    Raises:
        ConfigError: file not found, unreadable, not UTF-8, or larger than the limit.
    """
    limit = MAX_BYTES if limit is None else limit
    try:
        with open(path, "rb") as f:
            raw = f.read(limit + 1)
    except FileNotFoundError:
        raise ConfigError("%s: file not found" % path) from None
    except OSError as exc:
        raise ConfigError("%s: cannot read: %s" % (path, exc)) from None
    if len(raw) > limit:
        raise ConfigError("%s: larger than %s, the most a benchfleet file may hold (a suite or an "
                          "inventory is a few KB): is this the right file?" % (path, _size(limit)))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError("%s: cannot read: %s" % (path, exc)) from None


def _size(n):
    if n >= 1024 * 1024 and n % (1024 * 1024) == 0:
        return "%d MiB" % (n // (1024 * 1024))
    return "%d bytes" % n


def _describe_yaml_error(exc):
    if isinstance(exc, LimitError):
        mark = exc.problem_mark
        return "line %d column %d: %s: %s" % (mark.line + 1, mark.column + 1, exc.where,
                                              exc.problem)
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
