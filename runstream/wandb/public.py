"""``wandb.Api()``: the part of wandb's public API that analysis notebooks use, over runstream.

``import runstream.wandb as wandb; api = wandb.Api()`` then ``api.runs("entity/project",
filters={...}, order="-summary_metrics.val_loss")``, ``api.run("entity/project/run_id")``,
``run.history(...)``, ``run.scan_history(...)``, ``run.summary``, ``run.config``: the names,
arguments, defaults and return shapes of wandb 0.31 (``wandb/apis/public/api.py``, ``runs.py``,
``history.py``), reading runstream's ClickHouse through :class:`runstream.read.api.Api` (every
query read-only, under limits, values bound as parameters; docs/read.md). Filters are translated
by :mod:`runstream.wandb.mongo`. What is covered and what is not: docs/wandb.md, "Reading runs:
wandb.Api".

runstream has no entities: an ``entity/`` in a path is accepted and ignored (``run.entity``
gives it back).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, overload

from runstream.errors import RunNotFoundError
from runstream.wandb.mongo import to_order_by, to_where

if TYPE_CHECKING:
    from runstream.read.api import Api as ReadApi
    from runstream.read.run import Run as ReadRun
    from runstream.settings import Settings

__all__ = ["Api", "Run", "Runs", "Summary"]

STATES = ("running", "finished", "failed", "crashed", "killed")
"""wandb's run states; runstream's run status uses the same names (docs/sql.md, runs_current)."""


def _iso(when: datetime | None) -> str | None:
    """A time as wandb's server writes ``createdAt``: ``2023-11-05T17:46:35`` (UTC)."""
    if when is None:
        return None
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S")


def _epoch(when: datetime) -> float:
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


def _split_project(path: str | None, default: str | None) -> tuple[str | None, str | None]:
    """``(entity, project)`` of ``"entity/project"``, ``"project"`` or ``None``."""
    if path is None or not path.strip("/ "):
        return None, default
    parts = path.strip("/ ").split("/")
    if len(parts) == 1:
        return None, parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise ValueError(
        f"a project path is 'entity/project' or 'project', not {path!r}: wandb project names "
        "cannot contain '/'. For a runstream project whose name has one, pass it as wandb."
        "Api(overrides={'project': NAME}) and call runs() without a path, or use "
        "runstream.Api().runs(project=NAME)"
    )


def _split_run(path: str, project: str | None) -> tuple[str | None, str | None, str]:
    """``(entity, project, run_id)`` of a run path, as wandb's ``Api._parse_path`` reads it:
    ``entity/project/run_id``, ``entity/project/runs/run_id`` (a URL path), ``project/run_id``,
    ``project:run_id``, ``entity/project:run_id`` or ``run_id``."""
    text = path.replace("/runs/", "/").strip("/ ")
    entity: str | None = None
    if ":" in text:
        head, _, run_id = text.rpartition(":")
        entity, project = _split_project(head, project)
        parts = [run_id]
    else:
        parts = text.split("/")
    if len(parts) == 3:
        entity, project, run_id = parts
    elif len(parts) == 2:
        project, run_id = parts
    elif len(parts) == 1 and parts[0]:
        run_id = parts[0]
    elif len(parts) > 3 and parts[-1]:
        raise ValueError(
            f"a run path is 'entity/project/run_id', 'project/run_id' or 'run_id', not {path!r}: "
            "wandb project names cannot contain '/'. For a runstream project whose name has "
            f"one use runstream.Api().run({parts[-1]!r}, project=NAME) or wandb.Api("
            f"overrides={{'project': NAME}}).run({parts[-1]!r})"
        )
    else:
        raise ValueError(
            f"a run path is 'entity/project/run_id', 'project/run_id' or 'run_id', not {path!r}"
        )
    return entity, project, run_id


