"""The series of the UI's charts: one metric of one run (:func:`history`), or of several runs,
overlaid or grouped by a config key (:func:`compare_history`), from ``run.history(samples=)`` of
:class:`runstream.Api` (the bucket downsample: every spike kept), plus the NaN and ±inf points of
the range and, for a zoom on a time or step-metric axis, the steps that range covers (through
``api.sql``, values bound as parameters).

Series travel column-wise (``{"x": [...], "y": [...], "min": [...], "max": [...]}``), JSON-ready
as :func:`runstream.ui.data.jsonable` makes them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from runstream.read.run import document_value
from runstream.ui.data import document, flat_keys, records_of, run_row, seconds

if TYPE_CHECKING:
    from runstream.read.api import Api
    from runstream.read.run import Run

#: Buckets per chart, at most: a chart is at most a few thousand pixels wide.
MAX_SAMPLES = 5000
#: Runs in one comparison, at most.
MAX_COMPARE = 50
#: Up to this many runs, a comparison marks each run's NaN and ±inf points (a query per run).
MARKED_RUNS = 20

X_AXES = ("step", "time", "relative_time")


def _column(records: Sequence[Mapping[str, Any]], name: str) -> list[Any]:
    return [r.get(name) for r in records]


def history(
    api: Api,
    run_id: str,
    key: str,
    *,
    project: str | None = None,
    x: str = "step",
    samples: int | None = 1000,
    min_step: int | None = None,
    max_step: int | None = None,
    x_range: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """One metric of one run for a chart: ``{"key", "x", "bucketed", "points": {"x": [...],
    "y": [...], "min": [...], "max": [...]}}``. With ``samples`` the step range (or the visible
    part of it: ``min_step``..``max_step``, what a zoom asks for) is cut into that many buckets
    by ``run.history(samples=)``: ``y`` is a bucket's last value, ``min``/``max`` its exact
    extremes, so no spike is hidden, and ``nonfinite`` (``{"x", "y"}``) the NaN and ±inf points
    of the range, which the chart marks. ``x`` of a time axis is in seconds since the epoch.
    ``x_range`` (a zoom on another axis than ``step``: seconds, or step-metric values) becomes
    the steps it covers (:func:`steps_of`)."""
    run = api.run(run_id, project=project)
    if x_range is not None and x != "step":
        min_step, max_step = steps_of(api, run, key, x, x_range)
    if samples is not None:
        samples = max(1, min(int(samples), MAX_SAMPLES))
    table = run.history(keys=[key], x=x, samples=samples, min_step=min_step, max_step=max_step)
    records = records_of(table)
    columns = list(getattr(table, "columns", records[0].keys() if records else []))
    xs = _column(records, x)
    if x == "time":
        xs = [seconds(v) for v in xs]
    # By position: a metric named like x comes as "<x>.1" (docs/read.md, "History").
    points: dict[str, Any] = {"x": xs, "y": _column(records, columns[1])}
    bucketed = len(columns) == 4
    if bucketed:
        points["min"] = _column(records, columns[2])
        points["max"] = _column(records, columns[3])
    if bucketed and x in X_AXES:
        points["nonfinite"] = _nonfinite(api, run, key, x=x, min_step=min_step, max_step=max_step)
    body = {"run_id": run_id, "key": key, "x": x, "bucketed": bucketed, "points": points}
    if x not in X_AXES:
        # A step-metric axis has no place for the points logged before its first value (x is
        # null there): the chart says how many it leaves out, and how many x positions it has.
        body["x_values"] = len({v for v in xs if v is not None})
        body["before_first_x"] = _before_first(api, run, key, x) if None in xs else 0
    return document(body)


def _before_first(api: Api, run: Run, key: str, x: str) -> int:
    """Points of ``key`` logged (in the run's event order) before the first point of the step
    metric ``x``: those a chart on ``x`` cannot place."""
    sql = (
        "SELECT count() FROM metrics WHERE project = {project:String} AND run_id = {run:String} "
        "AND name = {name:String} AND seq < (SELECT minOrNull(seq) FROM metrics WHERE "
        "project = {project:String} AND run_id = {run:String} AND name = {x:String})"
    )
    table = api.sql(sql, {"project": run.project, "run": run.id, "name": key, "x": x})
    return int(next(iter(records_of(table)[0].values())) or 0)


def steps_of(api: Api, run: Run, key: str, x: str, x_range: tuple[float, float]) -> tuple[int, int]:
    """The steps of ``key``'s points that a chart with x axis ``x`` draws within ``x_range``:
    ``(first, last)``, ``(0, -1)`` when none. On ``time`` the points logged in that time (seconds
    since the epoch), on ``relative_time`` the same from the run's start; on a step metric, the
    steps from its first point inside the range up to the step before its first point past it
    (each point is drawn at the step metric's latest value at or before it, docs/sql.md)."""
    lo, hi = x_range
    where = "project = {project:String} AND run_id = {run:String} AND name = {name:String}"
    parameters: dict[str, Any] = {"project": run.project, "run": run.id}
    if x in ("time", "relative_time"):
        shift = (seconds(run.started_at) or 0.0) if x == "relative_time" else 0.0
        parameters |= {"name": key, "lo": int((lo + shift) * 1e6), "hi": int((hi + shift) * 1e6)}
        sql = (
            "SELECT minOrNull(step) AS first, maxOrNull(step) AS last, NULL AS past "
            f"FROM metrics WHERE {where} AND "
            "toUnixTimestamp64Micro(ts) BETWEEN {lo:Int64} AND {hi:Int64}"
        )
    else:
        parameters |= {"name": x, "lo": float(lo), "hi": float(hi)}
        inside = "value >= {lo:Float64} AND value <= {hi:Float64}"
        sql = (
            f"SELECT minIfOrNull(step, {inside}) AS first, maxIfOrNull(step, {inside}) AS last, "
            f"minIfOrNull(step, value > {{hi:Float64}}) AS past FROM metrics WHERE {where}"
        )
    row = records_of(api.sql(sql, parameters))[0]
    first, last, past = row["first"], row["last"], row["past"]
    if first is None:
        return 0, -1
    if past is not None and past > last:
        last = past - 1  # the steps drawn at the range's last value of the step metric
    return int(first), int(last)


#: Non-finite points a chart marks, at most (a run that went NaN for good has millions).
MAX_MARKERS = 1000

_NONFINITE_SQL = (
    "SELECT step, toUnixTimestamp64Micro(ts) / 1e6 AS t, value FROM metrics "
    "WHERE project = {project:String} AND run_id = {run:String} AND name = {name:String} "
    "AND step BETWEEN {lo:Int64} AND {hi:Int64} AND NOT isFinite(value) "
    "ORDER BY step, seq LIMIT {limit:UInt32}"
)


# Whether the metric has a NaN or ±inf point at all, from run_summaries (a few rows): min and
# max there leave NaN out (counted in nan_count) but take ±inf in (migration 0004).
_HAS_NONFINITE_SQL = (
    "SELECT sum(nan_count) > 0 OR min(min) = -inf OR max(max) = inf AS any FROM run_summaries "
    "WHERE project = {project:String} AND run_id = {run:String} AND name = {name:String}"
)


def _nonfinite(
    api: Api, run: Run, key: str, *, x: str, min_step: int | None, max_step: int | None
) -> dict[str, list[Any]]:
    """The NaN and ±inf points of a bucketed metric: ``{"x": [...], "y": ["NaN", ...]}``.

    A bucket's min and max leave NaN out and its last value is one point of many, so a NaN
    inside a bucket would not show; the chart marks these points at their own x instead. At
    most MAX_MARKERS points, read (read-only, parameters bound) only when run_summaries says the
    metric has any: most have none, and looking for them reads every point of the range."""
    where = {"project": run.project, "run": run.id, "name": key}
    if not api.reader.query(_HAS_NONFINITE_SQL, where).rows[0][0]:
        return {"x": [], "y": []}
    rows = api.reader.query(
        _NONFINITE_SQL,
        {
            **where,
            "lo": -(2**63) if min_step is None else min_step,
            "hi": 2**63 - 1 if max_step is None else max_step,
            "limit": MAX_MARKERS,
        },
    ).records()
    if x == "step":
        xs = [r["step"] for r in rows]
    elif x == "time":
        xs = [r["t"] for r in rows]
    else:
        start = seconds(run.started_at) or 0.0
        xs = [r["t"] - start for r in rows]
    return {"x": xs, "y": [r["value"] for r in rows]}


# --- compare ----------------------------------------------------------------------------------
def _quoted(value: str) -> str:
    return json.dumps(value)  # a filter string literal: \" and \uXXXX are filter escapes


def compare_runs(api: Api, run_ids: Sequence[str], project: str | None = None) -> list[Run]:
    """The runs of a comparison (of ``project`` when given), in the order given (unknown ids
    left out)."""
    ids = list(dict.fromkeys(run_ids))[:MAX_COMPARE]
    if not ids:
        return []
    where = "run_id in [" + ", ".join(_quoted(i) for i in ids) + "]"
    found = {r.id: r for r in api.runs(project=project, where=where, limit=len(ids))}
    return [found[i] for i in ids if i in found]


def compare_meta(api: Api, run_ids: Sequence[str], project: str | None = None) -> dict[str, Any]:
    """``{"runs": [run rows], "metrics", "config_keys", "step_metrics"}`` (names: the union
    over the runs; a step metric is an x axis a chart may use, define_metric(step_metric=))."""
    runs = compare_runs(api, run_ids, project)
    names: dict[str, None] = {}
    keys: dict[str, None] = {}
    steps: dict[str, None] = {}
    for run in runs:
        names.update(dict.fromkeys(run.metric_names()))
        keys.update(dict.fromkeys(flat_keys(run.config or {})))
        steps.update(dict.fromkeys(run.step_metrics()))
    return document(
        {
            "runs": [run_row(r) for r in runs],
            "metrics": sorted(names),
            "config_keys": sorted(keys),
            "step_metrics": sorted(steps),
        }
    )


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str) and v in ("NaN", "Infinity", "-Infinity"):
        return float(v.replace("Infinity", "inf"))
    return None


def _grid_stats(
    series: Sequence[tuple[list[float | None], list[float | None]]], cells: int
) -> dict[str, list[Any]]:
    """Mean, min and max across runs on a common grid of ``cells`` equal x ranges: each run's
    points are averaged per cell first, so runs logged at different steps line up."""
    xs = [x for xs_, _ in series for x in xs_ if x is not None]
    if not xs:
        return {"x": [], "y": [], "min": [], "max": []}
    lo, hi = min(xs), max(xs)
    width = (hi - lo) / cells if hi > lo else 1.0
    per_cell: list[list[float]] = [[] for _ in range(cells)]
    for run_x, run_y in series:
        sums = [0.0] * cells
        counts = [0] * cells
        for x, y in zip(run_x, run_y, strict=False):
            if x is None or y is None or not math.isfinite(y):
                continue
            i = min(int((x - lo) / width), cells - 1)
            sums[i] += y
            counts[i] += 1
        for i in range(cells):
            if counts[i]:
                per_cell[i].append(sums[i] / counts[i])
    out: dict[str, list[Any]] = {"x": [], "y": [], "min": [], "max": []}
    for i, values in enumerate(per_cell):
        if not values:
            continue
        out["x"].append(lo + (i + 0.5) * width if hi > lo else lo)
        out["y"].append(sum(values) / len(values))
        out["min"].append(min(values))
        out["max"].append(max(values))
    return out


def compare_history(
    api: Api,
    run_ids: Sequence[str],
    key: str,
    *,
    project: str | None = None,
    x: str = "step",
    samples: int = 500,
    group_by: str | None = None,
    min_step: int | None = None,
    max_step: int | None = None,
    x_range: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """One metric of several runs: ``{"key", "x", "series": [{label, run_ids, points}]}``.

    Without ``group_by`` one series per run (bucketed as in :func:`history`). With it (a dotted
    config key) one series per distinct value: the mean across the group's runs and the min/max
    band across them, on a common grid of ``samples`` cells."""
    runs = compare_runs(api, run_ids, project)
    samples = max(1, min(int(samples), MAX_SAMPLES))
    per_run: list[tuple[Run, dict[str, Any]]] = []
    for run in runs:
        first, last = min_step, max_step
        try:
            if x_range is not None and x != "step":
                first, last = steps_of(api, run, key, x, x_range)
            table = run.history(keys=[key], x=x, samples=samples, min_step=first, max_step=last)
        except ValueError:
            if len(runs) == 1:
                raise
            continue  # x is a step metric this run did not define: the others still show
        records = records_of(table)
        if not records:
            continue  # the run has no such metric (or no point in the range)
        xs = _column(records, x)
        if x == "time":
            xs = [seconds(v) for v in xs]
        names = list(records[0])  # by position: a metric named like x comes as "<x>.1"
        points: dict[str, Any] = {"x": xs, "y": _column(records, names[1])}
        if len(names) == 4:
            points["min"] = _column(records, names[2])
            points["max"] = _column(records, names[3])
            if not group_by and len(runs) <= MARKED_RUNS and x in X_AXES:
                points["nonfinite"] = _nonfinite(api, run, key, x=x, min_step=first, max_step=last)
        per_run.append((run, points))
    series: list[dict[str, Any]] = []
    if not group_by:
        for run, points in per_run:
            series.append({"label": run.name or run.id, "run_ids": [run.id], "points": points})
    else:
        groups: dict[str, list[tuple[Run, dict[str, Any]]]] = {}
        for run, points in per_run:
            label = json.dumps(document_value(run.config or {}, group_by))
            groups.setdefault(label, []).append((run, points))
        for label, members in groups.items():
            stats = _grid_stats(
                [([_number(v) for v in p["x"]], [_number(v) for v in p["y"]]) for _, p in members],
                samples,
            )
            series.append(
                {
                    "label": f"{group_by}={label} (n={len(members)})",
                    "run_ids": [r.id for r, _ in members],
                    "points": stats,
                }
            )
    return document({"key": key, "x": x, "group_by": group_by or None, "series": series})
