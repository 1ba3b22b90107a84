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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import orjson

from runstream.errors import EventDecodeError
from runstream.schemas.codec import key_problem
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

# ClickHouse error codes that mean "this server", not "this data": the server is short of
# memory, disk, time or connections, or the statement itself cannot run (a table or database
# missing, no rights, read-only). A batch refused with one of them, or with no code at all
# (connection refused, a timeout, a proxy's 502), is retried whole and never dead-lettered.
# Any other error is taken as being about the data: the batch is split down to the messages at
# fault, and a single message is dead-lettered only if ClickHouse then takes an empty insert of
# the same statement (`_server_answers`), so an outage that wears an unexpected code is still
# retried. Codes: ClickHouse's src/Common/ErrorCodes.cpp.
OUTAGE_CODES = frozenset(
    {
        3,  # UNEXPECTED_END_OF_FILE: a request cut short on the way
        16,  # NO_SUCH_COLUMN_IN_TABLE
        46,  # UNKNOWN_FUNCTION
        47,  # UNKNOWN_IDENTIFIER
        60,  # UNKNOWN_TABLE
        62,  # SYNTAX_ERROR
        74,  # CANNOT_READ_FROM_FILE_DESCRIPTOR
        75,  # CANNOT_WRITE_TO_FILE_DESCRIPTOR
        76,  # CANNOT_OPEN_FILE
        81,  # UNKNOWN_DATABASE
        115,  # UNKNOWN_SETTING
        159,  # TIMEOUT_EXCEEDED
        160,  # TOO_SLOW
        164,  # READONLY
        173,  # CANNOT_ALLOCATE_MEMORY
        192,  # UNKNOWN_USER
        193,  # WRONG_PASSWORD
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        203,  # NO_FREE_CONNECTION
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        225,  # NO_ZOOKEEPER
        236,  # ABORTED
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY
        243,  # NOT_ENOUGH_SPACE
        252,  # TOO_MANY_PARTS
        274,  # AIO_READ_ERROR
        279,  # ALL_CONNECTION_TRIES_FAILED
        285,  # TOO_FEW_LIVE_REPLICAS
        286,  # UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE
        319,  # UNKNOWN_STATUS_OF_INSERT
        394,  # QUERY_WAS_CANCELLED
        425,  # SYSTEM_ERROR
        439,  # CANNOT_SCHEDULE_TASK
        497,  # ACCESS_DENIED
        516,  # AUTHENTICATION_FAILED
        999,  # KEEPER_EXCEPTION
        1000,  # POCO_EXCEPTION: network and I/O errors inside the server
    }
)
_ERROR_CODE = re.compile(r"\bcode: (\d+)", re.IGNORECASE)

_INSERT_EVENTS = (
    f"INSERT INTO `{{database}}`.events ({', '.join(EVENT_COLUMNS)}) "
    "SELECT id, v, type, project, run_id, seq, ts, producer.sdk, producer.version, "
    "producer.host, producer.pid, body, kafka_partition, kafka_offset "
    "FROM input('" + INPUT_STRUCTURE.replace("'", "\\'") + "') FORMAT JSONEachRow"
)


_INSERT_SETTINGS: dict[str, Any] = {
    **INPUT_SETTINGS,
    "insert_deduplicate": 1,
    "deduplicate_blocks_in_dependent_materialized_views": 1,
    "parallel_view_processing": 1,  # the views of one insert on several cores
    "async_insert": 0,
    # Tables are partitioned by month: valid events spanning more than 100 months in one batch
    # (a foreign producer's old and future times) would otherwise be refused as TOO_MANY_PARTS,
    # an error that looks like an overloaded server, and the sink would retry them forever.
    "throw_on_max_partitions_per_insert_block": 0,
}


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

    @property
    def line(self) -> bytes:
        return self.event.line


