"""The events of a worker's partitions, read in batches with confluent-kafka.

faust hands each message to an agent through its own consumer path, which costs about 200 us per
message on our 2-core machine (``bench.faust_floor``: 5k events/s for an agent that only
counts). The processors keep faust for what it is good at (the group that splits the partitions
among workers, the table and its changelog, standby copies, recovery) and read the events topic
here instead: librdkafka fetches in the background and ``consume`` hands over thousands of
messages in one call.

The reader is not a member of any consumer group: faust's group decides which partitions are the
worker's (those of the ticks topic, which is co-partitioned with the events), and the app assigns
the same numbers here once faust has restored the table for them. Offsets are committed under
the group ``<app id>-events``, only after the results and changelog records of the batch are in
Kafka.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from runstream.settings import Settings

logger = logging.getLogger("runstream.processors")


class EventReader:
    """Batches of the events topic's messages, of the partitions assigned with :meth:`assign`."""

    def __init__(self, settings: Settings, topic: str, group: str) -> None:
        self.topic = topic
        self.group = group
        self.partitions: frozenset[int] = frozenset()
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "client.id": "runstream-processors-events",
                "logger": logging.getLogger("runstream.processors.kafka"),
            }
        )

    def assign(self, partitions: Iterable[int]) -> None:
        """Read these partitions from now on, each from its committed offset (else the start)."""
        wanted = frozenset(partitions)
        if wanted == self.partitions:
            return
        if wanted:
            self._consumer.assign([TopicPartition(self.topic, p) for p in sorted(wanted)])
        else:
            self._consumer.unassign()
        self.partitions = wanted

    def take(self, max_messages: int, seconds: float) -> list[Message]:
        """What has arrived, up to ``max_messages``; when nothing has, the first message within
        ``seconds`` and what came with it. (Blocks: run it in a thread.)

        No waiting to fill a batch: under load the batches fill by themselves while the last
        one is folded, and a lone event (a NaN on its way to an alert) goes at once.
        """
        if not self.partitions:
            return []
        consume = self._consumer.consume
        messages = consume(max_messages, 0)
        if not messages:
            messages = consume(1, seconds)
            if messages and max_messages > 1:
                messages += consume(max_messages - 1, 0)
        if any(message.error() is not None for message in messages):
            messages = [m for m in messages if not self._failed(m)]
        return messages

    def _failed(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return False
        if error.fatal():
            raise KafkaException(error)
        if error.code() != KafkaError._PARTITION_EOF:
            logger.warning("reading %s: %s", self.topic, error)
        return True

    def commit(self, positions: dict[int, int]) -> None:
        """Commit ``{partition: offset of the last message done}`` (blocks until the broker
        has them)."""
        offsets = [
            TopicPartition(self.topic, partition, offset + 1)
            for partition, offset in sorted(positions.items())
            if partition in self.partitions
        ]
        if offsets:
            self._consumer.commit(offsets=offsets, asynchronous=False)

    def close(self) -> None:
        self._consumer.close()
