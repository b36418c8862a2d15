"""The plan: suite cases x selected devices -> per-device ordered cases with stable ids and skips.

A case a device cannot run is kept as SKIPPED with a reason and a hint, never dropped, so the
report shows every cell of the comparison and says why it is empty.
"""

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Optional

from agent import schema
from agent.backends import catalog
from orchestrator.escape import terminal
from orchestrator.errors import ConfigError

LABEL_PAD = 40   # SKIP reasons line up after labels up to this long; longer ones do not widen all


@dataclass(frozen=True)
class PlannedCase:
    case_id: str
    label: str
    entry: int                    # index of the matrix entry it came from
    model_name: str
    variant: str
    format: str
    builtin: Optional[str]
    path: Optional[str]           # absolute path of a user model, else None
    synthetic_ms: Optional[float]
    runtime: dict                 # backend, threads, affinity, precision, options
    settings: dict                # every DEFAULT_SETTINGS key
    skip_reason: Optional[str] = None
    skip_hint: Optional[str] = None
    inputs: Optional[str] = None         # absolute folder of the suite's inputs:, else None
    inputs_digest: Optional[str] = None  # orchestrator.inputs.digest of it (in the case_id)

    @property
    def skipped(self):
        return self.skip_reason is not None


@dataclass
class DevicePlan:
    device: object                # inventory.Device
    cases: list = field(default_factory=list)
    probed: bool = False          # a cached probe was used: runtimes and hardware were checked

    @property
    def runnable(self):
        return [c for c in self.cases if not c.skipped]

    @property
    def skipped(self):
        return [c for c in self.cases if c.skipped]


@dataclass
class Plan:
    suite: object                 # suite.Suite
    devices: list                 # DevicePlan, in selection order
    notes: list = field(default_factory=list)

    def device(self, name):
        return next(d for d in self.devices if d.device.name == name)

    def estimate_s(self, dplan):
        """Least wall time of one device: warm-up and measurement minimums plus cool-downs."""
        run = dplan.runnable
        per_case = sum(c.settings["warmup_min_s"] + (
            c.settings["duration_s"] if c.settings["mode"] == "sustained"
            else c.settings["min_duration_s"]) for c in run)
        cooldown = self.suite.cooldown
        pause = cooldown.seconds if cooldown.mode == "fixed" else 0.0
        return per_case + pause * max(0, len(run) - 1)

    def to_text(self):
        """The listing of `benchfleet plan`: per device each case RUN or SKIP, then totals."""
        cd = self.suite.cooldown
        pause = {"none": "none", "fixed": "fixed %g s" % cd.seconds,
                 "thermal": "thermal (within %g C, at most %g s, then %g s re-warm; not in "
                 "estimates)" % (cd.delta_c, cd.max_wait_s, cd.rewarm_s)}[cd.mode]
        lines = ["suite %s (%s): %d device(s)" % (self.suite.name, self.suite.source or "-",
                                                   len(self.devices)),
                 "cool-down between cases: %s" % pause]
        for dplan in self.devices:
            lines += [""] + _device_lines(self, dplan)
        if self.notes:
            lines += ["", "notes:"] + ["  " + n for n in self.notes]
        cases = [c for d in self.devices for c in d.cases]
        run = sum(1 for c in cases if not c.skipped)
        longest = max([self.estimate_s(d) for d in self.devices] or [0])
        lines += ["", "total: %d cases, %d run, %d skipped; estimated minimum %s "
                  "(devices run in parallel)" % (len(cases), run, len(cases) - run,
                                                 _duration(longest))]
        return "\n".join(lines)

    def to_json(self):
        """The plan as plain data (`benchfleet plan --json`)."""
        return {"suite": self.suite.name, "source": self.suite.source,
                "cooldown": self.suite.cooldown.model_dump(), "notes": list(self.notes),
                "devices": [{"name": d.device.name, "transport": d.device.transport,
                             "inventory": d.device.source, "probed": d.probed,
                             "estimate_s": self.estimate_s(d),
                             "cases": [_case_json(c) for c in d.cases]} for d in self.devices]}


