"""``runstream notifier``: alerts topic -> webhooks, delivery state back onto the alerts topic.

For every alert version the processors publish (``delivery_state`` pending: an episode fired or
resolved) the notifier POSTs to each configured webhook (:mod:`runstream.processors.webhooks`:
signed, retried with backoff, dead-lettered after the last attempt), then publishes the same
alert again with its delivery state (delivered, or failed), which the sink writes to the
``alerts`` table. Deliveries run side by side, each recorded as soon as it ends, so one slow
webhook delays no other alert. A partition's offset is committed up to its first alert not done
yet (deliveries recorded, and those records acknowledged by Kafka), so a restart re-delivers at
most what was in flight and what came after it, under the same ``Idempotency-Key``.

Webhooks are read from a TOML file (``RUNSTREAM_WEBHOOKS``, default ``<home>/webhooks.toml``)::

    [[webhook]]
    url = "https://hooks.example.com/runstream"
    secret = "shared-secret"        # signs each POST (Runstream-Signature)
    format = "runstream"            # or "slack"
    levels = ["warn", "error"]      # optional: which alert levels to send
    projects = ["vision"]           # optional
"""

from __future__ import annotations

import logging
import queue
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec

from runstream.errors import SettingsError
from runstream.processors.alert import Alert, utcnow
from runstream.processors.rules import toml_module
from runstream.processors.webhooks import (
    DeliveryResult,
    Webhook,
    dead_letter_record,
    deliver,
)
from runstream.schemas import Topics
from runstream.settings import Settings

if TYPE_CHECKING:
    from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

logger = logging.getLogger("runstream.notifier")

P = ParamSpec("P")

_WEBHOOK_FIELDS = {
    "url",
    "secret",
    "format",
    "timeout",
    "max_attempts",
    "backoff_base",
    "backoff_max",
    "allow_private",
    "headers",
}


@dataclass(frozen=True)
class Route:
    """A webhook and which alerts it wants."""

    webhook: Webhook
    levels: frozenset[str] = frozenset()
    projects: frozenset[str] = frozenset()

    def wants(self, alert: Alert) -> bool:
        return (not self.levels or alert.level in self.levels) and (
            not self.projects or alert.project in self.projects
        )


def load_routes(path: Path) -> list[Route]:
    """The webhooks of a TOML file; none if the file does not exist."""
    tomllib = toml_module()

    if not path.exists():
        return []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # TOMLDecodeError is a ValueError
        raise SettingsError(f"cannot read webhooks from {path}: {exc}") from exc
    routes = []
    for index, entry in enumerate(data.get("webhook", []), start=1):
        unknown = set(entry) - _WEBHOOK_FIELDS - {"levels", "projects"}
        if unknown:
            raise SettingsError(
                f"{path}: webhook #{index}: unknown field(s) {', '.join(sorted(unknown))}"
            )
        try:
            webhook = Webhook(**{k: v for k, v in entry.items() if k in _WEBHOOK_FIELDS})
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"{path}: webhook #{index}: {exc}") from exc
        routes.append(
            Route(
                webhook,
                frozenset(entry.get("levels", ())),
                frozenset(entry.get("projects", ())),
            )
        )
    return routes


@dataclass
class NotifierStats:
    alerts: int = 0
    deliveries: int = 0
    delivered: int = 0
    failed: int = 0
    last_latency: float = 0.0


# Deliveries submitted and not yet recorded above which the notifier stops consuming: each one
# holds an alert in memory, and past the pool's 16 workers they only queue.
MAX_IN_FLIGHT = 1_000
# Consumed messages not yet committed, for the same reason: one stuck delivery at the head of a
# partition keeps everything behind it (own updates included) until it ends.
MAX_UNCOMMITTED = 50_000
# How long a poll waits for new messages while deliveries are in flight: a delivery that ends
# is recorded at most this late.
BUSY_WAIT = 0.02

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


