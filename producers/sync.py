"""``runstream sync [DIR]``: deliver what runs left in their spools.

Offline runs, runs whose process died, runs whose finish() timed out: each left records after
``acked_through`` in its spool. They are sent again byte for byte (same event ids, same sequence
numbers), in order, and ``acked_through`` advances as Kafka acknowledges them, so syncing twice,
or syncing after a partial sync, sends nothing twice.

Each run is synced on its own: a damaged spool file (any damage: a truncated or garbage
``state.json``, a corrupt or torn record, a missing or unreadable segment) is reported with its
file and byte offset or seq range, everything intact is still delivered, and no run's damage
stops another run's sync. ``delivered`` counts only records read from the spool, sent, and
acknowledged by Kafka.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from runstream.producers.delivery import is_purge
from runstream.producers.spool import (
    STATE_FILE,
    RunSpool,
    SpoolError,
    SpoolState,
    find_runs,
    owner_alive,
)
from runstream.producers.spool_scan import Damage, rebuild_state
from runstream.settings import Settings

_KNOWN_FILE = ("seg-", f".{STATE_FILE}.")


@dataclass
class RunSync:
    """What sync did for one run.

    ``sent``: records read from the spool and handed to Kafka; ``delivered``: of those,
    acknowledged by Kafka; ``failed``: refused by Kafka for good; ``undelivered``: not
    acknowledged within the timeout (still in the spool, for the next sync); ``damages``:
    every damaged place found, and every seq range that should be in the spool and is not;
    ``skipped``: why the run was not synced at all (its owning process is alive on this host:
    not delivered, so not ``ok``); ``notes``: what else to know (a rebuilt state, stray files),
    not failures.
    """

    run_id: str
    project: str = ""  # a run is (project, run id): two runs of one id are apart in the spool
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    undelivered: int = 0
    skipped: str = ""
    damages: list[Damage] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Everything the spool held was delivered and nothing was damaged."""
        return not (self.failed or self.undelivered or self.damages or self.error or self.skipped)


@dataclass
class SyncReport:
    runs: list[RunSync] = field(default_factory=list)
    strays: list[Path] = field(default_factory=list)
    """Entries of the runs directory that are not run directories (files; directories with
    neither ``state.json`` nor segments): listed, left alone, never written into."""

    @property
    def delivered(self) -> int:
        return sum(r.delivered for r in self.runs)

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.runs)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.runs)


def sync(
    settings: Settings,
    root: Path | None = None,
    *,
    progress: Callable[[str, int, int], None] | None = None,
    timeout: float = 300.0,
    force: bool = False,
) -> SyncReport:
    """Deliver every spooled, unacknowledged event under ``root`` (default: settings.dir).

    Never raises for what it finds on disk: damage is reported in the :class:`SyncReport`.
    ``timeout``: seconds per run to wait for Kafka's acknowledgements. A run whose owning
    process is alive on this host (same host, pid and process start time: ``owner_alive``) is
    skipped, as that process delivers it, unless ``force``.
    """
    report = SyncReport()
    try:
        paths, report.strays = find_runs(root or settings.dir)
    except OSError as exc:
        broken = RunSync(run_id="?", error=f"cannot list {root or settings.dir}: {exc}")
        report.runs.append(broken)
        return report
    for path in paths:
        result = RunSync(path.name)
        report.runs.append(result)
        try:
            _sync_path(settings, path, result, progress, timeout, force=force)
        except Exception as exc:  # one run's trouble never stops the others
            result.error = f"{type(exc).__name__}: {exc}"
    return report


