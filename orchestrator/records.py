"""The controller's pydantic mirror of agent/schema.py, and migration of older result versions.

agent.schema.check_result is the device-side check; this model is the controller-side one. Both must
accept the golden files in tests/golden/ (tests/test_contract.py); a field added to one and not the
other fails that test.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent import schema

Number = float


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Summary(_Strict):
    n: int | None = None
    mean: Number | None = None
    std: Number | None = None
    cv: Number | None = None
    min: Number | None = None
    max: Number | None = None
    throughput_ips: Number | None = None
    p50: Number | None = None
    p90: Number | None = None
    p95: Number | None = None
    p99: Number | None = None
    p99_9: Number | None = None


class Conservative(_Strict):
    p90: Number | None = None
    p95: Number | None = None
    p99: Number | None = None
    p99_9: Number | None = None


class Timing(_Strict):
    load_s: Number | None = Field(default=None, ge=0)
    convert_s: Number | None = Field(default=None, ge=0)
    first_ms: Number | None = Field(default=None, ge=0)
    warmup_runs: int
    warmup_s: Number | None = Field(default=None, ge=0)
    runs: int
    measure_s: Number | None = Field(default=None, ge=0)
    truncated: bool
    latencies_ms: list[Number]
    summary: Summary
    conservative: Conservative

    @field_validator("latencies_ms")
    @classmethod
    def _finite(cls, values: list[float]) -> list[float]:
        for v in values:
            if not math.isfinite(v) or v < 0:
                raise ValueError("latencies must be finite numbers >= 0")
        return values

    @model_validator(mode="after")
    def _runs_match(self) -> "Timing":
        if self.runs != len(self.latencies_ms):
            raise ValueError("runs=%d but %d latencies" % (self.runs, len(self.latencies_ms)))
        return self


class Validity(_Strict):
    status: Literal["VALID", "INVALID"]
    reasons: list[str]
    notes: list[str] = []   # facts that do not invalidate (a percentile not established)


class Result(_Strict):
    schema_version: Literal[1]
    kind: Literal["benchfleet.result"]
    run_id: str
    nonce: str
    case_id: str
    label: str | None = None
    device: dict[str, Any]
    model: dict[str, Any]
    runtime: dict[str, Any]
    settings: dict[str, Any]
    status: Literal["ok", "skipped", "failed"]
    substatus: str | None
    reason: str | None
    hint: str | None
    timing: Timing | None
    validity: Validity | None
    memory: dict[str, Any]
    telemetry: dict[str, Any]
    delegation: dict[str, Any]
    environment: dict[str, Any]
    cooldown: dict[str, Any]
    agent_version: str
    started_at: str
    finished_at: str

    @model_validator(mode="after")
    def _status_rules(self) -> "Result":
        if self.status == "failed" and self.substatus not in schema.FAILED_SUBSTATUSES:
            raise ValueError("a failed result needs a substatus in %s" % (schema.FAILED_SUBSTATUSES,))
        if self.status in ("failed", "skipped") and not self.reason:
            raise ValueError("a %s result must say why" % self.status)
        if self.status == "ok" and (self.timing is None or self.validity is None):
            raise ValueError("an ok result needs timing and validity")
        return self


def migrate(doc: dict) -> dict:
    """Bring an older result document to the current SCHEMA_VERSION (none older exists yet)."""
    version = doc.get("schema_version")
    if version == schema.SCHEMA_VERSION:
        return doc
    raise ValueError("unknown result schema_version %r (this controller reads %d)"
                     % (version, schema.SCHEMA_VERSION))


def reject_constant(name: str) -> float:
    raise ValueError("result contains %s, which is not a number" % name)


def model_problems(doc) -> list[str]:
    """'field.path: message' for every way `doc` fails the controller's model (empty when valid)."""
    try:
        Result.model_validate(doc)
    except ValidationError as exc:
        return ["%s: %s" % (".".join(str(p) for p in e["loc"]) or "result", e["msg"])
                for e in exc.errors()]
    return []


def parse_result(raw: bytes | str) -> Result:
    """Parse and validate one raw result; raises ValueError with a readable message."""
    if isinstance(raw, bytes) and len(raw) > schema.MAX_RESULT_BYTES:
        raise ValueError("result larger than %d bytes" % schema.MAX_RESULT_BYTES)
    doc = migrate(json.loads(raw, parse_constant=reject_constant))
    problems = model_problems(doc)
    if problems:
        raise ValueError("; ".join(problems))
    return Result.model_validate(doc)
