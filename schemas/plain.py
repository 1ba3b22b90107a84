"""The common event, checked fast: a ``msgspec`` mirror of a plain ``metrics_logged`` event.

Nearly every event is a ``metrics_logged`` event written by an SDK; the sink and the processors
read tens of thousands per second, and the pydantic schema takes ~11 us per event where this
takes a few. :func:`decode_plain_metrics` only ever says yes to an event the schema accepts with
the same values (``tests/test_event_lines.py`` holds the two to the same verdict) and that
ClickHouse stores as it is; for anything else it says None and the caller uses the schema.
Needs ``msgspec`` (the ``sinks`` and ``processors`` extras), not the SDK.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec
import orjson

from runstream.errors import EventDecodeError
from runstream.schemas.codec import check_unique_keys
from runstream.schemas.events import (
    ID_PATTERN,
    NON_FINITE_TO_JSON,
    RUN_ID_PATTERN,
    SCHEMA_VERSION,
    MetricsLogged,
)

# What ClickHouse stores: seq UInt64 and step Int64 (both kept below 2**63), pid UInt32,
# ts DateTime64(6) from 1900 to 2299.
INT64_MAX = 2**63 - 1
UINT32 = 2**32
FIRST_YEAR, LAST_YEAR = 1900, 2299

# The schema's patterns end in '$', which Python's re also matches before a final newline;
# pydantic's does not. '\Z' is Python's true end.
_ID_PATTERN = ID_PATTERN.removesuffix("$") + r"\Z"
_RUN_ID_PATTERN = RUN_ID_PATTERN.removesuffix("$") + r"\Z"

# UTC with at most microseconds, as the SDK writes it: ClickHouse reads it to the same instant.
_TS_PATTERN = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z\Z"

# Checked after decoding rather than as msgspec patterns, which cost 4 us an event where the
# three matches themselves take 1.3 (a third of the whole decode).
_id_ok = re.compile(_ID_PATTERN).match
_run_id_ok = re.compile(_RUN_ID_PATTERN).match
_ts_ok = re.compile(_TS_PATTERN).match

_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
_UNSET = msgspec.UNSET

# The structs below hold strings, numbers and dicts of them, never a cycle: gc=False keeps the
# tens of thousands a batch holds out of the collector's way.
_Count = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]


class PlainProducer(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    sdk: Annotated[str, msgspec.Meta(min_length=1)]
    version: str
    # UNSET, not a default value: the duplicate-key check counts the keys that were there.
    host: str | msgspec.UnsetType = msgspec.UNSET
    pid: Annotated[int, msgspec.Meta(ge=0, lt=UINT32)] | msgspec.UnsetType = msgspec.UNSET


class PlainMetricsBody(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    step: _Count
    metrics: dict[_Name, float]


class _NonFiniteBody(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    step: _Count
    metrics: dict[_Name, float | Literal["NaN", "Infinity", "-Infinity"]]


_Body = TypeVar("_Body", PlainMetricsBody, _NonFiniteBody)


class PlainMetricsEvent(msgspec.Struct, Generic[_Body], forbid_unknown_fields=True, gc=False):
    """A ``metrics_logged`` event exactly as the schema has it, without unknown fields: the
    narrowest form, so that whatever this accepts the pydantic schema accepts the same way."""

    id: str  # and _id_ok
    v: Annotated[int, msgspec.Meta(ge=1, le=SCHEMA_VERSION)]
    type: Literal["metrics_logged"]
    project: _Name
    run_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]  # and _run_id_ok
    seq: _Count
    ts: str  # and _ts_ok
    producer: PlainProducer
    body: _Body


# Finite values only first (nearly every event, and 1 us less than the union); then the
# schema's strings for NaN and the infinities, turned into floats.
_decode = msgspec.json.Decoder(PlainMetricsEvent[PlainMetricsBody]).decode
_decode_non_finite = msgspec.json.Decoder(PlainMetricsEvent[_NonFiniteBody]).decode


def decode_plain_metrics(value: bytes) -> PlainMetricsEvent[PlainMetricsBody] | None:
    """The event, if ``value`` is a plain metrics event; None means: ask the schema.
    Metric values are floats, NaN and the infinities included. Raises
    :class:`~runstream.errors.EventDecodeError` for a duplicate key (the schema would too)."""
    read = read_plain_metrics(value)
    return read[0] if read is not None else None


def read_plain_metrics(
    value: bytes,
) -> tuple[PlainMetricsEvent[PlainMetricsBody], datetime] | None:
    """:func:`decode_plain_metrics` and the event's ``ts`` as a datetime (parsed anyway)."""
    non_finite = 0
    try:
        event = _decode(value)
    except msgspec.ValidationError:
        try:
            event, non_finite = _finite(_decode_non_finite(value))
        except (msgspec.MsgspecError, ValueError):
            return None
    except (msgspec.MsgspecError, ValueError):  # ValueError: invalid UTF-8, say
        return None
    if not (_id_ok(event.id) and _run_id_ok(event.run_id) and _ts_ok(event.ts)):
        return None
    # msgspec keeps the last of duplicate keys: count the strings it saw (keys and string
    # values) against the quotes in the bytes (see check_unique_keys). Keys: 9 in the envelope,
    # 2 to 4 in producer, 2 in body, one per metric; string values: id, type, project, run_id,
    # ts, sdk, version, host if there, and each "NaN"/"Infinity"/"-Infinity".
    producer = event.producer
    strings = 20 + len(event.body.metrics) + non_finite
    if producer.host is not _UNSET:
        strings += 2
    if producer.pid is not _UNSET:
        strings += 1
    if b"\\" in value or value.count(b'"') != 2 * strings:  # inline: the common case, cheap
        check_unique_keys(value, strings)
    try:
        ts = datetime.fromisoformat(event.ts)  # the calendar too: no February 30th
    except ValueError:
        return None
    return (event, ts) if FIRST_YEAR <= ts.year <= LAST_YEAR else None


def _finite(
    event: PlainMetricsEvent[_NonFiniteBody],
) -> tuple[PlainMetricsEvent[PlainMetricsBody], int]:
    """The event with NaN and the infinities as floats, and how many there were."""
    body = event.body
    spelled = 0
    metrics: dict[str, float] = {}
    for name, number in body.metrics.items():
        if isinstance(number, str):
            spelled += 1
            metrics[name] = NON_FINITE_TO_JSON[number]
        else:
            metrics[name] = number
    replaced: PlainMetricsEvent[PlainMetricsBody] = msgspec.structs.replace(
        event,  # type: ignore[arg-type]
        body=PlainMetricsBody(body.step, metrics),
    )
    return replaced, spelled


def check_storable(event: Any) -> dict[str, Any]:
    """The body of an event the schema accepted, as JSON data, if ClickHouse can store the
    event as it is; else :class:`~runstream.errors.EventDecodeError` saying why not.

    The sink dead-letters what this refuses and the processors do the same, so that the two
    fold the same events: times outside 1900-2299, ``seq`` or a step beyond Int64, a pid
    beyond UInt32, and integers beyond 64 bits anywhere in the body (a config value, say).
    """
    try:  # the year ClickHouse stores is the UTC one: 1900-01-01T00:30+01:00 is in 1899
        year = event.ts.astimezone(timezone.utc).year if event.ts.utcoffset() else event.ts.year
    except OverflowError:  # before year 1 or after 9999 in UTC
        year = 0
    if not FIRST_YEAR <= year <= LAST_YEAR:
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
