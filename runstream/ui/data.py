"""What the UI's JSON endpoints answer, built from :class:`runstream.Api` and nothing else (the
SQL console excepted: it runs the user's SQL through :class:`runstream.read.Reader`, which screens
it and runs it read-only under the read limits).

Every function takes an Api and plain values parsed from the request and returns a JSON-ready
structure: floats stay floats except NaN and the infinities, which become the strings ``"NaN"``,
``"Infinity"`` and ``"-Infinity"`` (how the event schema spells them; JSON has no such numbers),
and times become ISO 8601 strings in UTC. Series travel column-wise (``{"x": [...], "y": [...]}``),
which is what uPlot draws and about half the bytes of a list of points.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any

from runstream.errors import ReadRefusedError

if TYPE_CHECKING:
    from runstream.read import Reader
    from runstream.read.api import Api
    from runstream.read.run import Run
    from runstream.read.table import Table

#: Runs per page of the runs table, at most.
MAX_PAGE = 500
#: Buckets per chart, at most: a chart is at most a few thousand pixels wide.
MAX_SAMPLES = 5000
#: Runs in one comparison, at most.
MAX_COMPARE = 50
#: Rows the SQL console shows, at most (the result says when there were more).
SQL_ROWS = 5000

X_AXES = ("step", "time", "relative_time")


def jsonable(value: Any) -> Any:
    """``value`` with every float, time and container made JSON-ready (see the module doc)."""
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    if hasattr(value, "item"):  # numpy scalars
        return jsonable(value.item())
    if hasattr(value, "tolist"):  # numpy arrays
        return jsonable(value.tolist())
    if isinstance(value, (int, float)):
        return jsonable(float(value))
    return str(value)


def _document(value: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-ready response body (see :func:`jsonable`)."""
    out = jsonable(value)
    assert isinstance(out, dict)
    return out


def _records(table: Table) -> list[dict[str, Any]]:
    """Rows of an Api ``Table`` as dicts."""
    if hasattr(table, "to_records"):
        return list(table.to_records())
    return [dict(r) for r in table]


