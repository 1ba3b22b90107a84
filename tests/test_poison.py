"""Poison messages (issue 10, item 9): messages at the broker's size limit, data ClickHouse
refuses whatever its error code, and a sink that cannot make progress, against the real
Kafka and ClickHouse."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from runstream.deploy.local.cli import _status
from runstream.deploy.local.processes import PidFile
from runstream.deploy.local.stack import LocalStack
from runstream.schemas import Topics, encode
from runstream.schemas.limits import MAX_EVENT_BYTES, MAX_RECORD_BYTES
from runstream.settings import Settings
from runstream.sinks.batch import is_outage
from runstream.sinks.clickhouse import connect
from runstream.sinks.consumer import Sink
from runstream.sinks.observability import scrape
from tests.conftest import free_port
from tests.helpers import records_of, scalar, sink_until
from tests.samples import sample_event
from tests.test_processors import latest, run_events, wait_for, worker

pytestmark = pytest.mark.integration

# Kafka's broker default message.max.bytes (1,048,588) is the largest record batch it takes; a
# record of this value and a short key, alone in its batch, stays just under it.
NEAR_BROKER_LIMIT = 1_048_000


def raw_producer(settings: Settings) -> Producer:
    """A foreign producer: no size limit of ours, no compression, one record per batch."""
    return Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "message.max.bytes": 1_048_588,
            "linger.ms": 0,
        }
    )


def produce_raw(
    settings: Settings, messages: list[tuple[bytes | None, bytes | None]], topic: str = ""
) -> None:
    producer = raw_producer(settings)
    topic = topic or Topics(settings.topic_prefix).events
    for key, value in messages:
        producer.produce(topic, key=key, value=value, partition=0)
        producer.flush(30)
    assert producer.flush(30) == 0


def dead_letters(settings: Settings, expected: int, timeout: float = 60.0) -> list[Any]:
    """The dead-letter topic's records (at least ``expected`` of them)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"dlq-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.max.bytes": 10_000_000,
        }
    )
    consumer.subscribe([Topics(settings.topic_prefix).dead_letters])
    found: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            found += [m for m in consumer.consume(100, 0.5) if m.error() is None]
            if len(found) >= expected:
                found += [m for m in consumer.consume(100, 1.0) if m.error() is None]
                return found
    finally:
        consumer.close()
    raise AssertionError(f"{len(found)} dead letters, expected {expected}")


def headers_of(message: Any) -> dict[str, str]:
    return {name: value.decode() for name, value in message.headers() or []}


def record_size(message: Any) -> int:
    headers = message.headers() or []
    size = len(message.key() or b"") + len(message.value() or b"")
    return size + sum(len(name) + len(value) for name, value in headers)


def poison(settings: Settings) -> list[tuple[bytes | None, bytes | None]]:
    """~1 MB of garbage, and an event of the largest size we produce with a bad field."""
    garbage = bytes(range(256)) * (NEAR_BROKER_LIMIT // 256)
    event = sample_event("run_started", seq=0, run_id="poisoned")
    event["seq"] = -1  # the bad field
    event["body"]["notes"] = ""
    filler = MAX_EVENT_BYTES - len(encode(event))
    event["body"]["notes"] = "n" * filler
    big_event = encode(event)
    assert len(big_event) == MAX_EVENT_BYTES
    return [(b"garbage", garbage), (b"poisoned", big_event)]


def check_poison_letters(letters: list[Any], consumer: str) -> None:
    letters = [m for m in letters if headers_of(m)["runstream.consumer"] == consumer]
    assert len(letters) == 2
    by_key = {m.key(): m for m in letters}
    garbage, event = by_key[b"garbage"], by_key[b"poisoned"]
    for message in (garbage, event):
        headers = headers_of(message)
        assert record_size(message) <= MAX_RECORD_BYTES
        assert headers["runstream.truncated"] == "value"
        assert headers["runstream.partition"] == "0"
        assert headers["runstream.topic"].endswith(".events")
    assert headers_of(garbage)["runstream.value_bytes"] == str(NEAR_BROKER_LIMIT // 256 * 256)
    assert headers_of(garbage)["runstream.reason"].startswith("not valid JSON")
    assert headers_of(event)["runstream.value_bytes"] == str(MAX_EVENT_BYTES)
    assert headers_of(event)["runstream.reason"].startswith("seq:")
    offsets = sorted(int(headers_of(m)["runstream.offset"]) for m in letters)
    assert offsets == [0, 1]


def normal_run(settings: Settings, run_id: str = "normal") -> list[dict[str, Any]]:
    events = run_events(run_id, range(20))
    from tests.test_processors import produce

    produce(settings, events)
    return events


def committed(settings: Settings, group: str, topic: str, partitions: int) -> list[int]:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], 10)
        return [tp.offset for tp in tps]
    finally:
        consumer.close()