class Notifier:
    """Consumes the alerts topic and delivers; one instance per process.

    A pipeline: every alert's deliveries start as soon as it is consumed and each one is
    recorded as soon as it ends, whatever the others do, so a slow or retrying webhook holds
    back no other alert. Only the commits keep the order of each partition.
    """

    def __init__(self, settings: Settings, routes: Sequence[Route] | None = None) -> None:
        from confluent_kafka import Consumer, Producer

        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.routes = list(routes) if routes is not None else load_routes(settings.webhooks_path)
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
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="webhook")
        self.stats = NotifierStats()
        # Filled by the pool's threads as deliveries end; everything else is touched only by the
        # thread that polls (Kafka callbacks are served inside its consume, poll and flush).
        self._ended: queue.SimpleQueue[tuple[_Delivery, Future[DeliveryResult]]] = (
            queue.SimpleQueue()
        )
        self._in_flight = 0
        # Per partition, the consumed messages not yet committed, in offset order.
        self._uncommitted: dict[tuple[str, int], deque[_Tracked]] = {}
        # The latest version of each alert with deliveries in flight, and how many: a delivery
        # update must not undo a resolve that arrived while the fired version was being
        # delivered. Nothing needs remembering once an alert has no delivery in flight.
        self._latest: dict[str, Alert] = {}
        self._deliveries_of: dict[str, int] = {}
        self._paused = False
        self.consumer.subscribe(
            [self.topics.alerts], on_revoke=_weakly(self._on_revoke), on_lost=_weakly(self._on_lost)
        )

    def run(self, stop: threading.Event) -> None:
        logger.info("notifier: %d webhook(s), alerts from %s", len(self.routes), self.topics.alerts)
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
            return  # our own delivery updates coming back
        self.stats.alerts += 1
        routes = [route for route in self.routes if route.wants(alert)]
        known = self._latest.get(alert.alert_id)
        # By updated_at rather than arrival: after a rebalance a partition is read again from
        # its committed offset, and a replayed fired version must not replace a newer resolve.
        if (known is None and routes) or (
            known is not None and alert.updated_at >= known.updated_at
        ):
            self._latest[alert.alert_id] = alert
        for route in routes:
            self._submit(tracked, alert, route)

    def _submit(self, tracked: _Tracked, alert: Alert, route: Route) -> None:
        tracked.waiting += 1
        self._in_flight += 1
        self._deliveries_of[alert.alert_id] = self._deliveries_of.get(alert.alert_id, 0) + 1
        job, ended = _Delivery(tracked, alert, route), self._ended
        # The callback holds the job and the queue but not self, and the job not the future: no
        # reference cycle keeps a closed notifier, and its producer's connections, alive.
        future = self.pool.submit(deliver, route.webhook, alert)
        future.add_done_callback(lambda done: ended.put((job, done)))

    def _harvest(self) -> int:
        recorded = 0
        while True:
            try:
                job, future = self._ended.get_nowait()
            except queue.Empty:
                return recorded
            self._record(job, future)
            recorded += 1

    def _record(self, job: _Delivery, future: Future[DeliveryResult]) -> None:
        alert, route = job.alert, job.route
        try:
            result = future.result()
        except Exception as exc:
            # deliver() raises for no HTTP or network problem, so this is a bug; failing the
            # delivery beats raising, which would crash the notifier on this alert at every start.
            logger.exception("alert %s to %s", alert.alert_id, route.webhook.display_url)
            result = DeliveryResult(False, 0, None, f"internal error: {exc!r}", True, 0.0)
        latest = self._latest[alert.alert_id]
        self.stats.deliveries += 1
        latency = (utcnow() - alert.updated_at).total_seconds()
        self.stats.last_latency = latency
        if result.delivered:
            self.stats.delivered += 1
        else:
            self.stats.failed += 1
            logger.warning("alert %s to %s: %s", alert.alert_id, route.webhook.display_url,
                           result.error)  # fmt: skip
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
        update = latest.model_copy(
            update={
                "delivery_state": "delivered" if result.delivered else "failed",
                "attempts": result.attempts,
                "last_attempt_at": utcnow(),
                "last_error": result.error,
                # After every version the processors wrote, so the table keeps this one.
                "updated_at": max(utcnow(), latest.updated_at),
            }
        )
        self._produce(job.message, self.topics.alerts, alert.run_id.encode(), update.to_json())
        # After the produces, which count themselves in: the message is done only once Kafka
        # has acknowledged them.
        job.message.waiting -= 1
        self._in_flight -= 1
        left = self._deliveries_of[alert.alert_id] - 1
        if left:
            self._deliveries_of[alert.alert_id] = left
        else:
            del self._deliveries_of[alert.alert_id], self._latest[alert.alert_id]

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
            return (
                self._in_flight >= MAX_IN_FLIGHT * fraction
                or uncommitted >= MAX_UNCOMMITTED * fraction
            )

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
        """Finishes and records the deliveries in flight, then commits them."""
        try:
            self.pool.shutdown(wait=True)
            self._harvest()
            if self.producer.flush(30):
                logger.warning("records not acknowledged: their alerts will be delivered again")
            self._commit(asynchronous=False)
        finally:
            self.consumer.close()


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
