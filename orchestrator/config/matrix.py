"""A suite's matrix expanded into device-free cases: runtimes x models x variants x precision x
threads x affinity x background load, each backend's formats and precisions taken from its catalog entry."""

from dataclasses import dataclass
from typing import Optional

from agent.backends import catalog
from agent.schema import MAX_CASES


@dataclass(frozen=True)
class CaseSpec:
    """One case before devices are considered; the planner adds case_id, label and skips."""

    entry: int
    model: object     # suite.ModelSpec
    variant: str
    format: str
    backend: str
    threads: Optional[int]
    affinity: Optional[tuple]
    precision: str
    options: dict
    settings: dict
    overrides: dict   # the entry's own settings overrides (shown in labels)
    background: Optional[dict] = None   # runtime.background (None: an idle device)


def expand_entry(suite, i, entry):
    """(cases, problems) for one matrix entry; a runtime that yields no case is a problem."""
    models = [suite.model(n) for n in entry.models] if entry.models else suite.models
    settings = suite.settings_for(entry)
    cases, problems, count = [], [], 0
    plans = []
    for backend in entry.runtime:
        spec = suite.backend(backend)
        pairs = [(m, v) for m in models for v in m.variant_names(entry.variants)
                 if not entry.variants or v in entry.variants]
        fitting = [(m, v) for m, v in pairs if m.variant_format(v) in spec.formats]
        if not fitting:
            problems.append(("matrix[%d]" % i, _no_fit(spec, pairs)))
            continue
        triples = [(m, v, p) for m, v in fitting for p in _precisions(entry, spec, m, v)]
        if not triples:
            problems.append(("matrix[%d].precision" % i, _no_precision(spec, entry, fitting)))
        plans.append((backend, triples))
        count += len(triples) * len(entry.threads or [None]) * len(entry.affinity or [None]) * \
            len(entry.background or [None])
    if count > MAX_CASES:   # counted before anything is built: a 1000 x 100000 matrix costs nothing
        return [], problems + [("matrix[%d]" % i, "expands to %d cases, past the %d one suite may "
                                "hold: split it into several suites, or narrow its lists"
                                % (count, MAX_CASES))]
    for backend, triples in plans:
        for m, v, p in triples:
            for threads in entry.threads or [None]:
                for aff in entry.affinity or [None]:
                    for load in entry.backgrounds():
                        cases.append(CaseSpec(
                            i, m, v, m.variant_format(v), backend, threads,
                            tuple(sorted(set(aff))) if aff is not None else None, p,
                            dict(entry.options), settings, entry.settings.values(), load))
    return cases, problems


def _precisions(entry, spec, model, variant):
    own = model.variant_precision(variant)
    if not entry.precision:
        return [own]
    if spec.converts_precision:   # it builds an engine: the precision is a build choice
        return [p for p in entry.precision if p in spec.precisions]
    if model.kind == "path":
        return list(entry.precision)
    return [p for p in entry.precision if p == own]


def _no_fit(spec, pairs):
    have = ", ".join("%s/%s (%s)" % (m.name, v, m.variant_format(v)) for m, v in pairs) or "none"
    return "no model compatible with runtime %s: it needs format %s; selected: %s" % (
        spec.name, " or ".join(spec.formats), have)


def _no_precision(spec, entry, fitting):
    if spec.converts_precision:
        return "%s builds at %s, not %s" % (spec.name, ", ".join(spec.precisions),
                                             ", ".join(entry.precision))
    have = ", ".join("%s/%s is %s" % (m.name, v, m.variant_precision(v)) for m, v in fitting)
    converting = [b.name for b in catalog.BACKENDS if b.converts_precision]
    return ("no selected variant runs at %s with %s (%s); the variant sets the precision except "
            "for %s" % (", ".join(entry.precision), spec.name, have, ", ".join(converting)))
