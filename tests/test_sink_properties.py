"""What a foreign producer can put on the events topic, against the real sink (issue 10, proof,
the sink's half): random bytes, empty values, JSON of wrong shapes, valid envelopes with odd
values, events sent twice. Invariants: the sink never stops; every message is stored exactly
(the row equals the event), dead-lettered with a reason, or left out as a re-send of a stored
event; offsets are committed to the end; a normal run sent afterwards lands."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timezone
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runstream.errors import EventDecodeError
from runstream.schemas import Topics, decode, encode
from runstream.settings import Settings
from runstream.sinks.clickhouse import connect
from runstream.sinks.consumer import Sink
from tests.conftest import Services, isolated_settings
from tests.samples import BODIES, PRODUCER, same, sample_event
from tests.test_processors import run_events

pytestmark = pytest.mark.integration

INT64_MAX = 2**63 - 1


@dataclass
class Env:
    settings: Settings
    sink: Sink
    producer: Producer


@pytest.fixture(scope="module")
def env(services: Services) -> Iterator[Env]:
    test_settings = isolated_settings(services, "p")
    sink = Sink(test_settings)
    producer = Producer({"bootstrap.servers": test_settings.kafka_bootstrap, "linger.ms": 5})
    try:
        yield Env(test_settings, sink, producer)
    finally:
        sink.close()


# --- what a foreign producer sends ----------------------------------------------------------------
odd_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
names = st.one_of(
    odd_text.filter(lambda s: s != ""),
    st.sampled_from(["n" * 512, "ñ" * 512, "🚀" * 512, "n" * 513, "a/b.c d", "\u0000", "\u202e"]),
)
numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0.0, -0.0, 1e308, 5e-324, 2**53 + 1]),
)
wire_values = st.one_of(numbers, st.sampled_from(["NaN", "Infinity", "-Infinity", "nan", "inf"]))
counts = st.one_of(
    st.integers(0, 1000),
    st.sampled_from([-1, INT64_MAX, INT64_MAX + 1, 2**64, 2**70]),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, odd_text),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(odd_text, inner, max_size=3)
    ),
    max_leaves=10,
)


@st.composite
def envelopes(draw: st.DrawFn, run_id: str, seq: int) -> dict[str, Any]:
    """A valid-looking event with odd values here and there."""
    kind = draw(st.sampled_from(["metrics_logged"] * 3 + sorted(BODIES)))
    event = sample_event(kind, seq=seq, run_id=run_id)
    event["producer"] = dict(PRODUCER)
    if kind == "metrics_logged":
        event["body"] = {
            "step": draw(counts),
            "metrics": draw(st.dictionaries(names, wire_values, min_size=1, max_size=5)),
        }
    elif kind in ("run_started", "config_updated"):
        event["body"]["config"] = draw(st.dictionaries(odd_text, json_values, max_size=4))
    elif kind == "summary_updated":
        event["body"]["summary"] = draw(st.dictionaries(odd_text, json_values, max_size=4))
    change = draw(
        st.sampled_from(
            ["none", "none", "seq", "type", "v", "ts", "project", "unknown_field", "pid"]
        )
    )
    if change == "seq":
        event["seq"] = draw(counts)
    elif change == "type":
        event["type"] = draw(st.sampled_from(["metrics_logged2", "", "RUN_STARTED"]))
    elif change == "v":
        event["v"] = draw(st.sampled_from([0, 2, 99, -1]))
    elif change == "ts":
        event["ts"] = draw(
            st.sampled_from(
                [
                    "1899-12-31T23:59:59Z",
                    "1900-01-01T00:30:00+01:00",
                    "2299-12-31T23:59:59.999999Z",
                    "2300-01-01T00:00:00Z",
                    "2026-02-30T00:00:00Z",
                    "2026-11-28T19:00:00.123456789Z",
                    "yesterday",
                ]
            )
        )
    elif change == "project":
        event["project"] = draw(names)
    elif change == "unknown_field":
        event["body"]["from_the_future"] = draw(json_values)
    elif change == "pid":
        event["producer"]["pid"] = draw(st.sampled_from([-1, 2**32, 2**63]))
    return event


@st.composite
def messages(draw: st.DrawFn) -> list[tuple[bytes | None, bytes | None]]:
    run = f"f{uuid.uuid4().hex[:8]}"
    seq = 0
    sent: list[tuple[bytes | None, bytes | None]] = []
    for _ in range(draw(st.integers(1, 25))):
        kind = draw(st.sampled_from(["bytes", "empty", "shape", "event", "event", "again"]))
        own = run
        if kind == "bytes":
            value: bytes | None = draw(st.binary(max_size=200))
        elif kind == "empty":
            value = draw(st.sampled_from([b"", None, b"null", b"{}", b"[]", b" "]))
        elif kind == "shape":
            value = (
                orjson.dumps(_big_ints_as_text(draw(json_values)), option=orjson.OPT_NON_STR_KEYS)
                .replace(b'"@@', b"")
                .replace(b'@@"', b"")
            )
        elif kind == "again" and sent:
            sent.append(draw(st.sampled_from(sent)))
            continue
        else:
            own = f"{run}-{draw(st.integers(0, 2))}"
            event = draw(envelopes(own, seq))
            seq += 1
            try:
                value = encode(event)
            except TypeError:  # an integer beyond 64 bits: written as a JSON number anyway
                value = (
                    orjson.dumps(_big_ints_as_text(event)).replace(b'"@@', b"").replace(b'@@"', b"")
                )
        # Mostly as an SDK keys them (by the event's run id); any other key is a dead letter.
        keys = [None, b"", run.encode(), b"\xff\xfe", own.encode(), own.encode(), own.encode()]
        key = draw(st.sampled_from(keys))
        sent.append((key, value))
    return sent


def _big_ints_as_text(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
        return f"@@{value}@@"
    if isinstance(value, dict):
        return {k: _big_ints_as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_big_ints_as_text(v) for v in value]
    return value


# --- the invariants -------------------------------------------------------------------------------
def produce(env: Env, batch: list[tuple[bytes | None, bytes | None]]) -> list[tuple[int, int]]:
    """Produce in order; returns each message's (partition, offset)."""
    where: list[tuple[int, int] | None] = [None] * len(batch)

    def report(index: int) -> Any:
        def on_delivery(error: Any, message: Any) -> None:
            assert error is None, error
            where[index] = (message.partition(), message.offset())

        return on_delivery

    topic = Topics(env.settings.topic_prefix).events
    for index, (key, value) in enumerate(batch):
        env.producer.produce(topic, key=key, value=value, on_delivery=report(index))
    assert env.producer.flush(30) == 0
    return [w for w in where if w is not None]


