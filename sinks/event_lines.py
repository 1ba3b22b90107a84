"""A Kafka message -> one JSONEachRow line for the ``events`` insert, or the reason it is refused.

The sink does not build rows in Python: it checks each message and hands ClickHouse the
message's own bytes, prefixed with its Kafka partition and offset. ClickHouse parses them
(``INSERT ... SELECT ... FROM input(...) FORMAT JSONEachRow``) and the materialized views fan
the metric points out into ``metrics``. Python touches each event once, with ``orjson``.

Most messages are ``metrics_logged`` events written by an SDK, and :func:`_plain_metrics_event`
recognises those with plain type checks. It only ever says yes to an event the pydantic schema
accepts with the same meaning, and ClickHouse reads the same way; anything else (other types,
unknown fields, time zones other than ``Z``, big integers) goes through the full schema
(:func:`runstream.schemas.decode`), which either refuses it with the field at fault or accepts
it, and then the line is rebuilt from the validated event so that ClickHouse reads exactly what
the schema understood.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Literal

import msgspec
import orjson

from runstream.errors import EventDecodeError
from runstream.schemas import decode
from runstream.schemas.events import (
    ID_PATTERN,
    RUN_ID_PATTERN,
    SCHEMA_VERSION,
    MetricsLogged,
)

# What ClickHouse stores: seq UInt64 and step Int64 (both kept below 2**63), pid UInt32,
# ts DateTime64(6) from 1900 to 2299.
_INT64_MAX = 2**63 - 1
_UINT32 = 2**32
_FIRST_YEAR, _LAST_YEAR = 1900, 2299

# The schema's patterns end in '$', which Python's re (msgspec's) also matches before a final
# newline; pydantic's does not. '\Z' is Python's true end.
_ID_PATTERN = ID_PATTERN.removesuffix("$") + r"\Z"
_RUN_ID_PATTERN = RUN_ID_PATTERN.removesuffix("$") + r"\Z"

# UTC with at most microseconds, as the SDK writes it: ClickHouse reads it to the same instant.
_TS_PATTERN = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z\Z"

_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
_Count = Annotated[int, msgspec.Meta(ge=0, le=_INT64_MAX)]


class _PlainProducer(msgspec.Struct, forbid_unknown_fields=True):
    sdk: Annotated[str, msgspec.Meta(min_length=1)]
    version: str
    host: str = ""
    pid: Annotated[int, msgspec.Meta(ge=0, lt=_UINT32)] = 0


class _PlainMetricsBody(msgspec.Struct, forbid_unknown_fields=True):
    step: _Count
    metrics: dict[_Name, float | Literal["NaN", "Infinity", "-Infinity"]]


class _PlainMetricsEvent(msgspec.Struct, forbid_unknown_fields=True):
    """A ``metrics_logged`` event exactly as the schema has it, without unknown fields: the
    narrowest form, so that whatever this accepts the pydantic schema accepts the same way."""

    id: Annotated[str, msgspec.Meta(pattern=_ID_PATTERN)]
    v: Annotated[int, msgspec.Meta(ge=1, le=SCHEMA_VERSION)]
    type: Literal["metrics_logged"]
    project: _Name
    run_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=_RUN_ID_PATTERN)]
    seq: _Count
    ts: Annotated[str, msgspec.Meta(pattern=_TS_PATTERN)]
    producer: _PlainProducer
    body: _PlainMetricsBody


_decode_plain = msgspec.json.Decoder(_PlainMetricsEvent).decode

INPUT_STRUCTURE = (
    "id UUID, v UInt16, type String, project String, run_id String, seq UInt64, "
    "ts DateTime64(6, 'UTC'), producer Tuple(sdk String, version String, host String, "
    "pid UInt32), body String, kafka_partition UInt32, kafka_offset UInt64"
)
"""The columns of a line, as ClickHouse's ``input()`` reads them."""

INPUT_SETTINGS = {
    # A line's body object is read as its own JSON text, which `events.body` keeps verbatim.
    "input_format_json_read_objects_as_strings": 1,
    "input_format_skip_unknown_fields": 1,
    "date_time_input_format": "best_effort",
    "input_format_null_as_default": 1,
}


@dataclass(frozen=True, slots=True)
class EventLine:
    """One accepted event: what dedup needs, how many rows it makes, and its line."""

    project: str
    run_id: str
    seq: int
    rows: int
    line: bytes


def event_line(value: bytes, partition: int, offset: int) -> EventLine:
    """Check one message and make its line; raises :class:`EventDecodeError` saying why not."""
    try:
        event = _decode_plain(value)
    except (msgspec.MsgspecError, ValueError):  # ValueError: invalid UTF-8, say
        return _checked_line(value, partition, offset)
    try:
        year = datetime.fromisoformat(event.ts).year  # the calendar too: no February 30th
    except ValueError:
        year = 0
    if not _FIRST_YEAR <= year <= _LAST_YEAR:
        return _checked_line(value, partition, offset)
    # The message's bytes with two fields in front: '{"kafka_partition":1,...,' + '"id":...'
    start = value.index(b"{") + 1
    line = b'{"kafka_partition":%d,"kafka_offset":%d,%b' % (partition, offset, value[start:])
    return EventLine(event.project, event.run_id, event.seq, 1 + len(event.body.metrics), line)


def _checked_line(value: bytes, partition: int, offset: int) -> EventLine:
    validated = decode(value)  # raises with the field at fault
    try:
        raw = orjson.loads(value)
    except orjson.JSONDecodeError:
        raw = None  # JSON the schema's parser takes but orjson does not (say 1e999): rebuilt
    if not _FIRST_YEAR <= validated.ts.year <= _LAST_YEAR:
        raise EventDecodeError(
            f"outside the range ClickHouse stores ({_FIRST_YEAR}-{_LAST_YEAR})", field="ts"
        )
    if validated.seq > _INT64_MAX:
        raise EventDecodeError(f"must be below 2**63 (got {validated.seq})", field="seq")
    if validated.producer.pid >= _UINT32:
        pid = validated.producer.pid
        raise EventDecodeError(f"must be below 2**32 (got {pid})", field="producer.pid")
    typed_body = validated.body  # type: ignore[attr-defined]
    rows = 1
    if isinstance(typed_body, MetricsLogged):
        if typed_body.step > _INT64_MAX:
            raise EventDecodeError(f"must be below 2**63 (got {typed_body.step})", "body.step")
        rows += len(typed_body.metrics)
    # Unknown body fields are kept; the known ones are written as the schema read them (a lax
    # "3" becomes 3, a missing status "finished"), so ClickHouse reads what the schema meant.
    raw_body = raw.get("body") if type(raw) is dict else None
    body = {**(raw_body if type(raw_body) is dict else {}), **typed_body.model_dump(mode="json")}
    producer = validated.producer
    line = orjson.dumps(
        {
            "kafka_partition": partition,
            "kafka_offset": offset,
            "id": validated.id,
            "v": validated.v,
            "type": validated.type,  # type: ignore[attr-defined]
            "project": validated.project,
            "run_id": validated.run_id,
            "seq": validated.seq,
            "ts": validated.ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "producer": {
                "sdk": producer.sdk,
                "version": producer.version,
                "host": producer.host,
                "pid": producer.pid,
            },
            "body": body,
        }
    )
    return EventLine(validated.project, validated.run_id, validated.seq, rows, line)
