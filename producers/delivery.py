"""What the worker does with a run's events when the spool cannot take them all.

Two reasons, two answers:

- **The spool is at its bound** (``spool_max_mb``, per run). Metric, heartbeat and system-metric
  events may fill it up to the bound minus a reserve (a quarter of the bound, at most 64 MiB);
  the run's other events (config, summary, tags, alerts...) may use the reserve; and
  ``run_started``, ``run_resumed`` and ``run_finished`` are always written, so the spool can pass
  its bound by those few records only. What does not fit is sent from memory when Kafka is
  keeping up (it acknowledges, and its backlog is within the reserve), and dropped (counted,
  one warning) when it is not. Dropped events give their seq back: the events after them are
  renumbered, so the run's seqs stay gap-free.
- **The spool cannot be written** (disk full, I/O error). Events go on to Kafka from memory and
  are counted as not spooled; while Kafka is not keeping up they wait in memory, at most
  :data:`MEMORY_HOLD_BYTES` of them (past it, metric, heartbeat and system-metric events are
  dropped; the others are always kept). The spool is tried again every
  :data:`SPOOL_RETRY_SECONDS`; spooling resumes as soon as the disk has room.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from runstream.producers.spool import HEADER, PartialAppend

if TYPE_CHECKING:
    from runstream.producers.channel import RunChannel
    from runstream.producers.transport import KafkaTransport

logger = logging.getLogger("runstream")

HEADER_SIZE = HEADER.size
DROPPABLE = frozenset({"metrics_logged", "histogram_logged", "heartbeat", "system_metrics"})
"""Event types dropped first when there is no room: the run's samples, not its identity."""
ALWAYS_KEPT = frozenset({"run_started", "run_resumed", "run_finished"})
"""Event types never dropped: without them a run has no name or never ends."""
MEMORY_HOLD_BYTES = 32 * 1024 * 1024
SPOOL_RETRY_SECONDS = 1.0
RESERVE_MAX_BYTES = 64 * 1024 * 1024

_TYPE = re.compile(rb'"type":"([a-z_]+)"')
_SEQ = re.compile(rb'"seq":(\d+)')
_PREFIX = 200  # id, type and seq come first in every event the SDK encodes


