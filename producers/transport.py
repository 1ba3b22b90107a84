"""Kafka transport of the SDK: one confluent-kafka producer, idempotent, acks=all.

Only the SDK's background worker calls into this module; the training loop never does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
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

DeliveryCallback = Callable[[Any, Any], None]
"""confluent-kafka's ``on_delivery(err, msg)``, called on the thread that polls (the worker)
when Kafka acknowledged or finally refused a message. For one key (one run, one partition) the
calls come in the order the messages were produced."""


class KafkaTransport:
    """Produces encoded events keyed by run id, without ever blocking the worker for long."""

    def __init__(
        self,
        bootstrap: str,
        *,
        linger_ms: float = 20.0,
        queue_mb: int = 64,
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
            # The producer's memory is bounded here; past it, events wait in the spool on disk.
            "queue.buffering.max.kbytes": queue_mb * 1024,
            "queue.buffering.max.messages": 1_000_000,
            # Never give up on a message: a broker outage of any length ends in delivery. The
            # spool, not a timeout, decides what is left for `runstream sync`.
            "message.timeout.ms": 0,
            "client.id": "runstream-sdk",
            "logger": kafka_logger,
            "error_cb": self._on_error,
        }
        config.update(extra_config or {})
        self._producer = ck.Producer(config)
        self._full_until = 0.0
        self.last_error: str | None = None
        # What we handed over and was not acknowledged yet, counted by us so that a batch can
        # be checked for room before any of it is produced (librdkafka does not tell).
        self.queued_bytes = 0
        self.max_queued_bytes = queue_mb * 1024 * 1024 * 3 // 4

    def _on_error(self, err: Any) -> None:
        # Broker transport failures (_TRANSPORT, _ALL_BROKERS_DOWN) mean "not now", not "lost":
        # messages are retried until delivered. Kept for the warning the worker gives.
        self.last_error = str(err)

    def try_produce(
        self, topic: str, run_id: str, value: bytes, on_delivery: DeliveryCallback
    ) -> bool:
        """Hand one event to librdkafka; False (at once) when its queue is full."""
        if self._full_until and time.monotonic() < self._full_until:
            return False
        size = len(value) + len(run_id)
        if self.queued_bytes + size > self.max_queued_bytes:
            return False

        def delivered(error: Any, message: Any) -> None:
            self.queued_bytes -= size
            on_delivery(error, message)

        try:
            self._producer.produce(topic, value=value, key=run_id, on_delivery=delivered)
        except BufferError:
            self._full_until = time.monotonic() + 0.05  # don't hammer a full queue
            return False
        self._full_until = 0.0
        self.queued_bytes += size
        return True

    def produce_many(
        self,
        topic: str,
        run_id: str,
        records: list[tuple[int, bytes]],
        on_acked: Callable[[int, Any], None],
    ) -> bool:
        """Hand all ``(seq, event)`` records of one run to librdkafka, in order, or none.

        ``on_acked(count, error)`` is called once, when the last record is acknowledged: acks of
        one partition come in order, so that ack covers them all, and a callback per event would
        cost the worker more than the rest of the send. Returns False, having sent nothing,
        when the records would not fit in the producer's bounded queue.
        """
        size = sum(len(value) for _, value in records) + len(run_id) * len(records)
        if self.queued_bytes + size > self.max_queued_bytes:
            return False
        produce = self._producer.produce
        last = len(records) - 1
        for index, (_, value) in enumerate(records):
            callback = None if index < last else self._covering(on_acked, len(records), size)
            while True:
                try:
                    produce(topic, value=value, key=run_id, on_delivery=callback)
                    break
                except BufferError:
                    # Unexpected given the check above; the records before this one have no
                    # callback of their own, so this one must go out: wait for room.
                    self._producer.poll(0.01)
        self.queued_bytes += size
        return True

    def _covering(
        self, on_acked: Callable[[int, Any], None], count: int, size: int
    ) -> Callable[[Any, Any], None]:
        def acked(error: Any, _message: Any) -> None:
            self.queued_bytes -= size
            on_acked(count, error)

        return acked

    def poll(self, timeout: float = 0.0) -> None:
        """Serve delivery callbacks (on the calling thread: always the worker)."""
        self._producer.poll(timeout)

    def in_flight(self) -> int:
        return len(self._producer)

    def close(self) -> None:
        # Whatever is still queued is in the spool too; don't wait for it.
        self._producer.purge(in_queue=True, in_flight=True)
        self._producer.poll(0)
