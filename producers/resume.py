"""Where a resumed run stands: the last sequence number and step it reached.

Both sources are read and the furthest wins: ClickHouse (what was delivered) when it answers,
and the local spool (what this machine produced, delivered or not).

When neither can tell (ClickHouse unreachable or failing, and no local spool of the run), the
position is unknown: a session numbered from 0 would reuse the seqs of an earlier session, and
downstream every such event is taken for a re-send and discarded. Such a session is numbered
from :func:`unknown_position_base` instead, far above any earlier session's seqs.

Not seen by either source: events an earlier session produced to Kafka that the sink has not
stored in ClickHouse yet (the sink behind or stopped) on another machine. The window is the
sink's lag; a run resumed inside it reuses those seqs, and its colliding events are discarded
downstream as re-sends. Kafka itself is not consulted: the events topic is keyed by run id but
holds every run's events, and finding a run's last seq there means reading its partition.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass

from runstream.errors import RunstreamError
from runstream.producers.spool import SpoolError, read_state, spool_path
from runstream.settings import Settings

logger = logging.getLogger("runstream")


SEQ_BASE_SHIFT = 20
"""A session whose position is unknown starts at ``unix_ms << 20``: about 2**61 today, below
2**63 (Int64, ClickHouse's UInt64 either way) until the year 2248; a session would need 2**20
events per millisecond of wall time to reach the base of one started later."""


def unknown_position_base(now: float | None = None) -> int:
    """The first seq of a session whose run's position is unknown: ``unix_ms << 20``.

    Above every seq a session numbered from 0 or from an earlier such base can have reached,
    as long as the clocks of the machines involved roughly agree and no session produced more
    than 2**20 events per millisecond since its start.
    """
    ms = int((time.time() if now is None else now) * 1000)
    return ms << SEQ_BASE_SHIFT


@dataclass(frozen=True)
class RunPosition:
    """``found_in``: the sources that know the run (``spool``, ``clickhouse``); ``unknown``:
    why its position could not be known (ClickHouse unreachable or failing, and no local
    spool), None when it was."""

    next_seq: int
    last_step: int
    found_in: tuple[str, ...]
    unknown: str | None = None

    @property
    def exists(self) -> bool:
        return bool(self.found_in)


def find_position(settings: Settings, run_id: str, timeout: float = 3.0) -> RunPosition:
    next_seq, last_step, sources = 0, -1, []
    # The run is (project, run id): a run of the same id in another project is another run.
    path = spool_path(settings.dir, settings.project, run_id)
    try:
        state = read_state(path)
    except SpoolError as exc:
        from runstream.producers.spool_scan import rebuild_state
        from runstream.producers.worker import new_spool_state

        # A damaged state must not lose the run: its segments say where it stood (the run's
        # spool, opened next, warns once about the damage).
        state, _ = rebuild_state(
            path, new_spool_state(run_id, settings.project, settings, "online")
        )
        logger.info("runstream: run %s: %s; position rebuilt from the segments", run_id, exc)
        if state.next_seq == 0:
            state = None
    if state is not None:
        next_seq, last_step = state.next_seq, state.last_step
        sources.append("spool")
    remote, error = _from_clickhouse(settings, run_id, timeout)
    if remote is not None:
        next_seq = max(next_seq, remote[0])
        last_step = max(last_step, remote[1])
        sources.append("clickhouse")
    unknown = None
    if error is not None and not sources:
        unknown = (
            f"ClickHouse at {settings.clickhouse_url} could not be asked ({error}) and the "
            f"local spool {settings.dir} has no run {run_id} of project {settings.project!r}"
        )
    return RunPosition(next_seq, last_step, tuple(sources), unknown)


def _from_clickhouse(
    settings: Settings, run_id: str, timeout: float
) -> tuple[tuple[int, int] | None, str | None]:
    """(next seq, last step) from ClickHouse, None if it has no event of the run (of
    ``settings.project``); and the error when ClickHouse could not be asked."""
    # Plain HTTP on purpose: the SDK does not depend on a ClickHouse driver.
    db = settings.clickhouse_database
    sql = (
        f"SELECT toInt64(max(seq)) + 1, "
        # A step of histograms only (histogram_logged) is a step of the run too.
        f"toInt64(maxIf(JSONExtractInt(body, 'step'), "
        f"type IN ('metrics_logged', 'histogram_logged'))), count() "
        f"FROM `{db}`.events WHERE project = {{project:String}} AND run_id = {{run:String}} "
        f"FORMAT JSONCompact"
    )
    query = urllib.parse.urlencode(
        {"query": sql, "param_project": settings.project, "param_run": run_id}
    )
    try:
        with urllib.request.urlopen(f"{settings.clickhouse_url}/?{query}", timeout=timeout) as r:
            rows = json.loads(r.read())["data"]
        next_seq, last_step, count = (int(v) for v in rows[0])
    except Exception as exc:  # unreachable, no such table, an odd answer: the spool has to do
        logger.info("runstream: ClickHouse not consulted for resuming %s: %s", run_id, exc)
        return None, f"{type(exc).__name__}: {exc}"
    return ((next_seq, last_step) if count else None), None


class ResumeError(RunstreamError):
    """A run could not be resumed (or must not be) as asked."""


def resolve_position(
    settings: Settings, run_id: str, *, id_given: bool
) -> tuple[int, int, bool] | None:
    """Where run ``run_id`` stands when ``settings.resume`` asks to continue it: ``(next seq,
    last step, resumed)`` (``resumed`` False: a new run numbered from a seq base, see
    :func:`unknown_position_base`), or None for a new run numbered from 0.

    Raises :class:`ResumeError` when ``resume`` is set without an id (``id_given``), when
    ``resume="never"`` and the run exists, when ``resume="must"`` and it does not or where it
    stands cannot be known.
    """
    resume = settings.resume
    if resume is None:
        return None
    if not id_given:
        raise ResumeError(f"resume={resume!r} needs the id of the run: pass id=...")
    position = find_position(settings, run_id)
    if position.unknown is not None:
        return _unknown_position(run_id, resume, position.unknown)
    if resume == "never" and position.exists:
        raise ResumeError(
            f"run {run_id} of project {settings.project!r} already exists "
            f"({', '.join(position.found_in)}) and resume='never'; choose another id or use "
            "resume='allow'"
        )
    if resume == "must" and not position.exists:
        raise ResumeError(
            f"run {run_id} of project {settings.project!r} was not found in the local spool "
            f"({settings.dir}) nor in ClickHouse ({settings.clickhouse_url}); resume='must' "
            "needs an existing run"
        )
    return (position.next_seq, position.last_step, True) if position.exists else None


def _unknown_position(run_id: str, resume: str, why: str) -> tuple[int, int, bool]:
    """Where the run stands is unknown: refuse (``must``), or number this session from a
    time-based seq base far above any earlier session's, so that none of its events is
    taken downstream for a re-send of an earlier one."""
    if resume == "must":
        raise ResumeError(
            f"cannot resume run {run_id}: {why}, so where it stands is unknown. Make "
            "ClickHouse reachable (RUNSTREAM_CLICKHOUSE_URL), or resume where the run's "
            "spool is; resume='allow' numbers this session after any earlier one instead"
        )
    base = unknown_position_base()
    logger.warning(
        "runstream: run %s: %s; %s, its events are numbered from seq %d on (a base above "
        "any earlier session's, so that none is taken for a re-send of one)%s",
        run_id,
        why,
        "it could not be checked that the run is new"
        if resume == "never"
        else "if the run exists, where it stands is unknown",
        base,
        "" if resume == "never" else " and its step counter starts at 0",
    )
    return base, -1, resume != "never"
