"""One batch of Kafka messages on its way into ClickHouse.

A batch decodes messages into column lists as they arrive, and knows the offset range it covers
per partition. ``write`` performs one INSERT per table; its deduplication token is derived from
those offset ranges, so a retry of the same batch lands once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from runstream.errors import EventDecodeError
from runstream.schemas import decode
from runstream.schemas.events import MetricsLogged

EVENT_COLUMNS = (
    "event_id",
    "schema_version",
    "type",
    "project",
    "run_id",
    "seq",
    "ts",
    "producer_sdk",
    "producer_version",
    "producer_host",
    "producer_pid",
    "body",
    "kafka_partition",
    "kafka_offset",
)
METRIC_COLUMNS = ("project", "run_id", "name", "step", "value", "ts", "seq")


@dataclass(frozen=True)
class DeadLetter:
    """A message the sink could not store, with why and where it came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str


@dataclass
class EventBatch:
    events: list[list[Any]] = field(default_factory=lambda: [[] for _ in EVENT_COLUMNS])
    metrics: list[list[Any]] = field(default_factory=lambda: [[] for _ in METRIC_COLUMNS])
    offsets: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    messages: int = 0

    @property
    def rows(self) -> int:
        return len(self.events[0]) + len(self.metrics[0])

    def add(
        self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
    ) -> None:
        """Decode one message into rows, or keep it as a dead letter with the reason."""
        self.messages += 1
        first, _ = self.offsets.get((topic, partition), (offset, offset))
        self.offsets[(topic, partition)] = (first, offset)
        if value is None:
            self.dead_letters.append(
                DeadLetter(topic, partition, offset, key, value, "empty message")
            )
            return
        try:
            event = decode(value)
            body_json = orjson.dumps(orjson.loads(value)["body"]).decode()
        except EventDecodeError as exc:
            self.dead_letters.append(DeadLetter(topic, partition, offset, key, value, str(exc)))
            return
        producer = event.producer
        ts: datetime = event.ts
        for column, item in zip(
            self.events,
            (
                event.id,
                event.v,
                event.type,  # type: ignore[attr-defined]
                event.project,
                event.run_id,
                event.seq,
                ts,
                producer.sdk,
                producer.version,
                producer.host,
                producer.pid,
                body_json,
                partition,
                offset,
            ),
            strict=True,
        ):
            column.append(item)
        body = event.body  # type: ignore[attr-defined]
        if isinstance(body, MetricsLogged):
            project, run_id, step, seq = event.project, event.run_id, body.step, event.seq
            m = self.metrics
            for name, number in body.metrics.items():
                m[0].append(project)
                m[1].append(run_id)
                m[2].append(name)
                m[3].append(step)
                m[4].append(number)
                m[5].append(ts)
                m[6].append(seq)

    def dedup_token(self, table: str) -> str:
        ranges = ",".join(f"{t}/{p}/{a}-{b}" for (t, p), (a, b) in sorted(self.offsets.items()))
        return hashlib.sha256(f"{table}|{ranges}".encode()).hexdigest()

    def write(self, client: Any, database: str) -> None:
        """Insert the batch, one INSERT per table; safe to call again after a failure."""
        for table, columns, data in (
            ("events", EVENT_COLUMNS, self.events),
            ("metrics", METRIC_COLUMNS, self.metrics),
        ):
            if not data[0]:
                continue
            client.insert(
                f"`{database}`.`{table}`",
                data,
                column_names=list(columns),
                column_oriented=True,
                settings={
                    "insert_deduplication_token": self.dedup_token(table),
                    "insert_deduplicate": 1,
                    "async_insert": 0,
                },
            )
