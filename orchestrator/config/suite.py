"""Suites: suites/X.yaml -> Suite (models, settings, cool-down, matrix) and its device-free cases.

Loading checks types (pydantic, strict) and then the cross references a schema cannot see
(variant names, model paths, runtime/format compatibility); every problem is reported at once.
"""

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError
from pydantic import create_model, model_validator

from agent.backends import catalog, userfile
from agent.schema import (COOLDOWN_LIMITS, COOLDOWN_MODES, DEFAULT_COOLDOWN, DEFAULT_SETTINGS,
                          ENUM_SETTINGS, background_problems, mode_problems,
                          MAX_CASES, MAX_CPU_INDEX, MAX_SYNTHETIC_MS, MAX_THREADS, PRECISIONS,
                          SETTING_MAXIMUMS, SETTING_MINIMUMS)
from orchestrator.errors import ConfigError
from orchestrator.models.variants import VARIANT_FORMATS
from orchestrator.config.fields import bounded
from orchestrator.config.inventory import NAME_PATTERN, Name
from orchestrator.config.matrix import expand_entry
from orchestrator.config.yamlio import format_validation_error, load_yaml

# Mirrors orchestrator/zoo.py (not imported: planning must not pay for a model-builder import).
BUILTIN_MODELS = ("movenet-thunder", "movenet-lightning", "movenet-tiny")
# variant -> (format, the precision its weights are stored in); variants.py has no heavy imports.
BUILTIN_VARIANTS = VARIANT_FORMATS
# A built-in model without `variants:` gets these; the others only where a `variants:` names them
# (an Edge TPU-compiled model must never land on the plain tflite runtime by default).
DEFAULT_BUILTIN_VARIANTS = ("savedmodel", "tflite-fp32", "tflite-int8")
FILE_VARIANT = "file"            # the one variant of a user `path:` model: the file as given
SYNTHETIC_VARIANT = "synthetic"  # the one variant of a `synthetic_ms:` model

Selector = Annotated[str, Field(pattern=r"^(tag:)?" + NAME_PATTERN[1:])]
Threads = bounded(int, 1, MAX_THREADS)
CpuIndex = bounded(int, 0, MAX_CPU_INDEX)
SyntheticMs = bounded(float, 0.0, MAX_SYNTHETIC_MS, low_allowed=False)


def _as_list(value):
    return [value] if isinstance(value, str) else value


class _Strict(BaseModel):
    # strict: "2000" is not a number and `yes` is not a boolean; no .inf/.nan sneaking through
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class _Settings(_Strict):
    def values(self):
        return self.model_dump(exclude_none=True)


def _setting_field(name):
    """An optional pydantic field of DEFAULT_SETTINGS[name]'s type, from its SETTING_MINIMUMS
    to its SETTING_MAXIMUMS bound."""
    kind = type(DEFAULT_SETTINGS[name])
    if kind is bool:
        return (Optional[bool], None)
    if name in ENUM_SETTINGS:
        return (Optional[Literal[ENUM_SETTINGS[name]]], None)
    low, inclusive = SETTING_MINIMUMS[name]
    return (Optional[bounded(kind, low, SETTING_MAXIMUMS[name], inclusive)], None)


def _cooldown_field(name):
    low, low_allowed, high = COOLDOWN_LIMITS[name]
    return (bounded(float, low, high, low_allowed), DEFAULT_COOLDOWN[name])


# Overrides of agent.schema.DEFAULT_SETTINGS (docs/METHOD.md); unset fields keep the default. Derived
# from the schema, so a setting added there is accepted here with its type and bound.
SettingsOverride = create_model(
    "SettingsOverride", __base__=_Settings,
    **{name: _setting_field(name) for name in DEFAULT_SETTINGS})


# Between cases: none, fixed `seconds`, or thermal (back within delta_c, at most max_wait_s); the
# defaults are agent.schema.DEFAULT_COOLDOWN, the bounds its COOLDOWN_LIMITS.
Cooldown = create_model(
    "Cooldown", __base__=_Strict,
    mode=(Literal[COOLDOWN_MODES], DEFAULT_COOLDOWN["mode"]),
    **{name: _cooldown_field(name) for name in COOLDOWN_LIMITS})


