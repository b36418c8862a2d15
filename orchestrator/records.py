"""Results as typed records: the controller's pydantic mirror of agent/schema.py.

agent.schema.check_result is the device-side check; this model is the controller-side one. Both must
accept the golden files in tests/golden/ (tests/test_contract.py); a field added to one and not the
other fails that test. Percentile fields are derived from the schema, never listed by hand. Once
fetched and checked, a result stays a `Result` through the report.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator
from pydantic import model_validator

from agent import schema

Number = float


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Summary = create_model("Summary", __base__=_Strict, **{
    key: (Optional[int] if key == "n" else Optional[Number], None)
    for key in schema.SUMMARY_FIELDS})
Conservative = create_model("Conservative", __base__=_Strict, **{
    key: (Optional[Number], None) for key in schema.CONSERVATIVE_FIELDS})


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
    timed: Optional[Literal[schema.TIMED_REGIONS]] = None   # absent in older results
    stage_ms: Number | None = Field(default=None, ge=0)
    # Version 2 (agent/schema.py checks their insides; absent in back-to-back and older results):
    wall_start_unix: Number | None = None   # the device's clock at the measured window's ends
    wall_end_unix: Number | None = None
    paced: dict[str, Any] | None = None     # schema.PACED_FIELDS
    windows: list[dict[str, Any]] | None = None   # schema.WINDOW_FIELDS, one per sustained window
    sustained: dict[str, Any] | None = None  # schema.SUSTAINED_FIELDS

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
    p50_ci_ms: Optional[list[float]] = None   # the p50's 95% interval (order statistics)
    p50_ci_rel: Optional[float] = None        # its half-width over the p50
    drift: Optional[float] = None             # second half's p50 / first half's - 1


class Result(_Strict):
    schema_version: Literal[schema.SCHEMA_VERSION]
    kind: Literal[schema.RESULT_KIND]
    run_id: str
    nonce: str
    case_id: str
    label: str | None = None
    device: dict[str, Any]
    model: dict[str, Any]
    runtime: dict[str, Any]
    settings: dict[str, Any]
    status: Literal[schema.STATUSES]
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

    @property
    def device_name(self) -> str:
        return self.device.get("name")

    def to_doc(self) -> dict:
        """The JSON document again: the fields it was made from, as checked."""
        return self.model_dump(mode="json", exclude_unset=True)


def reject_constant(name: str) -> float:
    raise ValueError("result contains %s, which is not a number" % name)


def model_problems(doc) -> list[str]:
    """'field.path: message' for every way `doc` fails the controller's model (empty when valid).
    An older schema version is migrated first (agent.schema.migrate_result)."""
    doc = schema.migrate_result(doc)
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
    doc = schema.migrate_result(json.loads(raw, parse_constant=reject_constant))
    problems = model_problems(doc) or schema.check_telemetry(doc.get("telemetry"))
    if problems:
        raise ValueError("; ".join(problems))
    return Result.model_validate(doc)


def from_doc(doc: dict) -> Result:
    """A checked result document (a device's, or one the controller made) as a Result; an older
    schema version is migrated first."""
    return Result.model_validate(schema.migrate_result(doc))
