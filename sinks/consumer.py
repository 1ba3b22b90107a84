"""``runstream sink``: Kafka events topic -> ClickHouse, committing offsets after each write.

The loop is: consume until the batch is full (rows) or old (seconds) -> write the batch to
ClickHouse -> send dead letters -> refresh the stored rows of the batch's runs
(``run_snapshots``, what ``runs_current`` reads; gathered over the batches of up to
``sink_snapshot_seconds``, since each refresh costs a query) -> commit the batches' offsets.
That commit is the only one: a crash anywhere before it means the batches are read again, and
the events ClickHouse already holds are recognised (run and sequence number, plus the batch's
deduplication token) and not written twice, while their runs are refreshed again.

When ClickHouse is slow or down the sink pauses its partitions, keeps its place in the consumer
group, retries with backoff and resumes; Kafka holds the backlog.

Writes are pipelined one deep: while ClickHouse takes one batch (a thread waiting on HTTP), the
sink reads and checks the next, so Python and ClickHouse work at the same time. Batches are
still written, and their offsets committed, strictly one after the other, and memory stays at
two batches.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from runstream._extras import require
from runstream.errors import DeliveryError
from runstream.schemas import Topics
from runstream.schemas.dead_letters import DeadLetterRecord, build_dead_letter
from runstream.settings import Settings
from runstream.sinks.batch import EventBatch
from runstream.sinks.clickhouse import connect
from runstream.sinks.dedup import SeenSequences
from runstream.sinks.migrations import migrate
from runstream.sinks.observability import MetricsServer, SinkStats
from runstream.sinks.snapshots import PendingSnapshots, has_snapshots, refresh

logger = logging.getLogger("runstream.sink")

MAX_BACKOFF_SECONDS = 10.0
LAG_REFRESH_SECONDS = 5.0
# Dead letters not delivered within this time are reported failed (instead of waiting in the
# producer's queue for its default 5 minutes) and sent again after a backoff.
DLQ_DELIVERY_SECONDS = 10.0
# A commit the group coordinator has not answered within this time (or a third of the session
# timeout, if shorter, so that it fails before the session ends) counts as failed and is sent
# again after a backoff. A synchronous commit would wait for librdkafka's request timeout
# (socket.timeout.ms, 60 s) and longer while no coordinator is known, with the loop stuck.
COMMIT_DEADLINE_SECONDS = 10.0

_T = TypeVar("_T")


_NO_ANSWER = object()


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
                "on_commit": self._on_commit,
            }
        )
        self._dlq = self._dead_letter_producer()
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
        self._rebalancing = False
        self._dlq_fatal = False
        self._next_lag = 0.0
        # Next offset to commit per (topic, partition) as last committed: where the lag counts
        # from. Filled from the group's commits at the first lag refresh after an assignment.
        self._committed: dict[tuple[str, int], int] = {}
        # Answers to asynchronous commits, (topic, partition, offset) -> error or None (taken).
        self._commit_answers: dict[tuple[str, int, int], Any] = {}
        self.stats = SinkStats()
        self._pending = PendingSnapshots(settings.sink_snapshot_seconds)
        self._snapshots = False  # run_snapshots seen in the database (migration 0014)
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
        if self._in_flight is None and self._pending.due():  # quiet now: settle what waits
            try:
                self._settle()
            except _Revoked:
                self._given_up()
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
        try:
            if batch.offsets:
                self._reset_batch()
                self._write(batch)
                written += self._commit(batch)
            self._settle()
        except _Revoked:
            self._given_up()
        return written

    def _given_up(self) -> None:
        # The new owner reads these messages again from the last commit; what we wrote is
        # recognised there (seq, token). Nothing read after it may be written by us either.
        logger.info("partitions moved while writing; the batch is left to their new owner")
        self._reset_batch()
        self._held = []
        self._pending.clear()

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
            try:
                self.stats.record_insert(future.result())
            except Exception as exc:
                self.stats.insert_failures += 1
                logger.warning("insert failed, retrying: %s", exc)
                self._write(batch)
            return self._commit(batch)
        except _Revoked:
            self._given_up()
            return 0

    def _commit(self, batch: EventBatch) -> int:
        """Dead letters out, stats counted, the batch's runs and offsets handed to
        :meth:`_settle` (now, if the last refresh is ``sink_snapshot_seconds`` old).

        Kafka errors on the way (the broker away or restarting, a coordinator moving) are
        retried with backoff like a ClickHouse outage, never fatal: the batch is in ClickHouse
        already, and if the partitions move meanwhile (:class:`_Revoked`), their new owner reads
        it again and recognises what landed.
        """
        letters = [
            build_dead_letter(
                consumer="sink",
                topic=letter.topic,
                partition=letter.partition,
                offset=letter.offset,
                key=letter.key,
                value=letter.value,
                reason=letter.reason,
            )
            for letter in batch.dead_letters
        ]
        for letter in batch.dead_letters:
            logger.warning(
                "dead letter %s[%d]@%d: %s",
                letter.topic,
                letter.partition,
                letter.offset,
                letter.reason[:1000],
            )
        pending = letters

        def send_pending() -> None:
            nonlocal pending
            pending = self._send(pending)
            if pending:
                raise DeliveryError(f"{len(pending)} dead letters not taken by Kafka yet")

        if letters:
            self._retrying("writing dead letters", send_pending)
        written = batch.messages - len(batch.dead_letters) - batch.duplicates
        self.stats.record_batch(
            events=written,
            rows=batch.rows,
            dead_letters=len(batch.dead_letters),
            duplicates=batch.duplicates,
        )
        self._pending.add(
            {(a.event.project, a.event.run_id) for a in batch.accepted},
            {key: last + 1 for key, (_, last) in batch.offsets.items()},
        )
        if self._pending.due():
            self._settle()
        return written

    def _settle(self) -> None:
        """Refresh the stored rows of the runs written since the last time (``run_snapshots``),
        then commit those batches' offsets: the batches are done."""
        pending = self._pending
        if not pending.offsets:
            return
        if pending.runs:
            database = self.settings.clickhouse_database

            def refresh_runs() -> None:
                # A database migrated only up to 0013 (a sink started with migrate_first=False
                # on an older schema) has no stored rows to refresh: its runs_current computes.
                if self._snapshots or has_snapshots(self.client, database):
                    self._snapshots = True
                    refresh(self.client, database, pending.runs)

            self._retrying("refreshing run snapshots", refresh_runs)
        offsets = [
            self._ck.TopicPartition(topic, partition, offset)
            for (topic, partition), offset in pending.offsets.items()
        ]
        self._retrying("committing offsets", lambda: self._commit_offsets(offsets))
        for tp in offsets:
            self._committed[(tp.topic, tp.partition)] = tp.offset
        pending.done()
        self._refresh_lag()  # local numbers only (cached ends): the lag follows each commit

    def _commit_offsets(self, offsets: list[Any]) -> None:
        """Commit ``offsets`` and wait for the coordinator's answer, at most
        :data:`COMMIT_DEADLINE_SECONDS`.

        Raises :class:`DeliveryError` when the commit is refused or not answered in time (the
        caller retries; committing the same offsets twice is harmless) and :class:`_Revoked` when
        the partitions move meanwhile. Messages fetched while waiting are held for the next batch.
        """
        if self._rebalancing:  # no polling inside a rebalance callback: commit synchronously
            self.consumer.commit(offsets=offsets, asynchronous=False)
            return
        wanted = [(tp.topic, tp.partition, tp.offset) for tp in offsets]
        self._commit_answers.clear()
        self.consumer.commit(offsets=offsets, asynchronous=True)
        wait = min(COMMIT_DEADLINE_SECONDS, self.settings.sink_session_timeout / 3)
        deadline = time.monotonic() + wait
        while True:
            answers = [self._commit_answers.get(key, _NO_ANSWER) for key in wanted]
            errors = [a for a in answers if a is not None and a is not _NO_ANSWER]
            if errors:
                raise DeliveryError(f"the commit was refused: {errors[0]}")
            if _NO_ANSWER not in answers:
                return
            if time.monotonic() >= deadline:
                raise DeliveryError(
                    f"the group coordinator did not answer the commit in {wait:.1f} s"
                )
            message = self.consumer.poll(0.05)  # serves the commit callback
            if message is not None and message.error() is None:
                self._held.append(message)  # the next batch's; bounded by the short wait
            if self._revoked_while_writing:
                raise _Revoked

    def _on_commit(self, error: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            self._commit_answers[(tp.topic, tp.partition, tp.offset)] = error or tp.error

    def _reset_batch(self) -> None:
        self.batch = EventBatch(self._routes)
        self._batch_started = None

    def _write(self, batch: EventBatch) -> None:
        """Insert the batch, retrying with backoff while ClickHouse refuses; never gives up."""

        def attempt() -> None:
            started = time.monotonic()
            batch.write(self.client, self.settings.clickhouse_database, self.seen)
            self.stats.record_insert(time.monotonic() - started)

        self._retrying("insert", attempt)

    def _retrying(self, what: str, attempt: Callable[[], _T]) -> _T:
        """``attempt()`` until it succeeds, with backoff up to 10 s; raises :class:`_Revoked`
        when the partitions move meanwhile.

        While retrying, the partitions are paused (nothing more is fetched, memory stays at this
        batch) and the consumer keeps polling, so it stays in its group. Inside a rebalance
        callback the first failure is raised: the partitions are leaving anyway.
        """
        delay = 0.5
        paused: list[Any] = []
        self._writing, self._revoked_while_writing = True, False
        try:
            while True:
                try:
                    return attempt()
                except _Revoked:
                    raise
                except Exception as exc:  # ClickHouse or Kafka down, slow or refusing
                    if what in ("insert", "refreshing run snapshots"):  # ClickHouse's
                        self.stats.insert_failures += 1
                    else:
                        self.stats.kafka_failures += 1
                    if self._rebalancing:
                        raise
                    if not paused:
                        paused = self._pause()
                    logger.warning("%s failed, retrying in %.1fs: %s", what, delay, exc)
                    self._wait_paused(delay)
                    delay = min(delay * 2, MAX_BACKOFF_SECONDS)
        finally:
            self._writing = False
            if paused:
                try:
                    self.consumer.resume(paused)
                except Exception as exc:  # resumed by the next assignment anyway
                    logger.debug("resume: %s", exc)
            self.stats.paused = False

    def _pause(self) -> list[Any]:
        self.stats.paused = True
        try:
            paused: list[Any] = self.consumer.assignment()
            self.consumer.pause(paused)
        except Exception as exc:  # pausing only saves memory; never let it stop the retry
            logger.debug("pause: %s", exc)
            return []
        return paused

    def _wait_paused(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            message = self.consumer.poll(min(0.1, max(0.0, deadline - time.monotonic())))
            if message is not None and message.error() is None:
                self._held.append(message)  # fetched before the pause took effect
            if self._revoked_while_writing:
                raise _Revoked
            now = time.monotonic()
            if now >= self._next_lag:
                self._next_lag = now + LAG_REFRESH_SECONDS
                self._refresh_lag(query=True)

    # --- dead letters ---------------------------------------------------------------------------
    def _dead_letter_producer(self) -> Any:
        def on_error(error: Any) -> None:
            if error.fatal():
                self._dlq_fatal = True

        return self._ck.Producer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap,
                "enable.idempotence": True,
                "message.timeout.ms": int(DLQ_DELIVERY_SECONDS * 1000),
                "client.id": "runstream-sink-dlq",
                "logger": logging.getLogger("runstream.sink.kafka"),
                "error_cb": on_error,
            }
        )

    def _send(self, letters: list[DeadLetterRecord]) -> list[DeadLetterRecord]:
        """Produce ``letters`` and wait for every delivery report; returns those Kafka did not
        take, to send again.

        Every record fits the broker's limit (:func:`build_dead_letter`), so what fails here is
        Kafka being away, which a retry outlives.
        """
        if self._dlq_fatal:  # an idempotent producer that hit a fatal error takes nothing more
            logger.warning("the dead-letter producer failed fatally; starting a new one")
            self._dlq, self._dlq_fatal = self._dead_letter_producer(), False
        failed: list[DeadLetterRecord] = []

        def report(letter: DeadLetterRecord) -> Callable[[Any, Any], None]:
            def on_delivery(error: Any, _message: Any) -> None:
                if error is not None:
                    logger.debug("dead letter not delivered: %s", error)
                    failed.append(letter)

            return on_delivery

        for index, letter in enumerate(letters):
            try:
                self._produce(letter, report(letter))
            except Exception as exc:  # not taken at all: this one and the rest, later
                logger.debug("dead letter not produced: %s", exc)
                failed += letters[index:]
                break
        # Every message gets its report within message.timeout.ms: then `failed` is complete.
        while self._dlq.flush(DLQ_DELIVERY_SECONDS + 5) > 0:
            pass
        return failed

    def _produce(self, letter: DeadLetterRecord, on_delivery: Callable[[Any, Any], None]) -> None:
        while True:
            try:
                self._dlq.produce(
                    self.topics.dead_letters,
                    key=letter.key,
                    value=letter.value,
                    headers=letter.headers,
                    on_delivery=on_delivery,
                )
                return
            except BufferError:  # the producer's queue is full: let it drain
                self._dlq.poll(0.1)

    def _refresh_lag(self, query: bool = False) -> None:
        """Messages behind the end of each assigned partition, counted from the last commit
        (what the sink has done for good, not what it has read).

        ``query``: ask the broker for the end (needed while paused: paused partitions are not
        fetched, so the end the client caches from fetches goes stale).
        """
        try:
            assignment = self.consumer.assignment()
            unknown = [tp for tp in assignment if (tp.topic, tp.partition) not in self._committed]
            if unknown:
                for tp in self.consumer.committed(unknown, timeout=2.0):
                    if tp.error is None:
                        self._committed[(tp.topic, tp.partition)] = tp.offset
            lags: dict[tuple[str, int], int] = {}
            for tp in assignment:
                if query:
                    low, high = self.consumer.get_watermark_offsets(tp, timeout=0.5, cached=False)
                else:
                    low, high = self.consumer.get_watermark_offsets(tp, cached=True)
                if high < 0:
                    continue
                done = self._committed.get((tp.topic, tp.partition), -1)
                start = done if done >= 0 else max(low, 0)  # no commit yet: from the start
                lags[(tp.topic, tp.partition)] = max(0, high - start)
            self.stats.observe_lag(lags)
        except Exception as exc:  # the broker away: keep the last numbers, never stop for this
            logger.debug("lag unavailable: %s", exc)

    # --- rebalances -----------------------------------------------------------------------------
    def _on_assign(self, _consumer: Any, partitions: list[Any]) -> None:
        # Partitions may come back after another sink wrote to them: ask ClickHouse again.
        self.seen.clear()
        self._committed.clear()  # and where the group stands, for the lag
        self.stats.partitions = len(partitions)
        self._next_lag = 0.0

    def _on_revoke(self, _consumer: Any, _partitions: list[Any]) -> None:
        self.stats.partitions = 0
        self.stats.observe_lag({})
        if self._writing:
            self._revoked_while_writing = True  # _retrying gives the batch up
            self._held = []
            return
        # Finish what we hold before the partitions move, so the next owner starts after it.
        self._rebalancing = True
        try:
            self.flush()
        except Exception:
            logger.exception("could not write the batch before a rebalance; it will be re-read")
            self._in_flight = None
            self._reset_batch()
        finally:
            self._rebalancing = False
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