class ModelSpec(_Strict):
    """A model: exactly one of builtin, path (relative to the suite file) or synthetic_ms."""

    name: Name
    builtin: Optional[Literal[BUILTIN_MODELS]] = None
    path: Optional[str] = None
    synthetic_ms: Optional[SyntheticMs] = None
    variants: Optional[list[str]] = None
    # int8 calibration samples for a built-in (a folder of .npy files, relative to the suite);
    # default: seeded random pixels, like the inputs the harness feeds.
    representative: Optional[str] = None
    # The inputs the timed runs are fed (a folder of .npy/.npz arrays or images, relative to the
    # suite; orchestrator/inputs.py); default: seeded random inputs (input_seed, input_pool).
    inputs: Optional[str] = None

    _file_format: str = PrivateAttr(default="")
    _resolved: str = PrivateAttr(default="")
    _representative: str = PrivateAttr(default="")
    _inputs: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _one_source(self):
        given = [k for k in ("builtin", "path", "synthetic_ms") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of builtin, path, synthetic_ms (got %s)"
                             % (", ".join(given) or "none"))
        return self

    @property
    def kind(self):
        return "builtin" if self.builtin else "path" if self.path is not None else "synthetic"

    def allowed_variants(self):
        return {"builtin": list(BUILTIN_VARIANTS), "path": [FILE_VARIANT],
                "synthetic": [SYNTHETIC_VARIANT]}[self.kind]

    def variant_names(self, wanted=None):
        """Variants a matrix entry can select: the model's own list, else the defaults plus the
        allowed ones the entry names (`wanted`)."""
        if self.variants:
            return list(self.variants)
        names = list(DEFAULT_BUILTIN_VARIANTS) if self.kind == "builtin" else self.allowed_variants()
        allowed = self.allowed_variants()
        return names + [v for v in wanted or () if v in allowed and v not in names]

    def variant_format(self, variant):
        if self.kind == "builtin":
            return BUILTIN_VARIANTS[variant][0]
        return self._file_format if self.kind == "path" else "synthetic"

    def variant_precision(self, variant):
        """The precision a variant runs at unless a converting backend picks another."""
        return BUILTIN_VARIANTS[variant][1] if self.kind == "builtin" else "fp32"

    def resolved_path(self):
        """Absolute path of a `path:` model (resolved against the suite file's folder)."""
        return self._resolved or None

    def resolved_representative(self):
        """Absolute path of the `representative:` folder, or None."""
        return self._representative or None

    def resolved_inputs(self):
        """Absolute path of the `inputs:` folder, or None."""
        return self._inputs or None


class MatrixEntry(_Strict):
    """One line of the sweep: runtimes x models x variants x threads x affinity x precision."""

    # Names are checked against the catalog and the suite's backend files once those are read.
    runtime: Annotated[list[str], BeforeValidator(_as_list), Field(min_length=1)]
    models: Optional[list[str]] = None
    variants: Optional[list[str]] = None
    threads: Optional[list[Optional[Threads]]] = None
    affinity: Optional[list[Optional[Annotated[list[CpuIndex], Field(min_length=1)]]]] = None
    precision: Optional[list[Literal[PRECISIONS]]] = None
    options: dict[str, Any] = {}
    settings: SettingsOverride = SettingsOverride()
    devices: Optional[list[Selector]] = None
    # Load beside the case (docs/METHOD.md "Deployment conditions"): each item is a case of its
    # own: `none`, {cpu: 50%, cores: 2} (or cpu: 50), {command: "a shell command line"}.
    # Checked item by item with the matrix (_check_matrix), so every bad item is named.
    background: Annotated[Optional[list[Any]],
                          BeforeValidator(lambda v: [v] if isinstance(v, (str, dict)) else v)] = None
    # The timed runs' inputs for every model of the entry (over the models' own `inputs:`).
    inputs: Optional[str] = None

    _inputs: str = PrivateAttr(default="")

    def backgrounds(self):
        """The entry's background loads as the agent's runtime.background dicts (None: idle)."""
        return [background_spec(item) for item in self.background or [None]]


def background_spec(item):
    """A suite's background item -> runtime.background (None for none)."""
    if item is None or item == "none":
        return None
    if "command" in item:
        return {"kind": "command", "command": item["command"]}
    if "inventory" in item:   # resolved per device by the planner (its background_commands)
        return {"kind": "inventory", "name": item["inventory"]}
    percent = item["cpu"]
    if isinstance(percent, str):
        percent = float(percent.strip().rstrip("%"))
    return {"kind": "cpu", "percent": percent, "cores": item.get("cores", 1)}


