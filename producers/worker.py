"""The SDK's one background worker per process.

The training loop only appends tuples to a deque (O(1), no lock, never raises). This worker
drains it: it numbers each run's events, builds and encodes them with the shared codec, and
hands them to the Kafka transport. It starts lazily, restarts in a forked child, and stops on
interpreter exit after a bounded flush.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runstream.producers.transport import KafkaTransport
from runstream.schemas import uuid7
from runstream.schemas.codec import encode
from runstream.settings import Settings

logger = logging.getLogger("runstream")

Item = tuple[Any, ...]
"""(RunChannel, event type, unix time float, body builder args...) or a flush marker."""


class _Release:
    """Sent by close_channel: drop the transport of ``key`` if no run uses it any more."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key


class _FlushMarker:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


@dataclass
class RunChannel:
    """What the worker needs to know about one run; owned by the worker thread after creation."""

    run_id: str
    project: str
    topic: str
    transport_key: str
    next_seq: int = 0
    produced: int = 0
    delivered: int = 0
    failed: int = 0
    last_error: str | None = None

    def on_delivery(self, _seq: int, error: str | None) -> None:
        # Called on the worker thread (inside poll/flush), so plain increments are safe.
        if error is None:
            self.delivered += 1
        else:
            self.failed += 1
            self.last_error = error


class _Timestamps:
    """ISO-8601 UTC strings with microseconds, formatting the date part once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def format(self, unix: float) -> str:
        second = int(unix)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((unix - second) * 1_000_000):06d}Z"


BodyBuilder = Callable[..., dict[str, Any] | None]


class Worker:
    """Encodes and produces events off the caller's thread."""

    # Wake the worker early when this many items wait; otherwise it wakes on its timer, so the
    # caller's append stays a single deque operation almost every time.
    WAKE_AT = 512
    TICK_SECONDS = 0.05

    def __init__(self) -> None:
        self._queue: deque[Item] = deque()
        self._transports: dict[str, KafkaTransport] = {}
        self._settings_by_key: dict[str, Settings] = {}
        self._channels: dict[str, RunChannel] = {}
        self._timestamps = _Timestamps()
        self._producer_info = self._make_producer_info()
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
        if self._thread is None or self._pid != os.getpid():
            self._ensure_thread()

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued so far was encoded and acknowledged by Kafka.

        Returns False when ``timeout`` seconds passed first; never waits longer.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        marker = _FlushMarker()
        self.submit((marker,))
        self._wake.set()
        if not marker.done.wait(max(0.0, deadline - time.monotonic())):
            return False
        left = 0
        for transport in list(self._transports.values()):
            left += transport.flush(max(0.0, deadline - time.monotonic()))
        return left == 0

    def open_channel(self, run_id: str, project: str, topic: str, settings: Settings) -> RunChannel:
        """Register a run; its Kafka producer is created on the worker thread when first used."""
        key = f"{settings.kafka_bootstrap}|{settings.producer_linger_ms}"
        self._settings_by_key.setdefault(key, settings)
        channel = RunChannel(run_id=run_id, project=project, topic=topic, transport_key=key)
        self._channels[run_id] = channel
        return channel

    def close_channel(self, channel: RunChannel) -> None:
        self._channels.pop(channel.run_id, None)
        self.submit((_Release(channel.transport_key),))

    # --- worker side --------------------------------------------------------------------------
    def _reset_thread_state(self) -> None:
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._stopping = False

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._pid != os.getpid():
                self._after_fork()
            if self._thread is not None and self._thread.is_alive():
                return
            thread = threading.Thread(target=self._run, name="runstream-worker", daemon=True)
            try:
                thread.start()
            except RuntimeError:
                # "can't create new thread at interpreter shutdown": events stay queued and the
                # atexit flush below is the last chance; nothing is raised into user code.
                return
            self._thread = thread

    def _after_fork(self) -> None:
        # The parent's thread and librdkafka handles do not exist in the child; start afresh.
        # Events queued before the fork belong to the parent, which delivers them itself.
        self._queue = deque()
        self._transports = {}
        self._producer_info = self._make_producer_info()
        self._reset_thread_state()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.TICK_SECONDS)
            self._wake.clear()
            try:
                self._drain()
            except Exception:  # the worker must outlive any bug in one event
                logger.exception("runstream: unexpected error in the background worker")

    def _drain(self) -> None:
        queue = self._queue
        popleft = queue.popleft
        while queue:
            item = popleft()
            head = item[0]
            if isinstance(head, _FlushMarker):
                head.done.set()
                continue
            if isinstance(head, _Release):
                self._release(head.key)
                continue
            self._produce(head, item[1], item[2], item[3], item[4:])
        for transport in self._transports.values():
            transport.poll(0)

    def _produce(
        self, channel: RunChannel, type_name: str, unix: float, build: BodyBuilder, args: Item
    ) -> None:
        body = build(*args)
        if body is None:  # the builder refused the data (and warned); nothing to send
            return
        seq = channel.next_seq
        channel.next_seq = seq + 1
        event = {
            "id": uuid7(int(unix * 1000)),
            "v": 1,
            "type": type_name,
            "project": channel.project,
            "run_id": channel.run_id,
            "seq": seq,
            "ts": self._timestamps.format(unix),
            "producer": self._producer_info,
            "body": body,
        }
        transport = self._transport_for(channel.transport_key)
        channel.produced += 1
        transport.produce(channel.topic, channel.run_id, seq, encode(event))

    def _transport_for(self, key: str) -> KafkaTransport:
        transport = self._transports.get(key)
        if transport is None:
            settings = self._settings_by_key[key]
            transport = KafkaTransport(
                settings.kafka_bootstrap,
                linger_ms=settings.producer_linger_ms,
                on_delivery=self._dispatch_delivery,
            )
            self._transports[key] = transport
        return transport

    def _release(self, key: str) -> None:
        # A producer left behind for a broker nobody logs to any more would keep reconnecting
        # forever; one with messages still in flight stays until they are delivered or expire.
        transport = self._transports.get(key)
        in_use = any(c.transport_key == key for c in self._channels.values())
        if transport is not None and not in_use and transport.flush(0) == 0:
            del self._transports[key]

    def _dispatch_delivery(self, run_id: str, seq: int, error: str | None) -> None:
        channel = self._channels.get(run_id)
        if channel is not None:
            channel.on_delivery(seq, error)

    @staticmethod
    def _make_producer_info() -> dict[str, Any]:
        import socket

        from runstream._version import __version__

        return {
            "sdk": "runstream-python",
            "version": __version__,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }

    def _at_exit(self) -> None:
        if self._queue and self._pid == os.getpid() and not self.flush(2.0):
            logger.warning(
                "runstream: %d events were not delivered before the interpreter exited",
                len(self._queue),
            )
        self._stopping = True


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
