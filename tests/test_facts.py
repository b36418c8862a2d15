"""orchestrator/facts.py: what decides comparability, and the latencies as the history packs
them."""

import copy
import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from orchestrator import records
from orchestrator.facts import FACT_NAMES, changed_facts, comparable_facts, pack_latencies, \
    unpack_latencies

GOLDEN = Path(__file__).resolve().parent / "golden" / "result-ok1.json"


def golden():
    return json.loads(GOLDEN.read_text())


def facts_of(doc):
    return comparable_facts(records.from_doc(doc))


def test_every_fact_is_a_short_string_or_none():
    facts = facts_of(golden())
    assert list(facts) == list(FACT_NAMES)
    assert all(v is None or (isinstance(v, str) and len(v) <= 120) for v in facts.values())
    assert facts["backend"] == "synthetic" and facts["affinity"] == "[0]"


@pytest.mark.parametrize("change, named", [
    (lambda d: d["runtime"].update(version="0.2.0"), "runtime_version 0.1.0 -> 0.2.0"),
    (lambda d: d["runtime"].update(threads=4), "threads - -> 4"),
    (lambda d: d["environment"]["readiness"].update(governor="powersave"),
     "governor - -> powersave"),
    (lambda d: d["environment"]["readiness"].update(
        jetson={"nvpmodel": {"name": "15W", "mode_id": 2}, "jetson_clocks": "off"}),
     "power_mode - -> 15W"),
    (lambda d: d["device"].update(emulated=True), "emulated - -> true"),
    (lambda d: d.update(agent_version="9.0.0"), "agent_version 0.1.0 -> 9.0.0"),
])
def test_a_changed_fact_is_named(change, named):
    before = golden()
    after = copy.deepcopy(before)
    change(after)
    assert named in changed_facts(facts_of(before), facts_of(after))
    assert changed_facts(facts_of(before), facts_of(copy.deepcopy(before))) == []


def test_a_hostile_fact_is_capped():
    doc = golden()
    doc["runtime"]["version"] = "x" * 100000
    assert len(facts_of(doc)["runtime_version"]) == 120


def test_latencies_come_back_exactly_in_either_packing():
    rng = np.random.default_rng(0)
    whole_ns = list(np.round(rng.normal(3.2, 0.1, 3000), 6))     # as the agent's clock gives
    blob = pack_latencies(whole_ns)
    assert blob[:1] == b"N" and unpack_latencies(blob).tolist() == whole_ns
    assert len(blob) < 3000 * 4   # byte-shuffled whole nanoseconds: under 4 bytes a sample
    other = [0.1, 1 / 3, 2.5e-7]
    blob = pack_latencies(other)
    assert blob[:1] == b"D" and unpack_latencies(blob).tolist() == other
    assert unpack_latencies(pack_latencies([])).tolist() == []


@pytest.mark.parametrize("blob", [b"", b"X" + zlib.compress(b"1234"), b"N" + b"not zlib",
                                  b"D" + zlib.compress(b"123")])
def test_a_bad_blob_is_a_value_error(blob):
    with pytest.raises(ValueError, match="latency blob"):
        unpack_latencies(blob)
