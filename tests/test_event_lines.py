"""The sink's check of each message: the quick path for plain metrics events must never accept
what the schema refuses, and must read every event the way the schema reads it."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from runstream.errors import EventDecodeError
from runstream.schemas import decode, encode
from runstream.schemas.codec import EnvelopeEncoder
from runstream.schemas.events import NON_FINITE_TO_JSON
from runstream.sinks import event_lines
from runstream.sinks.event_lines import event_line
from tests.samples import BODIES, PRODUCER, same, sample_event


def metrics_event(**changes: Any) -> dict[str, Any]:
    e = copy.deepcopy(sample_event("metrics_logged", seq=3))
    e["body"] = {"step": 3, "metrics": {"loss": 0.5, "acc": 1, "grad": "NaN"}}
    for path, value in changes.items():
        *parents, last = path.split("__")
        target = e
        for part in parents:
            target = target[part]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value
    return e


DELETE = object()


@pytest.fixture
def quick_path(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records, per call of event_line, whether it took the quick path."""
    taken: list[bool] = []
    checked = event_lines._checked_line

    def spy(value: bytes, partition: int, offset: int) -> Any:
        taken[-1] = False
        return checked(value, partition, offset)

    original = event_lines.event_line

    def recording(value: bytes, partition: int, offset: int) -> Any:
        taken.append(True)
        return original(value, partition, offset)

    monkeypatch.setattr(event_lines, "_checked_line", spy)
    monkeypatch.setattr(event_lines, "event_line", recording)
    return taken


def test_an_sdk_metrics_event_goes_to_clickhouse_as_sent(quick_path: list[bool]) -> None:
    encoder = EnvelopeEncoder(project="p", run_id="r-1", producer=PRODUCER)
    value = encoder.encode(
        "01a226ef-9497-7001-9c83-2c2da797b4b0",
        "metrics_logged",
        9,
        "2026-11-28T12:00:00.000001Z",
        orjson.dumps({"step": 4, "metrics": {"loss": 0.25, "nan": "NaN", "inf": "-Infinity"}}),
    )
    line = event_lines.event_line(value, 2, 77)
    assert quick_path == [True]
    assert line.line == b'{"kafka_partition":2,"kafka_offset":77,' + value[1:]
    assert (line.project, line.run_id, line.seq, line.rows) == ("p", "r-1", 9, 4)


@pytest.mark.parametrize("type_name", BODIES)
def test_every_event_type_makes_a_line_with_the_schemas_reading(type_name: str) -> None:
    sent = sample_event(type_name, seq=5)
    line = orjson.loads(event_line(encode(sent), 1, 10).line)
    assert (line["kafka_partition"], line["kafka_offset"]) == (1, 10)
    event = decode(encode(sent))
    for name in ("id", "v", "type", "project", "run_id", "seq"):
        assert line[name] == getattr(event, name)
    assert line["ts"] == "2026-11-28T19:00:00.123456Z"
    assert decode(orjson.dumps({k: v for k, v in line.items() if "kafka" not in k})) == event


