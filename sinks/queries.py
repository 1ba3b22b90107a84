"""Python access to the views of the ``runstream`` database (docs/sql.md).

Each helper takes a :class:`runstream.read.Reader` (or, as before, a clickhouse-connect client,
which is then used through a Reader: read-only, under the read limits) and the database name, and
sends user values only as server-side query parameters. For new code prefer ``runstream.Api``
(docs/read.md, "Python API"). The database name is
an identifier, which a parametrized view call cannot take as a parameter (``{db:Identifier}.v(...)``
is a syntax error in ClickHouse 26.9), so it is checked against the identifier pattern of
``Settings.clickhouse_database`` and quoted instead.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from runstream.errors import ClickHouseError
from runstream.read.reader import Reader

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_BUCKETS = 1_000_000


@dataclass(frozen=True)
class Point:
    """One logged value of a metric."""

    step: int
    value: float
    ts: datetime


@dataclass(frozen=True)
class Bucket:
    """One bucket of a downsampled metric: a range of steps and what happened inside it.

    ``min``/``max`` leave NaN points out and are None when every point of the bucket is NaN;
    ``first``/``last`` are the values at the bucket's first and last step, whatever they are.
    """

    bucket: int
    first_step: int
    last_step: int
    count: int
    first: float
    last: float
    min: float | None
    max: float | None
    step_of_min: int | None
    step_of_max: int | None
    nan_count: int


def _db(database: str) -> str:
    if not _IDENTIFIER.match(database):
        raise ClickHouseError(f"not a valid database name: {database!r}")
    return f"`{database}`"


_READERS: weakref.WeakKeyDictionary[Any, Reader] = weakref.WeakKeyDictionary()


def _reader(client: Any) -> Reader:
    """``client`` itself when it is a Reader, else the (cached) Reader around the client."""
    if isinstance(client, Reader):
        return client
    try:
        reader = _READERS.get(client)
    except TypeError:  # not weak-referenceable: a Reader per call
        return Reader(client=client)
    if reader is None:
        reader = _READERS[client] = Reader(client=client)
    return reader


def _query(client: Any, sql: str, parameters: dict[str, Any]) -> Any:
    return _reader(client).query(sql, parameters)


def metric_history(
    client: Any,
    database: str,
    run_id: str,
    name: str,
    *,
    project: str | None = None,
    min_step: int | None = None,
    max_step: int | None = None,
) -> list[Point]:
    """Every point of one metric of one run, in step order, optionally within a step range.

    ``project`` narrows the run when the same run id exists in several projects.
    """
    # Plain SQL rather than the metric_history view: the optional filters belong in the same
    # WHERE clause as the run, so ClickHouse reads only the matching granules.
    conditions = ["run_id = {run:String}", "name = {name:String}"]
    parameters: dict[str, Any] = {"run": run_id, "name": name}
    if project is not None:
        conditions.append("project = {project:String}")
        parameters["project"] = project
    if min_step is not None:
        conditions.append("step >= {min_step:Int64}")
        parameters["min_step"] = min_step
    if max_step is not None:
        conditions.append("step <= {max_step:Int64}")
        parameters["max_step"] = max_step
    result = _query(
        client,
        f"SELECT step, value, ts FROM {_db(database)}.metrics "
        f"WHERE {' AND '.join(conditions)} ORDER BY step, seq",
        parameters,
    )
    return [Point(int(step), float(value), ts) for step, value, ts in result.rows]


def downsample(
    client: Any, database: str, run_id: str, name: str, buckets: int = 1000
) -> list[Bucket]:
    """One metric of one run cut into at most ``buckets`` equal step ranges, for a chart.

    Each bucket keeps the exact min and max of its points (and their steps), so a spike in ten
    million points is still drawn; empty step ranges give no bucket.
    """
    if not 1 <= buckets <= MAX_BUCKETS:
        raise ValueError(f"buckets must be between 1 and {MAX_BUCKETS}, not {buckets}")
    result = _query(
        client,
        f"SELECT bucket, first_step, last_step, count, first, last, min, max, step_of_min, "
        f"step_of_max, nan_count FROM {_db(database)}.downsample("
        "run = {run:String}, name = {name:String}, buckets = {buckets:UInt32})",
        {"run": run_id, "name": name, "buckets": buckets},
    )
    return [Bucket(*row) for row in result.rows]


def latest_runs(client: Any, database: str, project: str, limit: int = 50) -> list[dict[str, Any]]:
    """The project's most recently started runs, newest first, one dict per run: its state
    (``status``, ``config`` as a JSON string, ``tags``, ...) and its metric summaries as dicts
    ``last``, ``min``, ``max``, ``mean``, ``points`` keyed by metric name."""
    result = _query(
        client,
        f"SELECT * FROM {_db(database)}.latest_runs WHERE project = {{project:String}} "
        "ORDER BY started_at DESC, run_id LIMIT {limit:UInt32}",
        {"project": project, "limit": limit},
    )
    return list(result.records())


def best_runs(
    client: Any, database: str, project: str, metric: str, goal: Literal["min", "max"] = "min"
) -> list[dict[str, Any]]:
    """The best run of each group of ``project`` by ``metric``: lowest (``goal="min"``) or
    highest (``"max"``) value reached, with the step it was reached at, one dict per group."""
    if goal not in ("min", "max"):
        raise ValueError(f"goal must be 'min' or 'max', not {goal!r}")
    result = _query(
        client,
        f"SELECT * FROM {_db(database)}.best_runs("
        "project = {project:String}, metric = {metric:String}, goal = {goal:String}) "
        "ORDER BY `group`",
        {"project": project, "metric": metric, "goal": goal},
    )
    return list(result.records())