def dead_letter_positions(settings: Settings) -> dict[tuple[int, int], str]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"dlq-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    topic = Topics(settings.topic_prefix).dead_letters
    found: dict[tuple[int, int], str] = {}
    try:
        parts = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts]
        consumer.assign([TopicPartition(topic, p, 0) for p in range(settings.topic_partitions)])
        read = [0] * len(parts)
        deadline = time.monotonic() + 30
        while any(r < e for r, e in zip(read, ends, strict=True)):
            assert time.monotonic() < deadline
            for message in consumer.consume(500, 0.5):
                if message.error() is not None:
                    continue
                read[message.partition()] = message.offset() + 1
                headers = {k: v.decode() for k, v in message.headers() or []}
                position = (int(headers["runstream.partition"]), int(headers["runstream.offset"]))
                found[position] = headers["runstream.reason"]
    finally:
        consumer.close()
    return found


def sink_through(env: Env, count: int) -> None:
    stats = env.sink.stats
    start = stats.events + stats.dead_letters + stats.duplicates
    deadline = time.monotonic() + 60
    while stats.events + stats.dead_letters + stats.duplicates - start < count:
        assert time.monotonic() < deadline, "the sink did not get through the messages"
        env.sink.poll(0.2)
        env.sink.flush()


def stored_row(env: Env, partition: int, offset: int) -> dict[str, Any] | None:
    db = env.settings.clickhouse_database
    result = connect(env.settings).query(
        f"SELECT * FROM {db}.events WHERE kafka_partition = {partition} AND kafka_offset = {offset}"
    )
    rows = [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows]
    assert len(rows) <= 1
    return rows[0] if rows else None


