"""What the worker knows about one run (:class:`RunChannel`): its position (seqs numbered, sent,
acknowledged), its spool and how full it may get, and the counts ``finish()`` reports.

Only the worker thread changes it (``producers/worker.py``, ``producers/delivery.py``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from runstream.producers import delivery
from runstream.producers.spool import RunSpool
from runstream.producers.values import Refusals
from runstream.schemas.codec import EnvelopeEncoder
from runstream.settings import Settings


@dataclass(eq=False)
class RunChannel:
    """What the worker knows about one run. Mutated on the worker thread only."""

    run_id: str
    project: str
    topic: str
    settings: Settings
    spool: RunSpool
    online: bool
    next_seq: int = 0
    last_step: int = -1
    sent_through: int = -1  # handed to the producer
    acked_through: int = -1  # acknowledged by Kafka (acks come back in order per partition)
    caught_up: bool = True  # False: the spool holds events not yet handed to the producer
    acked: int = 0  # events of this process acknowledged by Kafka (failed ones included)
    failed: int = 0  # ... of which Kafka refused
    last_error: str | None = None  # why Kafka refused, or (see transport_error) is silent
    spool_limit: int = 0  # bytes (spool_max_mb)
    droppable_limit: int = 0  # bytes metric/heartbeat/system events may fill
    spooled: int = 0
    dropped: int = 0
    dropped_types: dict[str, int] = field(default_factory=dict)
    drop_reasons: list[str] = field(default_factory=list)
    not_spooled: int = 0
    unspooled_ranges: list[list[int]] = field(default_factory=list)
    spool_broken: bool = False
    spool_retry_at: float = 0.0
    spool_error: str | None = None
    warned_save: bool = False
    memory: deque[tuple[int, bytes]] = field(default_factory=deque)  # unsent, in no spool
    memory_bytes: int = 0
    disk_done: bool = False
    appends: int = 0  # successful spool appends, to know when a replay reader is stale
    reader_appends: int = 0
    read_damages: list[Any] = field(default_factory=list)
    reported_damages: int = 0
    closed: bool = False
    next_heartbeat: float = 0.0
    first_seq: int = 0
    pending: list[tuple[int, bytes]] = field(default_factory=list)
    replay: Iterator[tuple[int, bytes]] | None = None
    replay_head: tuple[int, bytes] | None = None
    encoder: EnvelopeEncoder | None = None
    refusals: Refusals = field(default_factory=Refusals)  # the run's: values left out count
    last_acked_seen: int = -1
    last_ack_progress: float = 0.0
    warned_silence: bool = False

    def ack_through(self, last_seq: int, mine: int, error: Any) -> None:
        """Kafka acknowledged (or refused) events up to ``last_seq``, ``mine`` of them numbered
        by this process. On the worker thread; acks of one run come back in the order produced
        (one partition, idempotent producer), so ``last_seq`` is the watermark."""
        if error is not None and delivery.is_purge(error):
            return  # our producer was closed before sending them: not acknowledged
        self.acked_through = max(self.acked_through, last_seq)
        self.acked += mine
        if error is not None:
            self.failed += mine
            self.last_error = str(error)

    @property
    def lost(self) -> int:
        """Events in no spool and not acknowledged: they exist only in this process's memory."""
        if not self.unspooled_ranges:
            return 0
        return delivery.count_above(self.unspooled_ranges, self.acked_through)

    @property
    def settled_through(self) -> int:
        """Last seq that needs nothing more: acknowledged (online) or spooled (offline)."""
        return self.acked_through if self.online else self.next_seq - 1

    @property
    def produced(self) -> int:
        """Events of this run numbered by this process."""
        return self.next_seq - self.first_seq
