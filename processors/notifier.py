"""``runstream notifier``: alerts topic -> webhooks, delivery state back onto the alerts topic.

For every alert version the processors publish (``delivery_state`` pending: an episode fired or
resolved) the notifier POSTs to each configured webhook (:mod:`runstream.processors.webhooks`:
signed, retried with backoff, dead-lettered after the last attempt), then publishes the same
alert again with its delivery state (delivered, or failed), which the sink writes to the
``alerts`` table. Offsets are committed once the deliveries of a poll are done, so a restart
re-delivers at most what was in flight, under the same ``Idempotency-Key``.

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
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

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

logger = logging.getLogger("runstream.notifier")

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


class Notifier:
    """Consumes the alerts topic and delivers; one instance per process."""

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
            }
        )
        self.producer = Producer(
            {"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True}
        )
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="webhook")
        self.stats = NotifierStats()
        self.consumer.subscribe([self.topics.alerts])

    def run(self, stop: threading.Event) -> None:
        logger.info("notifier: %d webhook(s), alerts from %s", len(self.routes), self.topics.alerts)
        try:
            while not stop.is_set():
                self.poll(0.5)
        finally:
            self.close()

    def poll(self, timeout: float = 0.5) -> int:
        """Deliver what arrived; returns the number of deliveries made."""
        # What has arrived, else the first alert within the timeout: consume(500, timeout) on
        # its own would wait the whole timeout for 500 of them.
        arrived = self.consumer.consume(500, 0) or self.consumer.consume(1, timeout)
        if len(arrived) == 1:
            arrived += self.consumer.consume(499, 0)
        messages = [m for m in arrived if m.error() is None]
        if not messages:
            return 0
        jobs = []
        # The latest version of each alert in this poll: a delivery update must not undo a
        # resolve that came in the same poll. A poll ends only when all its deliveries have, so
        # nothing needs remembering past it.
        latest: dict[str, Alert] = {}
        for message in messages:
            try:
                alert = Alert.from_json(message.value() or b"")
            except ValueError as exc:
                logger.warning("not an alert at offset %d: %s", message.offset(), exc)
                continue
            if alert.delivery_state != "pending":
                continue  # our own delivery updates coming back
            self.stats.alerts += 1
            latest[alert.alert_id] = alert
            for route in self.routes:
                if route.wants(alert):
                    jobs.append((alert, route, self.pool.submit(deliver, route.webhook, alert)))
        for alert, route, future in jobs:
            self._record(latest[alert.alert_id], alert, route, future.result())
        self.producer.flush(30)
        self.consumer.commit(asynchronous=False)
        return len(jobs)

    def _record(self, latest: Alert, alert: Alert, route: Route, result: DeliveryResult) -> None:
        self.stats.deliveries += 1
        latency = (utcnow() - alert.updated_at).total_seconds()
        self.stats.last_latency = latency
        if result.delivered:
            self.stats.delivered += 1
        else:
            self.stats.failed += 1
            logger.warning("alert %s to %s: %s", alert.alert_id, route.webhook.display_url,
                           result.error)  # fmt: skip
            self.producer.produce(
                self.topics.dead_letters,
                key=alert.alert_id.encode(),
                value=dead_letter_record(route.webhook, alert, result),
                headers=[
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
        self.producer.produce(self.topics.alerts, key=alert.run_id.encode(), value=update.to_json())

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.producer.flush(10)
        self.consumer.close()


def run_notifier(settings: Settings) -> int:
    """``runstream notifier``: until SIGTERM or SIGINT."""
    import signal

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    Notifier(settings).run(stop)
    return 0
