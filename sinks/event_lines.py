"""A Kafka message -> one JSONEachRow line for the ``events`` insert, or the reason it is refused.

The sink does not build rows in Python: it checks each message and hands ClickHouse the
message's own bytes, prefixed with its Kafka partition and offset. ClickHouse parses them
(``INSERT ... SELECT ... FROM input(...) FORMAT JSONEachRow``) and the materialized views fan
the metric points out into ``metrics``.

Most messages are plain ``metrics_logged`` events written by an SDK, which
:func:`runstream.schemas.plain.decode_plain_metrics` recognises in a few microseconds; their
bytes go to ClickHouse as they are. Anything else (other types, unknown fields, time zones
other than ``Z``, lax values) goes through the full schema (:func:`runstream.schemas.decode`),
which either refuses it with the field at fault or accepts it, and then the line is rebuilt
from the validated event so that ClickHouse reads exactly what the schema understood.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timezone

import orjson

from runstream.schemas import decode
from runstream.schemas.events import MetricsLogged
from runstream.schemas.plain import check_storable, decode_plain_metrics

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
    event = decode_plain_metrics(value)
    if event is None:
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
    body_data = check_storable(validated)
    rows = 1
    if isinstance(validated.body, MetricsLogged):  # type: ignore[attr-defined]
        rows += len(validated.body.metrics)  # type: ignore[attr-defined]
    # Unknown body fields are kept; the known ones are written as the schema read them (a lax
    # "3" becomes 3, a missing status "finished"), so ClickHouse reads what the schema meant.
    raw_body = raw.get("body") if type(raw) is dict else None
    body = {**(raw_body if type(raw_body) is dict else {}), **body_data}
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
