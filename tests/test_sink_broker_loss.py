"""The broker killed (SIGKILL) while the sink holds a batch written to ClickHouse but not
committed (issue 10, item 10): the commit and the dead letters are retried until the broker is
back, and every event lands exactly once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from runstream.deploy.local.admin import ensure_topics
from runstream.deploy.local.stack import LocalStack
from runstream.schemas import Topics, encode
from runstream.settings import Settings
from runstream.sinks import batch as batch_module
from runstream.sinks.consumer import Sink
from runstream.sinks.migrations import migrate
from tests.conftest import services_only_stack
from tests.helpers import rows, scalar
from tests.test_processors import run_events

pytestmark = pytest.mark.integration

STEPS = 150


@pytest.fixture(scope="module")
def own_kafka_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A stack of this module's own, whose Kafka the test kills and restarts."""
    with services_only_stack(tmp_path_factory.mktemp("brokerloss")) as stack:
        yield stack


def produce(settings: Settings, messages: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for key, value in messages:
        producer.produce(Topics(settings.topic_prefix).events, key=key, value=value)
    assert producer.flush(60) == 0


def runs(prefix: str, count: int = 3) -> list[tuple[bytes, bytes]]:
    return [
        (event["run_id"].encode(), encode(event))
        for index in range(count)
        for event in run_events(f"{prefix}-{index}", range(STEPS))
    ]


@pytest.mark.parametrize("meets_the_dead_broker", ["dead_letter", "commit"])
def test_broker_killed_while_the_sink_holds_an_uncommitted_batch_loses_and_doubles_nothing(
    own_kafka_stack: LocalStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    meets_the_dead_broker: str,
) -> None:
    stack = own_kafka_stack
    name = f"loss_{meets_the_dead_broker}"
    settings = stack.settings.with_overrides(
        topic_prefix=name,
        clickhouse_database=name,
        sink_group=name,
        dir=tmp_path / "spool",
        sink_batch_rows=2_000,
        sink_batch_seconds=0.5,
    )
    ensure_topics(settings)
    migrate(settings)
    # Three runs (and a message that becomes a dead letter) in the batch that is in hand when
    # the broker dies: the dead letter, else the commit, meets the dead broker.
    junk = [(b"junk", b"not json")] if meets_the_dead_broker == "dead_letter" else []
    produce(settings, [*runs("before"), *junk])

    killed = threading.Event()
    original = batch_module.EventBatch.write

    def write_then_kill(self: Any, client: Any, database: str, seen: Any) -> None:
        original(self, client, database, seen)
        if self.accepted and not killed.is_set():
            stack.stop_service("kafka", kill=True)  # written to ClickHouse, not committed
            killed.set()

    monkeypatch.setattr(batch_module.EventBatch, "write", write_then_kill)
    sink = Sink(settings)
    stop = threading.Event()
    thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert killed.wait(60), "the sink never wrote a batch"
        # A commit unanswered for COMMIT_DEADLINE_SECONDS counts as failed; a dead letter
        # undelivered for DLQ_DELIVERY_SECONDS too. Either is retried.
        deadline = time.monotonic() + 60
        while sink.stats.kafka_failures < 1:  # its dead letter or commit meets a dead broker
            assert thread.is_alive(), "the sink stopped on a Kafka error"
            assert time.monotonic() < deadline, "the sink did not retry"
            time.sleep(0.2)
        # Retrying until its session ends, when the group takes the partitions back: the
        # batch is left uncommitted, to be read again.
        time.sleep(12)
        assert thread.is_alive(), "the sink stopped on a Kafka error"
        stack.start_service("kafka")  # same data: the batch is still uncommitted there
        produce(settings, runs("after"))  # a normal run after the broker is back lands
        db = settings.clickhouse_database
        expected = 6 * (STEPS + 1)
        deadline = time.monotonic() + 120
        while scalar(settings, f"SELECT count() FROM {db}.events") < expected:
            assert thread.is_alive(), "the sink stopped"
            assert time.monotonic() < deadline, "the sink did not land every event"
            time.sleep(0.5)
        time.sleep(3)  # anything doubled would land now
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
    assert scalar(settings, f"SELECT count() FROM {db}.events") == expected
    assert scalar(settings, f"SELECT count() FROM {db}.metrics") == 6 * STEPS * 3
    per_run = rows(
        settings,
        f"SELECT run_id, count(), uniqExact(seq), max(seq) FROM {db}.events GROUP BY run_id",
    )
    assert len(per_run) == 6
    assert all(count == uniq == high + 1 == STEPS + 1 for _, count, uniq, high in per_run)
    if junk:
        assert sink.stats.dead_letters >= 1  # once, or again when its batch was read again
