"""A backend of the user's own: one Python file a suite names (`backend_file:`), shipped with the job.

The file holds a Backend subclass and a literal `BACKEND = {...}` dict, its catalog entry. The
entry is read with ast, never by running the file, so the controller can check a suite against
it without importing the user's frameworks; the agent then imports the file on the device.
"""

import ast
import importlib.machinery
import importlib.util
import os

from agent.backends import catalog

ENTRY = "BACKEND"
REQUIRED = ("name", "class", "formats")
ALLOWED = REQUIRED + ("summary", "modules", "hint", "precisions", "accelerator", "options")
OPTION_FIELDS = ("kind", "default", "help", "choices", "minimum")
EXAMPLE = ('BACKEND = {"name": "mybackend", "class": "MyBackend", "formats": ["tflite"], '
           '"options": {"scale": {"kind": "number", "default": 1.0}}}')


class BadBackendFile(ValueError):
    """The file cannot be a backend; the message names the file and what to fix."""


def read_spec(path, source=None):
    """The BackendSpec declared by the backend file at `path` (source: its text, if read already).

    Raises:
      BadBackendFile: unreadable, not Python, no literal BACKEND dict, a bad field, or no class
      of the name it gives.
    """
    if source is None:
        try:
            with open(path, "rb") as f:
                source = f.read().decode("utf-8")
        except (IOError, OSError, UnicodeDecodeError) as exc:
            raise BadBackendFile("%s: cannot read backend file: %s" % (path, exc))
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise BadBackendFile("%s: line %s: not valid Python: %s" % (path, exc.lineno, exc.msg))
    entry = _literal_entry(tree, path)
    classes = set(n.name for n in tree.body if isinstance(n, ast.ClassDef))
    return spec_from_entry(entry, path, classes)


def _literal_entry(tree, path):
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == ENTRY
                                                for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                raise BadBackendFile("%s: line %d: %s must be a literal dict (no names or calls "
                                     "in it)" % (path, node.lineno, ENTRY))
            if not isinstance(value, dict):
                raise BadBackendFile("%s: line %d: %s must be a dict" % (path, node.lineno, ENTRY))
            return value
    raise BadBackendFile("%s: no %s = {...} entry; add one, e.g.\n  %s" % (path, ENTRY, EXAMPLE))


def spec_from_entry(entry, path, classes=None):
    """BackendSpec from a BACKEND dict; every problem is collected into one BadBackendFile."""
    problems = []
    where = "%s: %s" % (path, ENTRY)
    for key in sorted(set(entry) - set(ALLOWED), key=str):
        problems.append("%s.%s: unknown field; fields: %s" % (where, key, ", ".join(ALLOWED)))
    for key in REQUIRED:
        if key not in entry:
            problems.append("%s.%s: field required" % (where, key))
    name, cls = entry.get("name"), entry.get("class")
    if "name" in entry and not catalog.valid_name(name):
        problems.append("%s.name: %r must match %s" % (where, name, catalog.NAME_PATTERN))
    elif name in catalog.BY_NAME:
        problems.append("%s.name: %r is a built-in backend; pick another name" % (where, name))
    if "class" in entry and (not isinstance(cls, str) or (classes is not None and cls not in classes)):
        problems.append("%s.class: %r is not a class defined in the file%s" % (
            where, cls, " (classes: %s)" % ", ".join(sorted(classes)) if classes else ""))
    formats = _str_list(entry, "formats", where, problems, catalog.FORMATS, required=True)
    precisions = _str_list(entry, "precisions", where, problems, catalog.PRECISIONS)
    modules = _str_list(entry, "modules", where, problems)
    for key in ("summary", "hint", "accelerator"):
        if entry.get(key) is not None and not isinstance(entry[key], str):
            problems.append("%s.%s: expected a string" % (where, key))
    options = _options(entry.get("options") or {}, where, problems)
    if problems:
        raise BadBackendFile("\n".join(problems))
    return catalog.BackendSpec(
        name, None, cls, formats, entry.get("summary") or "user backend %s" % os.path.basename(
            str(path)), precisions=precisions, accelerator=entry.get("accelerator"),
        modules=modules, hint=entry.get("hint"), options=options, path=str(path))


def _str_list(entry, key, where, problems, allowed=None, required=False):
    value = entry.get(key)
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value) or \
            (required and not value):
        problems.append("%s.%s: expected a list of strings" % (where, key))
        return ()
    for v in value:
        if allowed is not None and v not in allowed:
            problems.append("%s.%s: unknown %r; allowed: %s" % (where, key, v, ", ".join(allowed)))
    return tuple(value)


def _options(given, where, problems):
    if not isinstance(given, dict):
        problems.append("%s.options: expected {name: {kind: ..., default: ...}}" % where)
        return ()
    options = []
    for name in sorted(given, key=str):
        decl = given[name]
        at = "%s.options.%s" % (where, name)
        if not isinstance(decl, dict):
            problems.append("%s: expected {kind: ..., default: ..., help: ...}" % at)
            continue
        for key in sorted(set(decl) - set(OPTION_FIELDS), key=str):
            problems.append("%s.%s: unknown field; fields: %s" % (at, key, ", ".join(OPTION_FIELDS)))
        try:
            option = catalog.Option(str(name), decl.get("kind", "str"), decl.get("default"),
                                    decl.get("help") or "", decl.get("choices"), decl.get("minimum"))
        except (ValueError, TypeError) as exc:
            problems.append("%s.kind: %s" % (at, exc))
            continue
        if option.default is not None and option.problem(option.default):
            problems.append("%s.default: %s" % (at, option.problem(option.default)))
        options.append(option)
    return tuple(options)


def load_class(spec, path):
    """Import the backend file at `path` (on the device) and return its class named spec.cls."""
    from agent.backends.base import Backend
    module_name = "benchfleet_user_backend_" + spec.name.replace("-", "_")
    # The blob has no .py suffix (it is named by hash): give the loader explicitly.
    loader = importlib.machinery.SourceFileLoader(module_name, str(path))
    module_spec = importlib.util.spec_from_loader(module_name, loader)
    module = importlib.util.module_from_spec(module_spec)
    loader.exec_module(module)
    cls = getattr(module, spec.cls, None)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise BadBackendFile("%s: %s is not a subclass of agent.backends.base.Backend"
                             % (path, spec.cls))
    return cls
