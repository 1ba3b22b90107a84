"""One batch of Kafka messages on its way into ClickHouse.

A batch checks each message as it arrives (:mod:`runstream.sinks.event_lines`) and knows the
offset range it covers per partition. ``write`` performs one INSERT into ``events``, of the
messages' own JSON; ClickHouse's materialized views derive ``metrics`` and the other tables in
that same INSERT. Its deduplication token is derived from the offset ranges, so a retry of the
same batch lands once in every table.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from runstream.errors import EventDecodeError
from runstream.sinks.dedup import SeenSequences
from runstream.sinks.event_lines import INPUT_SETTINGS, INPUT_STRUCTURE, EventLine, event_line

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

# ClickHouse error codes that mean "this data", not "this server": parse and conversion errors.
# A batch refused with one of them is split until the messages at fault are found.
DATA_ERROR_CODES = frozenset({6, 25, 26, 27, 32, 38, 41, 53, 69, 70, 72, 117, 321, 376, 467})
_ERROR_CODE = re.compile(r"\bcode: (\d+)", re.IGNORECASE)

_INSERT = (
    f"INSERT INTO `{{database}}`.events ({', '.join(EVENT_COLUMNS)}) "
    "SELECT id, v, type, project, run_id, seq, ts, producer.sdk, producer.version, "
    "producer.host, producer.pid, body, kafka_partition, kafka_offset "
    "FROM input('" + INPUT_STRUCTURE.replace("'", "\\'") + "') FORMAT JSONEachRow"
)


@dataclass(frozen=True)
class DeadLetter:
    """A message the sink could not store, with why and where it came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str


@dataclass(frozen=True, slots=True)
class _Accepted:
    event: EventLine
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass
class EventBatch:
    """Messages checked and waiting for one write. Which of them a producer sent again (and
    ClickHouse already holds) is decided at write time, from ``SeenSequences``."""

    accepted: list[_Accepted] = field(default_factory=list)
    offsets: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    messages: int = 0
    rows: int = 0
    """Rows the batch makes in ``events`` and ``metrics``: what ``sink_batch_rows`` counts."""
    duplicates: int = 0

    def add(
        self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
    ) -> None:
        """Check one message, or keep it as a dead letter with the reason."""
        self.messages += 1
        first, _ = self.offsets.get((topic, partition), (offset, offset))
        self.offsets[(topic, partition)] = (first, offset)
        if not value:
            self.dead_letters.append(
                DeadLetter(topic, partition, offset, key, value, "empty message")
            )
            return
        try:
            line = event_line(value, partition, offset)
        except EventDecodeError as exc:
            self.dead_letters.append(DeadLetter(topic, partition, offset, key, value, str(exc)))
            return
        self.accepted.append(_Accepted(line, topic, partition, offset, key, value))
        self.rows += line.rows

    def new_events(self, seen: SeenSequences) -> list[_Accepted]:
        """The accepted events ClickHouse does not hold yet, advancing ``seen`` past them."""
        seen.load({(a.event.project, a.event.run_id) for a in self.accepted})
        fresh = []
        self.duplicates = 0
        for accepted in self.accepted:
            event = accepted.event
            run = (event.project, event.run_id)
            if event.seq <= seen.get(run):
                self.duplicates += 1  # a producer sent it again (retry, sync after a crash)
                continue
            seen.advance(run, event.seq)
            fresh.append(accepted)
        return fresh

    def dedup_token(self, table: str) -> str:
        ranges = ",".join(f"{t}/{p}/{a}-{b}" for (t, p), (a, b) in sorted(self.offsets.items()))
        return hashlib.sha256(f"{table}|{ranges}".encode()).hexdigest()

    def write(self, client: Any, database: str, seen: SeenSequences) -> None:
        """Insert the batch; safe to call again after a failure.

        ``seen`` is advanced only by a successful write: a retry picks the same events again.
        Events ClickHouse refuses as data (not as a server in trouble) become dead letters.
        """
        trial = seen.copy()
        fresh = self.new_events(trial)
        if fresh:
            try:
                refused = _insert(client, database, fresh, self.dedup_token("events"))
            except Exception:
                # Part of the batch may have landed (a split batch, an insert that timed out
                # but went through): the retry asks ClickHouse again what it holds.
                seen.forget({(a.event.project, a.event.run_id) for a in self.accepted})
                raise
            if refused:
                bad = {id(accepted) for accepted, _ in refused}
                self.rows -= sum(accepted.event.rows for accepted, _ in refused)
                self.accepted = [a for a in self.accepted if id(a) not in bad]
                self.dead_letters += [
                    DeadLetter(a.topic, a.partition, a.offset, a.key, a.value, reason)
                    for a, reason in refused
                ]
                # Sequences of refused events were advanced in `trial`: start again from the
                # stored state (a retry of this batch then recognises what landed).
                trial = seen.copy()
                self.new_events(trial)
        seen.adopt(trial)


def _insert(
    client: Any, database: str, events: list[_Accepted], token: str
) -> list[tuple[_Accepted, str]]:
    """One INSERT of ``events``; when ClickHouse refuses the data, the halves are tried apart
    (each with a token of its own) down to the single events at fault, which are returned."""
    try:
        client.command(
            _INSERT.format(database=database),
            data=b"\n".join(accepted.event.line for accepted in events),
            settings={
                **INPUT_SETTINGS,
                "insert_deduplication_token": token,
                "insert_deduplicate": 1,
                "deduplicate_blocks_in_dependent_materialized_views": 1,
                "parallel_view_processing": 1,  # the views of one insert on several cores
                "async_insert": 0,
            },
        )
        return []
    except Exception as exc:
        code = _ERROR_CODE.search(str(exc))
        if code is None or int(code.group(1)) not in DATA_ERROR_CODES:
            raise  # the server, not the data: the caller retries the whole batch
        if len(events) == 1:
            return [(events[0], f"refused by ClickHouse: {_clickhouse_message(exc)}")]
    middle = len(events) // 2
    return [
        *_insert(client, database, events[:middle], f"{token}/0"),
        *_insert(client, database, events[middle:], f"{token}/1"),
    ]


def _clickhouse_message(exc: Exception) -> str:
    text = str(exc)
    text = text.split("DB::Exception: ", 1)[-1]
    return text.split(" (for url", 1)[0].strip()[:500]
