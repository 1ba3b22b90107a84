"""Size bounds of the run state the processors keep and publish.

A run's record on the compacted ``runs`` topic carries its config, tags and ``define_metric``
choices, none of which the event schema bounds on its own: a ``run_started`` may carry a config
of up to a whole event (:data:`~runstream.schemas.limits.MAX_EVENT_BYTES`), and
``config_updated`` patches add up. Two rules keep every record under
:data:`~runstream.schemas.limits.MAX_RECORD_BYTES`, and the memory a run takes bounded:

- The live config keeps at most :data:`CONFIG_BYTES` of JSON. A config that grows past it
  loses its largest values first (one huge value costs that value, not the other keys), and
  ``left_out["config"]`` in the run state says which keys and why. The full config stays in
  the ``run_started`` and ``config_updated`` events (ClickHouse's ``events`` and
  ``runs_current``).
- An alert's JSON keeps within :data:`ALERT_BYTES`: the text of a ``run.alert()`` (which the
  schema does not bound) is cut, and says by how much.
- A runs record still too large (a name, tags or ``define_metric`` choices of hundreds of KB)
  is published without its largest fields, emptied, each named with its reason in
  ``left_out``; the run state the worker keeps is not changed.
"""

from __future__ import annotations

from typing import Any

import orjson

from runstream.processors.alert import Alert
from runstream.schemas.limits import MAX_RECORD_BYTES

CONFIG_BYTES = MAX_RECORD_BYTES // 2
"""JSON bytes of config the live state keeps per run: half a record, so that config, tags and
the other fields of a runs record fit in one together in every case but the pathological."""

ALERT_BYTES = MAX_RECORD_BYTES // 2
"""JSON bytes of an alert as the processors publish it: half a record, so that the notifier's
versions (the same alert with its delivery state and last error) fit in one as well."""

_NAMED = 10  # left-out keys named in the reason; the count says how many there were

# Fields of a run state that can be large, and what stands in for each when it is left out.
_EMPTY: dict[str, Any] = {
    "config": {},
    "metric_summaries": {},
    "tags": [],
    "name": None,
    "group": None,
    "job_type": None,
}


def bound_config(state: dict[str, Any]) -> None:
    """Keep the run's config within :data:`CONFIG_BYTES` (JSON), leaving out its largest
    values first, and say so in ``state["left_out"]["config"]``. Cheap for a config within
    the bound: one ``orjson.dumps`` (called only on ``run_started`` and ``config_updated``)."""
    config: dict[str, Any] = state["config"]
    total = len(orjson.dumps(config))
    if total <= CONFIG_BYTES:
        return
    sizes = sorted(
        ((len(orjson.dumps(value)) + len(key.encode()) + 4, key) for key, value in config.items()),
        reverse=True,
    )
    dropped: list[str] = []
    for size, key in sizes:
        if total <= CONFIG_BYTES:
            break
        total -= size
        dropped.append(key)
    kept = {key: value for key, value in config.items() if key not in set(dropped)}
    state["config"] = kept
    named = ", ".join(repr(key[:64]) for key in dropped[:_NAMED])
    more = f" and {len(dropped) - _NAMED} more" if len(dropped) > _NAMED else ""
    left_out = dict(state.get("left_out") or {})
    left_out["config"] = (
        f"{len(dropped)} of {len(config)} config keys left out of the live state ({named}{more}): "
        f"the config is larger than the {CONFIG_BYTES:,} bytes of JSON kept per run; "
        "the run's events hold it in full"
    )
    state["left_out"] = left_out


def run_record(raw_key: bytes, record: dict[str, Any]) -> bytes:
    """The JSON value of a run's record on the runs topic, within :data:`MAX_RECORD_BYTES`
    with its key. ``record`` is the wire form of the run state (see ``aggregates.to_wire``)."""
    raw = orjson.dumps(record)
    if len(raw_key) + len(raw) <= MAX_RECORD_BYTES:
        return raw  # the common case: one dumps, one len
    out = dict(record)
    left_out = dict(out.get("left_out") or {})
    sizes = sorted(
        ((len(orjson.dumps(out.get(field))), field) for field in _EMPTY),
        reverse=True,
    )
    for size, field in sizes:
        out[field] = _EMPTY[field]
        left_out[field] = (
            f"left out of this record: {size:,} bytes of JSON, and the runs topic's records "
            f"hold {MAX_RECORD_BYTES:,} bytes"
        )
        out["left_out"] = left_out
        raw = orjson.dumps(out)
        if len(raw_key) + len(raw) <= MAX_RECORD_BYTES:
            return raw
    # Only fixed-size fields remain (and a key of at most a few KB): never reached.
    raise AssertionError("a runs record without its variable fields is still too large")


def alert_record(alert: Alert) -> bytes:
    """The alert's JSON for the alerts topic, within :data:`ALERT_BYTES`: a text too long for
    it is cut and ends with a note of what was left out."""
    raw = alert.to_json()
    excess = len(raw) - ALERT_BYTES
    if excess <= 0:
        return raw
    text = alert.text.encode()
    kept = text[: max(0, len(text) - excess - 200)].decode(errors="ignore")
    note = f" [cut: {len(text) - len(kept.encode()):,} more bytes; the event holds the whole text]"
    return alert.model_copy(update={"text": kept + note}).to_json()
