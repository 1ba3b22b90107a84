"""Events off the wire for the processors, read fast for the common one.

A plain ``metrics_logged`` event (:mod:`runstream.schemas.plain` vouches that the schema would
accept it with these values) becomes a :class:`PlainMetrics`: the same attribute names as the
schema's model (``event.body.metrics``...), without building pydantic models, which would cost
more than the whole fold. Every other message goes through :func:`runstream.schemas.decode`.
Code reading events checks ``event.type``, which both kinds have.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from runstream.errors import EventDecodeError
from runstream.schemas import decode
from runstream.schemas.plain import PlainMetricsBody, check_storable, read_plain_metrics


class PlainMetrics(msgspec.Struct, frozen=True, gc=False):  # no cycles: see schemas.plain
    """A ``metrics_logged`` event: the schema model's fields, as plain attributes."""

    id: str
    v: int
    project: str
    run_id: str
    seq: int
    ts: datetime
    body: PlainMetricsBody  # step and metrics (floats: NaN and infinities too)
    type: str = "metrics_logged"


def decode_event(value: bytes | None) -> Any:
    """The event; raises :class:`~runstream.errors.EventDecodeError` saying why not, whatever
    the bytes (the schema's own errors, and any other a validator lets through)."""
    try:
        read = read_plain_metrics(value) if value else None
        if read is None:
            event = decode(value or b"")
            check_storable(event)  # what the sink refuses, the processors leave out too
            return event
    except EventDecodeError:
        raise
    except Exception as exc:  # a message must cost itself, never the worker
        raise EventDecodeError(f"could not be read: {type(exc).__name__}: {exc}"[:1000]) from None
    plain, ts = read
    return PlainMetrics(plain.id, plain.v, plain.project, plain.run_id, plain.seq, ts, plain.body)
