"""What the UI's JSON endpoints answer (the charts' series are in :mod:`runstream.ui.series`),
built from :class:`runstream.Api` and nothing else (the SQL console excepted: it runs the user's
SQL through :class:`runstream.read.Reader`, which screens it and runs it read-only under the read
limits).

Every function takes an Api and plain values parsed from the request and returns a JSON-ready
structure: floats stay floats except NaN and the infinities, which become the strings ``"NaN"``,
``"Infinity"`` and ``"-Infinity"`` (how the event schema spells them; JSON has no such numbers),
and times become ISO 8601 strings in UTC. Series travel column-wise (``{"x": [...], "y": [...]}``),
which is what uPlot draws and about half the bytes of a list of points.
"""

from __future__ import annotations

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
#: Rows the SQL console shows, at most (the result says when there were more).
SQL_ROWS = 5000


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


def document(value: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-ready response body (see :func:`jsonable`)."""
    out = jsonable(value)
    assert isinstance(out, dict)
    return out


def records_of(table: Table) -> list[dict[str, Any]]:
    """Rows of an Api ``Table`` as dicts."""
    if hasattr(table, "to_records"):
        return list(table.to_records())
    return [dict(r) for r in table]


def seconds(value: Any) -> float | None:
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
    return {"projects": jsonable(records_of(api.projects()))}


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


def flat_keys(doc: Mapping[str, Any], prefix: str = "", depth: int = 0) -> Iterable[str]:
    """Dotted leaf keys of a config (nested dicts opened two levels deep)."""
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and depth < 2:
            yield from flat_keys(value, f"{name}.", depth + 1)
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
        config_keys.update(dict.fromkeys(flat_keys(row["config"] or {})))
        summary_keys.update(dict.fromkeys((row["summary"] or {}).keys()))
    return document(
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
    (and steps) of its histograms; ``points_at``, the time of the run's newest point (what a
    live page watches: ``metrics`` is written with the events, the run's row up to
    ``sink_snapshot_seconds`` later). Raises ``LookupError`` (RunNotFoundError) for an unknown
    id."""
    run = api.run(run_id, project=project)
    row = run_row(run)
    found = api.reader.query(
        "SELECT name, last_ts FROM run_summaries_current "
        "WHERE project = {p:String} AND run_id = {r:String} ORDER BY name",
        {"p": run.project, "r": run.id},
    ).rows
    row["metrics"] = [str(name) for name, _ in found]
    row["points_at"] = max((at for _, at in found), default=None)
    row["step_metrics"] = list(run.step_metrics())
    row["alerts"] = records_of(run.alerts())
    return document(row)


# --- series -----------------------------------------------------------------------------------
def system_metrics(api: Api, run_id: str, project: str | None = None) -> dict[str, Any]:
    """``{"series": {name: {"x": [seconds since epoch], "y": [...]}}}``."""
    run = api.run(run_id, project=project)
    series: dict[str, dict[str, list[Any]]] = {}
    for row in records_of(run.system_metrics()):
        s = series.setdefault(str(row["name"]), {"x": [], "y": []})
        s["x"].append(seconds(row["ts"]))
        s["y"].append(row["value"])
    return document({"series": series})


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
    for row in records_of(table):
        found.setdefault(str(row["name"]), []).append(
            {"step": row["step"], "bins": list(row["bins"]), "counts": list(row["counts"])}
        )
    for items in found.values():
        items.reverse()
    return document({"histograms": found})


def alerts(api: Api, project: str | None, run_id: str | None, limit: int) -> dict[str, Any]:
    """``{"alerts": [...], "webhooks_file", "webhooks_configured"}``: rows of ``alerts_current``,
    newest first, each with its run's ``run_name`` and ``run_status`` ("" when the run is not
    there); whether the webhooks TOML (settings.webhooks_path) exists on the UI's host."""
    limit = max(1, min(limit, 1000))
    table = api.alerts(project=project or None, run_id=run_id or None, limit=limit)
    rows = records_of(table)
    # Each alert's run by name and status.
    runs: dict[tuple[str, str], tuple[str, str]] = {}
    if rows:
        found = api.reader.query(
            "SELECT project, run_id, name, status FROM runs_current "
            "WHERE run_id IN {ids:Array(String)}",
            {"ids": sorted({str(r["run_id"]) for r in rows})},
        ).rows
        runs = {(str(p), str(i)): (str(n), str(st)) for p, i, n, st in found}
    for row in rows:
        name, status = runs.get((str(row["project"]), str(row["run_id"])), ("", ""))
        row["run_name"], row["run_status"] = name, status
    # No webhooks file where the UI runs: "pending" would wait for a delivery nobody makes.
    return {
        "alerts": jsonable(rows),
        "webhooks_file": str(api.settings.webhooks_path),
        "webhooks_configured": api.settings.webhooks_path.is_file(),
    }


# --- SQL console ------------------------------------------------------------------------------
def sql(reader: Reader, query: str, limit: int = SQL_ROWS) -> dict[str, Any]:
    """The console's query, read-only through the Reader: ``{"columns", "types", "rows",
    "truncated"}`` (at most ``limit`` rows). ReadRefusedError / QueryError say why not."""
    if not query.strip():
        raise ReadRefusedError("write a query, e.g. SELECT run_id, name FROM runs_current LIMIT 10")
    result = reader.query(query, limit=max(1, min(limit, SQL_ROWS)))
    return document(
        {
            "columns": list(result.columns),
            "types": list(result.types),
            "rows": [list(r) for r in result.rows],
            "truncated": bool(result.truncated),
        }
    )


# Databases every user sees and that hold no one's runs.
_SERVER_DATABASES = ("system", "INFORMATION_SCHEMA", "information_schema")


def sql_scope(reader: Reader) -> dict[str, Any]:
    """Whom the SQL console reads as: ``{"user", "database", "other_databases"}`` with the names
    (at most 20) of the other databases that user may see. ClickHouse lists in system.databases
    only those the user has a grant on (SHOW DATABASES); the reader user of read.md has none
    beyond runstream's, the ``default`` user all of the server's."""
    row = reader.query(
        "SELECT currentUser(), currentDatabase(), "
        "(SELECT groupArray(name) FROM (SELECT name FROM system.databases "
        "WHERE name != currentDatabase() AND name NOT IN {skip:Array(String)} "
        "ORDER BY name LIMIT 20))",
        {"skip": list(_SERVER_DATABASES)},
    ).rows[0]
    return {"user": str(row[0]), "database": str(row[1]), "other_databases": list(row[2])}