def _seconds(value: Any) -> float | None:
    """A time as seconds since the epoch (what uPlot's time axis wants)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return float(value.timestamp())
    if value is None:
        return None
    return float(value)


# --- projects and runs ------------------------------------------------------------------------
def projects(api: Api) -> dict[str, Any]:
    """``{"projects": [{project, runs, running, last_activity}]}``, newest activity first."""
    return {"projects": jsonable(_records(api.projects()))}


def run_row(run: Run) -> dict[str, Any]:
    """One run as the runs table and the run page show it."""
    return {
        "id": run.id,
        "project": run.project,
        "name": run.name,
        "status": run.status,
        "tags": list(run.tags or []),
        "group": run.group,
        "job_type": run.job_type,
        "notes": run.notes,
        "config": run.config,
        "summary": run.summary,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "exit_code": run.exit_code,
        "last_step": run.last_step,
        "last_event_at": run.last_event_at,
    }


def _flat_keys(doc: Mapping[str, Any], prefix: str = "", depth: int = 0) -> Iterable[str]:
    """Dotted leaf keys of a config (nested dicts opened two levels deep)."""
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and depth < 2:
            yield from _flat_keys(value, f"{name}.", depth + 1)
        else:
            yield name


def runs_page(
    api: Api,
    *,
    project: str | None,
    where: str | None,
    order_by: Sequence[str] | None,
    limit: int,
    offset: int,
) -> dict[str, Any]:
    """One page of the runs table: ``{"total", "offset", "limit", "runs", "config_keys",
    "summary_keys"}``. ``total`` counts every run the filter matches; the keys are those of the
    page's runs, for the column chooser. Paging and sorting happen in ClickHouse
    (``api.runs(limit=, offset=)``)."""
    limit = max(1, min(limit, MAX_PAGE))
    offset = max(0, offset)
    runs = api.runs(
        project=project or None,
        where=where or None,
        order_by=list(order_by) if order_by else None,
        limit=limit,
        offset=offset,
    )
    rows = [run_row(r) for r in runs]
    config_keys: dict[str, None] = {}
    summary_keys: dict[str, None] = {}
    for row in rows:
        config_keys.update(dict.fromkeys(_flat_keys(row["config"] or {})))
        summary_keys.update(dict.fromkeys((row["summary"] or {}).keys()))
    return _document(
        {
            "total": int(getattr(runs, "total", len(rows))),
            "offset": offset,
            "limit": limit,
            "runs": rows,
            "config_keys": sorted(config_keys),
            "summary_keys": sorted(summary_keys),
        }
    )


def run_page(api: Api, run_id: str, project: str | None = None) -> dict[str, Any]:
    """Everything of one run but its series: the run, its metric names, its alerts and the names
    (and steps) of its histograms. Raises ``LookupError`` (RunNotFoundError) for an unknown id."""
    run = api.run(run_id, project=project)
    row = run_row(run)
    row["metrics"] = list(run.metric_names())
    row["step_metrics"] = list(run.step_metrics())
    row["alerts"] = _records(run.alerts())
    return _document(row)


# --- series -----------------------------------------------------------------------------------
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
) -> dict[str, Any]:
    """One metric of one run for a chart: ``{"key", "x", "bucketed", "points": {"x": [...],
    "y": [...], "min": [...], "max": [...]}}``. With ``samples`` the step range (or the visible
    part of it: ``min_step``..``max_step``, what a zoom asks for) is cut into that many buckets
    by ``run.history(samples=)``: ``y`` is a bucket's last value, ``min``/``max`` its exact
    extremes, so no spike is hidden, and ``nonfinite`` (``{"x", "y"}``) the NaN and ±inf points
    of the range, which the chart marks. ``x`` of a time axis is in seconds since the epoch."""
    run = api.run(run_id, project=project)
    if samples is not None:
        samples = max(1, min(int(samples), MAX_SAMPLES))
    table = run.history(keys=[key], x=x, samples=samples, min_step=min_step, max_step=max_step)
    records = _records(table)
    columns = list(getattr(table, "columns", records[0].keys() if records else []))
    xs = _column(records, x)
    if x == "time":
        xs = [_seconds(v) for v in xs]
    points: dict[str, Any] = {"x": xs, "y": _column(records, key)}
    bucketed = f"{key}.min" in columns
    if bucketed:
        points["min"] = _column(records, f"{key}.min")
        points["max"] = _column(records, f"{key}.max")
    if bucketed and x in X_AXES:
        points["nonfinite"] = _nonfinite(api, run, key, x=x, min_step=min_step, max_step=max_step)
    return _document({"run_id": run_id, "key": key, "x": x, "bucketed": bucketed, "points": points})


#: Non-finite points a chart marks, at most (a run that went NaN for good has millions).
MAX_MARKERS = 1000

_NONFINITE_SQL = (
    "SELECT step, toUnixTimestamp64Micro(ts) / 1e6 AS t, value FROM metrics "
    "WHERE project = {project:String} AND run_id = {run:String} AND name = {name:String} "
    "AND step BETWEEN {lo:Int64} AND {hi:Int64} AND NOT isFinite(value) "
    "ORDER BY step, seq LIMIT {limit:UInt32}"
)


def _nonfinite(
    api: Api, run: Run, key: str, *, x: str, min_step: int | None, max_step: int | None
) -> dict[str, list[Any]]:
    """The NaN and ±inf points of a bucketed metric: ``{"x": [...], "y": ["NaN", ...]}``.

    A bucket's min and max leave NaN out and its last value is one point of many, so a NaN
    inside a bucket would not show; the chart marks these points at their own x instead. One
    query through ``api.sql`` (read-only, parameters bound), at most MAX_MARKERS points."""
    table = api.sql(
        _NONFINITE_SQL,
        {
            "project": run.project,
            "run": run.id,
            "name": key,
            "lo": -(2**63) if min_step is None else min_step,
            "hi": 2**63 - 1 if max_step is None else max_step,
            "limit": MAX_MARKERS,
        },
    )
    rows = _records(table)
    if x == "step":
        xs = [r["step"] for r in rows]
    elif x == "time":
        xs = [r["t"] for r in rows]
    else:
        start = _seconds(run.started_at) or 0.0
        xs = [r["t"] - start for r in rows]
    return {"x": xs, "y": [r["value"] for r in rows]}


def system_metrics(api: Api, run_id: str, project: str | None = None) -> dict[str, Any]:
    """``{"series": {name: {"x": [seconds since epoch], "y": [...]}}}``."""
    run = api.run(run_id, project=project)
    series: dict[str, dict[str, list[Any]]] = {}
    for row in _records(run.system_metrics()):
        s = series.setdefault(str(row["name"]), {"x": [], "y": []})
        s["x"].append(_seconds(row["ts"]))
        s["y"].append(row["value"])
    return _document({"series": series})


#: Steps of each histogram the run page gets, the latest ones.
HISTOGRAM_STEPS = 50

# A step logged twice counts once (its latest histogram), then the latest steps of each name.
_HISTOGRAMS_SQL = (
    "SELECT name, step, bins, counts FROM (SELECT name, step, bins, counts FROM histograms "
    "WHERE project = {project:String} AND run_id = {run:String} "
    "ORDER BY name, step DESC, seq DESC LIMIT 1 BY name, step) "
    "ORDER BY name, step DESC LIMIT {steps:UInt32} BY name"
)


def histograms(api: Api, run_id: str, project: str | None = None) -> dict[str, Any]:
    """``{"histograms": {name: [{step, bins, counts}]}}``, steps ascending: the latest
    HISTOGRAM_STEPS steps of each name (the page draws one and a strip of them). One query through
    ``api.sql`` that cuts in ClickHouse (``LIMIT ... BY``), rather than ``run.histograms()``, which
    reads every step of every histogram: ``run.watch`` logs hundreds of them per step."""
    run = api.run(run_id, project=project)
    table = api.sql(
        _HISTOGRAMS_SQL, {"project": run.project, "run": run.id, "steps": HISTOGRAM_STEPS}
    )
    found: dict[str, list[dict[str, Any]]] = {}
    for row in _records(table):
        found.setdefault(str(row["name"]), []).append(
            {"step": row["step"], "bins": list(row["bins"]), "counts": list(row["counts"])}
        )
    for items in found.values():
        items.reverse()
    return _document({"histograms": found})


def alerts(api: Api, project: str | None, run_id: str | None, limit: int) -> dict[str, Any]:
    """``{"alerts": [...]}``: rows of ``alerts_current``, newest first."""
    limit = max(1, min(limit, 1000))
    table = api.alerts(project=project or None, run_id=run_id or None, limit=limit)
    return {"alerts": jsonable(_records(table))}


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
        keys.update(dict.fromkeys(_flat_keys(run.config or {})))
        steps.update(dict.fromkeys(run.step_metrics()))
    return _document(
        {
            "runs": [run_row(r) for r in runs],
            "metrics": sorted(names),
            "config_keys": sorted(keys),
            "step_metrics": sorted(steps),
        }
    )


def config_value(config: Mapping[str, Any], dotted: str) -> Any:
    """The config value at ``dotted`` (a top-level key with dots wins, as in the filters)."""
    if dotted in config:
        return config[dotted]
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


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
) -> dict[str, Any]:
    """One metric of several runs: ``{"key", "x", "series": [{label, run_ids, points}]}``.

    Without ``group_by`` one series per run (bucketed as in :func:`history`). With it (a dotted
    config key) one series per distinct value: the mean across the group's runs and the min/max
    band across them, on a common grid of ``samples`` cells."""
    runs = compare_runs(api, run_ids, project)
    samples = max(1, min(int(samples), MAX_SAMPLES))
    per_run: list[tuple[Run, dict[str, list[Any]]]] = []
    for run in runs:
        try:
            table = run.history(
                keys=[key], x=x, samples=samples, min_step=min_step, max_step=max_step
            )
        except ValueError:
            if len(runs) == 1:
                raise
            continue  # x is a step metric this run did not define: the others still show
        records = _records(table)
        if not records:
            continue  # the run has no such metric (or no point in the range)
        xs = _column(records, x)
        if x == "time":
            xs = [_seconds(v) for v in xs]
        points = {"x": xs, "y": _column(records, key)}
        if records and f"{key}.min" in records[0]:
            points["min"] = _column(records, f"{key}.min")
            points["max"] = _column(records, f"{key}.max")
        per_run.append((run, points))
    series: list[dict[str, Any]] = []
    if not group_by:
        for run, points in per_run:
            series.append({"label": run.name or run.id, "run_ids": [run.id], "points": points})
    else:
        groups: dict[str, list[tuple[Run, dict[str, list[Any]]]]] = {}
        for run, points in per_run:
            label = json.dumps(config_value(run.config or {}, group_by))
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
    return _document({"key": key, "x": x, "group_by": group_by or None, "series": series})


# --- SQL console ------------------------------------------------------------------------------
def sql(reader: Reader, query: str, limit: int = SQL_ROWS) -> dict[str, Any]:
    """The console's query, read-only through the Reader: ``{"columns", "types", "rows",
    "truncated"}`` (at most ``limit`` rows). ReadRefusedError / QueryError say why not."""
    if not query.strip():
        raise ReadRefusedError("write a query, e.g. SELECT run_id, name FROM runs_current LIMIT 10")
    result = reader.query(query, limit=max(1, min(limit, SQL_ROWS)))
    return _document(
        {
            "columns": list(result.columns),
            "types": list(result.types),
            "rows": [list(r) for r in result.rows],
            "truncated": bool(result.truncated),
        }
    )