def high_watermarks(settings: Settings, topic: str, partitions: int) -> list[int]:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "hw"})
    try:
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        ]
    finally:
        consumer.close()


def test_sink_dead_letters_messages_at_the_broker_limit_and_goes_on(settings: Settings) -> None:
    produce_raw(settings, poison(settings))
    events = normal_run(settings)
    db = settings.clickhouse_database
    sink = sink_until(
        settings,
        lambda c: scalar(settings, f"SELECT count() FROM {db}.events") >= len(events),
    )
    assert sink.stats.dead_letters == 2
    check_poison_letters(dead_letters(settings, 2), "sink")
    assert scalar(settings, f"SELECT count() FROM {db}.events") == len(events)
    assert scalar(settings, f"SELECT count() FROM {db}.metrics") == 20 * 3
    topic = Topics(settings.topic_prefix).events
    parts = settings.topic_partitions
    ends = high_watermarks(settings, topic, parts)
    done = committed(settings, settings.sink_group, topic, parts)
    assert [max(0, offset) for offset in done] == ends  # empty partitions: nothing to commit


def test_processors_dead_letter_messages_at_the_broker_limit_and_go_on(
    settings: Settings, tmp_path: Path
) -> None:
    produce_raw(settings, poison(settings))
    normal_run(settings, "after-poison")
    log = tmp_path / "worker.log"
    with worker(settings, log) as process:

        def folded() -> bool:
            runs = latest(settings)
            return any(r.get("run_id") == "after-poison" and r.get("last_step") == 19
                       for r in runs.values())  # fmt: skip

        wait_for(folded, 120, "the run after the poison folded")
        assert process.poll() is None, log.read_text()[-3000:]
        check_poison_letters(dead_letters(settings, 2), "processors")


# --- data ClickHouse refuses, whatever the code ---------------------------------------------------
def test_records_refused_with_any_data_error_code_are_dead_lettered_and_the_rest_land(
    settings: Settings,
) -> None:
    """A foreign record on the runs topic with tags that are not an array (ClickHouse: code 130,
    CANNOT_READ_ARRAY_FROM_TEXT) or a time beyond DateTime64 (code 407, DECIMAL_OVERFLOW): codes
    the old list of data errors did not hold, so the sink retried the batch forever."""
    runs = Topics(settings.topic_prefix).runs

    def record(run_id: str, **extra: Any) -> tuple[bytes, bytes]:
        fields = {"project": "p", "run_id": run_id, "status": "running", "version": 1, **extra}
        return run_id.encode(), orjson.dumps(fields)

    good = [record(f"ok-{i}", tags=["a"]) for i in range(6)]
    bad = [record("tags-not-array", tags="x"), record("time-beyond", started_at=1e30)]
    produce_raw(settings, [*good[:3], bad[0], *good[3:], bad[1]], topic=runs)
    db = settings.clickhouse_database
    sink = sink_through(settings, 8)
    assert sink.stats.dead_letters == 2
    stored = {r["run_id"] for r in records_of(settings, f"SELECT run_id FROM {db}.live_runs")}
    assert stored == {f"ok-{i}" for i in range(6)}
    reasons = {m.key(): headers_of(m)["runstream.reason"] for m in dead_letters(settings, 2)}
    assert "CANNOT_READ_ARRAY_FROM_TEXT" in reasons[b"tags-not-array"]
    assert reasons[b"tags-not-array"].startswith("refused by ClickHouse: ")
    assert "DECIMAL_OVERFLOW" in reasons[b"time-beyond"]


def sink_through(settings: Settings, messages: int) -> Sink:
    """Run a sink until it has stored or dead-lettered ``messages`` messages."""
    sink = Sink(settings)
    try:
        return sink_until(
            settings, lambda c: sink.stats.events + sink.stats.dead_letters >= messages, sink=sink
        )
    finally:
        sink.close()


def test_valid_events_spanning_more_than_100_months_land(settings: Settings) -> None:
    """Valid events from 1950 to 2069 in one batch: ClickHouse refuses an insert touching more
    than 100 partitions (months) with TOO_MANY_PARTS, which reads as an overloaded server; the
    sink retried it forever. They are data like any other and land."""
    events = []
    for index in range(120):
        event = sample_event("metrics_logged", seq=index, run_id="old-and-new")
        event["ts"] = f"{1950 + index}-06-01T00:00:00Z"
        events.append(event)
    produce_raw(settings, [(b"old-and-new", encode(e)) for e in events])
    db = settings.clickhouse_database
    sink = sink_through(settings, 120)
    assert sink.stats.dead_letters == 0
    assert scalar(settings, f"SELECT count() FROM {db}.events") == 120
    assert scalar(settings, f"SELECT uniqExact(toYear(ts)) FROM {db}.events") == 120