def background_problem(item):
    """Why a suite's background item is not one (None when it is)."""
    hint = "expected none, {cpu: 50%, cores: 2}, {command: \"...\"} or {inventory: NAME}"
    if item is None or item == "none":
        return None
    if not isinstance(item, dict) or not item or \
            set(item) - {"cpu", "cores", "command", "inventory"} or \
            sum(k in item for k in ("command", "cpu", "inventory")) != 1:
        return "%s, got %r" % (hint, item)
    if "inventory" in item:
        name = item["inventory"]
        if set(item) != {"inventory"} or not isinstance(name, str) or \
                not re.match(NAME_PATTERN, name):
            return ("{inventory: NAME} names a command of each device's background_commands "
                    "(lower-case letters, digits, . _ -), got %r" % (item,))
        return None
    if "command" in item:
        if set(item) != {"command"} or not isinstance(item["command"], str):
            return "a command load is {command: \"a shell command line\"}, got %r" % (item,)
    else:
        cpu, cores = item["cpu"], item.get("cores", 1)
        try:
            percent = float(cpu.strip().rstrip("%")) if isinstance(cpu, str) else cpu
        except ValueError:
            percent = None
        if isinstance(percent, bool) or not isinstance(percent, (int, float)):
            return "cpu is a share of each core's time such as 50%%, got %r" % (cpu,)
        if isinstance(cores, bool) or not isinstance(cores, int):
            return "cores is a whole number of busy processes, got %r" % (cores,)
    problems = background_problems(background_spec(item), "background")
    return "; ".join(p.split(": ", 1)[1] if ": " in p else p for p in problems) or None


class Suite(_Strict):
    name: Name
    description: str = ""
    # Backends of the user's own: Python files (relative to the suite) shipped with the agent.
    backend_file: Annotated[Optional[list[str]], BeforeValidator(_as_list)] = None
    devices: Optional[list[Selector]] = None
    settings: SettingsOverride = SettingsOverride()
    cooldown: Cooldown = Cooldown()
    models: Annotated[list[ModelSpec], Field(min_length=1)]
    matrix: Annotated[list[MatrixEntry], Field(min_length=1)]

    _source: str = PrivateAttr(default="")
    _user_backends: dict = PrivateAttr(default_factory=dict)

    @property
    def source(self):
        return self._source

    @property
    def user_backends(self):
        """{name: catalog.BackendSpec} of the suite's backend files (spec.path: the file)."""
        return dict(self._user_backends)

    def backend(self, name):
        """The BackendSpec of a built-in or user backend; None for an unknown name."""
        return catalog.BY_NAME.get(name) or self._user_backends.get(name)

    def backend_names(self):
        return catalog.names() + tuple(sorted(self._user_backends))

    def model(self, name):
        return next(m for m in self.models if m.name == name)

    def inputs_for(self, entry, model):
        """(absolute folder, the field that named it) of the inputs a case of matrix entry
        `entry` (its index) with `model` (a ModelSpec) is fed, or None: seeded random inputs.
        The entry's `inputs:` wins over the model's."""
        item = self.matrix[entry]
        if item.inputs is not None:
            return item._inputs, "matrix[%d].inputs" % entry
        if model.inputs is not None:
            index = next(i for i, m in enumerate(self.models) if m is model)
            return model._inputs, "models[%d].inputs" % index
        return None

    def settings_for(self, entry):
        """DEFAULT_SETTINGS, then the suite's, then the entry's overrides; every key present."""
        merged = {**DEFAULT_SETTINGS, **self.settings.values(), **entry.settings.values()}
        # Same type as the default, so `runs: 100` and `min_duration_s: 2` hash like 100 and 2.0.
        return {k: type(DEFAULT_SETTINGS[k])(v) for k, v in merged.items()}

    def expand(self):
        """Every case of the matrix, in matrix order (device-independent)."""
        cases = []
        for i, entry in enumerate(self.matrix):
            cases.extend(expand_entry(self, i, entry)[0])
        return cases


