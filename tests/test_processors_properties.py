"""Issue 10, proof (processors half): whatever a foreign producer puts on the events topic, the
processors stay up, dead-letter what they cannot read with a reason, fold what they can exactly
as the pure fold does, and a normal run sent afterwards is right.

Hypothesis generates batches of messages (random bytes, empty and null values, JSON of wrong
shapes, envelopes of unknown types and future schema versions, valid events with odd values:
huge and negative seq and step, NaN and the infinities as the wire's strings, 512-character
names, and duplicates); one worker, against the real broker, reads every example's messages.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from runstream.errors import EventDecodeError
from runstream.processors.aggregates import (
    fold_point,
    fold_run,
    new_run_state,
    new_summary,
    run_key,
    settle,
    summary_choice,
    summary_key,
)
from runstream.processors.decoding import decode_event
from runstream.schemas import SCHEMA_VERSION, Topics, encode, event_dict, uuid7
from runstream.settings import Settings
from tests.samples import BODIES, PRODUCER
from tests.test_processors import comparable, expected_state, run_events, worker

pytestmark = pytest.mark.integration

INT64_MAX = 2**63 - 1
LONG = "μ" * 511 + "x"  # 512 characters, 1,023 bytes


class Tail:
    """Everything on the runs, summaries and dead-letter topics, kept up to date."""

    def __init__(self, settings: Settings) -> None:
        topics = Topics(settings.topic_prefix)
        self.dlq = topics.dead_letters
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": f"tail-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
            }
        )
        parts = []
        for topic in (topics.runs, topics.summaries, topics.dead_letters):
            meta = self.consumer.list_topics(topic, timeout=10).topics[topic]
            parts += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
        self.consumer.assign(parts)
        self.latest: dict[str, dict[str, Any]] = {}
        self.dead: dict[tuple[int, int], dict[str, bytes]] = {}  # (partition, offset): headers

    def poll(self) -> None:
        for m in self.consumer.consume(5000, 0.2):
            if m.error() is not None:
                continue
            if m.topic() == self.dlq:
                headers = {k: v or b"" for k, v in (m.headers() or [])}
                if headers.get("runstream.consumer") == b"processors":
                    source = (int(headers["runstream.partition"]), int(headers["runstream.offset"]))
                    self.dead[source] = headers
            else:
                self.latest[(m.key() or b"").decode()] = orjson.loads(m.value() or b"null")

    def until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            if check():
                return
        raise AssertionError(f"{what}: not within {timeout}s")


# --- what a foreign producer sends ------------------------------------------------------------
def _json(value: Any) -> bytes:
    # The standard library's encoder: integers of any size, and "Infinity" as it writes it (not
    # JSON: one more kind of garbage); surrogates escaped, which the reader refuses.
    return json.dumps(value).encode()


names = st.one_of(
    st.sampled_from(["loss", "acc", LONG, "a\x1fb", "🎯"]),
    st.text(min_size=1, max_size=20),
)
values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["NaN", "Infinity", "-Infinity", 1e308, -0.0, 5, 10**20]),
)
counters = st.one_of(st.integers(0, 1000), st.just(INT64_MAX))  # seq and step
big_ints = st.one_of(
    st.integers(-1000, 1000),
    st.sampled_from([INT64_MAX, INT64_MAX + 1, 2**64, -(2**63), 10**30]),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=10) | big_ints,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=10,
)
# What can be wrong with an envelope, one thing at a time ("" : nothing, the most common draw).
FAULTS = [""] * 8 + [
    "ts", "old", "future", "v0", "seq<0", "seq>int64", "step>int64", "missing", "type", "value"
]  # fmt: skip


@st.composite
def envelopes(draw: st.DrawFn, run_ids: list[str]) -> bytes:
    fault = draw(st.sampled_from(FAULTS))
    kind = draw(st.sampled_from([*BODIES, *["metrics_logged"] * 6]))
    body = copy.deepcopy(BODIES[kind])
    if kind == "metrics_logged":
        metrics = draw(st.dictionaries(names, values, max_size=6))
        if fault == "value":
            metrics[draw(names)] = draw(st.sampled_from([True, None, "x", [1.0], 10**400]))
        body = {
            "step": INT64_MAX + 1 if fault == "step>int64" else draw(counters),
            "metrics": metrics,
        }
    elif draw(st.booleans()):  # unknown fields, which a newer producer may add
        body = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3)) | body
    event = event_dict(
        id=uuid7(),
        type="no_such_type" if fault == "type" else kind,
        project=draw(st.sampled_from(["foreign", LONG, "x\x1fy"])),
        run_id=draw(st.sampled_from(run_ids)),
        seq={"seq<0": -1, "seq>int64": 2**64}.get(fault, draw(counters)),
        ts={"ts": "yesterday", "old": "1800-01-01T00:00:00Z"}.get(
            fault, "2026-11-28T19:00:00.123456Z"
        ),
        producer=PRODUCER,
        body=body,
    )
    event["v"] = {"future": SCHEMA_VERSION + 1, "v0": 0}.get(fault, SCHEMA_VERSION)
    if fault == "missing":
        del event[draw(st.sampled_from(sorted(event)))]
    return _json(event)


def messages(run_ids: list[str]) -> st.SearchStrategy[bytes | None]:
    return st.one_of(
        st.binary(max_size=200),
        st.just(b""),
        st.none(),  # a tombstone
        json_values.map(_json),
        envelopes(run_ids),
        envelopes(run_ids),
        envelopes(run_ids),
    )


def test_foreign_producers_cannot_stop_the_processors(settings: Settings, tmp_path: Path) -> None:
    events = Topics(settings.topic_prefix).events
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5})
    tail = Tail(settings)
    expected_dead: set[tuple[int, int]] = set()
    folded: list[bytes] = []  # every readable foreign event, in the order sent
    examples = [0]

    def send(key: bytes, value: bytes | None) -> tuple[int, int]:
        where: list[tuple[int, int]] = []

        def delivered(err: Any, msg: Any) -> None:
            assert err is None, err
            where.append((msg.partition(), msg.offset()))

        producer.produce(events, value=value, key=key, on_delivery=delivered)
        producer.flush(30)
        return where[0]

    # No run may look crashed while the test runs: the pure fold knows no clock.
    with worker(
        settings, tmp_path / "worker.log", RUNSTREAM_PROCESSOR_HEARTBEAT_TIMEOUT="3600"
    ) as process:

        @given(
            batch=st.lists(
                st.tuples(messages([f"f{i}" for i in range(3)]), st.booleans()), max_size=40
            )
        )
        @hsettings(
            max_examples=12,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        def example(batch: list[tuple[bytes | None, bool]]) -> None:
            examples[0] += 1
            for value, twice in batch:
                try:
                    key = decode_event(value).run_id.encode()  # as the SDK keys: one partition
                    bad = False
                except EventDecodeError:
                    key, bad = (value or b"")[:8], True
                for _ in range(2 if twice else 1):
                    where = send(key, value)
                    if bad:
                        expected_dead.add(where)
                    else:
                        folded.append(value or b"")
            # Then a normal run, keyed as the SDK keys it.
            normal = run_events(f"normal{examples[0]}", range(20))
            for e in normal:
                producer.produce(events, value=encode(e), key=e["run_id"].encode())
            producer.flush(30)
            expected = comparable(expected_state(normal))
            tail.until(lambda: _matches(tail.latest, expected), 60, "the normal run afterwards")
            tail.until(
                lambda: expected_dead <= set(tail.dead), 30, "every bad message dead-lettered"
            )
            assert process.poll() is None, "the worker stopped"
            assert set(tail.dead) == expected_dead  # and nothing else
            assert all(h.get("runstream.reason") for h in tail.dead.values())
            # What the worker made of the readable ones: the pure fold's state, exactly.
            foreign = comparable(fold(folded))
            tail.until(lambda: _matches(tail.latest, foreign), 30, "the foreign runs' state")

        example()
        assert process.poll() is None
    text = (tmp_path / "worker.log").read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]


def fold(values: list[bytes]) -> dict[str, dict[str, Any]]:
    """:func:`tests.test_processors.expected_state` over raw messages."""
    runs: dict[str, dict[str, Any]] = {}
    summaries: dict[str, dict[str, Any]] = {}
    for value in values:
        event = decode_event(value)
        key = run_key(event.project, event.run_id)
        state = runs.setdefault(key, new_run_state(event.project, event.run_id))
        before = state["last_seq"]
        if not fold_run(state, event) or event.type != "metrics_logged":
            continue
        late = event.seq < before  # a gap filled late: its points count (docs/processors.md)
        for name, metric in event.body.metrics.items():
            skey = summary_key(event.project, event.run_id, name)
            summary = summaries.setdefault(skey, new_summary(event.project, event.run_id, name))
            fold_point(summary, metric, event.body.step, event.seq, late=late)
    for summary in summaries.values():
        state = runs[run_key(summary["project"], summary["run_id"])]
        settle(summary, summary_choice(state, summary["name"]))
    return {**runs, **summaries}


def _matches(latest: dict[str, dict[str, Any]], expected: dict[str, dict[str, Any]]) -> bool:
    local = {"seen_at", "partition"}
    return all(
        k in latest and {f: x for f, x in latest[k].items() if f not in local} == v
        for k, v in expected.items()
    )