class Summary(Mapping[str, Any]):
    """``run.summary``: the run's summary (docs/sql.md "The summary") with wandb's ``_step``
    (the highest step), ``_runtime`` (seconds from start to the end, or to the latest event of
    a run still running) and ``_timestamp`` (Unix seconds of the latest event). A read-only
    mapping; keys read as attributes too (``run.summary.val_loss``), and ``_json_dict`` is the
    plain dict, as in wandb."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__") or key == "_values":  # copy and pickle ask before __init__
            raise AttributeError(key)
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(key) from None

    @property
    def _json_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def __repr__(self) -> str:
        return repr(self._values)


class Run:
    """One run, as wandb's ``wandb.apis.public.Run``: ``id``, ``name`` (the display name),
    ``state``, ``config`` (dict), ``summary`` (:class:`Summary`), ``tags``, ``group``,
    ``job_type``, ``notes``, ``created_at`` and ``heartbeat_at`` (``"2023-11-05T17:46:35"``,
    UTC), ``project``, ``entity``, ``path``, ``url`` (``None``: runstream has no web address for
    a run yet), ``lastHistoryStep``; ``history()`` and ``scan_history()``."""

    def __init__(self, api: ReadApi, run: ReadRun, entity: str | None = None) -> None:
        self._api = api
        self._run = run
        self._entity = entity

    # Attributes.

    @property
    def id(self) -> str:
        return str(self._run.id)

    @property
    def name(self) -> str:
        return str(self._run.name)

    display_name = name

    @property
    def state(self) -> str:
        """running, finished, failed, crashed or killed."""
        return str(self._run.status)

    @property
    def project(self) -> str:
        return str(self._run.project)

    @property
    def entity(self) -> str | None:
        """The entity of the path the run was asked for by; runstream has none."""
        return self._entity

    @property
    def path(self) -> list[str]:
        return [self._entity or "", self.project, self.id]

    @property
    def url(self) -> str | None:
        return None

    @property
    def tags(self) -> list[str]:
        return list(self._run.tags)

    @property
    def group(self) -> str | None:
        return self._run.group or None

    @property
    def job_type(self) -> str | None:
        return self._run.job_type or None

    @property
    def notes(self) -> str | None:
        return self._run.notes or None

    @property
    def config(self) -> dict[str, Any]:
        return dict(self._run.config)

    @property
    def created_at(self) -> str | None:
        return _iso(self._run.started_at)

    @property
    def heartbeat_at(self) -> str | None:
        return _iso(self._run.last_event_at)

    @property
    def lastHistoryStep(self) -> int:
        """The highest step of the run (0 also when it logged nothing: runs_current's
        ``last_step``; wandb says -1 then)."""
        return int(self._run.last_step)

    @property
    def summary_metrics(self) -> dict[str, Any]:
        return self.summary._json_dict

    @property
    def summary(self) -> Summary:
        """The summary with wandb's system keys: ``_step``, ``_runtime`` and ``_timestamp``
        are always runstream's (a metric the run logged under one of these names is not shown
        here, as wandb drops a logged ``_step`` and overwrites ``_runtime``; docs/wandb.md)."""
        values = {k: v for k, v in self._run.summary.items() if k not in _SPECIAL}
        values["_step"] = int(self._run.last_step)
        started, last = self._run.started_at, self._run.last_event_at
        end = self._run.finished_at or last
        if started is not None and end is not None:
            values["_runtime"] = max(0.0, _epoch(end) - _epoch(started))
        if last is not None:
            values["_timestamp"] = _epoch(last)
        return Summary(values)

    # History.

    def history(
        self,
        samples: int = 500,
        keys: list[str] | None = None,
        x_axis: str = "_step",
        pandas: bool = True,
        stream: Literal["default", "system"] = "default",
    ) -> Any:
        """At most ``samples`` rows of the run's history, evenly spaced over its steps (the
        first and the last included; ``samples=1``: the first): a pandas ``DataFrame``
        (``pandas=True``, wandb's default) or a list of dicts.

        Without ``keys`` each row is ``_step``, ``_runtime`` (seconds since the run started),
        ``_timestamp`` (Unix seconds) and every metric logged at that step; with ``keys`` it is
        ``x_axis`` and the keys, for the steps at which every one of them was logged (wandb's
        rule). ``x_axis``: ``_step``, ``_runtime``, ``_timestamp`` or a metric name. ``stream``
        ``"system"`` is not supported (ValueError).

        Raises ``TypeError`` for keys that are not a list of strings;
        :class:`runstream.errors.MissingExtraError` for ``pandas=True`` without pandas."""
        if stream != "default":
            raise ValueError("runstream.wandb: run.history(stream='system') is not supported")
        _check_keys(keys)
        _check_count("samples", samples)
        if not isinstance(x_axis, str):
            raise TypeError(f"x_axis is a key (a str), not {type(x_axis).__name__} {x_axis!r}")
        rows = _History(self, keys, x_axis).sampled(samples)
        if not pandas:
            return rows
        from runstream._extras import require

        pd = require("pandas", part="run.history(pandas=True)", extra="pandas")
        return pd.DataFrame.from_records(rows)

    def scan_history(
        self,
        keys: list[str] | None = None,
        page_size: int = 1_000,
        min_step: int = 0,
        max_step: int | None = None,
        use_cache: bool = True,
    ) -> Iterator[dict[str, Any]]:
        """Every row of the run's history from ``min_step`` (inclusive) to ``max_step``
        (exclusive, wandb's rule), in step order, read ``page_size`` steps at a time: dicts of
        ``_step`` and, without ``keys``, ``_runtime``, ``_timestamp`` and every metric of the
        step; with ``keys``, ``_step`` and the keys, for the steps at which all of them were
        logged. ``use_cache`` is accepted and ignored."""
        _check_keys(keys)
        _check_count("page_size", page_size)
        _check_step("min_step", min_step)
        if max_step is not None:
            _check_step("max_step", max_step)
        history = _History(self, keys, "_step")
        low = min_step
        high = max_step if max_step is not None else self.lastHistoryStep + 1
        while low < high:
            page = history.rows(low, min(low + page_size, high))
            yield from page
            low += page_size

    # Display.

    def __repr__(self) -> str:
        return f"<Run {'/'.join(p for p in self.path if p)} ({self.state})>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and (other.project, other.id) == (self.project, self.id)

    def __hash__(self) -> int:
        return hash((self.project, self.id))


def _check_count(name: str, value: Any) -> None:
    """``samples``, ``per_page``, ``page_size``: an int of at least 1 (not a bool, not 2.5)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} is a whole number (an int), not {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, not {value}")


def _check_step(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} is a step (an int), not {type(value).__name__} {value!r}")


def _check_keys(keys: Any) -> None:
    if keys is not None and (
        not isinstance(keys, list) or not all(isinstance(k, str) for k in keys)
    ):
        raise TypeError("keys must be a list of strings")


_SPECIAL = ("_step", "_runtime", "_timestamp")
"""wandb's system keys of a history row and of the summary. wandb drops a logged ``_step``
(``wandb/sdk/interface/interface.py``, ``publish_partial_history``: ``data.pop("_step")``) and
sets ``_runtime`` over a logged one (``core/internal/stream/handler.go``,
``flushPartialHistory``); runstream's wandb.Api gives all three from runstream's own step and
times, and never a metric the run logged under one of these names (docs/wandb.md)."""


class _History:
    """The history queries of one run: one row per step, over ``metrics`` (latest value per
    step and name by seq, as the read layer reads points)."""

    def __init__(self, run: Run, keys: list[str] | None, x_axis: str) -> None:
        self.run = run
        self.keys = keys
        self.x_axis = x_axis
        started = run._run.started_at
        self.started = _epoch(started) if started is not None else None
        if not keys:  # wandb reads keys=[] as no keys
            self.names: list[str] | None = None
            self.columns: list[str] | None = None
        else:
            columns = [x_axis, *keys] if x_axis not in keys else list(keys)
            self.columns = list(dict.fromkeys(columns))
            # Only system keys (keys=["_step"]): every step of the run has them.
            self.names = [c for c in self.columns if c not in _SPECIAL] or None

    def _steps_sql(self) -> str:
        names = "AND name IN {names:Array(String)}" if self.names is not None else ""
        having = "HAVING length(names) = {count:UInt64}" if self.names is not None else ""
        return f"""
            SELECT step, max(ts) AS at, groupArray(name) AS names, groupArray(value) AS vals
            FROM (
                SELECT step, name, argMax(value, seq) AS value, max(ts) AS ts
                FROM metrics
                WHERE project = {{project:String}} AND run_id = {{run:String}} {names}
                  AND step >= {{low:Int64}} AND step < {{high:Int64}}
                GROUP BY step, name
            )
            GROUP BY step
            {having}
        """

    def _parameters(self, low: int, high: int) -> dict[str, Any]:
        parameters: dict[str, Any] = {
            "project": self.run.project,
            "run": self.run.id,
            "low": low,
            "high": high,
        }
        if self.names is not None:
            parameters["names"] = self.names
            parameters["count"] = len(self.names)
        return parameters

    def _row(
        self, step: int, at: datetime, names: Sequence[str], vals: Sequence[Any]
    ) -> dict[str, Any]:
        values = {
            name: float(value)
            for name, value in zip(names, vals, strict=True)
            if name not in _SPECIAL  # wandb's system keys are runstream's, never a metric's
        }
        special: dict[str, Any] = {"_step": int(step), "_timestamp": _epoch(at)}
        if self.started is not None:
            special["_runtime"] = max(0.0, special["_timestamp"] - self.started)
        if self.columns is None:
            return {**special, **dict(sorted(values.items()))}
        row: dict[str, Any] = {}
        for column in self.columns:
            row[column] = special.get(column) if column in _SPECIAL else values.get(column)
        return row

    def rows(self, low: int, high: int) -> list[dict[str, Any]]:
        sql = self._steps_sql() + " ORDER BY step"
        table = self.run._api.sql(sql, self._parameters(low, high))
        return [self._row(r["step"], r["at"], r["names"], r["vals"]) for r in table]

    def sampled(self, samples: int) -> list[dict[str, Any]]:
        low, high = -(2**63), 2**63 - 1
        count_sql = f"SELECT count() AS n FROM ({self._steps_sql()})"
        found = list(self.run._api.sql(count_sql, self._parameters(low, high)))
        total = int(found[0]["n"]) if found else 0
        if total <= samples:
            return self.rows(low, high)
        # Evenly spaced row numbers, the first and the last included.
        if samples == 1:
            picks = [1]
        else:
            picks = sorted({round(i * (total - 1) / (samples - 1)) + 1 for i in range(samples)})
        sql = f"""
            SELECT * FROM (
                SELECT step, at, names, vals, row_number() OVER (ORDER BY step) AS n
                FROM ({self._steps_sql()})
            )
            WHERE has({{picks:Array(UInt64)}}, n)
            ORDER BY step
        """
        parameters = {**self._parameters(low, high), "picks": picks}
        table = self.run._api.sql(sql, parameters)
        return [self._row(r["step"], r["at"], r["names"], r["vals"]) for r in table]


class Runs(Sequence[Run]):
    """The runs of ``api.runs(...)``, as wandb's ``Runs``: ``len()`` is the number of runs the
    filters select, iteration and indexing (ints and slices) read ``per_page`` runs at a time
    (``LIMIT``/``OFFSET`` pages; ties in ``order`` broken by project and run id),
    ``histories()`` gives the history of every run with a ``run_id`` column."""

    def __init__(
        self,
        api: ReadApi,
        *,
        entity: str | None,
        project: str | None,
        filters: Mapping[str, Any] | None,
        order: str,
        per_page: int,
    ) -> None:
        _check_count("per_page", per_page)
        self._where = to_where(filters)  # first: it says what is wrong with filters of any type
        self._order_by = to_order_by(order)  # ties: by project and run id (runstream.Api)
        self._api = api
        self.entity = entity
        self.project = project
        self.filters = dict(filters or {})
        self.order = order or "+created_at"
        self.per_page = per_page
        self._pages: dict[int, list[Run]] = {}
        self._total: int | None = None

    def _page(self, number: int) -> list[Run]:
        if number not in self._pages:
            found = self._api.runs(
                project=self.project,
                where=self._where,
                order_by=self._order_by,
                limit=self.per_page,
                offset=number * self.per_page,
            )
            self._total = int(found.total)
            self._pages[number] = [Run(self._api, run, self.entity) for run in found]
        return self._pages[number]

    def __len__(self) -> int:
        if self._total is None:
            self._page(0)
        assert self._total is not None
        return self._total

    @property
    def length(self) -> int:
        return len(self)

    @overload
    def __getitem__(self, index: int) -> Run: ...
    @overload
    def __getitem__(self, index: slice) -> list[Run]: ...
    def __getitem__(self, index: int | slice) -> Run | list[Run]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if index < 0:
            raise IndexError("run index out of range")
        page = self._page(index // self.per_page)
        if index % self.per_page >= len(page):
            raise IndexError("run index out of range")
        return page[index % self.per_page]

    def __iter__(self) -> Iterator[Run]:
        number = 0
        while True:
            page = self._page(number)
            yield from page
            if len(page) < self.per_page:
                return
            number += 1

    def histories(
        self,
        samples: int = 500,
        keys: list[str] | None = None,
        x_axis: str = "_step",
        format: Literal["default", "pandas", "polars"] = "default",
        stream: Literal["default", "system"] = "default",
    ) -> Any:
        """``run.history(...)`` of every run, each row with a ``run_id``: a list of dicts
        (``format="default"``), or one pandas or polars DataFrame with the columns sorted."""
        if format not in ("default", "pandas", "polars"):
            raise ValueError(f"Invalid format: {format}. Must be one of 'default', 'pandas', "
                             "'polars'")  # fmt: skip
        rows: list[dict[str, Any]] = []
        for run in self:
            for row in run.history(samples, keys, x_axis, pandas=False, stream=stream):
                row["run_id"] = run.id
                rows.append(row)
        if format == "default":
            return rows
        from runstream._extras import require

        if format == "pandas":
            pd = require("pandas", part="runs.histories(format='pandas')", extra="pandas")
            frame = pd.DataFrame.from_records(rows)
            return frame[sorted(frame.columns)]
        pl = require("polars", part="runs.histories(format='polars')", extra="polars")
        frame = pl.from_dicts(rows) if rows else pl.DataFrame()
        return frame.select(sorted(frame.columns))

    def __repr__(self) -> str:
        return f"<Runs {self.entity or ''}/{self.project or '*'}>"


class Api:
    """``wandb.Api(overrides=None, timeout=None, api_key=None)``: ``overrides`` may set
    ``project`` (the default of ``runs()`` and ``run()``) and ``entity`` (accepted, unused);
    ``timeout``, ``api_key`` and ``base_url`` are accepted and ignored. ``WANDB_PROJECT`` is the
    default project. Where to read: ``clickhouse_url``, ``database`` or ``settings`` (runstream's,
    keyword-only), else ``Settings.load()`` (``RUNSTREAM_*``), as :class:`runstream.Api`."""

    def __init__(
        self,
        overrides: Mapping[str, Any] | None = None,
        timeout: int | None = None,
        api_key: str | None = None,
        *,
        clickhouse_url: str | None = None,
        database: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        from runstream.read.api import Api as ReadApi

        self.settings: dict[str, Any] = {
            "entity": os.environ.get("WANDB_ENTITY") or None,
            "project": os.environ.get("WANDB_PROJECT") or None,
            "base_url": None,
        }
        self.settings.update(overrides or {})
        self._api = ReadApi(clickhouse_url, database=database, settings=settings)

    @property
    def default_entity(self) -> str | None:
        return self.settings.get("entity")

    @property
    def read(self) -> ReadApi:
        """The :class:`runstream.Api` this reads through, for what wandb has no name for."""
        return self._api

    def runs(  # noqa: PLR0917 - positional like wandb's Api.runs
        self,
        path: str | None = None,
        filters: Mapping[str, Any] | None = None,
        order: str = "+created_at",
        per_page: int = 50,
        include_sweeps: bool = False,
        lazy: bool = True,
    ) -> Runs:
        """The runs of ``path`` (``"entity/project"`` or ``"project"``; ``None``: the default
        project, else every project) that ``filters`` select (MongoDB operators,
        :mod:`runstream.wandb.mongo`), sorted by ``order`` (``"+created_at"``: oldest first).
        ``include_sweeps`` and ``lazy`` are accepted and ignored.

        Raises :class:`runstream.errors.WandbFilterError` for a filter or order runstream does
        not read."""
        entity, project = _split_project(path, self.settings.get("project"))
        return Runs(
            self._api,
            entity=entity or self.default_entity,
            project=project,
            filters=filters,
            order=order,
            per_page=per_page,
        )

    def run(self, path: str = "") -> Run:
        """The run of ``path``: ``entity/project/run_id``, ``project/run_id``,
        ``entity/project/runs/run_id``, ``project:run_id`` or ``run_id`` (in the default project
        when there is one, else in any).

        wandb project names cannot contain ``/`` (``wandb/sdk/wandb_settings.py``,
        ``validate_project``), so ``"a/b/c"`` is entity ``a``, project ``b``, run ``c``, never
        project ``a/b``: read a run of a runstream project named ``a/b`` with
        ``runstream.Api().run("c", project="a/b")`` or ``wandb.Api(overrides={"project": "a/b"})
        .run("c")``.

        Raises :class:`runstream.errors.RunNotFoundError` (a ``LookupError``) naming the run and
        the projects that do hold a run of that id (and saying how to read it when one has a
        ``/`` in its name); ``ValueError`` for a path of more than three parts."""
        entity, project, run_id = _split_run(path, self.settings.get("project"))
        try:
            found = self._api.run(run_id, project=project)
        except RunNotFoundError as error:
            raise self._not_found(error, run_id, project) from None
        return Run(self._api, found, entity or self.default_entity)

    def _not_found(
        self, error: RunNotFoundError, run_id: str, project: str | None
    ) -> RunNotFoundError:
        """``error`` with the projects that hold a run ``run_id`` named in its message."""
        if project is None:
            return error
        table = self._api.sql(
            "SELECT DISTINCT project FROM runs_current WHERE run_id = {run:String} "
            "ORDER BY project LIMIT 5",
            {"run": run_id},
        )
        projects = [str(row["project"]) for row in table]
        if not projects:
            return error
        slashed = [p for p in projects if "/" in p]
        if slashed:
            hint = (
                f"wandb project names cannot contain '/', so a path reads as "
                f"entity/project/run_id; the run {run_id!r} is in project {slashed[0]!r}: read "
                f"it with runstream.Api().run({run_id!r}, project={slashed[0]!r}) or "
                f"wandb.Api(overrides={{'project': {slashed[0]!r}}}).run({run_id!r})"
            )
        else:
            hint = (
                f"a run {run_id!r} is in project {', '.join(map(repr, projects))}: "
                f"api.run({projects[0] + '/' + run_id!r})"
            )
        # Same type and attributes, a message that says where the run is.
        error.args = (f"no run {run_id!r} in project {project!r}: {hint}",)
        return error

    def flush(self) -> None:
        """Nothing to forget: every call reads ClickHouse afresh."""
