"""Stored run rows: ``run_snapshots``, which ``runs_current`` reads (migration 0014).

Each run's row (status, timing, config, summary, ...) is computed by the view
``runs_computed`` from the tables the events fill, and stored in ``run_snapshots`` so that
readers pay a scan of one row per run instead of building every config and summary. The sink
calls :func:`refresh` for the runs of the batches it wrote before it commits their offsets
(:class:`PendingSnapshots`), which keeps every stored row as new as the events in ClickHouse.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

# Run ids per statement: the ids travel as one bound Array(String) parameter in the request.
_IDS_PER_STATEMENT = 10_000
# On a cluster, runs_computed joins Distributed tables with Distributed tables; every table is
# sharded by run id, so each shard answers with its own (as the migrations' backfills do).
# Harmless on one server.
_SETTINGS = {"distributed_product_mode": "local"}

_REFRESH = (
    "INSERT INTO `{database}`.run_snapshots "
    "SELECT *, now64(6) AS refreshed_at FROM `{database}`.runs_computed "
    "WHERE project = {{project:String}} AND run_id IN {{run_ids:Array(String)}}"
)
_REFRESH_ALL = (
    "INSERT INTO `{database}`.run_snapshots "
    "SELECT *, now64(6) AS refreshed_at FROM `{database}`.runs_computed"
)


def refresh(client: Any, database: str, runs: Iterable[tuple[str, str]] | None = None) -> int:
    """Store the current row of each run in ``runs`` ((project, run_id) pairs; ``None``: every
    run in the database) in ``run_snapshots``; returns how many runs were asked for (``-1`` for
    every run).

    Safe to repeat: a later row replaces an earlier one (``refreshed_at``). A run with no events
    gets no row. Raises what clickhouse-connect raises when ClickHouse fails (the sink retries).
    """
    if runs is None:
        client.command(_REFRESH_ALL.format(database=database), settings=_SETTINGS)
        return -1
    by_project: dict[str, list[str]] = {}
    for project, run_id in set(runs):
        by_project.setdefault(project, []).append(run_id)
    sql = _REFRESH.format(database=database)
    for project, run_ids in sorted(by_project.items()):
        run_ids.sort()
        for first in range(0, len(run_ids), _IDS_PER_STATEMENT):
            chunk = run_ids[first : first + _IDS_PER_STATEMENT]
            client.command(
                sql, parameters={"project": project, "run_ids": chunk}, settings=_SETTINGS
            )
    return sum(len(ids) for ids in by_project.values())


def has_snapshots(client: Any, database: str) -> bool:
    """Whether ``database`` has ``run_snapshots`` (migration 0014 applied)."""
    found = client.query(
        "SELECT count() FROM system.tables WHERE database = {d:String} AND name = 'run_snapshots'",
        parameters={"d": database},
    )
    return bool(found.result_rows[0][0])


class PendingSnapshots:
    """Runs written by the sink whose stored rows are not refreshed yet, and the offsets that
    wait for that refresh to be committed.

    Refreshing costs a query per call (about 0.15 s of ClickHouse's time, mostly the analysis
    of ``runs_computed``, whatever the number of runs), so batches are gathered and refreshed
    together at most every ``interval`` seconds; their offsets are committed only after it
    (a sink stopped before reads them again and refreshes then).
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.runs: set[tuple[str, str]] = set()
        self.offsets: dict[tuple[str, int], int] = {}
        """Next offset to commit per (topic, partition)."""
        self._last = time.monotonic()

    def add(self, runs: Iterable[tuple[str, str]], offsets: dict[tuple[str, int], int]) -> None:
        self.runs.update(runs)
        for key, offset in offsets.items():
            self.offsets[key] = max(offset, self.offsets.get(key, -1))

    def due(self) -> bool:
        """Something waits and the last refresh is ``interval`` seconds old."""
        return bool(self.offsets) and time.monotonic() - self._last >= self.interval

    def done(self) -> None:
        """The runs were refreshed and the offsets committed."""
        self.runs.clear()
        self.offsets.clear()
        self._last = time.monotonic()

    def clear(self) -> None:
        """Forget everything (the partitions moved: their new owner reads it all again)."""
        self.runs.clear()
        self.offsets.clear()
