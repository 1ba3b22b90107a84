"""``runstream sink``: Kafka events topic -> ClickHouse, committing offsets after each write.

The loop is: consume until the batch is full (rows) or old (seconds) -> write the batch to
ClickHouse -> send dead letters -> commit the batch's offsets. That commit is the only one: a
crash anywhere before it means the batch is read again, and the events ClickHouse already holds
are recognised (run and sequence number, plus the batch's deduplication token) and not written
twice. When ClickHouse is slow or down the sink pauses its partitions, keeps its place in the
consumer group, retries with backoff and resumes; Kafka holds the backlog.

Writes are pipelined one deep: while ClickHouse takes one batch (a thread waiting on HTTP), the
sink reads and checks the next, so Python and ClickHouse work at the same time. Batches are
still written, and their offsets committed, strictly one after the other, and memory stays at
two batches.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from runstream._extras import require
from runstream.errors import ClickHouseError
from runstream.schemas import Topics
from runstream.settings import Settings
from runstream.sinks.batch import DeadLetter, EventBatch
from runstream.sinks.clickhouse import connect
from runstream.sinks.dedup import SeenSequences
from runstream.sinks.migrations import migrate
from runstream.sinks.observability import MetricsServer, SinkStats

logger = logging.getLogger("runstream.sink")

MAX_BACKOFF_SECONDS = 10.0
LAG_REFRESH_SECONDS = 5.0


class _Revoked(Exception):
    """The partitions of the batch in hand moved to another sink while it was being written."""


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
        kafka_logger = logging.getLogger("runstream.sink.kafka")
        self.consumer = ck.Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": settings.sink_group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                # A sink killed outright holds its partitions until its session expires; the
                # client default (45 s) is a long time for events to wait.
                "session.timeout.ms": int(settings.sink_session_timeout * 1000),
                "heartbeat.interval.ms": int(settings.sink_session_timeout * 1000 / 4),
                "client.id": "runstream-sink",
                "logger": kafka_logger,
            }
        )
        self._dlq = ck.Producer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "enable.idempotence": True,
                "client.id": "runstream-sink-dlq",
                "logger": kafka_logger,
            }
        )
        # Derived topics the processors publish, stored as they are.
        self._routes = {
            self.topics.runs: "live_runs",
            self.topics.summaries: "live_summaries",
            self.topics.alerts: "alerts",
            self.topics.alert_deliveries: "alert_deliveries",
        }
        self.batch = EventBatch(self._routes)
        self._batch_started: float | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink-writer")
        self._in_flight: tuple[EventBatch, Future[float]] | None = None
        self._held: list[Any] = []  # messages that arrived while the partitions were paused
        self._writing = False
        self._revoked_while_writing = False
        self._next_lag = 0.0
        self.stats = SinkStats()
        self.seen = SeenSequences(self.client, settings.clickhouse_database)
        self.metrics_server: MetricsServer | None = None
        self.consumer.subscribe(
            [self.topics.events, *self._routes],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
        )

    # --- the loop -------------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None) -> None:
        """Consume until ``stop`` is set; writes what it holds before returning."""
        stop = stop or threading.Event()
        if self.settings.sink_metrics_port:
            self.metrics_server = MetricsServer.start(
                self.settings.sink_metrics_port, self.stats, self.settings.sink_metrics_host
            )
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
        messages = self._held + self.consumer.consume(num_messages=room, timeout=timeout)
        self._held = []
        for message in messages:
            self._take(message)
        written = 0
        if self._in_flight is not None and self._in_flight[1].done():
            written += self._complete_in_flight()
        now = time.monotonic()
        if now >= self._next_lag:
            self._next_lag = now + LAG_REFRESH_SECONDS
            self._refresh_lag()
        due = self.batch.rows >= settings.sink_batch_rows or (
            self._batch_started is not None
            and now - self._batch_started >= settings.sink_batch_seconds
        )
        if due:
            written += self._complete_in_flight()  # one batch in flight at a time, in order
            if self.batch.offsets:
                batch = self.batch
                self._reset_batch()
                self._in_flight = (batch, self._writer.submit(self._timed_write, batch))
        return written

    def _take(self, message: Any) -> None:
        error = message.error()
        if error is not None:
            if error.code() != self._ck.KafkaError._PARTITION_EOF:
                logger.warning("consumer error: %s", error)
            return
        if self._batch_started is None:
            self._batch_started = time.monotonic()
        self.batch.add(
            message.topic(), message.partition(), message.offset(), message.key(), message.value()
        )

    def flush(self) -> int:
        """Write what the sink holds (the batch in flight, then the current one), send the dead
        letters, commit the offsets; returns when done.

        Returns the events written (duplicates and dead letters not counted).
        """
        written = self._complete_in_flight()
        batch = self.batch
        if not batch.offsets:
            return written
        self._reset_batch()
        try:
            self._write(batch)
        except _Revoked:
            # The new owner reads these messages again from the last commit.
            logger.info("partitions moved while writing; the batch is left to their new owner")
            return written
        return written + self._commit(batch)

    def _timed_write(self, batch: EventBatch) -> float:
        """One attempt, in the writer thread; returns its duration."""
        started = time.monotonic()
        batch.write(self.client, self.settings.clickhouse_database, self.seen)
        return time.monotonic() - started

    def _complete_in_flight(self) -> int:
        """Wait for the batch being written in the background; finish it (retrying in this
        thread if the write failed), commit it. Returns the events written."""
        if self._in_flight is None:
            return 0
        batch, future = self._in_flight
        self._in_flight = None
        try:
            self.stats.record_insert(future.result())
        except Exception as exc:
            self.stats.insert_failures += 1
            logger.warning("insert failed, retrying: %s", exc)
            try:
                self._write(batch)
            except _Revoked:
                logger.info("partitions moved while writing; the batch is left to their new owner")
                return 0
        return self._commit(batch)

    def _commit(self, batch: EventBatch) -> int:
        """Dead letters out, offsets committed, stats counted: the batch is done."""
        self._send_dead_letters(batch.dead_letters)
        self.consumer.commit(
            offsets=[
                self._ck.TopicPartition(topic, partition, last + 1)
                for (topic, partition), (_, last) in batch.offsets.items()
            ],
            asynchronous=False,
        )
        written = batch.messages - len(batch.dead_letters) - batch.duplicates
        self.stats.record_batch(
            events=written,
            rows=batch.rows,
            dead_letters=len(batch.dead_letters),
            duplicates=batch.duplicates,
        )
        return written

    def _reset_batch(self) -> None:
        self.batch = EventBatch(self._routes)
        self._batch_started = None

    def _write(self, batch: EventBatch) -> None:
        """Insert the batch, retrying with backoff while ClickHouse refuses; never gives up.

        While retrying, the partitions are paused (nothing more is fetched, memory stays at this
        batch) and the consumer keeps polling, so it stays in its group.
        """
        delay = 0.5
        paused: list[Any] = []
        self._writing, self._revoked_while_writing = True, False
        try:
            while True:
                started = time.monotonic()
                try:
                    batch.write(self.client, self.settings.clickhouse_database, self.seen)
                    self.stats.record_insert(time.monotonic() - started)
                    return
                except Exception as exc:  # ClickHouse down, slow or refusing
                    self.stats.insert_failures += 1
                    if not paused:
                        paused = self.consumer.assignment()
                        self.consumer.pause(paused)
                        self.stats.paused = True
                    logger.warning("insert failed, retrying in %.1fs: %s", delay, exc)
                    self._wait_paused(delay)
                    delay = min(delay * 2, MAX_BACKOFF_SECONDS)
        finally:
            self._writing = False
            if paused:
                self.consumer.resume(paused)
                self.stats.paused = False

    def _wait_paused(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            message = self.consumer.poll(min(0.1, max(0.0, deadline - time.monotonic())))
            if message is not None:
                self._held.append(message)  # fetched before the pause took effect
            if self._revoked_while_writing:
                raise _Revoked

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

    def _refresh_lag(self) -> None:
        try:
            assignment = self.consumer.assignment()
            positions = self.consumer.position(assignment) if assignment else []
            lag = 0
            for tp in positions:
                _, high = self.consumer.get_watermark_offsets(tp, cached=True)
                if high >= 0 and tp.offset >= 0:
                    lag += max(0, high - tp.offset)
            self.stats.lag_messages = lag
        except Exception as exc:  # lag is a nicety; never let it stop the sink
            logger.debug("lag unavailable: %s", exc)

    # --- rebalances -----------------------------------------------------------------------------
    def _on_assign(self, _consumer: Any, partitions: list[Any]) -> None:
        # Partitions may come back after another sink wrote to them: ask ClickHouse again.
        self.seen.clear()
        self.stats.partitions = len(partitions)

    def _on_revoke(self, _consumer: Any, _partitions: list[Any]) -> None:
        self.stats.partitions = 0
        if self._writing:
            self._revoked_while_writing = True  # _write gives the batch up
            self._held = []
            return
        # Finish what we hold before the partitions move, so the next owner starts after it.
        try:
            self.flush()
        except Exception:
            logger.exception("could not write the batch before a rebalance; it will be re-read")
            self._in_flight = None
            self._reset_batch()
        self._held = []

    def close(self) -> None:
        """Leave the group. What was not flushed is not committed: it is read again later."""
        if self._in_flight is not None:
            self._in_flight[1].exception()  # let a write in progress end before leaving
            self._in_flight = None
        self._writer.shutdown(wait=True)
        try:
            self.consumer.close()
        finally:
            self._dlq.flush(5)
            if self.metrics_server is not None:
                self.metrics_server.stop()