def load_suite(path):
    """Load and check a suite file.

    Raises:
        ConfigError: every problem as 'file: dotted.path: message' (types first; the cross
        references only once the types are right).
    """
    path = Path(path)
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError("%s: expected a mapping with name:, models: and matrix:" % path)
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(path, exc)) from None
    suite._source = str(path)
    file_problems = _read_backend_files(suite, path.parent)
    model_problems = _check_models(suite, path.parent) + file_problems
    problems = model_problems + _check_matrix(suite, expand=not model_problems,
                                              names_known=not file_problems)
    problems += _check_inputs(suite, path.parent, expand=not problems)
    if problems:
        raise ConfigError(["%s: %s: %s" % (path, where, msg) for where, msg in problems])
    return suite


def _check_models(suite, base_dir):
    problems, seen = [], {}
    for i, model in enumerate(suite.models):
        where = "models[%d]" % i
        if model.name in seen:
            problems.append((where + ".name", "duplicate model name %r (also %s)"
                             % (model.name, seen[model.name])))
        seen.setdefault(model.name, where)
        allowed = model.allowed_variants()
        for j, variant in enumerate(model.variants or []):
            if variant not in allowed:
                problems.append(("%s.variants[%d]" % (where, j), "unknown variant %r for a %s model;"
                                 " allowed: %s" % (variant, model.kind, ", ".join(allowed))))
            elif variant in model.variants[:j]:
                problems.append(("%s.variants[%d]" % (where, j), "duplicate variant %r" % variant))
        if model.kind == "path":
            problems.extend(_check_model_path(model, where, base_dir))
        if model.representative is not None:
            problems.extend(_check_representative(model, where, base_dir))
    return problems


def _read_backend_files(suite, base_dir):
    """Read each backend_file's catalog entry (without running it) into suite._user_backends."""
    problems = []
    for j, rel in enumerate(suite.backend_file or []):
        where = "backend_file[%d]" % j
        full = (base_dir / os.path.expanduser(rel)).resolve()
        if not full.is_file():
            problems.append((where, "not found: %s" % full))
            continue
        try:
            spec = userfile.read_spec(str(full))
        except userfile.BadBackendFile as exc:
            problems.extend((where, line) for line in str(exc).splitlines())
            continue
        if spec.name in suite._user_backends:
            problems.append((where, "backend %r is also defined by %s"
                             % (spec.name, suite._user_backends[spec.name].path)))
            continue
        suite._user_backends[spec.name] = spec
    return problems


def _check_representative(model, where, base_dir):
    if model.kind != "builtin":
        return [(where + ".representative", "only built-in models are calibrated here; quantize "
                 "your own model yourself and name the file with path:")]
    full = (base_dir / os.path.expanduser(model.representative)).resolve()
    model._representative = str(full)
    if not full.is_dir():
        return [(where + ".representative", "not a folder: %s (expected .npy samples)" % full)]
    return []


def _check_inputs(suite, base_dir, expand=True):
    """Each `inputs:` folder (orchestrator/inputs.py folder_files) and, once the matrix expands,
    its samples against the input of every model variant a case feeds them to."""
    from orchestrator import inputs as case_inputs
    problems, bad = [], set()
    fields = [("models[%d].inputs" % i, m) for i, m in enumerate(suite.models)] + \
             [("matrix[%d].inputs" % i, e) for i, e in enumerate(suite.matrix)]
    for where, item in fields:
        if item.inputs is None:
            continue
        item._inputs = str((base_dir / os.path.expanduser(item.inputs)).resolve())
        try:
            case_inputs.folder_files(item._inputs)
        except ConfigError as exc:
            problems.append((where, str(exc)))
            bad.add(item._inputs)
    if not expand or problems:
        return problems
    seen = set()
    for i, entry in enumerate(suite.matrix):
        for case in expand_entry(suite, i, entry)[0]:
            found = suite.inputs_for(i, case.model)
            key = (found, case.model.name, case.variant) if found else None
            if found is None or key in seen or found[0] in bad:
                continue
            seen.add(key)
            try:
                specs = case_inputs.model_inputs(case.model, case.variant)
                case_inputs.check(found[0], specs)
            except ConfigError as exc:
                problems.append((found[1], "%s (for %s/%s)" % (exc, case.model.name,
                                                              case.variant)))
    return problems


