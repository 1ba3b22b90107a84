"""One worker's runs: batches of events folded into their table entries, results published.

The :class:`Aggregator` holds no faust objects: the app (``processors.app``) gives it the
table's store (key -> msgpack bytes), the name of the table's changelog topic and an
:class:`Outputs` producer, and calls it from faust's event loop. Every write goes to the store
and, through ``Outputs``, to the run's partition of the changelog, where faust restores it from
on the worker that takes the partition over.

An entry holds everything about a run: its state, the summaries of its metrics and its alert
evaluator's state, stored as a head record and chunks of summaries, each within the broker's
limit (:mod:`runstream.processors.runstore`). A batch writes each of its runs' head once and
the chunks of the metrics it touched, not a record per event. msgpack rather than JSON: it
keeps NaN and the infinities, which summaries hold and JSON cannot. Records on the runs topic
are kept within the limit too (:mod:`runstream.processors.bounds`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from collections.abc import Set as AbstractSet
from datetime import datetime
from typing import Any

import orjson
from confluent_kafka import Message, Producer

from runstream.errors import DeliveryError, EventDecodeError
from runstream.processors.aggregates import (
    ALIVE,
    fold_batch,
    mark_crashed,
    new_run_state,
    run_key,
    settle,
    summary_chooser,
    summary_key,
    to_wire,
)
from runstream.processors.alert import Alert
from runstream.processors.alerting import AlertEvaluator
from runstream.processors.bounds import alert_record, run_record
from runstream.processors.decoding import decode_event
from runstream.processors.rules import Rule
from runstream.processors.runstore import Entry, RunStore, StoredStateError, new_entry
from runstream.schemas import Topics
from runstream.schemas.codec import key_problem
from runstream.schemas.dead_letters import build_dead_letter
from runstream.settings import Settings

logger = logging.getLogger("runstream.processors")


class ProcessorStats:
    """Counters of one worker (read by tests, the bench and the log)."""

    def __init__(self) -> None:
        self.events = 0
        self.failed_runs = 0
        self.batches = 0
        self.duplicates = 0
        self.late_left_out = 0  # late events of a run whose state they could not change
        self.dead_letters = 0
        self.crashed = 0
        self.alerts = 0


class Outputs:
    """Everything a worker writes to Kafka (results, changelog records, dead letters, ticks):
    one idempotent librdkafka producer, a few microseconds a record."""

    def __init__(self, settings: Settings) -> None:
        self._producer = Producer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "enable.idempotence": True,
                "linger.ms": 5,
                "compression.type": "lz4",
                "client.id": "runstream-processors",
                "logger": logging.getLogger("runstream.processors.kafka"),
            }
        )

    def send(
        self,
        topic: str,
        key: bytes,
        value: bytes | None,
        partition: int | None = None,
        headers: dict[str, bytes] | None = None,
    ) -> None:
        extra: dict[str, Any] = {}
        if partition is not None:
            extra["partition"] = partition
        if headers:
            extra["headers"] = headers
        while True:
            try:
                self._producer.produce(topic, value, key, **extra)
                return
            except BufferError:  # librdkafka's queue is full: let it drain
                self._producer.poll(0.05)

    def flush(self, seconds: float = 30.0) -> None:
        """Wait until Kafka has everything sent so far (blocks: run it in a thread)."""
        if self._producer.flush(seconds) > 0:
            # Better to stop than to commit offsets of events whose results never left.
            raise DeliveryError(
                f"the processors could not publish their results within {seconds:g} s"
            )


class Aggregator:
    """Folds batches of events into the entries of this worker's runs and publishes what
    changed: run state, metric summaries, alerts."""

    def __init__(
        self,
        settings: Settings,
        store: MutableMapping[bytes, bytes],
        changelog: str,
        outputs: Outputs,
        rules: Iterable[Rule],
    ) -> None:
        self.topics = Topics(settings.topic_prefix)
        self.store = store
        self.runs = RunStore(store, changelog, outputs)
        self.outputs = outputs
        self.evaluator = AlertEvaluator(rules, loader=self.alert_state)
        self.stats = ProcessorStats()
        self.timeout = settings.processor_heartbeat_timeout or 3 * settings.heartbeat_interval
        self.partitions: frozenset[int] = frozenset()
        # The entries of the running runs of `partitions`, decoded. Ended runs are left to the
        # store (msgpack) and decoded again if they ever log again: memory follows the runs in
        # progress, not every run ever seen.
        self.live: dict[str, Entry] = {}
        self.taken_at = time.time()

    # -- ownership --
    def take_over(self, partitions: frozenset[int]) -> None:
        """From now on the runs of ``partitions`` are this worker's (none: a rebalance)."""
        self.partitions = partitions
        self.taken_at = time.time()
        self.live.clear()
        # What the evaluator holds of runs may be stale now: it reloads them from the entries.
        for project, run_id in self.evaluator.known_runs():
            self.evaluator.forget(project, run_id)
        if not partitions:
            return
        for key, head in self.runs.heads():
            try:
                if isinstance(head, StoredStateError):
                    raise head
                run = head["run"]
                if run.get("partition") in partitions and run["status"] == ALIVE:
                    self.live[key] = self.runs.assemble(key, head)
            except StoredStateError as exc:  # that run's events go to the dead letters
                logger.error("%s", exc)

    def entry(self, key: str) -> Entry | None:
        entry = self.live.get(key)
        if entry is None:
            entry = self.runs.load(key)
            if entry is not None:
                self.live[key] = entry
        return entry

    def alert_state(self, project: str, run_id: str) -> Any:
        """The evaluator's loader: a run's alert state, from its entry."""
        entry = self.entry(run_key(project, run_id))
        return entry.get("alerts") if entry else None

    # -- events --
    def process(self, messages: Sequence[Message]) -> dict[int, int]:
        """Fold a batch; returns ``{partition: offset of its last message}`` to commit once
        the outputs are flushed."""
        self.stats.batches += 1
        positions: dict[int, int] = {}
        by_run: dict[str, list[Any]] = {}
        partition_of: dict[str, int] = {}
        for message in messages:
            partition: int = message.partition()  # type: ignore[assignment]  # never None here
            positions[partition] = message.offset()  # type: ignore[assignment]
            try:
                event = decode_event(message.value())
            except EventDecodeError as exc:
                self.dead_letter(message, str(exc))
                continue
            problem = key_problem(message.key(), event.run_id)
            if problem:  # the run's order rests on its key, as in the sink
                self.dead_letter(message, problem)
                continue
            key = run_key(event.project, event.run_id)
            events = by_run.get(key)
            if events is None:
                events = by_run[key] = []
            events.append(event)
            partition_of[key] = partition
        now = time.time()
        for key, events in by_run.items():
            try:
                self._fold(key, events, partition_of[key], now)
            except Exception as exc:  # a bug or an input nobody foresaw: it must not stop us
                self._fold_failed(key, messages, exc)
        self.evaluator.take_dirty()  # every run's alert state was written with its entry
        return positions

    def _fold_failed(self, key: str, messages: Sequence[Message], exc: Exception) -> None:
        """Folding a run's events raised: they go to the dead-letter topic with the error, and
        what memory holds of the run (perhaps half changed) is dropped, to be read again from
        the stored entry, which has none of them. The run's later events go on from there."""
        logger.exception("folding the events of run %r failed", key)
        self.stats.failed_runs += 1
        self.live.pop(key, None)
        project, _, run_id = key.rpartition("\x1f")
        self.evaluator.forget(project, run_id)
        reason = f"the processors could not fold this run's events: {type(exc).__name__}: {exc}"
        for message in messages:  # rare: decoding the batch again costs nothing that matters
            try:
                event = decode_event(message.value())
            except EventDecodeError:
                continue  # already dead-lettered
            if key_problem(message.key(), event.run_id):
                continue  # likewise
            if run_key(event.project, event.run_id) == key:
                self.dead_letter(message, reason[:1000])

    def _fold(self, key: str, events: list[Any], partition: int, now: float) -> None:
        entry = self.entry(key)
        if entry is None:
            first = events[0]
            entry = self.live[key] = new_entry(new_run_state(first.project, first.run_id))
        state, summaries = entry["run"], entry["summaries"]
        left_out = state.get("late_left_out", 0)
        folded, touched = fold_batch(state, summaries, events, partition)
        self.stats.duplicates += len(events) - len(folded)
        if state.get("late_left_out", 0) > left_out:
            self.stats.late_left_out += state["late_left_out"] - left_out
            if not left_out:  # once per run: the count goes on in its state
                logger.warning(
                    "run %r: an event arrived after later ones and is not folded into the "
                    "live run state (only metric points are; counted in late_left_out). "
                    "ClickHouse stores it as sent (docs/processors.md)",
                    key.replace("\x1f", "/"),
                )
        if not folded:
            return
        self.stats.events += len(folded)
        alerts: list[Alert] = []
        observe = self.evaluator.observe
        for event in folded:
            alerts += observe(event)
        state["seen_at"] = now  # this worker's clock, for crash detection only
        self._publish_run(key, state)
        project, run_id = state["project"], state["run_id"]
        choose = summary_chooser(state)
        for name in touched:
            summary = settle(summaries[name], choose(name))
            self.outputs.send(
                self.topics.summaries,
                summary_key(project, run_id, name).encode(),
                orjson.dumps(to_wire(summary)),
            )
        self._send_alerts(alerts)
        self._save(key, entry, partition, touched)

    def _publish_run(self, key: str, state: dict[str, Any]) -> None:
        raw_key = key.encode()
        self.outputs.send(self.topics.runs, raw_key, run_record(raw_key, to_wire(state)))

    def _save(
        self, key: str, entry: Entry, partition: int, touched: AbstractSet[str] = frozenset()
    ) -> None:
        """Write the run's entry (the chunks of the ``touched`` metrics and the head, its alert
        state included). An ended run then leaves memory until it logs again."""
        run = entry["run"]
        project, run_id = run["project"], run["run_id"]
        entry["alerts"] = self.evaluator.state_of(project, run_id)
        self.runs.save(key, entry, partition, touched)
        if run["status"] != ALIVE:
            self.live.pop(key, None)
            self.evaluator.forget(project, run_id)

    def dead_letter(self, message: Message, reason: str) -> None:
        self.stats.dead_letters += 1
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        logger.warning("dead letter %s[%d]@%d: %s", topic, partition, offset, reason[:1000])
        # Cut to fit the broker's limit: a message near 1 MB plus headers would not.
        letter = build_dead_letter(
            consumer="processors",
            topic=str(topic),
            partition=partition or 0,
            offset=offset or 0,
            key=message.key(),
            value=message.value(),
            reason=reason,
        )
        self.outputs.send(
            self.topics.dead_letters,
            letter.key or b"",
            letter.value or b"",
            headers=dict(letter.headers),
        )

    # -- alerts outside a batch --
    def _send_alerts(self, alerts: list[Alert]) -> None:
        for alert in alerts:
            self.stats.alerts += 1
            self.outputs.send(self.topics.alerts, alert.run_id.encode(), alert_record(alert))

    def publish_alerts(self, alerts: list[Alert]) -> None:
        """Alerts of a timer (stalled runs, changed rules): sent, and the alert state of the
        runs they changed written to their entries."""
        self._send_alerts(alerts)
        for project, run_id in self.evaluator.take_dirty():
            key = run_key(project, run_id)
            entry = self.entry(key)
            partition = entry["run"].get("partition") if entry else None
            if entry is not None and partition in self.partitions:
                self._save(key, entry, partition)

    # -- crashes --
    def silent(self, state: dict[str, Any], now: float) -> bool:
        # A worker that has just (re)started or taken partitions over has not been listening:
        # give every run a full timeout from then, or it would call live runs crashed.
        heard = max(state.get("seen_at") or 0.0, self.taken_at)
        return bool(state["status"] == ALIVE and now - heard >= self.timeout)

    def silent_runs(self, now: float) -> list[tuple[str, int]]:
        """(key, partition) of this worker's runs that look crashed."""
        return [
            (key, entry["run"]["partition"])
            for key, entry in self.live.items()
            if entry["run"].get("partition") in self.partitions and self.silent(entry["run"], now)
        ]

    def check_crash(self, key: str, now: Callable[[], float] = time.time) -> None:
        """A tick for ``key`` came back through the ticks topic: still silent, it crashed."""
        entry = self.entry(key)
        if entry is None:
            return
        state = entry["run"]
        if state.get("partition") not in self.partitions or not self.silent(state, now()):
            return
        # Recorded as the time it was last heard of: the same on a replay.
        last = datetime.fromisoformat(state["last_event_at"].replace("Z", "+00:00"))
        if not mark_crashed(state, last):
            return
        self.stats.crashed += 1
        self._publish_run(key, state)
        self._send_alerts(self.evaluator.run_crashed(state["project"], state["run_id"], last))
        self.evaluator.take_dirty()
        self._save(key, entry, state["partition"])
