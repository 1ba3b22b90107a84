"""Where a resumed run stands: the last sequence number and step it reached.

Both sources are read and the furthest wins: ClickHouse (what was delivered) when it answers,
and the local spool (what this machine produced, delivered or not).
"""

from __future__ import annotations

import json
import logging
import urllib.parse
import urllib.request
from dataclasses import dataclass

from runstream.producers.spool import SpoolError, read_state, runs_dir
from runstream.settings import Settings

logger = logging.getLogger("runstream")


@dataclass(frozen=True)
class RunPosition:
    next_seq: int
    last_step: int
    found_in: tuple[str, ...]

    @property
    def exists(self) -> bool:
        return bool(self.found_in)


def find_position(settings: Settings, run_id: str, timeout: float = 3.0) -> RunPosition:
    next_seq, last_step, sources = 0, -1, []
    path = runs_dir(settings.dir) / run_id
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
    remote = _from_clickhouse(settings, run_id, timeout)
    if remote is not None:
        next_seq = max(next_seq, remote[0])
        last_step = max(last_step, remote[1])
        sources.append("clickhouse")
    return RunPosition(next_seq, last_step, tuple(sources))


def _from_clickhouse(settings: Settings, run_id: str, timeout: float) -> tuple[int, int] | None:
    # Plain HTTP on purpose: the SDK does not depend on a ClickHouse driver.
    db = settings.clickhouse_database
    sql = (
        f"SELECT toInt64(max(seq)) + 1, "
        f"toInt64(maxIf(JSONExtractInt(body, 'step'), type = 'metrics_logged')), count() "
        f"FROM `{db}`.events WHERE run_id = {{run:String}} FORMAT JSONCompact"
    )
    query = urllib.parse.urlencode({"query": sql, "param_run": run_id})
    try:
        with urllib.request.urlopen(f"{settings.clickhouse_url}/?{query}", timeout=timeout) as r:
            rows = json.loads(r.read())["data"]
    except Exception as exc:  # unreachable, no such table: the spool has to do
        logger.info("runstream: ClickHouse not consulted for resuming %s: %s", run_id, exc)
        return None
    next_seq, last_step, count = (int(v) for v in rows[0])
    return (next_seq, last_step) if count else None