def _sync_path(
    settings: Settings,
    path: Path,
    result: RunSync,
    progress: Callable[[str, int, int], None] | None,
    timeout: float,
    *,
    force: bool = False,
) -> None:
    from runstream.schemas.topics import Topics

    state: SpoolState | None
    rebuilt = False
    state_file = path / STATE_FILE
    try:
        from runstream.producers.spool import read_state

        state = read_state(path)
        if state is None:
            result.damages.append(Damage(path.name, str(state_file), None, "missing"))
    except SpoolError as exc:
        state = None
        result.damages.append(Damage(path.name, str(state_file), None, str(exc)))
    if state is None:
        defaults = SpoolState(
            run_id=path.name,
            project="",
            topic=Topics(settings.topic_prefix).events,
            kafka_bootstrap=settings.kafka_bootstrap,
            status="unknown",
        )
        state, _ = rebuild_state(path, defaults)  # its damage is found again below
        rebuilt = True
        result.notes.append(
            f"state rebuilt from the segments (next seq {state.next_seq}); sent to topic "
            f"{state.topic}; records of the first segment may be sent again (recognised "
            "downstream by run and seq)"
        )
    result.run_id, result.project = state.run_id, state.project
    for entry in _strays(path):
        result.notes.append(f"stray file {entry} ignored")
    if not force and state.status == "running" and state.pid != os.getpid() and owner_alive(state):
        result.skipped = (
            f"still running in process {state.pid} on this host, which delivers it itself "
            "(--force syncs it anyway)"
        )
        return
    spool = RunSpool(path, state, saved=not rebuilt)  # on a full disk, nothing to write
    _sync_run(settings, spool, result, progress, timeout)


def _strays(path: Path) -> list[str]:
    try:
        names = [p.name for p in path.iterdir()]
    except OSError:
        return []
    return sorted(
        n
        for n in names
        if n != STATE_FILE
        and not (n.startswith("seg-") and n.endswith(".log") and n[4:-4].isdigit())
        and not n.startswith(_KNOWN_FILE[1])
    )


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
    stopped = False  # a purge (our timeout) ends the acknowledged prefix

    def on_delivery(error: Any, _message: Any) -> None:
        nonlocal stopped
        seq = in_flight.popleft()  # acks of one run come back in the order sent
        if error is None:
            result.delivered += 1
        elif is_purge(error):
            stopped = True
            return
        else:
            result.failed += 1
        if not stopped:
            spool.mark(acked_through=seq)

    expected = start = state.acked_through + 1
    records = spool.read_from(expected, result.damages)  # streamed: a spool can be large
    transport = KafkaTransport(settings.kafka_bootstrap, linger_ms=5)
    head: tuple[int, bytes] | None = None
    exhausted = False
    total = max(0, state.next_seq - expected)
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
                if record[0] > expected:
                    _missing(result, spool, start, expected, record[0] - 1)
                expected = record[0] + 1
                in_flight.append(record[0])
                last_seq = record[0]
                result.sent += 1
            transport.poll(0.05)
            _save(spool, result)
            total = max(total, result.sent)
            if progress is not None and total:
                progress(state.run_id, result.delivered + result.failed, total)
            if exhausted and not in_flight:
                break
    finally:
        if exhausted and expected < state.next_seq:
            _missing(result, spool, start, expected, state.next_seq - 1)
        if state.next_seq <= last_seq:  # the process died before it saved its state
            spool.mark(next_seq=last_seq + 1)
        transport.close()  # purges what is unacknowledged: it stays for the next sync
        result.undelivered = result.sent - result.delivered - result.failed
        if not exhausted:
            result.undelivered += max(0, state.next_seq - expected)
        elif result.damages and result.undelivered == 0 and not stopped:
            # Everything readable was delivered and the rest is reported above: write the
            # damaged records off, so that the next sync does not report them again.
            spool.mark(acked_through=max(state.acked_through, state.next_seq - 1))
            result.notes.append(
                "the damaged records were reported here and written off: the next sync will "
                "not report them again"
            )
        spool.prune()
        _save(spool, result)


