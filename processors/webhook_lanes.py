"""One lane per webhook: its own queue, threads and retry timers, so no receiver delays another.

With one pool for every webhook, a silent receiver filled the pool with attempts that waited out
their timeouts and backoffs, and a healthy webhook's deliveries waited behind them (up to 32 s).
A :class:`Lane` belongs to one webhook and makes at most ``concurrency`` attempts at once; a
delivery waiting for its next attempt holds no thread (it sits in a timer heap), and a lane holds
at most ``queue_limit`` deliveries (queued, waiting to retry or being attempted). The caller
decides what a full lane means; the notifier records the delivery as failed, with the reason,
and dead-letters its payload, so that nothing is lost and no other webhook waits.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from runstream.processors.webhooks import Delivery, DeliveryResult, Webhook

logger = logging.getLogger("runstream.notifier")

T = TypeVar("T")


@dataclass
class LaneStats:
    """Counters of one webhook, for logs and health."""

    accepted: int = 0
    refused_full: int = 0
    attempts: int = 0
    delivered: int = 0
    failed: int = 0


@dataclass(eq=False)
class _Job(Generic[T]):
    delivery: Delivery
    tag: T  # the caller's, handed back with the result
    retries_at: float = 0.0


@dataclass(eq=False)
class Lane(Generic[T]):
    """The deliveries of one webhook. ``done(tag, result)`` is called from the lane's threads
    when a delivery is final."""

    webhook: Webhook
    done: Callable[[T, DeliveryResult], None]
    stats: LaneStats = field(default_factory=LaneStats)

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self._ready: deque[_Job[T]] = deque()
        self._waiting: list[tuple[float, int, _Job[T]]] = []
        self._order = itertools.count()
        self._held = 0
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closing = False

    @property
    def held(self) -> int:
        """Deliveries queued, waiting to retry or being attempted."""
        return self._held

    def offer(self, delivery: Delivery, tag: T) -> bool:
        """Queue ``delivery``; False (and nothing queued) when the lane is full or closed."""
        with self._cond:
            if self._closing or self._held >= self.webhook.queue_limit:
                self.stats.refused_full += 1
                return False
            self._held += 1
            self.stats.accepted += 1
            self._ready.append(_Job(delivery, tag))
            if self._idle == 0 and len(self._threads) < self.webhook.concurrency:
                thread = threading.Thread(
                    target=self._work,
                    name=f"webhook-{self.webhook.name[:40]}-{len(self._threads)}",
                    daemon=True,
                )
                self._threads.append(thread)
                thread.start()
            else:
                self._cond.notify()
        return True

    def _take(self) -> _Job[T] | None:
        """The next job whose attempt is due (None once the lane closes). Under the lock."""
        while not self._closing:
            now = time.monotonic()
            while self._waiting and self._waiting[0][0] <= now:
                self._ready.append(heapq.heappop(self._waiting)[2])
            if self._ready:
                return self._ready.popleft()
            wait = self._waiting[0][0] - now if self._waiting else None
            self._idle += 1
            try:
                self._cond.wait(wait)
            finally:
                self._idle -= 1
        return None

    def _work(self) -> None:
        while True:
            with self._cond:
                job = self._take()
            if job is None:
                return
            self.stats.attempts += 1
            try:
                outcome = job.delivery.attempt()
            except Exception as exc:
                # attempt() raises for no HTTP or network problem, so this is a bug: failing this
                # delivery beats losing the thread (and with it every later delivery).
                logger.exception("webhook %s: delivery failed unexpectedly", self.webhook.name)
                outcome = job.delivery.given_up(f"internal error: {exc!r}")
            if isinstance(outcome, DeliveryResult):
                with self._cond:
                    self._held -= 1
                if outcome.delivered:
                    self.stats.delivered += 1
                else:
                    self.stats.failed += 1
                self.done(job.tag, outcome)
            else:
                with self._cond:
                    heapq.heappush(
                        self._waiting, (time.monotonic() + outcome, next(self._order), job)
                    )
                    self._cond.notify()

    def close(self) -> int:
        """Stops the lane: attempts in progress end (each within its deadline, reported as
        usual); queued deliveries and those waiting to retry are dropped unreported. Returns how
        many were dropped."""
        with self._cond:
            self._closing = True
            dropped = len(self._ready) + len(self._waiting)
            self._ready.clear()
            self._waiting.clear()
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()
        return dropped