def _check_model_path(model, where, base_dir):
    full = (base_dir / os.path.expanduser(model.path)).resolve()
    model._resolved = str(full)
    if not full.exists():
        return [(where + ".path", "not found: %s" % full)]
    if full.is_file() and full.suffix in (".tflite", ".onnx"):
        model._file_format = full.suffix[1:]
    elif full.is_file() and full.suffix == ".xml":  # an OpenVINO IR: the weights travel with it
        if not full.with_suffix(".bin").is_file():
            return [(where + ".path", "an OpenVINO IR needs its weights beside it: %s not found"
                     % full.with_suffix(".bin"))]
        model._file_format = "openvino"
    elif full.is_dir() and any((full / n).is_file() for n in ("saved_model.pb", "saved_model.pbtxt")):
        model._file_format = "savedmodel"
    else:
        return [(where + ".path", "expected a .tflite or .onnx file or a SavedModel folder (with "
                 "saved_model.pb): %s" % full)]
    return []


def _check_matrix(suite, expand=True, names_known=True):
    # The suite's settings alone; the modes' rules (paced needs target_fps, ...) hold for what
    # each entry runs, so a suite may set mode and leave target_fps to its entries.
    problems = _check_settings("settings", suite.settings_for(MatrixEntry(runtime=["synthetic"])),
                               modes=not suite.matrix)
    names = [m.name for m in suite.models]
    total = 0
    for i, entry in enumerate(suite.matrix):
        before = len(problems)
        for j, name in enumerate(entry.models or []):
            if name not in names:
                problems.append(("matrix[%d].models[%d]" % (i, j), "unknown model %r; suite models:"
                                 " %s" % (name, ", ".join(names))))
        problems += _check_runtimes(suite, i, entry, names_known)
        chosen = [suite.model(n) for n in entry.models or names if n in names]
        known = {v for m in chosen for v in m.variant_names(entry.variants)}
        for j, variant in enumerate(entry.variants or []):
            if variant not in known:
                problems.append(("matrix[%d].variants[%d]" % (i, j), "no selected model has variant"
                                 " %r; they have: %s" % (variant, ", ".join(sorted(known)))))
        for j, item in enumerate(entry.background or []):
            problem = background_problem(item)
            if problem:
                problems.append(("matrix[%d].background[%d]" % (i, j), problem))
        if entry.settings.values():
            problems += _check_settings("matrix[%d].settings" % i, suite.settings_for(entry))
        else:   # the suite's settings are what it runs: their modes' rules, named there
            found = _check_settings("settings", suite.settings_for(entry), limits=False)
            problems += [p for p in found if p not in problems]
        if expand and len(problems) == before:  # only once models and references are sound
            cases, found = expand_entry(suite, i, entry)
            problems += found
            total += len(cases)
    if total > MAX_CASES:
        problems.append(("matrix", "its entries expand to %d cases, past the %d one suite may "
                         "hold: split it into several suites" % (total, MAX_CASES)))
    return problems


def _check_runtimes(suite, i, entry, names_known=True):
    """Every runtime name known, and the entry's options valid for each of its runtimes.
    names_known False: a backend file failed to load, so an unknown name is not news."""
    problems = []
    for j, name in enumerate(entry.runtime):
        spec = suite.backend(name)
        if spec is None and not names_known:
            continue
        if spec is None:
            problems.append(("matrix[%d].runtime[%d]" % (i, j), "unknown backend %r; backends: %s%s"
                             % (name, ", ".join(suite.backend_names()),
                                "" if suite.backend_file else " (or a backend_file of your own)")))
            continue
        for line in spec.check_options(entry.options, "matrix[%d].options" % i):
            where, _, message = line.partition(": ")
            problems.append((where, message if len(entry.runtime) == 1 else
                             "%s (runtime %s)" % (message, name)))
    return problems


def _check_settings(where, s, modes=True, limits=True):
    # the modes' rules, shared with the agent: "settings.FIELD: message" -> (where.FIELD, message)
    problems = [(where + "." + text.split(": ", 1)[0].split(".", 1)[1], text.split(": ", 1)[1])
                for text in (mode_problems(s) if modes else [])]
    if not limits:
        return problems
    if s["max_duration_s"] < s["min_duration_s"]:
        problems.append((where, "max_duration_s (%g) is below min_duration_s (%g)"
                         % (s["max_duration_s"], s["min_duration_s"])))
    # a sustained case measures duration_s, not up to max_duration_s (mode_problems checks it)
    if s["case_timeout_s"] <= s["max_duration_s"] and s["mode"] != "sustained":
        problems.append((where, "case_timeout_s (%g) must exceed max_duration_s (%g): the agent "
                         "would kill a case that is still measuring" % (s["case_timeout_s"],
                                                                        s["max_duration_s"])))
    return problems
