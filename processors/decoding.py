"""Events off the wire for the processors, read fast for the common one.

A plain ``metrics_logged`` event (:mod:`runstream.schemas.plain` vouches that the schema would
accept it with these values) becomes a :class:`PlainMetrics`: the same attribute names as the
schema's model (``event.body.metrics``...), without building pydantic models, which would cost
more than the whole fold. Every other message goes through :func:`runstream.schemas.decode`.
Code reading events checks ``event.type``, which both kinds have.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from runstream.schemas import decode
from runstream.schemas.events import NON_FINITE_TO_JSON
from runstream.schemas.plain import decode_plain_metrics


@dataclass(frozen=True, slots=True)
class PlainBody:
    step: int
    metrics: dict[str, float]


@dataclass(frozen=True, slots=True)
class PlainMetrics:
    """A ``metrics_logged`` event: the schema model's fields, as plain attributes."""

    id: str
    v: int
    project: str
    run_id: str
    seq: int
    ts: datetime
    body: PlainBody
    type: str = "metrics_logged"


def decode_event(value: bytes | None) -> Any:
    """The event; raises :class:`~runstream.errors.EventDecodeError` saying why not."""
    plain = decode_plain_metrics(value) if value else None
    if plain is None:
        return decode(value or b"")
    metrics: dict[str, float] = {
        name: NON_FINITE_TO_JSON[number] if isinstance(number, str) else number
        for name, number in plain.body.metrics.items()
    }
    return PlainMetrics(
        plain.id,
        plain.v,
        plain.project,
        plain.run_id,
        plain.seq,
        datetime.fromisoformat(plain.ts.replace("Z", "+00:00")),
        PlainBody(plain.body.step, metrics),
    )
