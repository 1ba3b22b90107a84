"""The one codec every reader and writer uses: JSON bytes <-> events.

Encoding is the producer's hot path, so it works on plain dicts with orjson and never builds a
pydantic model. Decoding validates against the schema and fails with the name of the bad field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from runstream.errors import EventDecodeError, UnsupportedSchemaVersionError
from runstream.schemas.events import (
    EVENT_MODELS,
    SCHEMA_VERSION,
    AnyEvent,
    Event,
    dump_metric_value,
)

_EVENT_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(Event)
_TAGS = frozenset(EVENT_MODELS)


def json_safe_metrics(metrics: Mapping[str, float]) -> Mapping[str, float | str]:
    """``metrics`` itself when every value is finite, else a copy with NaN/inf spelled out.

    orjson writes NaN as null, which would lose the fact that a loss diverged; the schema spells
    non-finite values as "NaN", "Infinity" and "-Infinity" instead.
    """
    try:
        if math.isfinite(sum(metrics.values())):  # one C call decides the common case
            return metrics
    except TypeError:
        pass  # a non-number: the per-value loop below keeps it for the decoder to refuse
    return {k: dump_metric_value(v) if isinstance(v, float) else v for k, v in metrics.items()}


def encode(event: Mapping[str, Any]) -> bytes:
    """Serialize an event given as a dict shaped like the schema (see :func:`event_dict`).

    Metric mappings must already have gone through :func:`json_safe_metrics`.
    """
    return orjson.dumps(event)


class EnvelopeEncoder:
    """Encodes the events of one run, whose envelope repeats but for id, type, seq and ts.

    The constant part is serialized once; each event then costs one bytes-% formatting and
    the encoding of its body. Produces the same JSON as :func:`encode` (key order aside).
    """

    def __init__(self, *, project: str, run_id: str, producer: Mapping[str, Any]) -> None:
        constant = orjson.dumps(
            {"v": SCHEMA_VERSION, "project": project, "run_id": run_id, "producer": producer}
        )
        # '{"id":"%s","type":"%s","seq":%d,"ts":"%s",' + constant fields + ',"body":%s}'
        escaped = constant[1:-1].replace(b"%", b"%%")
        self._template = b'{"id":"%s","type":"%s","seq":%d,"ts":"%s",' + escaped + b',"body":%s}'
        # An event is the template plus its id (36), type (<= 20), seq (<= 20 digits) and
        # ts (27 characters): what is left of a size limit is the body's.
        self.overhead = len(self._template) + 36 + 32 + 20 + 27

    def encode(self, id: str, type: str, seq: int, ts: str, body: bytes) -> bytes:
        """``body`` is the body already encoded (``orjson.dumps(body)``); ids, types and
        timestamps never need JSON escaping."""
        return self._template % (id.encode(), type.encode(), seq, ts.encode(), body)


def encode_event(event: AnyEvent) -> bytes:
    """Serialize an event model (slower than :func:`encode`; for tools and tests)."""
    return event.model_dump_json().encode()


def event_dict(
    *,
    id: str,
    type: str,
    project: str,
    run_id: str,
    seq: int,
    ts: str,
    producer: Mapping[str, Any],
    body: Mapping[str, Any],
) -> dict[str, Any]:
    """The wire shape of an event, for producers that build events without models."""
    return {
        "id": id,
        "v": SCHEMA_VERSION,
        "type": type,
        "project": project,
        "run_id": run_id,
        "seq": seq,
        "ts": ts,
        "producer": producer,
        "body": body,
    }


def decode(data: bytes | bytearray | memoryview | str) -> AnyEvent:
    """Parse and validate one event.

    Raises :class:`EventDecodeError` naming the first bad field, or
    :class:`UnsupportedSchemaVersionError` for events of a newer schema.
    """
    raw = bytes(data) if isinstance(data, memoryview | bytearray) else data
    try:
        event = _EVENT_ADAPTER.validate_json(raw)
    except ValidationError as exc:
        raise _decode_error(exc, data) from None
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    check_unique_keys(raw)
    return event


def check_unique_keys(raw: bytes, expected_strings: int | None = None) -> None:
    """Raise :class:`EventDecodeError` if any JSON object in ``raw`` has a key twice.

    One rule for every reader (docs/schemas.md): an event with a duplicate key anywhere is
    refused, because parsers disagree on which value wins (msgspec, orjson and pydantic keep
    the last, others the first) and ClickHouse stores a body as its text, both values included.
    ``raw`` must be valid JSON (checked before). The message names the key and where it is:
    ``duplicate key 'x' in body.metrics``.

    Cheap when there is no duplicate: without a backslash in ``raw`` every ``"`` delimits a
    string, so ``raw.count(b'"')`` (one C loop) is twice the number of keys plus string values,
    whatever the whitespace. A duplicate adds at least its key to that count, and a parser that
    keeps one value per key cannot see it. ``expected_strings`` is that number as the caller's
    parser saw it; when it is None, it is counted on an orjson parse. Only when the numbers
    differ (or a backslash makes counting unsafe) does the exact check run, with ``json.loads``
    and ``object_pairs_hook``, which sees every pair.
    """
    if b"\\" not in raw:
        if expected_strings is None:
            try:
                expected_strings = _strings(orjson.loads(raw))
            except orjson.JSONDecodeError:  # JSON orjson does not read (1e999): ask json
                expected_strings = -1
        if raw.count(b'"') == 2 * expected_strings:
            return
    found = _first_duplicate(json.loads(raw, object_pairs_hook=_Pairs))
    if found is not None:
        key, where = found
        error = EventDecodeError(f"duplicate key {key!r} in {where or 'the event'}")
        error.field = where
        raise error


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as json.loads saw it: every (key, value) pair, duplicates included."""