def _case_json(case):
    doc = {"case_id": case.case_id, "label": case.label, "run": not case.skipped,
           "model": case.model_name, "variant": case.variant, "format": case.format,
           "runtime": case.runtime, "settings": case.settings,
           "skip_reason": case.skip_reason, "skip_hint": case.skip_hint}
    if case.inputs is not None:
        doc["inputs"] = {"folder": case.inputs, "digest": case.inputs_digest}
    return doc


def _device_lines(the_plan, dplan):
    dev = dplan.device
    head = "%s (%s, %s): %d cases, %d run, %d skipped, at least %s" % (
        dev.name, dev.transport, dev.source or "-", len(dplan.cases), len(dplan.runnable),
        len(dplan.skipped), _duration(the_plan.estimate_s(dplan)))
    lines = [head]
    if not dplan.cases:
        lines.append("  (no matrix entry applies to this device)")
    elif not dplan.probed:
        lines.append("  (not probed: runtimes and accelerators unchecked; `benchfleet devices probe "
                     "%s%s` lets the plan skip what the device lacks)" % (dev.name, dev.cli_flag))
    width = min(LABEL_PAD, max([len(c.label) for c in dplan.cases] or [0]))
    for c in dplan.cases:
        if c.skipped:
            # A probe rule may quote the device (a GPU's reason): one inert line.
            why = terminal(c.skip_reason + ("; " + c.skip_hint if c.skip_hint else ""))
            lines.append("  SKIP  %s  %-*s  %s" % (c.case_id, width, c.label, why))
        else:
            lines.append("  RUN   %s  %s" % (c.case_id, c.label))
    return lines


