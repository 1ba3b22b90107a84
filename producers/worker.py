"""The SDK's one background worker per process.

The training loop only appends tuples to a deque (O(1), no lock, never raises). This worker
drains it: it numbers each run's events, encodes them with the shared codec, appends them to the
run's spool on disk, and produces them to Kafka. When Kafka is slow or away, events keep going to
the spool only and are replayed from it, in order, once the producer accepts again; memory stays
bounded by the producer's queue. The worker also sends heartbeats and system metrics. It starts
lazily, restarts in a forked child, and is flushed with a deadline at interpreter exit.

Here: the queue, the thread and its loop, and the housekeeping of each round. What a run's state
is: ``producers/channel.py``; numbering and encoding: ``producers/encoding.py``; what happens
when the spool is full or cannot be written, and the replay: ``producers/delivery.py``.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from operator import itemgetter
from typing import Any

from runstream.producers import delivery
from runstream.producers.channel import RunChannel
from runstream.producers.encoding import EventEncoder, producer_info
from runstream.producers.spool import RunSpool, SpoolState, process_identity, segment_bytes_for
from runstream.producers.transport import KafkaTransport
from runstream.settings import Settings

# RunChannel is imported from here too (it moved to channel.py).
__all__ = ["RunChannel", "Worker", "get_worker", "new_spool_state"]

logger = logging.getLogger("runstream")

Item = tuple[Any, ...]
"""(RunChannel, event type, unix time, body builder, builder args...) or a control object."""

BodyBuilder = Callable[..., "dict[str, Any] | None"]

_DATA = itemgetter(1)
REPLAY_CHUNK = 20_000
ACK_SILENCE_WARNING_SECONDS = 30.0
TRANSPORT_IDLE_SECONDS = 30.0
STATE_SAVE_SECONDS = 0.5


class _Control:
    """Queued like an event, so it takes effect in order with the events before it."""

    __slots__ = ()


class _Flush(_Control):
    __slots__ = ("channel", "done", "targets")

    def __init__(self, channel: RunChannel | None) -> None:
        self.channel = channel
        self.done = threading.Event()
        self.targets: dict[RunChannel, int] | None = None


class _Close(_Control):
    __slots__ = ("channel", "done")

    def __init__(self, channel: RunChannel) -> None:
        self.channel = channel
        self.done = threading.Event()  # set once every event before it is spooled and sent


class Worker:
    """Encodes, spools and produces events off the caller's thread."""

    # Wake the worker early when this many items wait; otherwise it wakes on its timer, so the
    # caller's append stays a single deque operation almost every time.
    WAKE_AT = 1024
    TICK_SECONDS = 0.02

    def __init__(self) -> None:
        self._queue: deque[Item] = deque()
        # By (project, run id): runs of one id in two projects are two runs.
        self._channels: dict[tuple[str, str], RunChannel] = {}
        self._transports: dict[str, KafkaTransport] = {}
        self._idle_since: dict[str, float] = {}
        self._events = EventEncoder()
        self._system: Any = None
        self._next_system = 0.0
        self._next_save = 0.0
        self._reset_thread_state()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)
        atexit.register(self._at_exit)

    # --- caller side --------------------------------------------------------------------------
    def submit(self, item: Item) -> None:
        """Queue an item. O(1); never raises, never blocks."""
        queue = self._queue
        queue.append(item)
        if len(queue) >= self.WAKE_AT:
            self._wake.set()
        if self._thread is None:
            self._ensure_thread()

    def open_channel(
        self, run_id: str, project: str, settings: Settings, *, spool: RunSpool, online: bool
    ) -> RunChannel:
        from runstream.schemas.topics import Topics

        state = spool.state
        channel = RunChannel(
            run_id=run_id,
            project=project,
            topic=Topics(settings.topic_prefix).events,
            settings=settings,
            spool=spool,
            online=online,
            next_seq=state.next_seq,
            last_step=state.last_step,
            sent_through=state.acked_through,
            acked_through=state.acked_through,
            # Events an earlier process of this run left undelivered go out first.
            caught_up=state.acked_through >= state.next_seq - 1,
        )
        channel.first_seq = state.next_seq
        channel.spool_limit, channel.droppable_limit = delivery.limits(settings.spool_max_mb)
        spool.segment_bytes = segment_bytes_for(channel.spool_limit)
        channel.last_ack_progress = time.monotonic()
        channel.next_heartbeat = time.monotonic() + settings.heartbeat_interval
        self._channels[(project, run_id)] = channel
        return channel

    def close_channel(self, channel: RunChannel, timeout: float = 0.0) -> bool:
        """Close the run's channel after the events queued before; wait at most ``timeout``
        seconds until they are all encoded, spooled and handed to the producer (so the run's
        counts are final but for Kafka's acknowledgements). False if that took longer."""
        close = _Close(channel)
        self.submit((close,))
        self._wake.set()
        thread = self._thread
        if thread is None or not thread.is_alive():  # at interpreter shutdown: no worker
            return close.done.is_set()
        return close.done.wait(max(0.0, timeout))

    def flush(self, timeout: float, channel: RunChannel | None = None) -> bool:
        """Wait until what was queued so far is settled (acknowledged, or spooled offline):
        of ``channel`` only, or of every run. A run's finish() must not wait for other runs,
        such as one whose broker went away long ago.

        Returns False when ``timeout`` seconds passed first; never waits longer.
        """
        marker = _Flush(channel)
        self.submit((marker,))
        self._wake.set()
        return marker.done.wait(max(0.0, timeout))

    # --- thread management --------------------------------------------------------------------
    def _reset_thread_state(self) -> None:
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._waiters: list[_Flush] = []

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            thread = threading.Thread(target=self._run, name="runstream-worker", daemon=True)
            try:
                thread.start()
            except RuntimeError:
                # "can't create new thread at interpreter shutdown": events stay in the queue;
                # nothing is raised into user code.
                return
            self._thread = thread

    def _after_fork(self) -> None:
        # The parent's thread and librdkafka handles do not exist in the child. Runs inherited
        # from the parent belong to the parent (their Run objects turn into no-ops in the
        # child), so the child starts with an empty worker.
        self._queue = deque()
        self._channels = {}
        self._transports = {}
        self._idle_since = {}
        self._events.producer_info = producer_info()
        self._reset_thread_state()

    # --- the loop -----------------------------------------------------------------------------
    def _run(self) -> None:
        more = False
        while not self._stopping:
            if not more:
                self._wake.wait(self.TICK_SECONDS)
                self._wake.clear()
            try:
                more = self.step()
            except Exception:  # the worker must outlive any bug in one event
                logger.exception("runstream: unexpected error in the background worker")
                more = False
                time.sleep(0.1)

    def step(self) -> bool:
        """One round: drain the queue, spool, produce, replay, serve acks, housekeeping.

        Returns True when work is left that should not wait for the next tick.
        """
        touched = self._drain()
        for channel in touched:
            self._spool_and_send(channel)
        more = bool(self._queue)
        for channel in list(self._channels.values()):
            if channel.online and not channel.caught_up:
                more = self._replay(channel) or more
        for transport in list(self._transports.values()):
            transport.poll(0)
        now = time.monotonic()
        self._housekeeping(now)
        self._check_waiters()
        return more

    def _drain(self) -> list[RunChannel]:
        queue = self._queue
        popleft = queue.popleft
        encode = self._events.encode
        touched: dict[int, RunChannel] = {}
        # Small rounds: the producer starts sending the first events while later ones are still
        # being encoded, and acks and heartbeats are served under load.
        budget = 2048
        while queue and budget:
            budget -= 1
            item = popleft()
            head = item[0]
            if isinstance(head, _Control):
                # Events queued before the control object must be on disk before it acts.
                for channel in touched.values():
                    self._spool_and_send(channel)
                touched.clear()
                self._control(head)
                continue
            channel = head
            if channel.closed:
                continue
            try:
                body = item[3](*item[4:])
                if body is None:  # the builder refused the data (and warned)
                    continue
                encode(channel, item[1], item[2], body)
            except Exception as exc:  # one event's bug must not cost the round's other events
                channel.refusals.note(
                    item[1],
                    f"run {channel.run_id}: a {item[1]} event could not be built and is left "
                    f"out ({type(exc).__name__}: {exc}); please report this",
                    "event",
                )
            touched[id(channel)] = channel
        return list(touched.values())

    def _spool_and_send(self, channel: RunChannel) -> None:
        """Spool the run's new events and hand them to the producer (``producers/delivery.py``
        decides what happens when the spool is full or cannot be written)."""
        records = channel.pending
        if not records:
            return
        channel.pending = []
        spool = channel.spool
        no_spool: set[int] = set()
        if not channel.spool_broken:
            size = delivery.HEADER_SIZE * len(records) + sum(map(len, map(_DATA, records)))
            if spool.size + size > channel.droppable_limit:
                self._prune(channel)  # what Kafka acknowledged makes room first
            if spool.size + size > channel.droppable_limit:
                records, no_spool = delivery.make_room(channel, records, self._keeping_up(channel))
        elif channel.online and not channel.caught_up:
            records = delivery.hold_within_memory(channel, records)
        if not records:
            return
        unspooled = delivery.write(channel, records, no_spool, time.monotonic())
        if channel.online and channel.caught_up:
            transport = self._transport(channel.settings)
            last = records[-1][0]
            mine = len(records)  # all numbered by this process: new events, not replays

            def acked(count: int, error: Any, last: int = last, mine: int = mine) -> None:
                channel.ack_through(last, mine, error)

            if transport.produce_many(channel.topic, channel.run_id, records, acked):
                channel.sent_through = last
            else:
                channel.caught_up = False  # sent from the spool when the producer has room
        if channel.online and not channel.caught_up and unspooled:
            if len(unspooled) == len(records):  # nothing of it is spooled: still renumberable
                unspooled = delivery.hold_within_memory(channel, unspooled)
            delivery.hold(channel, unspooled)
        delivery.count_unspooled(channel, unspooled)
        spool.mark(next_seq=channel.next_seq, last_step=channel.last_step)

    def _keeping_up(self, channel: RunChannel) -> bool:
        return delivery.keeping_up(channel, self._transports.get(_transport_key(channel.settings)))

    def _replay(self, channel: RunChannel) -> bool:
        """Hand unsent events to the producer in seq order; True if it should go on."""
        return delivery.replay(channel, self._transport(channel.settings), REPLAY_CHUNK)

    def _control(self, control: _Control) -> None:
        if isinstance(control, _Flush):
            channels = [control.channel] if control.channel else list(self._channels.values())
            control.targets = {c: c.next_seq - 1 for c in channels}
            self._waiters.append(control)
        elif isinstance(control, _Close):
            channel = control.channel
            channel.closed = True
            channel.spool.mark(status="finished")
            self._save(channel, force=True)
            control.done.set()

    def _check_waiters(self) -> None:
        if not self._waiters:
            return
        remaining = []
        for waiter in self._waiters:
            targets = waiter.targets or {}
            if all(c.settled_through >= t for c, t in targets.items()):
                waiter.done.set()
            else:
                remaining.append(waiter)
        self._waiters = remaining

    def _transport(self, settings: Settings) -> KafkaTransport:
        key = _transport_key(settings)
        transport = self._transports.get(key)
        if transport is None:
            transport = KafkaTransport(
                settings.kafka_bootstrap, linger_ms=settings.producer_linger_ms
            )
            self._transports[key] = transport
        return transport

    # --- housekeeping -------------------------------------------------------------------------
    def _housekeeping(self, now: float) -> None:
        for channel in list(self._channels.values()):
            if channel.online:
                self._note_transport_error(channel)  # before _watch_acks moves last_acked_seen
            if channel.closed:
                if channel.settled_through >= channel.next_seq - 1 or not channel.online:
                    self._retire(channel)
                continue
            if channel.online:
                self._watch_acks(channel, now)
            if channel.online and now >= channel.next_heartbeat:
                channel.next_heartbeat = now + channel.settings.heartbeat_interval
                step = channel.last_step if channel.last_step >= 0 else None
                self._events.encode(channel, "heartbeat", time.time(), {"step": step})
                self._spool_and_send(channel)
        self._sample_system(now)
        if now >= self._next_save:
            self._next_save = now + STATE_SAVE_SECONDS
            for channel in list(self._channels.values()):
                self._save(channel)
            self._release_idle_transports(now)

    def _note_transport_error(self, channel: RunChannel) -> None:
        """While Kafka acknowledges nothing of the run and refused none of it, the run's
        ``last_error`` is the transport's (librdkafka's "Connection refused", say), so that
        ``FinishResult`` says why events are pending; cleared as acknowledgements come."""
        if channel.failed:
            return  # Kafka's own refusal is the error to report
        if channel.acked_through != channel.last_acked_seen:
            channel.last_error = None  # acknowledgements came since the last look
        elif channel.next_seq - 1 > channel.acked_through:
            transport = self._transports.get(_transport_key(channel.settings))
            if transport is not None and transport.last_error:
                channel.last_error = transport.last_error

    def _watch_acks(self, channel: RunChannel, now: float) -> None:
        """Say so, once per silence, when Kafka stops acknowledging (down, unknown topic...)."""
        if (
            channel.acked_through != channel.last_acked_seen
            or channel.next_seq - 1 <= channel.acked_through
        ):
            channel.last_acked_seen = channel.acked_through
            channel.last_ack_progress = now
            channel.warned_silence = False
            return
        if (
            not channel.warned_silence
            and now - channel.last_ack_progress > ACK_SILENCE_WARNING_SECONDS
        ):
            channel.warned_silence = True
            transport = self._transports.get(_transport_key(channel.settings))
            logger.warning(
                "runstream: run %s: Kafka at %s has acknowledged nothing for %.0fs (%s); "
                "events are kept in the spool %s and sent when it answers",
                channel.run_id,
                channel.settings.kafka_bootstrap,
                now - channel.last_ack_progress,
                (transport.last_error if transport else None)
                or f"is topic {channel.topic} created?",
                channel.spool.path,
            )

    @staticmethod
    def _prune(channel: RunChannel) -> None:
        """Record what Kafka acknowledged and delete the segments it covers (when it moved)."""
        spool = channel.spool
        if channel.online and spool.state.acked_through != channel.acked_through:
            spool.mark(acked_through=channel.acked_through)
            if not channel.settings.keep_spool:
                spool.prune()

    def _save(self, channel: RunChannel, force: bool = False) -> None:
        spool = channel.spool
        self._prune(channel)
        try:
            spool.save_state(force)
        except OSError as exc:
            if not channel.warned_save:  # once until it works again, not twice a second
                channel.warned_save = True
                logger.warning(
                    "runstream: run %s: cannot save the spool state %s: %s",
                    channel.run_id,
                    spool.path,
                    exc,
                )
        else:
            channel.warned_save = False

    def _retire(self, channel: RunChannel) -> None:
        self._save(channel, force=True)
        channel.spool.close()
        if channel.online and not channel.settings.keep_spool:
            channel.spool.prune()  # the state stays: a later resume reads where the run stopped
        key = (channel.project, channel.run_id)
        if self._channels.get(key) is channel:
            del self._channels[key]

    def _release_idle_transports(self, now: float) -> None:
        # A producer left behind for a broker nobody logs to any more would keep reconnecting;
        # but runs often follow each other in one process (sweeps), and a new idempotent
        # producer waits ~0.5 s for its id: keep an idle one for a while first.
        in_use = {_transport_key(c.settings) for c in list(self._channels.values()) if c.online}
        for key in in_use:
            self._idle_since.pop(key, None)
        for key in list(self._transports):
            if key in in_use:
                continue
            since = self._idle_since.setdefault(key, now)
            if now - since >= TRANSPORT_IDLE_SECONDS:
                self._transports.pop(key).close()
                del self._idle_since[key]

    def _sample_system(self, now: float) -> None:
        active = [
            c
            for c in list(self._channels.values())
            if not c.closed and c.settings.system_metrics_interval > 0
        ]
        if not active or now < self._next_system:
            return
        interval = min(c.settings.system_metrics_interval for c in active)
        first = self._next_system == 0.0
        self._next_system = now + interval
        if first:
            return  # the first sample comes one interval in, like every later one
        if self._system is None:
            from runstream.producers.system import SystemSampler

            self._system = SystemSampler()
        metrics = self._system.sample()
        if not metrics:
            return
        unix = time.time()
        for channel in active:
            self._events.encode(channel, "system_metrics", unix, {"metrics": metrics})
            self._spool_and_send(channel)

    def _at_exit(self) -> None:
        # Runs still open were finished by the SDK's exit hook before this; what remains is a
        # last bounded flush so that the spool state says exactly what is still undelivered.
        if self._thread is None:
            return
        self.flush(2.0)
        self._stopping = True
        self._wake.set()
        self._thread.join(1.0)
        for channel in list(self._channels.values()):
            self._save(channel, force=True)
            channel.spool.close()
        for transport in self._transports.values():
            transport.close()


def _transport_key(settings: Settings) -> str:
    """Runs with the same broker and producer settings share one producer."""
    return f"{settings.kafka_bootstrap}|{settings.producer_linger_ms}"


_WORKER: Worker | None = None
_WORKER_LOCK = threading.Lock()


def get_worker() -> Worker:
    """The process's worker, created on first use."""
    global _WORKER
    if _WORKER is None:
        with _WORKER_LOCK:
            if _WORKER is None:
                _WORKER = Worker()
    return _WORKER


def new_spool_state(run_id: str, project: str, settings: Settings, mode: str) -> SpoolState:
    from runstream.schemas.topics import Topics

    pid, host, started = process_identity()
    return SpoolState(
        run_id=run_id,
        project=project,
        topic=Topics(settings.topic_prefix).events,
        kafka_bootstrap=settings.kafka_bootstrap,
        mode=mode,
        pid=pid,
        host=host,
        started=started,
    )
