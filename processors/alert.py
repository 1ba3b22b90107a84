"""An alert as it travels: on the alerts topic, to webhooks, and into ClickHouse's ``alerts``.

One firing of a rule for a run (and metric) is one *episode*: it has one ``alert_id`` for life.
Its versions (fired, delivered after N attempts, resolved) are new records with the same id and
a later ``updated_at``; the ``alerts`` table (ReplacingMergeTree) keeps the latest. The fields
are the columns of that table, so the sink writes a record as it is.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

AlertLevel = Literal["info", "warn", "error"]
DeliveryState = Literal["pending", "delivering", "delivered", "failed", "suppressed"]

_ALERT_NAMESPACE = uuid.UUID("6f1d3c2e-9a41-4f0b-8d53-2b7e51c0a9d4")


def alert_id(rule: str, project: str, run_id: str, metric: str, episode: int) -> str:
    """The same episode always gets the same id, on every worker and on every replay."""
    key = "\x1f".join((rule, project, run_id, metric, str(episode)))
    return str(uuid.uuid5(_ALERT_NAMESPACE, key))


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Alert(BaseModel):
    """One version of one alert episode."""

    # A NaN metric is a reason to alert: keep it as "NaN" rather than null.
    model_config = ConfigDict(frozen=True, extra="ignore", ser_json_inf_nan="strings")

    alert_id: str
    rule: str = Field(description="Rule name; 'user' for run.alert().")
    project: str
    run_id: str
    metric: str = ""
    value: float | None = None
    step: int | None = None
    level: AlertLevel = "warn"
    title: str
    text: str = ""
    fired_at: datetime
    resolved_at: datetime | None = None
    delivery_state: DeliveryState = "pending"
    attempts: int = 0
    last_attempt_at: datetime | None = None
    last_error: str = ""
    source_seq: int | None = Field(None, description="seq of the event that fired it.")
    updated_at: datetime = Field(default_factory=utcnow)

    @property
    def resolved(self) -> bool:
        return self.resolved_at is not None

    def to_json(self) -> bytes:
        """The record's bytes on the alerts topic (NaN and infinities as strings)."""
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Alert:
        return cls.model_validate_json(data)