def _strings(data: Any) -> int:
    """Keys plus string values in a parsed JSON value."""
    if type(data) is dict:
        return len(data) + sum(_strings(value) for value in data.values())
    if type(data) is list:
        return sum(_strings(value) for value in data)
    return 1 if type(data) is str else 0


def _first_duplicate(data: Any, where: str = "") -> tuple[str, str] | None:
    """The first key seen twice in one object, and the object's dotted path."""
    stack: list[tuple[Any, str]] = [(data, where)]
    while stack:
        value, path = stack.pop()
        if type(value) is _Pairs:
            seen: set[str] = set()
            for key, _item in value:
                if key in seen:
                    return key, path
                seen.add(key)
            stack += [(item, f"{path}.{key}" if path else key) for key, item in reversed(value)]
        elif type(value) is list:
            items = list(enumerate(value))[::-1]
            stack += [(item, f"{path}.{i}" if path else str(i)) for i, item in items]
    return None


def _decode_error(exc: ValidationError, data: object) -> EventDecodeError:
    err = exc.errors(include_url=False)[0]
    loc = [str(part) for part in err["loc"]]
    kind = err["type"]
    if kind == "json_invalid":
        return EventDecodeError(f"not valid JSON ({err['msg']})")
    if kind == "union_tag_not_found":
        return EventDecodeError("missing", field="type")
    if kind == "union_tag_invalid":
        found = (err.get("ctx") or {}).get("tag")
        return EventDecodeError(f"unknown event type {found!r}", field="type")
    if not loc:
        return EventDecodeError(f"not an event: expected a JSON object ({err['msg']})")
    if loc and loc[0] in _TAGS:
        loc = loc[1:]  # pydantic puts the union member's tag first; the wire has no such level
    field = ".".join(loc)
    if field == "v" and kind == "less_than_equal":
        return UnsupportedSchemaVersionError(
            f"schema version {err.get('input')!r} is newer than this runstream reads "
            f"(<= {SCHEMA_VERSION}); upgrade runstream",
            field="v",
        )
    return EventDecodeError(f"{err['msg']} (got {_short(err.get('input'))})", field=field)


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def key_problem(key: bytes | None, run_id: str) -> str:
    """Why an event on the events topic with this Kafka message key is refused, or "".

    A run's events must be keyed by its run id (UTF-8; docs/schemas.md): Kafka keeps order per
    partition only, and the key picks the partition, so events of one run under other keys (or
    none: the partitioner then spreads them) land on other partitions, out of order, and the
    sink's and processors' per-run sequence checks could not tell a re-send from a new event.
    The sink and the processors refuse such an event alike. Only the events topic has this
    rule (derived topics carry their own keys). Costs one comparison per message.
    """
    if key is not None and key == run_id.encode():
        return ""
    shown = "no key" if key is None else f"key {_short(key.decode('utf-8', 'replace'))}"
    return (
        f"{shown} is not the event's run_id {run_id!r}: a run's events must be keyed by its "
        "run id (docs/schemas.md)"
    )
