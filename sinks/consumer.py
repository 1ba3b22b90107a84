"""``runstream sink``: Kafka events topic -> ClickHouse, committing offsets after each write.

The loop is: consume until the batch is full (rows) or old (seconds) -> write the batch to
ClickHouse -> send dead letters -> commit the batch's offsets. A crash before the commit means
the batch is read again and re-inserted with the same deduplication token.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from runstream._extras import require
from runstream.errors import ClickHouseError
from runstream.schemas import Topics
from runstream.settings import Settings
from runstream.sinks.batch import DeadLetter, EventBatch
from runstream.sinks.clickhouse import connect
from runstream.sinks.dedup import SeenSequences
from runstream.sinks.migrations import migrate

logger = logging.getLogger("runstream.sink")


@dataclass
class SinkStats:
    batches: int = 0
    events: int = 0
    rows: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    last_insert_seconds: float = 0.0


class Sink:
    """Consumes the events topic in a consumer group and writes batches to ClickHouse."""

    def __init__(
        self, settings: Settings, *, client: Any | None = None, migrate_first: bool = True
    ) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        ck = require("confluent_kafka", part="the sink", extra="sinks")
        self._ck = ck
        if migrate_first:
            applied = migrate(settings, client)
            if applied:
                logger.info("applied migrations: %s", ", ".join(applied))
        self.client = client or connect(settings)
        self.consumer = ck.Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": settings.sink_group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "client.id": "runstream-sink",
                "logger": logging.getLogger("runstream.sink.kafka"),
            }
        )
        self._dlq = ck.Producer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "enable.idempotence": True,
                "client.id": "runstream-sink-dlq",
                "logger": logging.getLogger("runstream.sink.kafka"),
            }
        )
        self.batch = EventBatch()
        self._batch_started: float | None = None
        self.stats = SinkStats()
        self.seen = SeenSequences(self.client, settings.clickhouse_database)
        self.consumer.subscribe(
            [self.topics.events], on_assign=self._on_assign, on_revoke=self._on_revoke
        )

    # --- the loop -------------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None) -> None:
        """Consume until ``stop`` is set; writes what it holds before returning."""
        stop = stop or threading.Event()
        try:
            while not stop.is_set():
                self.poll()
            self.flush()
        finally:
            self.close()

    def poll(self, timeout: float = 0.2) -> int:
        """Take in what Kafka has (up to ``timeout`` seconds); write the batch when it is due.

        Returns the number of events written to ClickHouse by this call.
        """
        settings = self.settings
        room = max(1, min(10_000, settings.sink_batch_rows - self.batch.rows))
        messages = self.consumer.consume(num_messages=room, timeout=timeout)
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == self._ck.KafkaError._PARTITION_EOF:
                    continue
                logger.warning("consumer error: %s", error)
                continue
            if self._batch_started is None:
                self._batch_started = time.monotonic()
            self.batch.add(
                message.topic(),
                message.partition(),
                message.offset(),
                message.key(),
                message.value(),
            )
        due = self.batch.rows >= settings.sink_batch_rows or (
            self._batch_started is not None
            and time.monotonic() - self._batch_started >= settings.sink_batch_seconds
        )
        return self.flush() if due else 0

    def flush(self) -> int:
        """Write the current batch and commit its offsets. Returns the events written."""
        batch = self.batch
        if not batch.offsets:
            return 0
        self._write(batch)
        self._send_dead_letters(batch.dead_letters)
        self.consumer.commit(
            offsets=[
                self._ck.TopicPartition(topic, partition, last + 1)
                for (topic, partition), (_, last) in batch.offsets.items()
            ],
            asynchronous=False,
        )
        written = batch.messages - len(batch.dead_letters) - batch.duplicates
        self.stats.duplicates += batch.duplicates
        self.stats.batches += 1
        self.stats.events += written
        self.stats.rows += batch.rows
        self.stats.dead_letters += len(batch.dead_letters)
        self.batch = EventBatch()
        self._batch_started = None
        return written

    def _write(self, batch: EventBatch) -> None:
        started = time.monotonic()
        delay = 0.5
        while True:
            try:
                batch.write(self.client, self.settings.clickhouse_database, self.seen)
                break
            except Exception as exc:  # ClickHouse down or refusing: Kafka keeps the backlog
                logger.warning("insert failed, retrying in %.1fs: %s", delay, exc)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
        self.stats.last_insert_seconds = time.monotonic() - started

    def _send_dead_letters(self, letters: list[DeadLetter]) -> None:
        for letter in letters:
            self._dlq.produce(
                self.topics.dead_letters,
                key=letter.key,
                value=letter.value,
                headers=[
                    ("runstream.reason", letter.reason.encode()),
                    ("runstream.topic", letter.topic.encode()),
                    ("runstream.partition", str(letter.partition).encode()),
                    ("runstream.offset", str(letter.offset).encode()),
                ],
            )
            logger.warning(
                "dead letter %s[%d]@%d: %s",
                letter.topic,
                letter.partition,
                letter.offset,
                letter.reason,
            )
        if letters and self._dlq.flush(30) > 0:
            # Committing now would lose these messages: stop instead, they are re-read on restart.
            raise ClickHouseError("could not write dead letters to Kafka within 30 s")

    def _on_assign(self, _consumer: Any, _partitions: list[Any]) -> None:
        # Partitions may come back after another sink wrote to them: ask ClickHouse again.
        self.seen.clear()

    def _on_revoke(self, _consumer: Any, _partitions: list[Any]) -> None:
        # Finish what we hold before the partitions move, so the next owner starts after it.
        try:
            self.flush()
        except Exception:
            logger.exception("could not write the batch before a rebalance; it will be re-read")
            self.batch = EventBatch()
            self._batch_started = None

    def close(self) -> None:
        try:
            self.consumer.close()
        finally:
            self._dlq.flush(5)
