"""``runstream sync [DIR]``: deliver what runs left in their spools.

Offline runs, runs whose process died, runs whose finish() timed out: each left records after
``acked_through`` in its spool. They are sent again byte for byte (same event ids, same sequence
numbers), in order, and ``acked_through`` advances as Kafka acknowledges them, so syncing twice,
or syncing after a partial sync, sends nothing twice.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from runstream.producers.spool import RunSpool, find_runs
from runstream.settings import Settings


@dataclass
class RunSync:
    run_id: str
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    skipped: str = ""


@dataclass
class SyncReport:
    runs: list[RunSync] = field(default_factory=list)

    @property
    def delivered(self) -> int:
        return sum(r.delivered for r in self.runs)

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.runs)


def sync(
    settings: Settings,
    root: Path | None = None,
    *,
    progress: Callable[[str, int, int], None] | None = None,
    timeout: float = 300.0,
) -> SyncReport:
    """Deliver every spooled, unacknowledged event under ``root`` (default: settings.dir)."""
    report = SyncReport()
    for path in find_runs(root or settings.dir):
        spool = RunSpool.open_existing(path)
        if spool is None:
            continue
        result = RunSync(spool.state.run_id)
        report.runs.append(result)
        state = spool.state
        if state.status == "running" and state.pid != os.getpid() and _alive(state.pid):
            result.skipped = f"still running in process {state.pid}, which delivers it itself"
            continue
        _sync_run(settings, spool, result, progress, timeout)
    return report


def _sync_run(
    settings: Settings,
    spool: RunSpool,
    result: RunSync,
    progress: Callable[[str, int, int], None] | None,
    timeout: float,
) -> None:
    from runstream.producers.transport import KafkaTransport

    state = spool.state
    in_flight: deque[int] = deque()  # seqs sent and not yet acknowledged, in order

    def on_delivery(error: object, _message: object) -> None:
        seq = in_flight.popleft()  # acks of one run come back in the order sent
        if error is None:
            result.delivered += 1
        else:
            result.failed += 1
        spool.mark(acked_through=seq)

    transport = KafkaTransport(settings.kafka_bootstrap, linger_ms=5)
    records = spool.read_from(state.acked_through + 1)  # streamed: a spool can be large
    head: tuple[int, bytes] | None = None
    exhausted = False
    total = max(0, state.next_seq - 1 - state.acked_through)  # stale if the process died
    last_seq = state.acked_through
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            while not exhausted:
                record = head or next(records, None)
                if record is None:
                    exhausted = True
                    break
                if not transport.try_produce(state.topic, state.run_id, record[1], on_delivery):
                    head = record
                    break
                head = None
                in_flight.append(record[0])
                last_seq = record[0]
                result.sent += 1
            transport.poll(0.05)
            spool.save_state()
            total = max(total, result.sent)
            if progress is not None:
                progress(state.run_id, result.delivered + result.failed, total)
            if exhausted and not in_flight:
                break
    finally:
        if state.next_seq <= last_seq:  # the process died before it saved its state
            spool.mark(next_seq=last_seq + 1)
        spool.prune()
        spool.save_state(force=True)
        transport.close()


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ProgressBar:
    """A one-line progress bar on a terminal; a line per run otherwise."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last = 0.0

    def __call__(self, run_id: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < 0.1:
            return
        self._last = now
        width = 30
        filled = width * done // max(total, 1)
        line = f"{run_id:<12} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}"
        if self.tty:
            self.stream.write("\r" + line + ("\n" if done >= total else ""))
        elif done >= total:
            self.stream.write(line + "\n")
        self.stream.flush()