def limits(spool_max_mb: float) -> tuple[int, int]:
    """(bound of the spool, bound for droppable events) in bytes."""
    limit = max(1, int(spool_max_mb * 1024 * 1024))
    return limit, limit - min(limit // 4, RESERVE_MAX_BYTES)


def event_type(data: bytes) -> str:
    found = _TYPE.search(data, 0, _PREFIX)
    return found.group(1).decode() if found else ""


def renumber(data: bytes, seq: int) -> bytes:
    found = _SEQ.search(data, 0, _PREFIX)
    if found is None:
        return data
    return data[: found.start(1)] + str(seq).encode() + data[found.end(1) :]


def make_room(
    channel: RunChannel, records: list[tuple[int, bytes]], sending: bool
) -> tuple[list[tuple[int, bytes]], set[int]]:
    """Fit ``records`` into the spool's bound: (records kept, renumbered; seqs of those kept
    but not to be spooled, which go to Kafka from memory). ``sending``: Kafka is keeping up,
    so what does not fit is sent from memory rather than dropped."""
    spool = channel.spool
    free = channel.spool_limit - spool.size
    free_droppable = channel.droppable_limit - spool.size
    keep: list[bool] = []
    spool_it: list[bool] = []
    for _, data in records:
        size = HEADER_SIZE + len(data)
        kind = event_type(data)
        fits = size <= free_droppable if kind in DROPPABLE else size <= free or kind in ALWAYS_KEPT
        if fits:
            free -= size
            free_droppable -= size
        keep.append(fits or sending)
        spool_it.append(fits)
    bound = f"the spool reached its bound, spool_max_mb={channel.settings.spool_max_mb:g}"
    kept = _keep(channel, records, keep, f"{bound}, while Kafka is not keeping up")
    no_spool: set[int] = set()
    index = 0
    for keep_it, to_spool in zip(keep, spool_it, strict=True):
        if keep_it:
            if not to_spool:
                no_spool.add(kept[index][0])
            index += 1
    return kept, no_spool


def hold_within_memory(
    channel: RunChannel, records: list[tuple[int, bytes]]
) -> list[tuple[int, bytes]]:
    """With the spool unwritable and Kafka not keeping up: keep what the memory bound allows."""
    room = MEMORY_HOLD_BYTES - channel.memory_bytes
    keep = []
    for _, data in records:
        fits = len(data) <= room or event_type(data) not in DROPPABLE
        if fits:
            room -= len(data)
        keep.append(fits)
    why = f"the spool cannot be written and Kafka is not keeping up: {MEMORY_HOLD_BYTES} bytes"
    return _keep(channel, records, keep, f"{why} wait in memory")


def _keep(
    channel: RunChannel, records: list[tuple[int, bytes]], keep: list[bool], why: str
) -> list[tuple[int, bytes]]:
    if all(keep):
        return records
    first = records[0][0]
    kept: list[tuple[int, bytes]] = []
    for (seq, data), keep_it in zip(records, keep, strict=True):
        if keep_it:
            new = first + len(kept)
            kept.append((new, data if new == seq else renumber(data, new)))
        else:
            kind = event_type(data)
            channel.dropped_types[kind] = channel.dropped_types.get(kind, 0) + 1
    dropped = len(records) - len(kept)
    channel.next_seq = first + len(kept)
    if why not in channel.drop_reasons:
        channel.drop_reasons.append(why)
        logger.warning(
            "runstream: run %s: %s (%s); metric, heartbeat and system-metric events are "
            "dropped until there is room again (run_started, run_finished, config and summary "
            "are kept); finish() reports how many",
            channel.run_id,
            why,
            channel.spool.path,
        )
    channel.dropped += dropped
    return kept


def write(
    channel: RunChannel, records: list[tuple[int, bytes]], no_spool: set[int], now: float
) -> list[tuple[int, bytes]]:
    """Append to the spool what it should hold; returns the records that are not in it."""
    spool = channel.spool
    to_write = [r for r in records if r[0] not in no_spool] if no_spool else records
    unspooled = [r for r in records if r[0] in no_spool] if no_spool else []
    if channel.spool_broken and now < channel.spool_retry_at:
        unspooled, to_write = records, []
    elif to_write:
        try:
            spool.append(to_write)
            channel.appends += 1
        except OSError as exc:
            _spool_failed(channel, exc, now)
            written = exc.written if isinstance(exc, PartialAppend) else 0
            if written:
                channel.appends += 1
                done = {seq for seq, _ in to_write[:written]}
                unspooled, to_write = [r for r in records if r[0] not in done], to_write[:written]
            else:
                unspooled, to_write = records, []
        else:
            if channel.spool_broken:
                channel.spool_broken = False
                logger.warning(
                    "runstream: run %s: the spool %s can be written again; spooling resumed "
                    "(%d events so far were not spooled)",
                    channel.run_id,
                    spool.path,
                    channel.not_spooled,
                )
    channel.spooled += len(to_write)
    return unspooled


def count_unspooled(channel: RunChannel, unspooled: list[tuple[int, bytes]]) -> None:
    """Count events that are in no spool (for FinishResult, and for sync to say why)."""
    if not unspooled:
        return
    channel.not_spooled += len(unspooled)
    for seq, _ in unspooled:
        add_range(channel.unspooled_ranges, seq)
        channel.spool.note_not_spooled(seq, seq)


def _spool_failed(channel: RunChannel, exc: OSError, now: float) -> None:
    channel.spool_retry_at = now + SPOOL_RETRY_SECONDS
    channel.spool_error = f"{type(exc).__name__}: {exc}"
    if channel.spool_broken:
        return
    channel.spool_broken = True
    logger.warning(
        "runstream: run %s: cannot write the spool %s (%s); %s until it can be written "
        "again; finish() reports how many events were not spooled",
        channel.run_id,
        channel.spool.path,
        exc,
        "events go on to Kafka from memory"
        if channel.online
        else "this offline run loses its events",
    )


def hold(channel: RunChannel, records: list[tuple[int, bytes]]) -> None:
    """Keep events that are in no spool until the producer takes them."""
    channel.memory.extend(records)
    channel.memory_bytes += sum(len(data) for _, data in records)


def next_unsent(channel: RunChannel) -> tuple[tuple[int, bytes] | None, bool]:
    """The lowest-seq event not yet handed to the producer: (record, from memory)."""
    sent = channel.sent_through
    disk = channel.replay_head
    memory = channel.memory
    if (
        disk is None
        and channel.disk_done
        and memory
        and memory[0][0] > sent + 1
        and channel.reader_appends != channel.appends
    ):
        # The spool was appended to since the reader reached its end: records between the
        # last one sent and the next one in memory may be there. Read again before skipping.
        channel.replay, channel.disk_done = None, False
    while disk is None and not channel.disk_done:
        if channel.replay is None:
            channel.replay = channel.spool.read_from(sent + 1, channel.read_damages)
            channel.reader_appends = channel.appends
        disk = next(channel.replay, None)
        if disk is None:
            channel.replay = None  # the end of the spool for now
            channel.disk_done = True
            _report_damage(channel)
        elif disk[0] <= sent:
            disk = None
        channel.replay_head = disk
    while memory and memory[0][0] <= sent:
        channel.memory_bytes -= len(memory.popleft()[1])
    if memory and (disk is None or memory[0][0] < disk[0]):
        return memory[0], True
    return disk, False


def _report_damage(channel: RunChannel) -> None:
    new = channel.read_damages[channel.reported_damages :]
    channel.reported_damages = len(channel.read_damages)
    for damage in new:
        logger.warning("runstream: run %s: damaged spool, %s", channel.run_id, damage)


def is_purge(error: Any) -> bool:
    """True for librdkafka's "purged" errors: the message was not sent because the producer was
    closed (a timeout of ours), not refused by Kafka; it must be sent again later."""
    code = getattr(error, "code", None)
    if code is None:
        return False
    from confluent_kafka import KafkaError

    return code() in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT)