def assert_stored_exactly(env: Env, row: dict[str, Any], value: bytes) -> None:
    event = decode(value)
    sent = orjson.loads(value)
    assert str(row["event_id"]) == event.id
    assert (row["schema_version"], row["type"], row["project"], row["run_id"], row["seq"]) == (
        event.v,
        event.type,  # type: ignore[attr-defined]
        event.project,
        event.run_id,
        event.seq,
    )
    stored_ts = row["ts"]
    expected_ts = event.ts
    if stored_ts.tzinfo is None:
        expected_ts = expected_ts.astimezone(_UTC).replace(tzinfo=None)
    assert stored_ts == expected_ts
    assert (row["producer_sdk"], row["producer_version"]) == (
        event.producer.sdk,
        event.producer.version,
    )
    body = orjson.loads(row["body"])
    for key, wanted in sent["body"].items():  # what the producer sent, as it sent it
        assert same(_floats(body[key]), _floats(wanted)), (key, body[key], wanted)
    if event.type == "metrics_logged":  # type: ignore[attr-defined]
        db = env.settings.clickhouse_database
        points = connect(env.settings).query(
            f"SELECT name, value FROM {db}.metrics WHERE run_id = %(r)s AND seq = %(s)s",
            parameters={"r": event.run_id, "s": event.seq},
        )
        stored = dict(points.result_rows)
        wanted_points = event.body.metrics  # type: ignore[attr-defined]
        assert stored.keys() == wanted_points.keys()
        assert all(same(stored[k], float(v)) for k, v in wanted_points.items())


_UTC = timezone.utc


def _floats(value: Any) -> Any:
    """JSON numbers compared as numbers (1 and 1.0 alike)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    return [_floats(v) for v in value]


def stored_seq(env: Env, value: bytes) -> bool:
    """Is this a re-send: does ClickHouse hold an event of its run with its seq?"""
    try:
        event = decode(value)
    except EventDecodeError:
        return False
    db = env.settings.clickhouse_database
    high = (
        connect(env.settings)
        .query(
            f"SELECT count() FROM {db}.events "
            "WHERE project = %(p)s AND run_id = %(r)s AND seq = %(s)s",
            parameters={"p": event.project, "r": event.run_id, "s": event.seq},
        )
        .result_rows[0]
    )
    return bool(high[0])


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(batch=messages())
def test_whatever_a_foreign_producer_sends_the_sink_stores_or_dead_letters_and_goes_on(
    env: Env, batch: list[tuple[bytes | None, bytes | None]]
) -> None:
    normal = f"normal-{uuid.uuid4().hex[:8]}"
    normal_events = run_events(normal, range(5))
    sent = [*batch, *[(normal.encode(), encode(e)) for e in normal_events]]
    positions = produce(env, sent)
    sink_through(env, len(sent))
    letters = dead_letter_positions(env.settings)
    for (_key, value), (partition, offset) in zip(sent, positions, strict=True):
        row = stored_row(env, partition, offset)
        if row is not None:
            assert value is not None
            assert_stored_exactly(env, row, value)
        elif (partition, offset) in letters:
            assert letters[(partition, offset)], "a dead letter without a reason"
        else:
            # left out as a re-send of a stored event (seq at or below the run's highest)
            assert value is not None and stored_seq(env, value), (
                f"message {value!r} at {partition}@{offset}: neither stored nor dead-lettered"
            )
    # The normal run after the rest: every event, every point.
    db = env.settings.clickhouse_database
    count = connect(env.settings).query(
        f"SELECT count() FROM {db}.metrics WHERE run_id = %(r)s", parameters={"r": normal}
    )
    assert count.result_rows[0][0] == 5 * 3
    # Offsets committed up to the end of every partition.
    consumer = Consumer({"bootstrap.servers": env.settings.kafka_bootstrap, "group.id": "x"})
    try:
        topic = Topics(env.settings.topic_prefix).events
        parts = [TopicPartition(topic, p) for p in range(env.settings.topic_partitions)]
        ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts]
        group = Consumer(
            {"bootstrap.servers": env.settings.kafka_bootstrap, "group.id": env.settings.sink_group}
        )
        done = [tp.offset for tp in group.committed(parts, timeout=10)]
        group.close()
    finally:
        consumer.close()
    assert [max(0, d) for d in done] == ends