def test_server_errors_are_outages_and_data_errors_are_not(settings: Settings) -> None:
    """Real errors of the real server, classified."""
    client = connect(settings)
    db = settings.clickhouse_database
    with pytest.raises(Exception) as memory:  # MEMORY_LIMIT_EXCEEDED (241)
        client.command(
            f"INSERT INTO {db}.events (run_id) SELECT toString(number) FROM numbers(1000000)",
            settings={"max_memory_usage": 1000},
        )
    assert is_outage(memory.value), str(memory.value)
    with pytest.raises(Exception) as missing:  # UNKNOWN_TABLE (60)
        client.command(f"INSERT INTO {db}.nope FORMAT JSONEachRow", data=b"{}")
    assert is_outage(missing.value)
    with pytest.raises(Exception) as data:  # CANNOT_READ_ARRAY_FROM_TEXT (130)
        client.command(
            f"INSERT INTO {db}.live_runs FORMAT JSONEachRow",
            data=b'{"project":"p","run_id":"r","tags":"x"}',
        )
    assert not is_outage(data.value)
    away = settings.with_overrides(clickhouse_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(Exception) as refused:  # nothing listens there
        connect(away).command("SELECT 1")
    assert is_outage(refused.value)


def test_a_lone_event_is_not_dead_lettered_when_the_server_refuses_everything() -> None:
    """The probe: an error that looks like data, on a server that refuses an empty insert of
    the same statement too, is an outage (the batch is retried, nothing dead-lettered)."""
    from runstream.sinks.batch import _insert_lines

    class Refusing:
        def command(self, sql: str, data: bytes = b"", settings: Any = None) -> None:
            raise RuntimeError("Code: 1234. DB::Exception: something new")

    class Item:
        line = b"{}"

    with pytest.raises(RuntimeError):
        _insert_lines(Refusing(), "INSERT", [Item(), Item(), Item()], "token")

    class RefusingData(Refusing):
        def command(self, sql: str, data: bytes = b"", settings: Any = None) -> None:
            if data:
                super().command(sql, data, settings)

    refused = _insert_lines(RefusingData(), "INSERT", [Item(), Item()], "token")
    assert [reason for _, reason in refused] == ["refused by ClickHouse: something new"] * 2


# --- a sink that cannot make progress -------------------------------------------------------------
@contextmanager
def running(sink: Sink) -> Iterator[threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(60)


def wait(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_stuck_sink_is_unhealthy_with_its_real_lag_in_metrics_and_dev_status(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    with_metrics = settings.with_overrides(sink_metrics_port=port, home=tmp_path / "home")
    sink = Sink(with_metrics)
    sink.stats.unhealthy_after = 3.0
    url = f"http://127.0.0.1:{port}/metrics"
    db = settings.clickhouse_database
    with running(sink):
        events = normal_run(settings, "before")
        wait(lambda: sink.stats.events >= len(events), "the first run to land")
        wait(lambda: scrape(url)["runstream_sink_healthy"] == 1, "a healthy sink")
        # ClickHouse refuses every insert from now on (the table is gone: an outage, retried).
        connect(settings).command(f"RENAME TABLE {db}.events TO {db}.events_away")
        events = normal_run(settings, "during")
        wait(lambda: scrape(url)["runstream_sink_healthy"] == 0, "an unhealthy sink")
        metrics = scrape(url)
        lags = {
            name: value
            for name, value in metrics.items()
            if name.startswith("runstream_sink_partition_lag_messages{")
        }
        # Every event of the run is on one partition and none is committed.
        assert sorted(lags.values())[-1] == len(events), lags
        assert metrics["runstream_sink_lag_messages"] == len(events)
        assert metrics["runstream_sink_stalled_seconds"] > 3
        assert metrics["runstream_sink_seconds_since_last_write"] > 3
        assert metrics["runstream_sink_paused"] == 1

        # `runstream dev status` of a stack whose sink is this one: the sink's line says so.
        PidFile(with_metrics.home / "run" / "worker-sink.pid").write(os.getpid())
        stack = LocalStack(with_metrics)
        status = {s.name: s for s in stack.status()}["sink"]
        assert not status.healthy and status.state == "unhealthy"
        assert "STUCK" in status.detail and f"lag {len(events)} messages" in status.detail
        assert _status(_Args(), with_metrics) == 1

        # ClickHouse takes inserts again: the sink catches up.
        connect(settings).command(f"RENAME TABLE {db}.events_away TO {db}.events")
        total = 2 * len(events)
        wait(lambda: scalar(settings, f"SELECT count() FROM {db}.events") == total, "landing")
        wait(lambda: scrape(url)["runstream_sink_lag_messages"] == 0, "no lag", timeout=20)
        assert scrape(url)["runstream_sink_healthy"] == 1


class _Args:
    pass