def add_range(ranges: list[list[int]], seq: int) -> None:
    if ranges and ranges[-1][1] >= seq - 1:
        ranges[-1][1] = max(ranges[-1][1], seq)
    else:
        ranges.append([seq, seq])


def count_above(ranges: list[list[int]], seq: int) -> int:
    """How many seqs of ``ranges`` are above ``seq``."""
    return sum(max(0, last - max(first, seq + 1) + 1) for first, last in ranges)


def keeping_up(channel: RunChannel, transport: KafkaTransport | None) -> bool:
    """Kafka takes this run's events as they come: it has acknowledged some, and what it has
    not acknowledged yet is within the spool's reserve. Only then do events the full spool
    cannot take go to Kafka from memory (else they would pile up there, unspooled)."""
    if not (channel.online and channel.caught_up and channel.acked > 0):
        return False
    backlog = transport.queued_bytes if transport is not None else 0
    return backlog <= channel.spool_limit - channel.droppable_limit


def replay(channel: RunChannel, transport: KafkaTransport, chunk: int) -> bool:
    """Hand unsent events (from the spool, and those only in memory because the spool could
    not take them) to the producer in seq order while it has room, at most ``chunk``; True if
    there is more to hand over at once."""
    channel.disk_done = False  # look at the spool's end once per round
    for _ in range(chunk):
        record, from_memory = next_unsent(channel)
        if record is None:
            break
        seq = record[0]
        mine = 1 if seq >= channel.first_seq else 0

        def acked(error: Any, _message: Any, seq: int = seq, mine: int = mine) -> None:
            channel.ack_through(seq, mine, error)

        if not transport.try_produce(channel.topic, channel.run_id, record[1], acked):
            return False
        if from_memory:
            channel.memory.popleft()
            channel.memory_bytes -= len(record[1])
        else:
            channel.replay_head = None
        channel.sent_through = seq
    else:
        return True
    if channel.sent_through >= channel.next_seq - 1 and not channel.memory:
        channel.caught_up = True
    return False
