"""How a run ends: :class:`FinishResult` (what happened to its events), the exit code and
status it ends with, and the one line :meth:`Run.finish` logs when something went wrong.

The exit code and status follow the shell's and Python's conventions (:func:`exit_status`);
``producers/hooks.py`` uses them to finish the runs a program leaves open.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runstream.producers.run import Run

logger = logging.getLogger("runstream")


@dataclass(frozen=True)
class FinishResult:
    """What happened to a run's events by the time :meth:`Run.finish` returned.

    Counts are of events numbered by this process for the run (an earlier process's leftovers,
    replayed after a resume, are not counted). Every event is in exactly one of: delivered,
    failed, :attr:`pending` (in the spool, for ``runstream sync``), :attr:`lost`; dropped ones
    were never numbered.
    """

    produced: int
    """Events numbered for the run (sent, spooled or both); dropped ones are not included."""
    delivered: int
    """Acknowledged by Kafka (online runs)."""
    failed: int
    """Refused by Kafka for good (``last_error`` says why); not kept for ``sync`` either."""
    spooled: int
    """Written to the local spool."""
    last_error: str | None = None
    """The last error from Kafka, or from the spool's disk when nothing came from Kafka."""
    offline: bool = False
    dropped: int = 0
    """Events refused for lack of room: the spool was at ``spool_max_mb`` while Kafka was not
    keeping up (or, with the spool unwritable, the memory bound was reached). Only metric,
    heartbeat and system-metric events are dropped; never ``run_started``/``run_finished``."""
    not_spooled: int = 0
    """Of ``produced``: never written to the spool (disk full or unwritable, or the spool at its
    bound while Kafka took them); sent to Kafka from memory."""
    lost: int = 0
    """Of ``not_spooled``: not acknowledged by Kafka when finish() returned. They are in no
    spool, so ``runstream sync`` cannot deliver them; they are lost when this process exits."""
    incomplete: bool = False
    """The worker had not yet spooled every event of the run when finish() returned (it waits
    at most ``max(finish_timeout, 60)`` seconds for that): the counts are a snapshot."""
    refused: int = 0
    """Values, steps and calls the SDK refused or stored in another form (``run.refused``;
    by kind: ``run.refused_by_kind``), each warned about once. They cost those values, never
    an event: they do not make :attr:`ok` false."""

    @property
    def pending(self) -> int:
        """Events kept in the local spool for ``runstream sync``."""
        return self.produced - self.delivered - self.failed - self.lost

    @property
    def ok(self) -> bool:
        """True only when nothing was refused, dropped or lost and every event was delivered
        (offline runs: every event is in the spool, for ``runstream sync``)."""
        if self.failed or self.dropped or self.lost or self.incomplete:
            return False
        return self.offline or self.pending == 0


def report(run: Run, result: FinishResult) -> None:
    """One line that says exactly what happened to the run's events, if anything went wrong."""
    settings = run.settings
    parts = []
    if not result.offline:
        parts.append(f"{result.delivered} of {result.produced} events delivered")
    else:
        parts.append(f"offline: {result.spooled} of {result.produced} events in the spool")
    if result.pending and not result.offline:
        parts.append(
            f"{result.pending} not delivered within {settings.finish_timeout:g}s, kept in the "
            f"spool: deliver them with 'runstream sync {settings.dir}'"
        )
    if result.not_spooled:
        channel = run._channel
        why = channel.spool_error or f"the spool was at spool_max_mb={settings.spool_max_mb:g}"
        parts.append(f"{result.not_spooled} could not be written to the spool ({why})")
    if result.lost:
        parts.append(
            f"{result.lost} of those are neither delivered nor spooled: they are lost when "
            "this process exits"
        )
    if result.failed:
        parts.append(f"{result.failed} refused by Kafka ({result.last_error})")
    if result.dropped:
        kinds = ", ".join(f"{n} {t}" for t, n in sorted(run._channel.dropped_types.items()))
        reasons = "; ".join(run._channel.drop_reasons)
        parts.append(f"{result.dropped} dropped for lack of room ({kinds}; {reasons})")
    if result.refused and not result.ok:
        parts.append(f"{result.refused} values refused or converted (warned above)")
    if result.ok:
        if result.offline:
            logger.info(
                "runstream: run %s is offline: %d events in %s; deliver them with "
                "'runstream sync %s'",
                run.id,
                result.produced,
                settings.dir,
                settings.dir,
            )
        return
    logger.warning("runstream: run %s: %s", run.id, "; ".join(parts))


def exit_status(exc_type: type[BaseException] | None, exc: BaseException | None) -> tuple[int, str]:
    """The (exit code, status) a run ends with when ``exc`` ends the program (None: it ended
    normally). The exit code is what the shell will see:

    - ``SystemExit(code)``: ``None`` is 0, an int is taken as the OS takes it (0-255 on POSIX:
      ``sys.exit(256)`` exits 0, ``sys.exit(-1)`` 255), anything else (a message) is 1;
    - ``KeyboardInterrupt``: 130 (Python dies of SIGINT); any other exception: 1.

    The status follows from the code (:func:`status_for`).
    """
    if exc_type is None:
        return 0, "finished"
    if issubclass(exc_type, KeyboardInterrupt):
        return 128 + signal.SIGINT, "killed"
    if issubclass(exc_type, SystemExit):
        code = process_exit_code(exc.code if isinstance(exc, SystemExit) else None)
        return code, status_for(code)
    return 1, "failed"


def process_exit_code(code: object) -> int:
    """The process exit status Python gives for ``sys.exit(code)``."""
    if code is None:
        return 0
    if not isinstance(code, int):
        return 1  # Python prints the message and exits with 1
    if os.name != "posix":
        return code if -(2**31) <= code < 2**31 else -1
    return code & 0xFF if -(2**63) <= code < 2**63 else 255


def status_for(exit_code: int) -> str:
    """``finished`` for 0; ``killed`` for 128+N where N is a signal (the shell's convention
    for "ended by signal N", also what a SIGTERM handler calling ``sys.exit(143)`` means);
    ``failed`` otherwise."""
    if exit_code == 0:
        return "finished"
    if 128 < exit_code < 128 + signal.NSIG:
        return "killed"
    return "failed"
