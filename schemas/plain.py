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
from typing import Annotated, Literal

import msgspec

from runstream.schemas.events import ID_PATTERN, RUN_ID_PATTERN, SCHEMA_VERSION

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
    try:
        event = _decode(value)
    except (msgspec.MsgspecError, ValueError):  # ValueError: invalid UTF-8, say
        return None
    try:
        year = datetime.fromisoformat(event.ts).year  # the calendar too: no February 30th
    except ValueError:
        return None
    return event if FIRST_YEAR <= year <= LAST_YEAR else None
