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
from runstream.sinks.dedup import SeenSequences

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
    """Messages decoded and waiting for one write; rows are built at write time, once the
    events already stored (re-sent by a producer) are known and can be left out."""

    decoded: list[tuple[Any, str, int, int]] = field(default_factory=list)
    offsets: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    messages: int = 0
    rows: int = 0
    duplicates: int = 0

    def add(
        self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
    ) -> None:
        """Decode one message, or keep it as a dead letter with the reason."""
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
        self.decoded.append((event, body_json, partition, offset))
        body = event.body  # type: ignore[attr-defined]
        self.rows += 1 + (len(body.metrics) if isinstance(body, MetricsLogged) else 0)

    def columns(self, seen: SeenSequences) -> tuple[list[list[Any]], list[list[Any]]]:
        """Column lists for ``events`` and ``metrics``, leaving out events already stored."""
        seen.load({(event.project, event.run_id) for event, _, _, _ in self.decoded})
        events: list[list[Any]] = [[] for _ in EVENT_COLUMNS]
        metrics: list[list[Any]] = [[] for _ in METRIC_COLUMNS]
        self.duplicates = 0
        for event, body_json, partition, offset in self.decoded:
            run = (event.project, event.run_id)
            if event.seq <= seen.get(run):
                self.duplicates += 1  # a producer sent it again (retry, sync after a crash)
                continue
            seen.advance(run, event.seq)
            producer = event.producer
            ts: datetime = event.ts
            row = (
                event.id,
                event.v,
                event.type,
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
            )
            for column, item in zip(events, row, strict=True):
                column.append(item)
            body = event.body
            if isinstance(body, MetricsLogged):
                for name, number in body.metrics.items():
                    metrics[0].append(event.project)
                    metrics[1].append(event.run_id)
                    metrics[2].append(name)
                    metrics[3].append(body.step)
                    metrics[4].append(number)
                    metrics[5].append(ts)
                    metrics[6].append(event.seq)
        return events, metrics

    def dedup_token(self, table: str) -> str:
        ranges = ",".join(f"{t}/{p}/{a}-{b}" for (t, p), (a, b) in sorted(self.offsets.items()))
        return hashlib.sha256(f"{table}|{ranges}".encode()).hexdigest()

    def write(self, client: Any, database: str, seen: SeenSequences) -> None:
        """Insert the batch, one INSERT per table; safe to call again after a failure.

        ``seen`` is advanced only by a successful write: a retry builds the same rows again.
        """
        trial = seen.copy()
        events, metrics = self.columns(trial)
        for table, names, data in (
            ("events", EVENT_COLUMNS, events),
            ("metrics", METRIC_COLUMNS, metrics),
        ):
            if not data[0]:
                continue
            client.insert(
                f"`{database}`.`{table}`",
                data,
                column_names=list(names),
                column_oriented=True,
                settings={
                    "insert_deduplication_token": self.dedup_token(table),
                    "insert_deduplicate": 1,
                    "async_insert": 0,
                },
            )
        seen.adopt(trial)