@dataclass(frozen=True, slots=True)
class _Record:
    """A record of a derived topic (run state, summary, alert), stored as its JSON."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes

    @property
    def line(self) -> bytes:
        return self.value


class _HasLine(Protocol):
    @property
    def line(self) -> bytes: ...


_Item = TypeVar("_Item", bound=_HasLine)


@dataclass
class EventBatch:
    """Messages checked and waiting for one write. Which of them a producer sent again (and
    ClickHouse already holds) is decided at write time, from ``SeenSequences``."""

    routes: dict[str, str] = field(default_factory=dict)
    """Derived topics whose records go to a table as they are: topic -> table."""
    accepted: list[_Accepted] = field(default_factory=list)
    records: dict[str, list[_Record]] = field(default_factory=dict)
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
        table = self.routes.get(topic)
        if table is not None:
            reason = _record_problem(value)
            if reason:
                self.dead_letters.append(DeadLetter(topic, partition, offset, key, value, reason))
            else:
                record = _Record(topic, partition, offset, key, value)
                self.records.setdefault(table, []).append(record)
                self.rows += 1
            return
        try:
            line = event_line(value, partition, offset)
        except EventDecodeError as exc:
            self.dead_letters.append(DeadLetter(topic, partition, offset, key, value, str(exc)))
            return
        problem = key_problem(key, line.run_id)
        if problem:  # a run's order (and the seq check below) rests on its key
            self.dead_letters.append(DeadLetter(topic, partition, offset, key, value, problem))
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
            if seen.stored(run, event.seq):
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
                self._dead(refused)
                # Sequences of refused events were advanced in `trial`: start again from the
                # stored state (a retry of this batch then recognises what landed).
                trial = seen.copy()
                self.new_events(trial)
        seen.adopt(trial)
        for table, records in self.records.items():
            # Versions of a key replace each other in the table (ReplacingMergeTree): writing
            # one twice is harmless, and the token makes a retried batch land once anyway.
            sql = f"INSERT INTO `{database}`.`{table}` FORMAT JSONEachRow"
            refused_records = _insert_lines(client, sql, records, self.dedup_token(table))
            if refused_records:
                self.rows -= len(refused_records)
                bad = {id(record) for record, _ in refused_records}
                self.records[table] = [r for r in records if id(r) not in bad]
                self._dead(refused_records)

    def _dead(self, refused: Sequence[tuple[_Accepted | _Record, str]]) -> None:
        self.dead_letters += [
            DeadLetter(item.topic, item.partition, item.offset, item.key, item.value, reason)
            for item, reason in refused
        ]


def _insert(
    client: Any, database: str, events: Sequence[_Accepted], token: str
) -> list[tuple[_Accepted, str]]:
    """Insert accepted events into ``events``; returns those ClickHouse refused, with why."""
    return _insert_lines(client, _INSERT_EVENTS.format(database=database), events, token)


def _insert_lines(
    client: Any, sql: str, items: Sequence[_Item], token: str
) -> list[tuple[_Item, str]]:
    """One INSERT of the items' lines; when ClickHouse refuses the data, the halves are tried
    apart (each with a token of its own) down to the single items at fault, which are returned."""
    try:
        client.command(
            sql,
            data=b"\n".join(item.line for item in items),
            settings={
                **_INSERT_SETTINGS,
                "insert_deduplication_token": token,
            },
        )
        return []
    except Exception as exc:
        if is_outage(exc):
            raise  # the server, not the data: the caller retries the whole batch
        if len(items) == 1:
            if not _server_answers(client, sql):
                raise  # refused as data, but it refuses anything now: an outage after all
            return [(items[0], f"refused by ClickHouse: {_clickhouse_message(exc)}")]
    middle = len(items) // 2
    return [
        *_insert_lines(client, sql, items[:middle], f"{token}/0"),
        *_insert_lines(client, sql, items[middle:], f"{token}/1"),
    ]


def error_code(exc: BaseException) -> int | None:
    """ClickHouse's error code in an exception's message (``Code: 27. DB::Exception``), if any."""
    found = _ERROR_CODE.search(str(exc))
    return int(found.group(1)) if found else None


def is_outage(exc: BaseException) -> bool:
    """True when an insert failed because of the server or the way to it, not the data: no
    ClickHouse error code (connection errors, timeouts, HTTP errors of a proxy) or one of
    :data:`OUTAGE_CODES`."""
    code = error_code(exc)
    return code is None or code in OUTAGE_CODES


def _server_answers(client: Any, sql: str) -> bool:
    """Does ClickHouse take an empty insert of this statement (table there, rights, room)?"""
    try:
        client.command(sql, data=b"", settings=_INSERT_SETTINGS)
    except Exception:
        return False
    return True


def _record_problem(value: bytes) -> str:
    """Why a derived topic's record cannot be stored, or "" if it can."""
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return f"not valid JSON ({exc})"
    if type(record) is not dict:
        return "not a JSON object"
    for name in ("project", "run_id"):
        if type(record.get(name)) is not str or not record[name]:
            return f"{name}: missing or not a string"
    return ""


def _clickhouse_message(exc: Exception) -> str:
    text = str(exc)
    text = text.split("DB::Exception: ", 1)[-1]
    return text.split(" (for url", 1)[0].strip()[:500]
