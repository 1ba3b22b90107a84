"""The Python read API: ``runstream.Api`` (docs/read.md, "Python API").

::

    import runstream

    api = runstream.Api()  # Settings.load(): RUNSTREAM_CLICKHOUSE_URL, ..._DATABASE
    runs = api.runs("mnist", where='config.lr > 1e-3', order_by="summary.val_loss", limit=20)
    runs.total, runs.to_pandas()
    run = api.run("k3x9a2b1")
    run.history(["loss", "val/loss"]).to_pandas()

Every query goes through :class:`runstream.read.Reader`: read-only, under the read limits, every
value (a project, a run id, a filter's literals, a config key) a bound query parameter.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, overload

from runstream.errors import FilterError, QueryError, ReadArgumentError, RunNotFoundError
from runstream.read.filters import _tokens, compile_filter, compile_order
from runstream.read.reader import Reader
from runstream.read.run import RUN_COLUMNS, Run
from runstream.read.table import Table, has_arrow
from runstream.settings import Settings

# DateTime or DateTime('zone'), maybe Nullable or LowCardinality: sent as UInt32 in Arrow.
_DATETIME = re.compile(r"(?:Nullable\()?DateTime(?:\('([^']+)'\))?\)?")
# ClickHouse's CANNOT_COMPILE_REGEXP: a pattern Python's re reads but RE2 does not.
_BAD_REGEXP = 427


class Api:
    """Read runs, their history and everything else runstream stored.

    ``Api(clickhouse_url=None, *, database=None, settings=None)``: ``settings`` (or
    ``Settings.load()``) with ``clickhouse_url`` and ``database`` overriding theirs. Connects
    lazily, on the first query, as the read user (docs/read.md, "Settings"). Errors:
    :class:`runstream.errors.QueryError` when ClickHouse refuses a query,
    :class:`~runstream.errors.QueryLimitError` when a read limit stops it,
    :class:`~runstream.errors.ClickHouseError` when ClickHouse cannot be reached.
    """

    def __init__(
        self,
        clickhouse_url: str | None = None,
        *,
        database: str | None = None,
        settings: Settings | None = None,
        reader: Reader | None = None,
    ) -> None:
        base = settings or (reader.settings if reader is not None else Settings.load())
        self.settings = base.with_overrides(
            clickhouse_url=clickhouse_url, clickhouse_database=database
        )
        self.reader = reader or Reader(self.settings)

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- tables -------------------------------------------------------------------------------
    def table(self, sql: str, parameters: Mapping[str, Any] | None = None) -> Table:
        """A :class:`Table` of one read query: from ClickHouse's Arrow output, streamed block by
        block, when pyarrow is installed; else from plain rows."""
        if has_arrow():
            import pyarrow as pa  # type: ignore[import-untyped]

            batches = list(self.reader.arrow_stream(sql, parameters))
            if not batches:  # no rows, no Arrow stream: ask for the (empty) table with its schema
                return Table.from_arrow(self.reader.arrow(sql, parameters))
            if isinstance(batches[0], pa.RecordBatch):
                return Table.from_arrow(pa.Table.from_batches(batches))
            return Table.from_arrow(pa.concat_tables(batches))
        result = self.reader.query(sql, parameters)
        return Table.from_rows(result.columns, result.rows)

    def sql(self, query: str, parameters: Mapping[str, Any] | None = None) -> Table:
        """Any read query (docs/sql.md), values as ``{name:Type}`` placeholders bound from
        ``parameters``: ``api.sql("SELECT ... WHERE run_id = {run:String}", {"run": id})``.
        Refused before sending (:class:`~runstream.errors.ReadRefusedError`) when it is not one
        read statement (docs/read.md, "What the read side guarantees").

        ClickHouse's Arrow output sends ``DateTime`` (seconds, as ``toStartOfMinute`` returns)
        as UInt32 (ClickHouse docs, "Arrow: data types matching"): such columns are turned back
        into UTC timestamps (``timestamp[s, tz]``) here, from the result's types (a
        ``DESCRIBE`` of the query, asked only when a UInt32 column came)."""
        table = self.table(query, parameters)
        arrow = table._arrow
        if arrow is None or not any(str(t) == "uint32" for t in arrow.schema.types):
            return table
        import pyarrow as pa

        described = self.reader.query(f"DESCRIBE ({query})", parameters).rows
        columns = list(arrow.columns)
        for i, row in enumerate(described[: len(columns)]):
            match = _DATETIME.fullmatch(str(row[1]))
            if match and str(columns[i].type) == "uint32":
                zone = match.group(1) or "UTC"
                columns[i] = columns[i].cast(pa.int64()).cast(pa.timestamp("s", tz=zone))
        return Table.from_arrow(pa.table(columns, names=arrow.column_names))

    # --- projects and runs ------------------------------------------------------------------
    def projects(self) -> Table:
        """One row per project: ``project``, ``runs`` (count), ``running`` (runs whose status is
        ``running``), ``last_activity`` (newest event of any run, DateTime64 UTC); newest
        activity first."""
        return self.table(
            "SELECT project, count() AS runs, countIf(status = 'running') AS running, "
            "max(last_event_at) AS last_activity FROM runs_current "
            "GROUP BY project ORDER BY last_activity DESC, project"
        )

    def runs(
        self,
        project: str | None = None,
        where: str | None = None,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> Runs:
        """The runs of ``project`` (all projects when None) that match ``where`` (the filter
        language, docs/read.md "Filters"), sorted by ``order_by``, ``limit`` of them from
        ``offset`` on: one query, paged by ClickHouse. A blank ``where`` or ``order_by`` is
        none.

        ``order_by``: a filter name (``"summary.val_loss"``, ``"config.lr"``, ``"status"``,
        ``"started_at"``...) or a list of them, each with ``-`` in front for descending; runs
        without the key come last either way. Default: newest ``started_at`` first. Ties are
        broken by project and run id, so that pages do not overlap. Config and summary values
        sort as numbers, then as strings. ``.total`` of the result counts every matching run,
        whatever ``limit`` and ``offset``. Raises :class:`~runstream.errors.FilterError` for a
        ``where`` or an ``order_by`` name it cannot read (and for a regular expression RE2
        refuses)."""
        _check_runs_arguments(project, where, order_by, limit, offset)
        conditions = ["1"]
        parameters: dict[str, Any] = {}
        if project is not None:
            conditions.append("project = {project:String}")
            parameters["project"] = project
        if where is not None and where.strip():  # a blank filter (an empty search box): all
            sql, bound = compile_filter(where, prefix="w")
            conditions.append(sql)
            parameters.update(bound)
        order, bound = _order_by(order_by)
        parameters.update(bound)
        page = ""
        if limit is not None:
            page = " LIMIT {limit:UInt64}"
            parameters["limit"] = int(limit)
        if offset:
            if limit is None:  # OFFSET alone: ClickHouse wants a LIMIT; take the rest
                page = " LIMIT 18446744073709551615"
            page += " OFFSET {offset:UInt64}"
            parameters["offset"] = int(offset)
        # count() OVER () is evaluated before LIMIT: the total comes with the page.
        query = (
            f"SELECT {', '.join(RUN_COLUMNS)}, count() OVER () AS _total FROM runs_current "
            f"WHERE {' AND '.join(conditions)} ORDER BY {order}{page}"
        )
        try:
            table = self.table(query, parameters)
        except QueryError as exc:
            raise _regexp_error(exc, where) from exc
        if len(table):
            total = int(table.first("_total"))
        elif offset == 0 and limit != 0:
            total = 0
        else:  # an empty page (limit=0, or past the end): count apart
            count = self.reader.query(
                f"SELECT count() FROM runs_current WHERE {' AND '.join(conditions)}",
                {k: v for k, v in parameters.items() if k == "project" or k.startswith("w")},
            )
            total = int(count.rows[0][0])
        return Runs(self, _drop(table, "_total"), total)

    def run(self, run_id: str, project: str | None = None) -> Run:
        """The run ``run_id``. Without ``project``, a ``run_id`` with a ``/`` is first read as
        ``"project/run_id"`` with the project the text before the LAST ``/`` (a project name
        may hold ``/``: ``"team/vision/k3x9"`` is run ``k3x9`` of project ``team/vision``), then
        cut at each earlier ``/`` (project ``team``, run ``vision/k3x9``), and, when there is no
        such run, as a run id of its own. Raises
        :class:`~runstream.errors.RunNotFoundError` (a ``LookupError``) when there is none, and
        :class:`~runstream.errors.ReadArgumentError` when the id is in several projects and no
        ``project`` says which."""
        if not isinstance(run_id, str):
            raise TypeError(f"a run id is a str, not {type(run_id).__name__}")
        records: list[dict[str, Any]] = []
        if project is None and "/" in run_id:
            # "project/run_id", where the project may hold "/" itself: the text before the
            # last one first (run ids rarely hold "/"), then before each earlier one.
            parts = run_id.split("/")
            for cut in range(len(parts) - 1, 0, -1):
                records = self._run_records("/".join(parts[cut:]), "/".join(parts[:cut]))
                if records:
                    break
        if not records:  # not "project/id", or an id that holds a "/" itself
            records = self._run_records(run_id, project)
        if not records:
            raise RunNotFoundError(run_id, project)
        if len(records) > 1:
            projects = sorted(r["project"] for r in records)
            raise ReadArgumentError(
                f"run id {run_id!r} is in several projects ({', '.join(projects)}): "
                f"pass project=, as in api.run({run_id!r}, project={projects[0]!r})"
            )
        return Run(self, records[0])

    def _run_records(self, run_id: str, project: str | None) -> list[dict[str, Any]]:
        parameters: dict[str, Any] = {"run": run_id}
        condition = "run_id = {run:String}"
        if project is not None:
            condition += " AND project = {project:String}"
            parameters["project"] = project
        return self.table(
            f"SELECT {', '.join(RUN_COLUMNS)} FROM runs_current WHERE {condition} LIMIT 2",
            parameters,
        ).to_records()

    def alerts(
        self, project: str | None = None, run_id: str | None = None, limit: int = 100
    ) -> Table:
        """Alerts of ``alerts_current`` (docs/sql.md), newest ``fired_at`` first, at most
        ``limit``: every column of the view."""
        if limit < 0:
            raise ReadArgumentError(f"limit must be 0 or more, not {limit}")
        conditions = ["1"]
        parameters: dict[str, Any] = {"limit": limit}
        if project is not None:
            conditions.append("project = {project:String}")
            parameters["project"] = project
        if run_id is not None:
            conditions.append("run_id = {run:String}")
            parameters["run"] = run_id
        return self.table(
            f"SELECT * FROM alerts_current WHERE {' AND '.join(conditions)} "
            "ORDER BY fired_at DESC, alert_id LIMIT {limit:UInt64}",
            parameters,
        )


class Runs(Sequence[Run]):
    """A page of runs: a sequence of :class:`Run` (built when first indexed), ``.total`` (every
    run that matched, whatever ``limit`` and ``offset``), and the page as a frame:
    ``to_pandas()``, ``to_polars()``, ``to_arrow()``, ``to_records()``, one row per run with the
    columns of :data:`runstream.read.run.RUN_COLUMNS` (``config`` and ``summary`` as the JSON
    text runstream stores, so that a frame of 100,000 runs costs no JSON parsing; read them
    with ``json.loads``, or ``run.config`` / ``run.summary`` which parse them exactly)."""

    def __init__(self, api: Api, table: Table, total: int) -> None:
        self._api = api
        self.table = table
        self.total = total
        self._runs: list[Run] | None = None

    def _all(self) -> list[Run]:
        if self._runs is None:
            self._runs = [Run(self._api, r) for r in self.table.to_records()]
        return self._runs

    def __len__(self) -> int:
        return len(self.table)

    @overload
    def __getitem__(self, index: int) -> Run: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Run]: ...
    def __getitem__(self, index: int | slice) -> Run | Sequence[Run]:
        return self._all()[index]

    def __iter__(self) -> Iterator[Run]:
        return iter(self._all())

    def __repr__(self) -> str:
        return f"Runs({len(self)} of {self.total})"

    @property
    def columns(self) -> list[str]:
        return self.table.columns

    def to_records(self) -> list[dict[str, Any]]:
        return self.table.to_records()

    def to_arrow(self) -> Any:
        return self.table.to_arrow()

    def to_pandas(self) -> Any:
        return self.table.to_pandas()

    def to_polars(self) -> Any:
        return self.table.to_polars()


def _order_by(order_by: str | Sequence[str] | None) -> tuple[str, dict[str, Any]]:
    """``ORDER BY`` text (keys bound as ``o<i>_<j>`` parameters) for the names of ``order_by``."""
    names = [order_by] if isinstance(order_by, str) else list(order_by or [])
    names = [n for n in names if not isinstance(n, str) or n.strip()] or ["-started_at"]
    parts: list[str] = []
    parameters: dict[str, Any] = {}
    for i, entry in enumerate(names):
        if not isinstance(entry, str):
            raise TypeError(f"order_by takes names (str), not {type(entry).__name__}")
        stripped = entry.strip()
        descending = stripped.startswith("-")
        name = stripped[1:] if descending or stripped.startswith("+") else stripped
        try:
            expressions, bound = compile_order(name, prefix=f"o{i}_")
        except FilterError as exc:
            shift = len(entry) - len(entry.lstrip()) + len(stripped) - len(name)
            raise FilterError(f"order_by: {exc.reason}", entry, exc.position + shift) from None
        direction = " DESC" if descending else ""
        parts += [f"{e}{direction} NULLS LAST" for e in expressions]
        parameters.update(bound)
    return ", ".join([*parts, "project", "run_id"]), parameters


def _drop(table: Table, column: str) -> Table:
    if column not in table.columns:
        return table
    if table._arrow is not None:
        return Table.from_arrow(table._arrow.drop_columns([column]))
    index = table.columns.index(column)
    rows = [tuple(v for j, v in enumerate(r) if j != index) for r in table._rows or []]
    return Table.from_rows([c for c in table.columns if c != column], rows)


def _regexp_error(exc: QueryError, where: str | None) -> Exception:
    """A :class:`FilterError` pointing at the first ``=~``/``!~`` of ``where`` for ClickHouse's
    "cannot compile regexp" (a pattern only RE2 refuses, such as a lookaround); else ``exc``."""
    if exc.code != _BAD_REGEXP or where is None:
        return exc
    position = next((t.pos for t in _tokens(where) if t.text in ("=~", "!~")), 0)
    return FilterError(
        f"the regular expression is not RE2 syntax (https://github.com/google/re2/wiki/Syntax; "
        f"no lookarounds or backreferences): {exc}",
        where,
        position,
    )


def _check_runs_arguments(project: Any, where: Any, order_by: Any, limit: Any, offset: Any) -> None:
    """:class:`ReadArgumentError` saying what to pass for an argument of ``Api.runs`` of the
    wrong type or range (before a query is built, so never a raw TypeError)."""

    def whole(value: Any) -> bool:
        return (
            isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= 0
        )

    if project is not None and not isinstance(project, str):
        raise ReadArgumentError(f"project is a project name (str) or None, not {project!r}")
    if limit is not None and not whole(limit):
        raise ReadArgumentError(
            f"limit is a whole number, 0 or more (or None for all runs), not {limit!r}"
        )
    if not whole(offset):
        raise ReadArgumentError(f"offset is a whole number, 0 or more, not {offset!r}")
    if where is not None and not isinstance(where, str):
        raise ReadArgumentError(
            f"where is a filter expression (str), as in where='config.lr > 1e-3', not {where!r}"
        )
    names = [order_by] if isinstance(order_by, str) else order_by
    if names is not None and (
        not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names)
    ):
        raise ReadArgumentError(
            "order_by is a name (str) or a list of names, each with '-' in front for "
            f"descending, as in order_by=['-summary.acc', 'started_at'], not {order_by!r}"
        )
