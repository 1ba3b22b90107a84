"""Bodies too large for one Kafka record, made to fit: split first, leave out only what alone
cannot fit. Runs on the worker thread, only for the rare body over the limit.

The limit is :data:`runstream.schemas.limits.MAX_EVENT_BYTES` for the whole encoded event; the
caller passes what is left of it for the body once the envelope is counted. Splitting keeps
every value: a ``metrics_logged`` becomes several of the same step, a ``summary_updated`` or
``config_updated`` several of the same type (each a merge patch of some keys), and the config
of a ``run_started`` that does not fit follows it in ``config_updated`` events. A single value
larger than the limit is left out, and a text field (notes, an alert's text, an argv entry) is
cut, each with one warning naming it and its size.
"""

from __future__ import annotations

from typing import Any

from orjson import dumps

from runstream.producers.values import Refusals

SPLIT_FIELDS = {
    "metrics_logged": "metrics",
    "system_metrics": "metrics",
    "summary_updated": "summary",
    "config_updated": "config",
    "run_started": "config",
    "histogram_logged": "histograms",
}
"""The mapping of each event type that can be spread over several events."""

# What a field left out of a body becomes: the schema's default for it.
_EMPTY: dict[str, Any] = {"tags": [], "environment": {}, "argv": [], "aliases": [],
                          "metadata": {}, "files": []}  # fmt: skip
CUT_MARK = "... [cut: {} bytes over the event limit]"


def fit_body(
    type_name: str, body: dict[str, Any], room: int, refusals: Refusals, run_id: str
) -> list[tuple[str, dict[str, Any]]]:
    """``body`` as events whose encoded bodies are each at most ``room`` bytes, in order.

    Never raises; what is left out or cut is counted in ``refusals`` with a warning.
    """
    field = SPLIT_FIELDS.get(type_name)
    mapping = body.get(field) if field else None
    if not isinstance(mapping, dict) or not field:
        return [(type_name, _shrink(type_name, dict(body), room, refusals))]
    rest = {k: v for k, v in body.items() if k != field}
    rest = _shrink(type_name, rest, room - len(field) - 6, refusals)  # ,"field":{}
    if type_name != "run_started":
        chunk_room = room - len(dumps(rest)) - len(field) - 6
        chunks = _chunks(type_name, field, mapping, chunk_room, refusals)
        return [(type_name, {**rest, field: chunk}) for chunk in chunks or [{}]]
    # The run's identity first, with as much config as fits; the rest of the config follows
    # as merge patches (config_updated), which every reader of config applies in order.
    chunks = _chunks(type_name, field, mapping, room - len('{"config":{}}'), refusals)
    first_room = room - len(dumps(rest)) - len(field) - 6
    first = chunks.pop(0) if chunks and len(dumps(chunks[0])) <= first_room else {}
    return [("run_started", {**rest, field: first})] + [
        ("config_updated", {"config": chunk}) for chunk in chunks
    ]


def _chunks(
    type_name: str, field: str, mapping: dict[str, Any], room: int, refusals: Refusals
) -> list[dict[str, Any]]:
    chunks: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    size = 0
    for key, value in mapping.items():
        item = len(dumps({key: value}))  # '{"k":v}': the braces pay for the comma
        if item > room:
            refusals.note(
                f"{field}.{key}",
                f"{type_name}: {field} key {key[:80]!r} is {item:,} bytes encoded, over the "
                f"{room:,} bytes one event has room for (MAX_EVENT_BYTES, Kafka's record "
                "limit); it is left out, the other keys are sent",
                "size",
            )
            continue
        if size + item > room and current:
            chunks.append(current)
            current, size = {}, 0
        current[key] = value
        size += item
    if current:
        chunks.append(current)
    return chunks


def _shrink(type_name: str, body: dict[str, Any], room: int, refusals: Refusals) -> dict[str, Any]:
    """Cut or leave out the largest fields of ``body`` (one level, and one more inside
    ``environment``) until it fits ``room``."""
    size = len(dumps(body))
    while size > room:
        path, value, field_size = _largest(body)
        if path is None:
            break
        over = size - room
        target = body if len(path) == 1 else body[path[0]]
        name = ".".join(path)
        if isinstance(value, str) and field_size - over > 200:
            keep = _cut(value, field_size - over - len(CUT_MARK) - 20)
            target[path[-1]] = keep + CUT_MARK.format(f"{field_size:,}")
            refusals.note(name, f"{type_name}: {name} is {field_size:,} bytes encoded, over the "
                          f"event limit (MAX_EVENT_BYTES); it is cut to {len(keep):,} "
                          "characters", "size")  # fmt: skip
        elif isinstance(value, list) and value and path[-1] == "argv":
            target[path[-1]] = [_cut(str(a), 200) for a in value[:50]]
            refusals.note(name, f"{type_name}: {name} is {field_size:,} bytes encoded, over the "
                          "event limit (MAX_EVENT_BYTES); its first 50 entries are kept, each "
                          "cut to 200 characters", "size")  # fmt: skip
        else:
            target[path[-1]] = _EMPTY.get(path[-1])
            refusals.note(name, f"{type_name}: {name} is {field_size:,} bytes encoded, over the "
                          "event limit (MAX_EVENT_BYTES); it is left out", "size")  # fmt: skip
        new_size = len(dumps(body))
        if new_size >= size:  # nothing more to gain
            break
        size = new_size
    return body


def _largest(body: dict[str, Any]) -> tuple[tuple[str, ...] | None, Any, int]:
    best: tuple[tuple[str, ...] | None, Any, int] = (None, None, 0)
    for key, value in body.items():
        if key == "environment" and isinstance(value, dict):
            for sub, inner in value.items():
                size = len(dumps(inner))
                if size > best[2] and inner not in ("", None, [], {}):
                    best = ((key, sub), inner, size)
            continue
        size = len(dumps(value))
        if size > best[2] and value not in ("", None, [], {}):
            best = ((key,), value, size)
    return best


def _cut(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` whose JSON encoding fits ``max_bytes`` (about)."""
    max_bytes = max(0, max_bytes)
    keep = text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")
    while keep and len(dumps(keep)) > max_bytes:  # escapes (quotes, control characters)
        keep = keep[: len(keep) * 3 // 4]
    return keep
