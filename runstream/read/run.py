"""One run of the Python read API (``api.run(id)``, ``api.runs(...)[i]``): its state as
``runs_current`` has it (docs/sql.md) and its history, events, system metrics, alerts and
histograms, each read on demand through the :class:`runstream.read.Reader` of its
:class:`runstream.read.Api`.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any

from runstream.errors import ReadArgumentError
from runstream.read.table import Table, unique_columns

if TYPE_CHECKING:
    from runstream.read.api import Api

RUN_COLUMNS: tuple[str, ...] = (
    "project",
    "run_id",
    "name",
    "status",
    "tags",
    "`group`",
    "job_type",
    "notes",
    "config",
    "summary",
    "started_at",
    "finished_at",
    "exit_code",
    "last_step",
    "last_event_at",
)
"""The columns of ``runs_current`` a :class:`Run` and a frame of runs have (``group`` quoted)."""

X_MODES = ("step", "time", "relative_time")
MAX_SAMPLES = 1_000_000
# Steps per row of metric_blocks (migration 0015): buckets of at least this many steps are read
# from there, whole blocks per bucket.
BLOCK = 1024
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def parse_document(text: str | None) -> dict[str, Any]:
    """A config or summary JSON text as a dict, exactly: integers stay ``int`` (any size),
    numbers with a fraction or exponent are ``float``, and the strings ``"NaN"``, ``"Infinity"``
    and ``"-Infinity"`` (how the event schema writes those floats, docs/sdk.md) read back as
    ``float('nan')``, ``inf`` and ``-inf`` at any depth. An empty text is ``{}``."""
    if not text:
        return {}
    value = json.loads(text)
    return _floats(value) if isinstance(value, dict) else {}


def document_value(document: Mapping[str, Any], key: str) -> Any:
    """``key`` of a parsed config or summary: the top-level key of that name if there is one,
    else the dotted path (``optimizer.lr`` -> ``document["optimizer"]["lr"]``), else None: the
    rule of the filter language (docs/read.md, "Filters")."""
    if key in document:
        return document[key]
    value: Any = document
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _floats(value: Any) -> Any:
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_floats(v) for v in value]
    return value


def _utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


class Run:
    """A run: ``id``, ``project``, ``name``, ``status`` (``running``, ``finished``, ``failed``,
    ``crashed``, ``killed``), ``tags`` (list), ``group``, ``job_type``, ``notes``, ``config`` and
    ``summary`` (dicts, parsed when first read: :func:`parse_document`), ``config_json`` and
    ``summary_json`` (the stored text), ``started_at``, ``finished_at`` (None while running),
    ``last_event_at`` (``datetime`` in UTC), ``exit_code`` (None while running), ``last_step``.
    The fields are those of ``runs_current`` when the run was read; read it again
    (``api.run(run.id)``) for news."""

    def __init__(self, api: Api, record: Mapping[str, Any]) -> None:
        self._api = api
        self.project: str = record["project"]
        self.id: str = record["run_id"]
        self.name: str = record["name"]
        self.status: str = record["status"]
        self.tags: list[str] = list(record["tags"] or [])
        self.group: str = record["group"]
        self.job_type: str = record["job_type"]
        self.notes: str = record["notes"]
        self.config_json: str = record["config"] or "{}"
        self.summary_json: str = record["summary"] or "{}"
        self.started_at: datetime = _utc(record["started_at"])
        self.finished_at: datetime | None = _utc(record["finished_at"])
        self.exit_code: int | None = record["exit_code"]
        self.last_step: int = int(record["last_step"] or 0)
        self.last_event_at: datetime = _utc(record["last_event_at"])

    @cached_property
    def config(self) -> dict[str, Any]:
        return parse_document(self.config_json)

    @cached_property
    def summary(self) -> dict[str, Any]:
        return parse_document(self.summary_json)

    def __repr__(self) -> str:
        return f"Run({self.project}/{self.id} {self.name!r} {self.status})"

    # --- helpers ------------------------------------------------------------------------------
    def _where(
        self, min_step: int | None = None, max_step: int | None = None
    ) -> tuple[str, dict[str, Any]]:
        sql = "project = {project:String} AND run_id = {run:String}"
        parameters: dict[str, Any] = {"project": self.project, "run": self.id}
        _check_int("min_step", min_step)
        _check_int("max_step", max_step)
        if min_step is not None:
            sql += " AND step >= {min_step:Int64}"
            parameters["min_step"] = int(min_step)
        if max_step is not None:
            sql += " AND step <= {max_step:Int64}"
            parameters["max_step"] = int(max_step)
        return sql, parameters

    def _keys(self, keys: str | Sequence[str] | None) -> list[str]:
        if keys is None:
            return self.metric_names()
        if not isinstance(keys, (str, list, tuple)):
            raise ReadArgumentError(
                f"keys is a metric name (str) or a list of them, not {type(keys).__name__}: "
                "history('loss') or history(['loss', 'val/loss'])"
            )
        names = [keys] if isinstance(keys, str) else list(keys)
        for k in names:
            if not isinstance(k, str):
                raise ReadArgumentError(
                    f"keys holds metric names (str), not {type(k).__name__} ({k!r}): "
                    "history(['loss', 'val/loss'])"
                )
        return list(dict.fromkeys(names))  # duplicates once

    # --- reads --------------------------------------------------------------------------------
    def metric_names(self) -> list[str]:
        """The names of the run's metrics (``run_summaries_current``), sorted."""
        sql, parameters = self._where()
        rows = self._api.reader.query(
            f"SELECT name FROM run_summaries_current WHERE {sql} ORDER BY name", parameters
        ).rows
        return [str(r[0]) for r in rows]

    def step_metrics(self) -> list[str]:
        """The step metrics the run defined (``define_metric(..., step_metric=...)``): the names
        ``history(x=...)`` takes besides ``step``, ``time`` and ``relative_time``."""
        sql, parameters = self._where()
        rows = self._api.reader.query(
            f"SELECT DISTINCT step_metric FROM metric_definitions_current WHERE {sql} "
            "AND step_metric != '' ORDER BY step_metric",
            parameters,
        ).rows
        return [str(r[0]) for r in rows]

    def history(
        self,
        keys: str | Sequence[str] | None = None,
        x: str = "step",
        samples: int | None = None,
        min_step: int | None = None,
        max_step: int | None = None,
    ) -> Table:
        """The run's metrics as a wide table: column ``x`` first, then one column per key (all
        the run's metrics when ``keys`` is None), in step order.

        ``x``: ``"step"`` (Int64), ``"time"`` (the point's ``ts``, DateTime64 UTC; with several
        keys the newest ts at that step), ``"relative_time"`` (seconds since the run's
        ``started_at``, Float64), or a step metric the run defined (``define_metric("loss",
        step_metric="epoch")`` makes ``x="epoch"`` valid): its latest value logged at or before
        each point in the run's event order (an ASOF join on ``seq``), NULL before its first
        point. Not by step: the SDK stores the step metric's points and those of the keys
        defined against it at the step metric's value (docs/sql.md,
        "metric_definitions_current"), so their steps do not line up with other keys' steps.

        Column names are unique and ``x`` keeps its name: a key named like ``x`` or like an
        earlier column comes as ``<key>.1`` (``.2``...), as ``pandas.read_csv`` names duplicate
        columns (:func:`runstream.read.table.unique_columns`); the columns are always ``x``,
        then one (three with ``samples``) per key in the order of ``keys``.

        Without ``samples`` every point: one key (against step, time or relative_time) gives
        every stored point in (step, seq) order (a step logged twice is two rows); several keys
        give one row per step, each column the key's last value at that step (highest seq) or
        null, pivoted inside ClickHouse; a step metric as ``x`` one row per logged event (a
        ``log()`` call) that holds a key.
        ``samples=N``: the step range is cut into N equal buckets as the ``downsample`` view
        does (docs/sql.md, "Downsampling for charts"), common to all keys; each bucket that
        holds a point gives one row: ``x`` of its last point, and per key ``<key>`` (the value
        at the bucket's last step of that key), ``<key>.min`` and ``<key>.max`` (exact, NaN
        left out, null when every point is NaN), so a single spike is never hidden. When the
        buckets would span at least 1,024 steps (a metric of more than ``N * 1024`` steps, with
        within ``min_step``..``max_step``), they are read from ``metric_blocks`` (migration 0015;
        the points of a block cut by the range from ``metrics``) and made of whole 1,024-step
        blocks: they start at a block's first step and are as wide as the next multiple of
        1,024 steps, so there are at most N of them (10M steps in 1,000: 977 buckets of 10,240
        steps), each as exact as a scan of its points.
        ``min_step`` / ``max_step`` (inclusive) keep the steps in that range (a chart's zoom).
        A key the run does not have is a column of nulls (or, alone, no rows). Raises
        :class:`~runstream.errors.ReadArgumentError` for an ``x`` the run has no step metric
        of, ``samples`` that is not a whole number in 1..1,000,000 (a bool or a float is not),
        ``keys`` that is not a str or a list of str, ``min_step``/``max_step`` not whole.
        """
        names = self._keys(keys)
        if samples is not None and (
            isinstance(samples, bool)
            or not isinstance(samples, numbers.Integral)
            or not 1 <= samples <= MAX_SAMPLES
        ):
            raise ReadArgumentError(
                f"samples is a whole number of buckets from 1 to {MAX_SAMPLES} (or None for "
                f"every point), not {samples!r}"
            )
        if not isinstance(x, str):
            raise ReadArgumentError(
                f"x is 'step', 'time', 'relative_time' or a step metric's name, not {x!r}"
            )
        step_metric = x not in X_MODES
        defined_metrics = self.step_metrics() if step_metric else []
        if step_metric and x not in defined_metrics:
            defined = ", ".join(defined_metrics) or "none"
            raise ReadArgumentError(
                f"x={x!r}: x is 'step', 'time', 'relative_time' or a step metric of the run "
                f"(define_metric(..., step_metric=...); this run's: {defined})"
            )
        where, parameters = self._where(min_step, max_step)
        if not names:  # a run without metrics (or keys=[]): the x column alone, no rows
            bare: dict[str, Any] = {}
            x_sql = _x_sql(x, "step", "ts", bare, self)
            return self._api.table(
                f"SELECT {x_sql} AS x FROM metrics WHERE 0 LIMIT 0", bare
            ).rename([x])
        parameters["keys"] = names
        values: list[str] = []
        block_values: list[str] = []  # the same columns from metric_blocks (long metrics)
        columns: list[str] = [x]
        for i, key in enumerate(names):
            parameters[f"k{i}"] = key
            if samples is None:
                values.append(f"argMaxIfOrNull(value, seq, name = {{k{i}:String}}) AS v{i}")
                columns.append(key)
            else:
                # One key needs no -If: the WHERE keeps its points alone. The last point of a
                # bucket is the highest (step, seq), packed into one Int128 as run_summaries
                # does (0004): a tuple key made this query about 5x slower.
                match = "" if len(names) == 1 else f"name = {{k{i}:String}}"
                last = "bitShiftLeft(toInt128(step), 64) + toInt128(seq)"
                finite = f"{match + ' AND ' if match else ''}NOT isNaN(value)"
                values += [
                    f"argMaxIfOrNull(value, {last}, {match}) AS v{i}"
                    if match
                    else f"argMaxOrNull(value, {last}) AS v{i}",
                    f"minIfOrNull(value, {finite}) AS v{i}_min",
                    f"maxIfOrNull(value, {finite}) AS v{i}_max",
                ]
                block_values += (
                    [  # NULL, not argMax's default, for a bucket without this key's points
                        f"if(countIf({match}) > 0, argMaxMergeIf(last, {match}), NULL) AS v{i}",
                        f"minIf(min, {match}) AS v{i}_min",
                        f"maxIf(max, {match}) AS v{i}_max",
                    ]
                    if match
                    else [
                        f"argMaxMerge(last) AS v{i}",
                        f"min(min) AS v{i}_min",
                        f"max(max) AS v{i}_max",
                    ]
                )
                columns += [key, f"{key}.min", f"{key}.max"]
        if samples is not None and len(names) == 1:
            del parameters["k0"]
        # A metric named like x (``step``, ``time``, the step metric) never replaces it.
        columns = unique_columns(columns)
        value_columns = [v.rsplit(" AS ", 1)[1] for v in values]
        scope = f"{where} AND name IN {{keys:Array(String)}}"
        if samples is None and len(names) == 1 and not step_metric:
            del parameters["k0"]  # plain rows of the one key: no pivot
            sql = (
                f"SELECT {_x_sql(x, 'step', 'ts', parameters, self)} AS x, value AS v0 "
                f"FROM metrics WHERE {scope} ORDER BY step, seq"
            )
        else:
            one = "1 AS _one, " if step_metric else ""  # the ASOF join's equality
            if samples is None and step_metric:
                # One row per logged event (a log() call): its points share one step metric
                # value, whatever step each of them was stored at.
                inner = (
                    f"SELECT {one}seq AS _seq, min(step) AS _step, {', '.join(values)} "
                    f"FROM metrics WHERE {scope} GROUP BY seq"
                )
            elif samples is None:
                inner = (
                    f"SELECT {one}step AS _step, max(ts) AS _ts, {', '.join(values)} "
                    f"FROM metrics WHERE {scope} GROUP BY step"
                )
            elif (blocks := self._blocks(names, int(samples), min_step, max_step)) is not None:
                # A long metric: whole 1,024-step blocks per bucket, from metric_blocks; the
                # points of a zoom's two partial blocks (at its ends) from metrics.
                start, width, first_block, last_block = blocks
                parameters.update(lo=start, width=width, b0=first_block, b1=last_block)
                bucket = "intDiv({of} - {{lo:Int64}}, {{width:Int64}}) AS _b"
                parts = [
                    f"SELECT {bucket.format(of='block * 1024')}, name, last_step, last_ts, "
                    "last_seq, min, max, last FROM metric_blocks WHERE project = "
                    "{project:String} AND run_id = {run:String} AND name IN {keys:Array(String)} "
                    "AND block BETWEEN {b0:Int64} AND {b1:Int64}"
                ]
                if min_step is not None or max_step is not None:
                    parts.append(
                        f"SELECT {bucket.format(of='step')}, name, max(step), max(ts), max(seq), "
                        "min(if(isNaN(value), NULL, value)), max(if(isNaN(value), NULL, value)), "
                        f"argMaxState(value, {last}) FROM metrics WHERE {scope} AND (step < "
                        "{b0:Int64} * 1024 OR step >= ({b1:Int64} + 1) * 1024) GROUP BY _b, name"
                    )
                inner = (
                    f"SELECT {one}_b AS _bucket, max(last_step) AS _step, max(last_ts) AS _ts, "
                    f"max(last_seq) AS _seq, {', '.join(block_values)} "
                    f"FROM ({' UNION ALL '.join(parts)}) GROUP BY _bucket"
                )
            else:
                parameters["samples"] = int(samples)
                if min_step is None and max_step is None:
                    # The keys' first and last steps as run_summaries keeps them (its view sees
                    # every inserted point): a few rows read instead of a scan of the steps.
                    bounds = (
                        "SELECT (min(first_step), max(last_step)) FROM run_summaries WHERE "
                        "project = {project:String} AND run_id = {run:String} "
                        "AND name IN {keys:Array(String)}"
                    )
                else:  # the first and last step inside the range, as the points have them
                    bounds = f"SELECT (min(step), max(step)) FROM metrics WHERE {scope}"
                # ts only for an axis that shows it: one column less to read.
                ts = "max(ts) AS _ts, " if x in ("time", "relative_time") else ""
                ts += "max(seq) AS _seq, " if step_metric else ""  # the ASOF join's order
                # The bucket of the downsample view (migration 0006), over the steps of all keys.
                inner = (
                    f"WITH ({bounds}) AS bounds "
                    f"SELECT {one}"
                    "toUInt32(intDiv(toInt128(step - bounds.1) * {samples:UInt32}, "
                    "toInt128(bounds.2 - bounds.1) + 1)) AS _bucket, max(step) AS _step, "
                    f"{ts}{', '.join(values)} "
                    f"FROM metrics WHERE {scope} GROUP BY _bucket"
                )
            outer_values = ", ".join(f"p.{c} AS {c}" for c in value_columns)
            if step_metric:
                # The step metric's latest value at or before each point, in the run's event
                # order (seq, which orders events logged in the same millisecond too), not by
                # step: the SDK stores a step metric's own points, and the points of the keys
                # defined against it, at the step metric's value (docs/sql.md,
                # "metric_definitions_current"), so their steps do not line up with the others'.
                # Its points before min_step count too, so its own scope has no step range.
                parameters["xkey"] = x
                order = "p._step, p._seq" if samples is not None else "p._seq"
                sql = (
                    f"SELECT xm.value AS x, {outer_values} FROM ({inner}) AS p "
                    "ASOF LEFT JOIN (SELECT 1 AS _one, seq, toNullable(value) AS value "
                    "FROM metrics WHERE project = {project:String} AND run_id = {run:String} "
                    "AND name = {xkey:String}) AS xm ON p._one = xm._one AND p._seq >= xm.seq "
                    f"ORDER BY {order}"
                )
            else:
                x_sql = _x_sql(x, "p._step", "p._ts", parameters, self)
                sql = f"SELECT {x_sql} AS x, {outer_values} FROM ({inner}) AS p ORDER BY p._step"
        return self._api.table(sql, parameters).rename(columns)

    def _blocks(
        self, names: list[str], samples: int, min_step: int | None, max_step: int | None
    ) -> tuple[int, int, int, int] | None:
        """How to read ``samples`` buckets of the keys from ``metric_blocks``: ``(first step of
        the first bucket, bucket width in steps, first and last whole block)``, or None when the
        buckets would hold fewer than :data:`BLOCK` steps (the scan of the points is as quick).

        The range is the keys' steps (run_summaries), cut to ``min_step``..``max_step``. Buckets
        start at a block's first step and are a whole number of blocks wide, so there are at most
        ``samples``. Blocks that lie wholly in the range are read as blocks; a block cut by
        ``min_step`` or ``max_step`` is left to its points."""
        bounds = self._api.reader.query(
            "SELECT min(first_step), max(last_step), count() FROM run_summaries "
            "WHERE project = {project:String} AND run_id = {run:String} "
            "AND name IN {keys:Array(String)}",
            {"project": self.project, "run": self.id, "keys": names},
        ).rows
        if not bounds or not bounds[0][2]:
            return None
        first, last = int(bounds[0][0]), int(bounds[0][1])
        lo = first if min_step is None else max(first, int(min_step))
        hi = last if max_step is None else min(last, int(max_step))
        if hi - lo + 1 < samples * BLOCK:
            return None
        start = lo // BLOCK * BLOCK  # floor, as the blocks' own numbering
        per_bucket = -(-(hi - start + 1) // (samples * BLOCK))  # blocks per bucket, rounded up
        # No point lies below the keys' first step or above their last: a block holding one of
        # those is whole in the range; a block cut by min_step or max_step is not.
        first_block = lo // BLOCK if lo == first else -(-lo // BLOCK)
        last_block = hi // BLOCK if hi == last else (hi + 1) // BLOCK - 1
        return start, per_bucket * BLOCK, first_block, last_block

    def scan_history(
        self,
        keys: str | Sequence[str] | None = None,
        page_size: int = 10_000,
        min_step: int | None = None,
        max_step: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """One dict per step, ``{"step": s, key: value or None, ...}`` (each key's last value at
        that step; a metric named ``step`` as ``step.1``, the rule of :meth:`history`), in step
        order, read ``page_size`` points at a time: memory stays flat for a
        run of any size. Keys as in :meth:`history`."""
        if (
            isinstance(page_size, bool)
            or not isinstance(page_size, numbers.Integral)
            or page_size < 1
        ):
            raise ReadArgumentError(f"page_size is a whole number, 1 or more, not {page_size!r}")
        names = self._keys(keys)
        if not names:
            return
        # A metric named ``step`` comes as ``step.1``: it never replaces the step.
        fields = unique_columns(["step", *names])
        where, parameters = self._where(min_step, max_step)
        parameters["keys"] = names
        values = []
        for i, key in enumerate(names):
            parameters[f"k{i}"] = key
            values.append(f"argMaxIfOrNull(value, seq, name = {{k{i}:String}}) AS v{i}")
        scope = f"{where} AND name IN {{keys:Array(String)}}"
        reader = self._api.reader
        after: int | None = None
        while True:
            page = dict(parameters, page=page_size)
            condition = scope
            if after is not None:
                condition += " AND step > {after:Int64}"
                page["after"] = after
            # The last step of the next page_size points (the table is sorted by step within a
            # run and name, so ClickHouse reads only what the page needs), then that page.
            count, upto = reader.query(
                f"SELECT count(), max(step) FROM (SELECT step FROM metrics WHERE {condition} "
                "ORDER BY step LIMIT {page:UInt64})",
                {k: v for k, v in page.items() if not k.startswith("k") or k == "keys"},
            ).rows[0]
            if not count:
                return
            page.pop("page")
            page["upto"] = int(upto)
            rows = reader.query(
                f"SELECT step, {', '.join(values)} FROM metrics "
                f"WHERE {condition} AND step <= {{upto:Int64}} GROUP BY step ORDER BY step",
                page,
            ).rows
            for row in rows:
                yield dict(zip(fields, row, strict=True))
            after = int(upto)

    def events(self) -> Table:
        """Every stored event of the run in ``seq`` order: ``seq``, ``ts``, ``type``, ``body``
        (the JSON text as sent), ``event_id`` (text), ``producer_sdk``, ``producer_version``,
        ``producer_host``, ``producer_pid``."""
        sql, parameters = self._where()
        return self._api.table(
            "SELECT seq, ts, type, body, toString(event_id) AS event_id, producer_sdk, "
            f"producer_version, producer_host, producer_pid FROM events WHERE {sql} "
            "ORDER BY seq",
            parameters,
        )

    def system_metrics(self, names: str | Sequence[str] | None = None) -> Table:
        """Host metrics (``system_metrics``), long: ``ts``, ``name``, ``value`` (NaN and
        infinities as floats), in time then name order; only ``names`` when given."""
        sql, parameters = self._where()
        if names is not None:
            parameters["names"] = [names] if isinstance(names, str) else list(names)
            sql += " AND name IN {names:Array(String)}"
        return self._api.table(
            f"SELECT ts, name, value FROM system_metrics WHERE {sql} ORDER BY ts, name, seq",
            parameters,
        )

    def alerts(self) -> Table:
        """The run's alerts (``alerts_current``, every column), newest first."""
        return self._api.alerts(project=self.project, run_id=self.id, limit=1_000_000)

    def histograms(self, name: str | None = None) -> Table:
        """Histograms (``histograms``): ``name``, ``step``, ``bins`` (edges), ``counts``, ``ts``,
        by name then step; only ``name`` when given."""
        sql, parameters = self._where()
        if name is not None:
            sql += " AND name = {name:String}"
            parameters["name"] = name
        return self._api.table(
            f"SELECT name, step, bins, counts, ts FROM histograms WHERE {sql} "
            "ORDER BY name, step, seq",
            parameters,
        )


def _check_int(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        raise ReadArgumentError(f"{name} is a step (int) or None, not {value!r}")


def _x_sql(x: str, step: str, ts: str, parameters: dict[str, Any], run: Run) -> str:
    """SQL of the x column from a step and a ts expression."""
    if x == "step":
        return step
    if x == "time":
        return ts
    if x == "relative_time":
        started = run.started_at
        epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
        parameters["t0"] = (started - epoch) // timedelta(microseconds=1)
        return f"(toUnixTimestamp64Micro({ts}) - {{t0:Int64}}) / 1e6"
    return step  # a step metric: joined by the caller
