"""Kafka transport of the SDK: one confluent-kafka producer, idempotent, acks=all.

Only the SDK's background worker calls into this module; the training loop never does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("runstream")


class _OncePerMinute(logging.Filter):
    """librdkafka repeats a connection error every retry; say each kind of error once a minute."""

    def __init__(self, interval: float = 60.0) -> None:
        super().__init__()
        self.interval = interval
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        kind = f"{args[0]}|{args[1]}" if len(args) > 1 else record.getMessage()[:40]
        now = time.monotonic()
        if now - self._last.get(kind, -self.interval) < self.interval:
            return False
        self._last[kind] = now
        return True


kafka_logger = logging.getLogger("runstream.kafka")
kafka_logger.addFilter(_OncePerMinute())

DeliveryCallback = Callable[[str, int, "str | None"], None]
"""Called as (run_id, seq, error or None) once Kafka acknowledged or finally refused an event."""


@dataclass
class DeliveryStats:
    produced: int = 0
    delivered: int = 0
    failed: int = 0
    last_error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def in_flight(self) -> int:
        return self.produced - self.delivered - self.failed


class KafkaTransport:
    """Produces encoded events, keyed by run id, and counts what Kafka acknowledged."""

    def __init__(
        self,
        bootstrap: str,
        *,
        linger_ms: float = 20.0,
        on_delivery: DeliveryCallback | None = None,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        from runstream._extras import require

        ck = require("confluent_kafka", part="the runstream SDK", extra="all")
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            # Idempotence gives in-order, no-duplicate delivery per partition across the
            # producer's internal retries; acks=all is implied by it and stated for readers.
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "lz4",
            "linger.ms": linger_ms,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 1_000_000,
            # Keep retrying for as long as the spool may need: the worker decides when to give up.
            "message.timeout.ms": 300_000,
            "client.id": "runstream-sdk",
            "logger": kafka_logger,
        }
        config.update(extra_config or {})
        self._producer = ck.Producer(config)
        self._on_delivery = on_delivery
        self.stats = DeliveryStats()

    def produce(self, topic: str, run_id: str, seq: int, value: bytes) -> None:
        """Hand one event to librdkafka; waits (serving callbacks) while its queue is full."""

        def delivered(err: Any, _msg: Any) -> None:
            error = None if err is None else str(err)
            with self.stats.lock:
                if error is None:
                    self.stats.delivered += 1
                else:
                    self.stats.failed += 1
                    self.stats.last_error = error
            if self._on_delivery is not None:
                self._on_delivery(run_id, seq, error)

        while True:
            try:
                self._producer.produce(topic, value=value, key=run_id, on_delivery=delivered)
                break
            except BufferError:
                self._producer.poll(0.05)  # local queue full: let librdkafka drain it
        with self.stats.lock:
            self.stats.produced += 1

    def poll(self, timeout: float = 0.0) -> None:
        self._producer.poll(timeout)

    def flush(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for acknowledgements; returns how many are still out."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            remaining = deadline - time.monotonic()
            left = int(self._producer.flush(max(0.0, min(remaining, 0.1))))
            if left == 0 or remaining <= 0:
                return left