def _duration(seconds):
    seconds = int(round(seconds))
    if seconds < 60:
        return "%d s" % seconds
    if seconds < 3600:
        return "%d min %02d s" % divmod(seconds, 60)
    return "%d h %02d min" % (seconds // 3600, seconds % 3600 // 60)


# Settings that only judge a measurement (its verdict), not what is measured: they do not
# identify a case, so tightening a bound keeps a case comparable with its history.
VERDICT_ONLY_SETTINGS = ("p50_ci_max", "drift_max")
LEGACY_CV_MAX = 0.025   # cv_max's default when case ids were first pinned (then always a verdict)


def case_id(model_name, variant, runtime, settings, inputs=None):
    """'c-' + 10 hex of sha256 over canonical JSON: equal inputs give equal ids on every device.

    inputs: the digest of the case's representative inputs folder (orchestrator.inputs.digest),
    hashed only when given: a case fed seeded random inputs keeps the id it always had.

    Ids never change between versions (history compares runs by them): settings added since
    that only judge a result are left out, a setting added later counts only when it is not at
    its default (mode back_to_back, until_stable off, interval_ms 100, ...), and
    cv_max 0 (the default now: CV is a figure, not a verdict) is hashed as the default it
    replaced, so a suite's ids are the ones it always had.
    """
    settings = {k: v for k, v in settings.items() if k not in VERDICT_ONLY_SETTINGS}
    for key in schema.LATER_SETTINGS:   # added later: at its default it measures as before
        if key in settings and settings[key] == schema.DEFAULT_SETTINGS[key]:
            del settings[key]
    if "cv_max" in settings and not settings["cv_max"]:
        settings["cv_max"] = LEGACY_CV_MAX
    doc = {"model": model_name, "variant": variant, "runtime": runtime, "settings": settings}
    if inputs is not None:
        doc["inputs"] = inputs
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return "c-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]


def label(spec):
    """Short human name: 'lightning/tflite-fp32 tflite t2 aff0'."""
    if spec.format == "synthetic":
        parts = [spec.model.name, spec.backend]
    else:
        parts = ["%s/%s" % (spec.model.name, spec.variant), spec.backend]
    if spec.threads is not None:
        parts.append("t%d" % spec.threads)
    if spec.affinity is not None:
        parts.append("aff" + ",".join(str(c) for c in spec.affinity))
    if spec.precision != spec.model.variant_precision(spec.variant):
        parts.append(spec.precision)
    parts += ["%s=%s" % (k, json.dumps(v)) for k, v in sorted(spec.options.items())]
    parts += [_override_text(k, v) for k, v in sorted(spec.overrides.items())]
    if spec.background is not None:
        parts.append(background_label(spec.background))
    return " ".join(parts)


def background_label(background):
    """'+cpu 50%x2', '+cmd camera-sim' (the command's first word, at most 24 characters), or
    '+camera' (a command of the device's inventory, by its name)."""
    if background["kind"] == "inventory" or background.get("name"):
        return "+" + background["name"]
    if background["kind"] == "cpu":
        return "+cpu %s%%x%d" % (schema.number_text(background["percent"]), background["cores"])
    word = (background["command"].split() or ["?"])[0].rsplit("/", 1)[-1]
    return "+cmd " + word[:24]


def _override_text(key, value):
    """A setting a matrix entry overrides, for a label: 'runs=2000', 'paced', 'on_late=queue'."""
    if key == "mode":
        return value
    if isinstance(value, bool):
        return "%s=%s" % (key, "true" if value else "false")
    if isinstance(value, (int, float)):
        return "%s=%s" % (key, schema.number_text(value))
    return "%s=%s" % (key, value)


def plan(suite, inventory, devices=None, probes=None):
    """Plan a suite over an inventory.

    Args:
        devices: the --devices override (names or "tag:X"); else the suite's, else all devices.
        probes: optional {device name: probe document from agent/probe.py} for runtime checks.
    Raises:
        ConfigError: unknown device names in --devices, the suite or a matrix entry (all at once).
    """
    problems = []
    where = "--devices" if devices else "%s: devices" % (suite.source or "suite")
    try:
        selected = inventory.select(devices or suite.devices, where=where)
    except ConfigError as exc:
        problems += exc.problems
        selected = []
    targets = _entry_targets(suite, inventory, problems)
    if problems:
        raise ConfigError(problems)
    specs = suite.expand()
    result = Plan(suite, [])
    for device in selected:
        probe = (probes or {}).get(device.name)
        result.devices.append(_device_plan(suite, specs, targets, device, probe, result.notes))
    result.notes += _unused_entries(suite, targets, selected)
    return result


def _entry_targets(suite, inventory, problems):
    """{entry index: set of device names} for entries with a `devices:` filter.

    A tag is a filter (it may match nothing here); a name must exist, since a typo would
    otherwise silently plan nothing.
    """
    targets = {}
    for i, entry in enumerate(suite.matrix):
        if not entry.devices:
            continue
        names = set()
        for j, item in enumerate(entry.devices):
            if item.startswith("tag:"):
                names |= {d.name for d in inventory if item[4:] in d.tags}
            elif item in inventory:
                names.add(item)
            else:
                problems.append("%s: matrix[%d].devices[%d]: unknown device %r; known: %s" % (
                    suite.source or "suite", i, j, item, ", ".join(inventory.names())))
        targets[i] = names
    return targets


def _device_plan(suite, specs, targets, device, probe, notes):
    dplan, seen = DevicePlan(device, probed=probe is not None), {}
    for spec in specs:
        if spec.entry in targets and device.name not in targets[spec.entry]:
            continue
        case = _planned_case(spec, suite.backend(spec.backend), device, probe, suite)
        if case.case_id in seen:
            # The same case reached through two entries runs once: a job needs unique ids.
            notes.append("%s: %s from matrix[%d] is the same case as matrix[%d]; planned once"
                         % (device.name, case.label, spec.entry, seen[case.case_id]))
            continue
        seen[case.case_id] = spec.entry
        dplan.cases.append(case)
    return dplan


def _planned_case(spec, backend, device, probe, suite=None):
    runtime = {"backend": spec.backend, "threads": spec.threads,
               "affinity": list(spec.affinity) if spec.affinity is not None else None,
               "precision": spec.precision, "options": dict(spec.options)}
    if spec.background is not None:   # absent when idle: ids of cases without load unchanged
        runtime["background"] = dict(spec.background)
    identity = dict(runtime)   # what the id hashes: an inventory command by its name, so the
    skip = None                # same case has the same id on every device
    if (spec.background or {}).get("kind") == "inventory":
        name = spec.background["name"]
        identity["background"] = {"kind": "command", "inventory": name}
        command = device.background_commands.get(name)
        if command is None:
            runtime["background"] = None
            skip = ("background {inventory: %s}: %s has no background_commands.%s in its "
                    "inventory" % (name, device.name, name),
                    "add `background_commands: {%s: \"the command line\"}` to %s's entry%s"
                    % (name, device.name, " in %s" % device.source if device.source else ""))
        else:
            runtime["background"] = {"kind": "command", "command": command, "name": name}
    skip = skip or _skip(backend, runtime, device, probe) or (None, None)
    found = suite.inputs_for(spec.entry, spec.model) if suite is not None else None
    folder = found[0] if found else None
    digest = None
    text = label(spec)
    if folder is not None:
        from orchestrator import inputs as case_inputs
        digest = case_inputs.digest(folder)
        text += " inputs=" + os.path.basename(folder)
    return PlannedCase(
        case_id=case_id(spec.model.name, spec.variant, identity, spec.settings, digest),
        label=text, entry=spec.entry, model_name=spec.model.name, variant=spec.variant,
        format=spec.format, builtin=spec.model.builtin, path=spec.model.resolved_path(),
        synthetic_ms=spec.model.synthetic_ms, runtime=runtime, settings=dict(spec.settings),
        skip_reason=skip[0], skip_hint=skip[1], inputs=folder, inputs_digest=digest)


def backend_skip(backend, device, probe, affinity=None):
    """(reason, hint) when `device` (with its cached `probe`, or None) cannot run `backend`
    (a catalog.BackendSpec), else None. Also what `devices add` reports per backend."""
    return _skip(backend, {"affinity": affinity}, device, probe)


def _skip(backend, runtime, device, probe):
    """(reason, hint) when the device cannot run the case, else None. Cheapest facts first;
    every rule comes from the backend's catalog entry (agent/backends/catalog.py)."""
    need = backend.accelerator
    if need and need not in device.accelerators:
        declared = ", ".join(device.accelerators) or "none"
        return ("%s needs a %s accelerator; the inventory declares %s" % (backend.name, need,
                                                                           declared),
                "add %s to accelerators in %s if the device has one"
                % (need, device.source or "its inventory file"))
    if probe is None:
        return None
    return _probe_skip(backend, runtime, device, probe)


def _probe_skip(backend, runtime, device, probe):
    runtimes = probe.get("runtimes")
    known = [m for m in backend.modules if m in catalog.MODULE]
    if known and isinstance(runtimes, dict) and \
            not any((runtimes.get(m) or {}).get("available") for m in known):
        module = catalog.MODULE[known[0]]
        hint = backend.hint
        if "jetson" in device.accelerators and module.jetson_hint:
            hint = module.jetson_hint
        return backend.reason, hint
    for rule in backend.rules:
        found = rule(probe)
        if found:
            return found
    cores = _probe_cores(probe)
    affinity = runtime["affinity"]
    if cores and affinity and max(affinity) >= cores:
        return ("affinity core %d is beyond the device's %d cores (0-%d)"
                % (max(affinity), cores, cores - 1),
                "pin to cores 0-%d in the suite's affinity" % (cores - 1))
    return None


def _probe_cores(probe):
    # agent/probe.py: {"cores": {"listed", "usable", "os_cpu_count"}}; usable honours an
    # inherited affinity mask, which is what pinning can actually use.
    cores = probe.get("cores")
    if isinstance(cores, dict):
        for key in ("usable", "listed", "os_cpu_count"):
            if isinstance(cores.get(key), int) and cores[key] > 0:
                return cores[key]
    return None


def _unused_entries(suite, targets, selected):
    names = {d.name for d in selected}
    return ["matrix[%d]: no selected device matches %s; nothing planned for it"
            % (i, ", ".join(suite.matrix[i].devices))
            for i, matched in sorted(targets.items()) if not matched & names]
