"""The common event, checked fast: a ``msgspec`` mirror of a plain ``metrics_logged`` event.

Nearly every event is a ``metrics_logged`` event written by an SDK; the sink and the processors
read tens of thousands per second, and the pydantic schema takes ~11 us per event where this
takes a few. :func:`decode_plain_metrics` only ever says yes to an event the schema accepts with
the same values (``tests/test_event_lines.py`` holds the two to the same verdict) and that
ClickHouse stores as it is; for anything else it says None and the caller uses the schema.
Needs ``msgspec`` (the ``sinks`` and ``processors`` extras), not the SDK.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
import orjson

from runstream.errors import EventDecodeError
from runstream.schemas.events import ID_PATTERN, RUN_ID_PATTERN, SCHEMA_VERSION, MetricsLogged

# What ClickHouse stores: seq UInt64 and step Int64 (both kept below 2**63), pid UInt32,
# ts DateTime64(6) from 1900 to 2299.
INT64_MAX = 2**63 - 1
UINT32 = 2**32
FIRST_YEAR, LAST_YEAR = 1900, 2299

# The schema's patterns end in '$', which Python's re (msgspec's) also matches before a final
# newline; pydantic's does not. '\Z' is Python's true end.
_ID_PATTERN = ID_PATTERN.removesuffix("$") + r"\Z"
_RUN_ID_PATTERN = RUN_ID_PATTERN.removesuffix("$") + r"\Z"

# UTC with at most microseconds, as the SDK writes it: ClickHouse reads it to the same instant.
_TS_PATTERN = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z\Z"

_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
_Count = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]


class PlainProducer(msgspec.Struct, forbid_unknown_fields=True):
    sdk: Annotated[str, msgspec.Meta(min_length=1)]
    version: str
    host: str = ""
    pid: Annotated[int, msgspec.Meta(ge=0, lt=UINT32)] = 0


class PlainMetricsBody(msgspec.Struct, forbid_unknown_fields=True):
    step: _Count
    metrics: dict[_Name, float | Literal["NaN", "Infinity", "-Infinity"]]


class PlainMetricsEvent(msgspec.Struct, forbid_unknown_fields=True):
    """A ``metrics_logged`` event exactly as the schema has it, without unknown fields: the
    narrowest form, so that whatever this accepts the pydantic schema accepts the same way."""

    id: Annotated[str, msgspec.Meta(pattern=_ID_PATTERN)]
    v: Annotated[int, msgspec.Meta(ge=1, le=SCHEMA_VERSION)]
    type: Literal["metrics_logged"]
    project: _Name
    run_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=_RUN_ID_PATTERN)]
    seq: _Count
    ts: Annotated[str, msgspec.Meta(pattern=_TS_PATTERN)]
    producer: PlainProducer
    body: PlainMetricsBody


_decode = msgspec.json.Decoder(PlainMetricsEvent).decode


def decode_plain_metrics(value: bytes) -> PlainMetricsEvent | None:
    """The event, if ``value`` is a plain metrics event; None means: ask the schema."""
    read = read_plain_metrics(value)
    return read[0] if read is not None else None


def read_plain_metrics(value: bytes) -> tuple[PlainMetricsEvent, datetime] | None:
    """:func:`decode_plain_metrics` and the event's ``ts`` as a datetime (parsed anyway)."""
    try:
        event = _decode(value)
    except (msgspec.MsgspecError, ValueError):  # ValueError: invalid UTF-8, say
        return None
    try:
        ts = datetime.fromisoformat(event.ts)  # the calendar too: no February 30th
    except ValueError:
        return None
    return (event, ts) if FIRST_YEAR <= ts.year <= LAST_YEAR else None


def check_storable(event: Any) -> dict[str, Any]:
    """The body of an event the schema accepted, as JSON data, if ClickHouse can store the
    event as it is; else :class:`~runstream.errors.EventDecodeError` saying why not.

    The sink dead-letters what this refuses and the processors do the same, so that the two
    fold the same events: times outside 1900-2299, ``seq`` or a step beyond Int64, a pid
    beyond UInt32, and integers beyond 64 bits anywhere in the body (a config value, say).
    """
    if not FIRST_YEAR <= event.ts.year <= LAST_YEAR:
        raise EventDecodeError(
            f"outside the range ClickHouse stores ({FIRST_YEAR}-{LAST_YEAR})", field="ts"
        )
    if event.seq > INT64_MAX:
        raise EventDecodeError(f"must be below 2**63 (got {event.seq})", field="seq")
    if event.producer.pid >= UINT32:
        pid = event.producer.pid
        raise EventDecodeError(f"must be below 2**32 (got {pid})", field="producer.pid")
    body = event.body
    if isinstance(body, MetricsLogged) and body.step > INT64_MAX:
        raise EventDecodeError(f"must be below 2**63 (got {body.step})", "body.step")
    data: dict[str, Any] = body.model_dump(mode="json")
    try:
        orjson.dumps(data)
    except TypeError:  # orjson's "Integer exceeds 64-bit range"
        raise EventDecodeError(
            "holds an integer beyond 64 bits, which ClickHouse does not store", field="body"
        ) from None
    return data
