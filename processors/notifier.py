"""``runstream notifier``: alerts topic -> webhooks, delivery state per webhook onto its topic.

For every alert version the processors publish (``delivery_state`` pending: an episode fired or
resolved) the notifier POSTs to each configured webhook that wants it
(:mod:`runstream.processors.webhooks`: signed, one deadline per attempt, retried with backoff,
dead-lettered after the last attempt). Every webhook has its own lane
(:mod:`.webhook_lanes`: queue, threads, retry timers and limits), so a slow or silent receiver
delays no other. For each delivery (one alert version to one webhook) the notifier publishes a
record on ``<prefix>.alert-deliveries`` when it starts (``delivering``) and when it ends
(``delivered`` or ``failed``); the sink writes them to ``alert_deliveries`` (one row per alert,
event and webhook), which ``alerts_current`` shows per alert. A partition's offset is committed
up to its first alert not done yet (every delivery recorded, and those records acknowledged by
Kafka), so a restart re-delivers at most what was in flight and what came after it, under the
same ``Idempotency-Key``.

Webhooks come from a TOML file (``RUNSTREAM_WEBHOOKS``, default ``<home>/webhooks.toml``;
format in :mod:`.webhook_config`); a bad entry is skipped with an error naming it.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, ParamSpec

from runstream.processors.alert import Alert, utcnow
from runstream.processors.webhook_config import (
    Route,
    WebhookFile,
    load_routes,
    load_webhooks,
    unique_routes,
)
from runstream.processors.webhook_lanes import Lane, LaneStats
from runstream.processors.webhooks import Delivery, DeliveryResult, dead_letter_record
from runstream.schemas import Topics
from runstream.settings import Settings

if TYPE_CHECKING:
    from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

logger = logging.getLogger("runstream.notifier")

P = ParamSpec("P")

__all__ = ["Notifier", "NotifierStats", "Route", "load_routes", "load_webhooks", "run_notifier"]


@dataclass
class NotifierStats:
    """What the notifier has done, and what it refused at start (``problems``: one message per
    bad webhook entry)."""

    alerts: int = 0
    deliveries: int = 0
    delivered: int = 0
    failed: int = 0
    last_latency: float = 0.0
    problems: list[str] = field(default_factory=list)
    webhooks: dict[str, LaneStats] = field(default_factory=dict)


# Consumed messages not yet committed above which the notifier stops consuming (back-pressure:
# nothing is lost, the alerts wait in Kafka): one stuck delivery at the head of a partition keeps
# everything behind it (own updates included) until it ends. Each webhook's own bound is its
# queue_limit.
MAX_UNCOMMITTED = 50_000
# How long a poll waits for new messages while deliveries are in flight: a delivery that ends
# is recorded at most this late.
BUSY_WAIT = 0.02
_TICK = timedelta(microseconds=1)

Headers = list[tuple[str, str | bytes | None]]


@dataclass(eq=False)
class _Tracked:
    """A consumed message until everything it caused is in Kafka; then its offset may be
    committed."""

    offset: int
    # Deliveries not yet recorded, plus records produced for it and not yet acknowledged.
    waiting: int = 0


@dataclass(eq=False)
class _Delivery:
    message: _Tracked
    alert: Alert
    route: Route
    started_at: datetime  # updated_at of its 'delivering' record; the final one comes later


class Notifier:
    """Consumes the alerts topic and delivers; one instance per process.

    A pipeline: every alert's deliveries start as soon as it is consumed, each in its webhook's
    lane, and each one is recorded as soon as it ends, whatever the others do, so a slow or
    retrying webhook holds back no other. Only the commits keep the order of each partition.
    """

    def __init__(self, settings: Settings, routes: Sequence[Route] | None = None) -> None:
        from confluent_kafka import Consumer, Producer

        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.stats = NotifierStats()
        if routes is None:
            found = load_webhooks(settings.webhooks_path)
            for problem in found.problems:
                logger.error("%s", problem)
        else:
            found = WebhookFile(unique_routes(routes))
        self.routes = found.routes
        self.stats.problems = found.problems
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": f"{settings.topic_prefix}-notifier",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 10_000,
                "fetch.wait.max.ms": 20,  # an alert is worth a round trip: do not batch it
                "on_commit": _on_commit,
            }
        )
        self.producer = Producer(
            {"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True}
        )
        # Filled by the lanes' threads as deliveries end; everything else is touched only by the
        # thread that polls (Kafka callbacks are served inside its consume, poll and flush).
        self._ended: queue.SimpleQueue[tuple[_Delivery, DeliveryResult]] = queue.SimpleQueue()
        ended = self._ended
        # The callback holds the queue but not self: no reference cycle keeps a closed notifier,
        # and its producer's connections, alive.
        self._lanes: list[Lane[_Delivery]] = [
            Lane(route.webhook, lambda job, result: ended.put((job, result)))
            for route in self.routes
        ]
        for lane in self._lanes:
            self.stats.webhooks[lane.webhook.name] = lane.stats
        self._in_flight = 0
        # Per partition, the consumed messages not yet committed, in offset order.
        self._uncommitted: dict[tuple[str, int], deque[_Tracked]] = {}
        self._paused = False
        self.consumer.subscribe(
            [self.topics.alerts], on_revoke=_weakly(self._on_revoke), on_lost=_weakly(self._on_lost)
        )

    def run(self, stop: threading.Event) -> None:
        logger.info(
            "notifier: %d webhook(s)%s, alerts from %s",
            len(self.routes),
            f", {len(self.stats.problems)} bad entry(ies) skipped" if self.stats.problems else "",
            self.topics.alerts,
        )
        try:
            while not stop.is_set():
                self.poll(0.5)
        finally:
            self.close()

    def poll(self, timeout: float = 0.5) -> int:
        """Start the deliveries of what arrived, record those that ended, commit what is done;
        returns the number of deliveries recorded."""
        self._throttle()
        for message in self._consume(timeout):
            self._start(message)
        recorded = self._harvest()
        self.producer.poll(0)  # acknowledgements of the records produced so far
        self._commit(asynchronous=True)
        return recorded

    def _consume(self, timeout: float) -> list[Message]:
        busy = self._in_flight > 0 or any(self._uncommitted.values())
        # What has arrived, else the first message within the wait: consume(500, timeout) on
        # its own would wait the whole timeout for 500 of them.
        arrived = self.consumer.consume(500, 0)
        if not arrived:
            arrived = self.consumer.consume(1, min(timeout, BUSY_WAIT) if busy else timeout)
            if arrived:
                arrived += self.consumer.consume(499, 0)
        return [m for m in arrived if m.error() is None]

    def _start(self, message: Message) -> None:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None and partition is not None and offset is not None
        tracked = _Tracked(offset)
        self._uncommitted.setdefault((topic, partition), deque()).append(tracked)
        try:
            alert = Alert.from_json(message.value() or b"")
        except ValueError as exc:
            logger.warning("not an alert at offset %d: %s", offset, exc)
            return
        if alert.delivery_state != "pending":
            return  # a delivery update written by a notifier of an earlier version
        self.stats.alerts += 1
        for index, route in enumerate(self.routes):
            if route.wants(alert):
                self._submit(tracked, alert, index)

    def _submit(self, tracked: _Tracked, alert: Alert, index: int) -> None:
        route, lane = self.routes[index], self._lanes[index]
        tracked.waiting += 1
        self._in_flight += 1
        job = _Delivery(tracked, alert, route, utcnow())
        delivery = Delivery(route.webhook, alert)
        if lane.offer(delivery, job):
            self._publish(job, state="delivering", updated_at=job.started_at)
        else:
            # Refused rather than waited for, so that this webhook holds back no other: the
            # dead letter keeps the payload, to send again once the receiver is back.
            reason = (
                f"not attempted: the queue of webhook {route.webhook.name} is full "
                f"({route.webhook.queue_limit} deliveries held; its queue_limit)"
            )
            self._record(job, delivery.given_up(reason))

    def _harvest(self) -> int:
        recorded = 0
        while True:
            try:
                job, result = self._ended.get_nowait()
            except queue.Empty:
                return recorded
            self._record(job, result)
            recorded += 1

    def _record(self, job: _Delivery, result: DeliveryResult) -> None:
        alert, route = job.alert, job.route
        self.stats.deliveries += 1
        self.stats.last_latency = (utcnow() - alert.updated_at).total_seconds()
        if result.delivered:
            self.stats.delivered += 1
        else:
            self.stats.failed += 1
            logger.warning("alert %s to %s: %s", alert.alert_id, route.webhook.name, result.error)
            self._produce(
                job.message,
                self.topics.dead_letters,
                alert.alert_id.encode(),
                dead_letter_record(route.webhook, alert, result),
                [
                    ("runstream.reason", result.error.encode()),
                    ("runstream.consumer", b"notifier"),
                ],
            )
        self._publish(
            job,
            state="delivered" if result.delivered else "failed",
            # After its 'delivering' record, whatever the clock did meanwhile.
            updated_at=max(utcnow(), job.started_at + _TICK),
            result=result,
        )
        # After the produces, which count themselves in: the message is done only once Kafka
        # has acknowledged them.
        job.message.waiting -= 1
        self._in_flight -= 1

    def _publish(
        self,
        job: _Delivery,
        *,
        state: str,
        updated_at: datetime,
        result: DeliveryResult | None = None,
    ) -> None:
        """One webhook's delivery state of ``job`` on the alert-deliveries topic (from there the
        ``alert_deliveries`` table)."""
        alert = job.alert
        attempted = result is not None and result.attempts > 0
        record = {
            "project": alert.project,
            "run_id": alert.run_id,
            "alert_id": alert.alert_id,
            "event": "resolved" if alert.resolved else "fired",
            "webhook": job.route.webhook.name,
            "state": state,
            "attempts": result.attempts if result else 0,
            "status": result.status if result else None,
            "last_attempt_at": _iso(updated_at) if attempted else None,
            "delivered_at": _iso(updated_at) if result and result.delivered else None,
            "last_error": result.error if result else "",
            "updated_at": _iso(updated_at),
        }
        value = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()
        self._produce(job.message, self.topics.alert_deliveries, alert.run_id.encode(), value)

    def _produce(
        self,
        tracked: _Tracked,
        topic: str,
        key: bytes,
        value: bytes,
        headers: Headers | None = None,
    ) -> None:
        tracked.waiting += 1

        def acknowledged(error: KafkaError | None, _: Message) -> None:
            tracked.waiting -= 1
            if error is not None:
                # Committing past it would lose the record: produce it again (a fatal producer
                # error raises from produce and stops the notifier; a restart delivers again).
                logger.warning("record for %s not written (%s): producing it again", topic, error)
                self._produce(tracked, topic, key, value, headers)

        self.producer.produce(topic, value, key, headers=headers, on_delivery=acknowledged)

    def _commit(self, *, asynchronous: bool, only: set[tuple[str, int]] | None = None) -> None:
        """Commits each partition up to its first message not done yet."""
        from confluent_kafka import KafkaException, TopicPartition

        offsets = []
        for (topic, partition), messages in self._uncommitted.items():
            if only is not None and (topic, partition) not in only:
                continue
            end = None
            while messages and messages[0].waiting == 0:
                end = messages.popleft().offset + 1
            if end is not None:
                offsets.append(TopicPartition(topic, partition, end))
        if not offsets:
            return
        try:
            if asynchronous:
                self.consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # At least once: a later commit covers these, or a restart delivers them again.
            logger.warning("cannot commit %s: %s", offsets, exc)

    def _throttle(self) -> None:
        def over(fraction: float) -> bool:
            uncommitted = sum(len(messages) for messages in self._uncommitted.values())
            return uncommitted >= MAX_UNCOMMITTED * fraction

        # Paused partitions still let consume() run, which keeps the consumer in its group
        # (max.poll.interval.ms) while a backlog of slow deliveries drains. Paused again at
        # every poll, as a rebalance may have assigned partitions since; resumed a little below
        # the bound so that it does not flap at every delivery.
        if over(1.0):
            self.consumer.pause(self.consumer.assignment())
            self._paused = True
        elif self._paused and not over(0.75):
            self.consumer.resume(self.consumer.assignment())
            self._paused = False

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(p.topic, p.partition) for p in partitions}
        # Still ours until this returns: commit what is done, so that the next owner does not
        # deliver it again. Deliveries in flight go on and are recorded, but their offsets are
        # the next owner's to commit (it delivers them again, under the same Idempotency-Key).
        self.producer.flush(10)
        self._commit(asynchronous=False, only=revoked)
        self._on_lost(consumer, partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            self._uncommitted.pop((p.topic, p.partition), None)

    def close(self) -> None:
        """Ends the attempts in progress (each within its deadline) and records them, commits
        what is done. Deliveries still queued or waiting to retry are not recorded, so their
        alerts stay uncommitted and the next notifier delivers them (same Idempotency-Key)."""
        try:
            dropped = sum(lane.close() for lane in self._lanes)
            if dropped:
                logger.info("%d deliveries left for the next notifier", dropped)
            self._harvest()
            if self.producer.flush(30):
                logger.warning("records not acknowledged: their alerts will be delivered again")
            self._commit(asynchronous=False)
        finally:
            self.consumer.close()


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _on_commit(error: KafkaError | None, offsets: list[TopicPartition]) -> None:
    if error is not None:
        logger.warning("commit of %s failed: %s", offsets, error)


def _weakly(method: Callable[P, None]) -> Callable[P, None]:
    """``method`` without keeping its object alive: a consumer holding its notifier would keep
    both, and the producer's connections, until a garbage collection."""
    reference = weakref.WeakMethod(method)

    def call(*args: P.args, **kwargs: P.kwargs) -> None:
        bound = reference()
        if bound is not None:
            bound(*args, **kwargs)

    return call


def run_notifier(settings: Settings) -> int:
    """``runstream notifier``: until SIGTERM or SIGINT."""
    import signal

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    Notifier(settings).run(stop)
    return 0