def _missing(result: RunSync, spool: RunSpool, start: int, first: int, last: int) -> None:
    state = spool.state
    never_written = any(a <= first and last <= b for a, b in state.not_spooled)
    if never_written:
        what = (
            "never written to the spool (its disk was full or unwritable): the run's process "
            "sent them from memory; whatever it had not delivered when it ended is lost"
        )
    elif first == start:
        what = (
            "not in the spool (the first segment is missing or damaged; or Kafka acknowledged "
            "them and the run's process could not save its state afterwards, on a full disk)"
        )
    else:
        what = "not in the spool (a segment is missing, or its records are damaged)"
    seqs = f"seq {first}" if first == last else f"seqs {first}-{last} ({last - first + 1} events)"
    # The damaged place that cost these seqs was reported by the reader, right where they are
    # missing: one damage, not two (the place says where, the seqs say what was lost).
    for index in range(len(result.damages) - 1, -1, -1):
        place = result.damages[index]
        if (
            place.file != str(spool.path)
            and place.after_seq == first - 1
            and place.before_seq in (None, last + 1)
        ):
            result.damages[index] = replace(
                place, what=f"{place.what}; {seqs} lost with it", before_seq=place.before_seq
            )
            return
    result.damages.append(
        Damage(state.run_id, str(spool.path), None, f"{seqs} {what}", first - 1, last + 1)
    )


def _save(spool: RunSpool, result: RunSync, force: bool = False) -> None:
    try:
        spool.save_state(force)
    except OSError as exc:
        if result.error is None:
            result.error = f"cannot save {spool.path / STATE_FILE}: {exc}"


def render(report: SyncReport, root: Path, stream: TextIO | None = None) -> None:
    """Print the report: one line per run (delivered, failed, undelivered, damaged, what was
    skipped), then every damaged place and note, then the stray entries."""
    out = stream or sys.stdout
    if not report.runs and not report.strays:
        out.write(f"no runs to sync in {root}\n")
        return
    header = ("run", "sent", "delivered", "failed", "undelivered", "damaged", "result")
    ids = [r.run_id for r in report.runs]
    # Runs of one id in two projects are two runs: their lines say which is which.
    names = {
        id(r): f"{r.run_id} ({r.project})" if ids.count(r.run_id) > 1 and r.project else r.run_id
        for r in report.runs
    }
    rows = [
        (
            names[id(r)],
            str(r.sent),
            str(r.delivered),
            str(r.failed),
            str(r.undelivered),
            str(len(r.damages)),
            _outcome(r),
        )
        for r in report.runs
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [
            c.ljust(w) if i in (0, 6) else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.write("  ".join(cells).rstrip() + "\n")
    for r in report.runs:
        for damage in r.damages:
            out.write(f"{names[id(r)]}: damaged: {damage}\n")
        for note in r.notes:
            out.write(f"{names[id(r)]}: note: {note}\n")
        if r.error:
            out.write(f"{names[id(r)]}: error: {r.error}\n")
    for stray in report.strays:
        out.write(f"stray entry ignored (not a run directory): {stray}\n")


def _outcome(r: RunSync) -> str:
    if r.skipped:
        return f"skipped: {r.skipped}"
    if r.error:
        return "error (see below)"
    if r.sent == 0 and not r.damages:
        return "nothing to deliver"
    if r.ok:
        return f"{r.delivered} of {r.sent} events delivered"
    problems = []
    if r.failed:
        problems.append(f"{r.failed} refused by Kafka")
    if r.undelivered:
        problems.append(f"{r.undelivered} not delivered (kept for the next sync)")
    if r.damages:
        problems.append("damaged spool (see below)")
    return f"{r.delivered} of {r.sent} events delivered; " + ", ".join(problems)


class ProgressBar:
    """A one-line progress bar on a terminal; a line per run otherwise.

    On a terminal the bar is redrawn in place (``\r``), so its line stays open until the run
    is done; :meth:`close` ends it, so that what is printed next (the table, on stdout, often
    the same terminal) starts on a line of its own.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last = 0.0
        self._open = False  # a bar line was drawn and not ended

    def close(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False

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
            self._open = done < total
        elif done >= total:
            self.stream.write(line + "\n")
        self.stream.flush()