# Each case: a change to a valid metrics event. Whatever the quick path decides, the outcome must
# be the schema's: refused by both, or accepted with the schema's values.
ODD_EVENTS: dict[str, Callable[[], bytes]] = {
    "v 2 (newer schema)": lambda: encode(metrics_event(v=2)),
    "v as a string": lambda: encode(metrics_event(v="1")),
    "seq negative": lambda: encode(metrics_event(seq=-1)),
    "seq 2**63": lambda: encode(metrics_event(seq=2**63)),
    "seq 2**63 - 1": lambda: encode(metrics_event(seq=2**63 - 1)),
    "seq as a float": lambda: encode(metrics_event(seq=3.0)),
    "ts February 30th": lambda: encode(metrics_event(ts="2026-02-30T12:00:00Z")),
    "ts with an offset": lambda: encode(metrics_event(ts="2026-11-28T14:00:00.5+02:00")),
    "ts without a zone": lambda: encode(metrics_event(ts="2026-11-28T12:00:00")),
    "ts nanoseconds": lambda: encode(metrics_event(ts="2026-11-28T12:00:00.123456789Z")),
    "ts year 2300": lambda: encode(metrics_event(ts="2300-01-01T00:00:00Z")),
    "ts year 1899": lambda: encode(metrics_event(ts="1899-12-31T23:59:59Z")),
    "ts lower-case z": lambda: encode(metrics_event(ts="2026-11-28T12:00:00z")),
    "id upper case": lambda: encode(metrics_event(id="01A226EF-9497-7001-9C83-2C2DA797B4B0")),
    "id with a newline": lambda: encode(metrics_event(id="01a226ef-9497-7001-9c83-2c2da797b4b0\n")),
    "run_id with a newline": lambda: encode(metrics_event(run_id="abc\n")),
    "run_id empty": lambda: encode(metrics_event(run_id="")),
    "run_id 129 chars": lambda: encode(metrics_event(run_id="r" * 129)),
    "project empty": lambda: encode(metrics_event(project="")),
    "project 513 chars": lambda: encode(metrics_event(project="p" * 513)),
    "project unicode": lambda: encode(metrics_event(project="vision 👁")),
    "unknown envelope field": lambda: encode(metrics_event(extra={"a": 1})),
    "producer unknown field": lambda: encode(metrics_event(producer__os="linux")),
    "producer pid 2**32": lambda: encode(metrics_event(producer__pid=2**32)),
    "producer pid negative": lambda: encode(metrics_event(producer__pid=-1)),
    "producer without host": lambda: encode(metrics_event(producer__host=DELETE)),
    "producer sdk empty": lambda: encode(metrics_event(producer__sdk="")),
    "body unknown field": lambda: encode(metrics_event(body__note="hi")),
    "step negative": lambda: encode(metrics_event(body__step=-1)),
    "step as a string": lambda: encode(metrics_event(body__step="3")),
    "step 2**63": lambda: encode(metrics_event(body__step=2**63)),
    "value true": lambda: encode(metrics_event(body__metrics={"loss": True})),
    "value null": lambda: encode(metrics_event(body__metrics={"loss": None})),
    "value 'nan'": lambda: encode(metrics_event(body__metrics={"loss": "nan"})),
    "value a list": lambda: encode(metrics_event(body__metrics={"loss": [1]})),
    "value huge integer": lambda: encode(metrics_event()).replace(b":0.5", b":1" + b"0" * 30),
    "value 1e999": lambda: encode(metrics_event()).replace(b'"loss":0.5', b'"loss":1e999'),
    "value -0.0": lambda: encode(metrics_event(body__metrics={"loss": -0.0})),
    "metric name empty": lambda: encode(metrics_event(body__metrics={"": 1.0})),
    "metric name 513 chars": lambda: encode(metrics_event(body__metrics={"m" * 513: 1.0})),
    "no metrics": lambda: encode(metrics_event(body__metrics={})),
    "metrics a list": lambda: encode(metrics_event(body__metrics=[1.0])),
    "body missing": lambda: encode(metrics_event(body=DELETE)),
    "type unknown": lambda: encode(metrics_event(type="metrics_logged_v2")),
    "leading whitespace": lambda: b"  \n" + encode(metrics_event()),
    "not JSON": lambda: b'{"id": ',
    "a JSON array": lambda: b"[1, 2]",
    "invalid UTF-8": lambda: encode(metrics_event()).replace(b"vision", b"vis\xffion"),
}


@pytest.mark.parametrize("case", ODD_EVENTS)
def test_odd_events_get_the_schemas_verdict(case: str) -> None:
    value = ODD_EVENTS[case]()
    try:
        expected = decode(value)
    except EventDecodeError:
        with pytest.raises(EventDecodeError):
            event_line(value, 0, 0)
        return
    try:
        made = event_line(value, 0, 0)
    except EventDecodeError as exc:
        # Only what ClickHouse cannot store may be refused beyond the schema.
        assert exc.field in {"ts", "seq", "body.step", "producer.pid"}, exc
        return
    line = orjson.loads(made.line)
    assert (made.project, made.run_id) == (expected.project, expected.run_id)
    assert line["seq"] == expected.seq and line["v"] == expected.v
    stored = {
        k: v if isinstance(v, (int, float)) else NON_FINITE_TO_JSON[v]
        for k, v in line["body"]["metrics"].items()
    }
    assert same(stored, {k: float(v) for k, v in expected.body.metrics.items()})  # type: ignore[attr-defined]
    assert made.rows == 1 + len(expected.body.metrics)  # type: ignore[attr-defined]


def test_refusals_name_the_field_at_fault() -> None:
    with pytest.raises(EventDecodeError, match="seq"):
        event_line(encode(metrics_event(seq=-1)), 0, 0)
    with pytest.raises(EventDecodeError, match=r"ts: .*\(1900-2299\)"):
        event_line(encode(metrics_event(ts="2300-01-01T00:00:00Z")), 0, 0)
    with pytest.raises(EventDecodeError, match="not valid JSON"):
        event_line(b"{", 0, 0)


@pytest.mark.parametrize(
    ("type_name", "body"),
    [
        ("run_started", {"config": {"seed": 2**70}}),
        ("config_updated", {"config": {"nested": {"big": -(2**65)}}}),
        ("run_finished", {"status": "failed", "exit_code": 2**64}),
    ],
)
def test_integers_beyond_64_bits_are_refused_by_the_sink_and_the_processors_alike(
    type_name: str, body: dict[str, Any]
) -> None:
    from runstream.processors.decoding import decode_event

    event = sample_event(type_name)
    event["body"] = body
    value = json.dumps(event).encode()  # orjson cannot write such a number; other SDKs could
    decode(value)  # the schema itself takes it
    with pytest.raises(EventDecodeError, match="body: holds an integer beyond 64 bits"):
        event_line(value, 0, 0)
    with pytest.raises(EventDecodeError, match="body: holds an integer beyond 64 bits"):
        decode_event(value)
