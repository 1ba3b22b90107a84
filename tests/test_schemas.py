from __future__ import annotations

import math
import os

import orjson
import pytest

from runstream.errors import EventDecodeError, UnsupportedSchemaVersionError
from runstream.schemas import EVENT_MODELS, decode, encode, encode_event, uuid7
from runstream.schemas.events import MetricsLogged
from runstream.schemas.export import stale_files
from tests.samples import BODIES, same, sample_event


def test_samples_cover_every_event_type() -> None:
    assert set(BODIES) == set(EVENT_MODELS)


@pytest.mark.parametrize("type_name", sorted(EVENT_MODELS))
def test_every_event_type_round_trips(type_name: str) -> None:
    wire = encode(sample_event(type_name))
    event = decode(wire)
    assert type(event) is EVENT_MODELS[type_name]
    again = decode(encode_event(event))
    assert same(again.model_dump(), event.model_dump())
    # The body on the wire, parsed as plain JSON, says the same as what was sent.
    assert orjson.loads(encode_event(event))["body"].keys() >= BODIES[type_name].keys() - {
        "environment"
    }


def test_nan_and_infinities_survive_with_unicode_names() -> None:
    event = decode(encode(sample_event("metrics_logged")))
    body = event.body  # type: ignore[attr-defined]
    assert isinstance(body, MetricsLogged)
    assert math.isnan(body.metrics["loss"])
    assert body.metrics["grad/norm"] == math.inf
    assert body.metrics["grad/min"] == -math.inf
    assert body.metrics["损失/验证"] == 1.5e-300
    assert math.copysign(1, body.metrics["emoji 🎯 name"]) == -1
    wire = orjson.loads(encode_event(event))
    assert wire["body"]["metrics"]["loss"] == "NaN"
    assert wire["body"]["metrics"]["grad/min"] == "-Infinity"


def _mutated(**changes: object) -> bytes:
    event = sample_event("metrics_logged")
    for path, value in changes.items():
        target = event
        *parents, last = path.split("__")
        for part in parents:
            target = target[part]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value
    return orjson.dumps(event)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"\x00\xff garbage", ""),
        (b"[1, 2]", ""),
        (b"{}", "type"),
        (_mutated(type="exploded"), "type"),
        (_mutated(run_id=KeyError), "run_id"),
        (_mutated(run_id="has space"), "run_id"),
        (_mutated(seq=-1), "seq"),
        (_mutated(id="not-a-uuid"), "id"),
        (_mutated(ts="yesterday"), "ts"),
        (_mutated(ts="2026-11-28T19:00:00"), "ts"),  # naive: no time zone
        (_mutated(body__step="seven"), "body.step"),
        (_mutated(body__metrics={"loss": "nan"}), "body.metrics.loss"),
        (_mutated(body__metrics={"loss": True}), "body.metrics.loss"),
        (_mutated(body__metrics={"loss": None}), "body.metrics.loss"),
        (_mutated(body__metrics={"": 1.0}), "body.metrics"),
        (_mutated(producer=KeyError), "producer"),
    ],
)
def test_malformed_input_is_rejected_naming_the_field(data: bytes, field: str) -> None:
    with pytest.raises(EventDecodeError) as caught:
        decode(data)
    assert caught.value.field.startswith(field), str(caught.value)
    assert str(caught.value)


def test_unknown_fields_are_tolerated() -> None:
    event = sample_event("heartbeat")
    event["future_field"] = {"x": 1}
    event["body"]["cpu_temp"] = 80
    assert decode(orjson.dumps(event)).run_id == "abc123"  # type: ignore[attr-defined]


def test_newer_schema_version_is_refused_with_upgrade_hint() -> None:
    event = sample_event("heartbeat")
    event["v"] = 2
    with pytest.raises(UnsupportedSchemaVersionError, match="upgrade runstream"):
        decode(orjson.dumps(event))


def test_exported_json_schema_files_are_fresh() -> None:
    assert stale_files() == [], "regenerate with: python -m runstream.schemas.export"


def test_uuid7_is_time_ordered_unique_and_versioned() -> None:
    ids = [uuid7() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(i[14] == "7" and i[19] in "89ab" for i in ids[:100])


def test_uuid7_differs_in_forked_child() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report the next id and leave at once
        os.write(write, uuid7(0).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child_id = os.read(read, 64).decode()
    assert child_id != uuid7(0)
