"""A stand-in for ``runstream.Api`` while it is being built (branch i12-api): the subset of the
contract the UI calls, on :class:`runstream.read.Reader`. Deleted once ``runstream.Api`` lands;
nothing outside runstream/ui/data.py imports it."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from runstream.read import Reader, compile_filter
from runstream.settings import Settings


class Table:
    def __init__(self, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        self.columns = columns
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.to_records())

    def to_records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r, strict=True)) for r in self._rows]


def _table(reader: Reader, sql: str, params: dict[str, Any] | None = None) -> Table:
    result = reader.query(sql, params)
    return Table(result.columns, result.rows)


_RUN_COLUMNS = (
    "run_id, project, name, status, tags, `group`, job_type, notes, config, summary, "
    "started_at, finished_at, exit_code, last_step, last_event_at"
)


class Run:
    def __init__(self, reader: Reader, row: dict[str, Any]) -> None:
        self._reader = reader
        self.id: str = row["run_id"]
        self.project: str = row["project"]
        self.name: str = row["name"]
        self.status: str = row["status"]
        self.tags: list[str] = list(row["tags"])
        self.group: str = row["group"]
        self.job_type: str = row["job_type"]
        self.notes: str = row["notes"]
        self.config: dict[str, Any] = json.loads(row["config"] or "{}")
        self.summary: dict[str, Any] = json.loads(row["summary"] or "{}")
        self.started_at = row["started_at"]
        self.finished_at = row["finished_at"]
        self.exit_code = row["exit_code"]
        self.last_step = row["last_step"]
        self.last_event_at = row["last_event_at"]

    def metric_names(self) -> list[str]:
        r = self._reader.query(
            "SELECT DISTINCT name FROM run_summaries_current WHERE run_id = {r:String} "
            "ORDER BY name",
            {"r": self.id},
        )
        return [row[0] for row in r.rows]

    def step_metrics(self) -> list[str]:
        r = self._reader.query(
            "SELECT DISTINCT step_metric FROM metric_definitions_current WHERE run_id = "
            "{r:String} AND step_metric != '' ORDER BY step_metric",
            {"r": self.id},
        )
        return [row[0] for row in r.rows]

    def history(
        self,
        keys: Sequence[str] | None = None,
        x: str = "step",
        samples: int | None = None,
        min_step: int | None = None,
        max_step: int | None = None,
    ) -> Table:
        key = (keys or self.metric_names())[0]
        lo = min_step if min_step is not None else -(2**62)
        hi = max_step if max_step is not None else 2**62
        params = {"r": self.id, "n": key, "lo": lo, "hi": hi}
        xcol = {
            "step": "step",
            "time": "ts",
            "relative_time": "dateDiff('millisecond', {t0:DateTime64(6)}, ts) / 1000",
        }[x]
        if x == "relative_time":
            params["t0"] = self.started_at
        where = (
            "run_id = {r:String} AND name = {n:String} AND step BETWEEN {lo:Int64} AND {hi:Int64}"
        )
        if samples is None:
            t = _table(
                self._reader,
                f"SELECT {xcol} AS `{x}`, value AS `{key}` FROM metrics WHERE {where} "
                "ORDER BY step, seq",
                params,
            )
            return t
        params["b"] = samples
        inner = xcol.replace("ts", "t") if x != "step" else "s"
        return _table(
            self._reader,
            f"WITH (SELECT (min(step), max(step)) FROM metrics WHERE {where}) AS bounds "
            f"SELECT max({inner}) AS `{x}`, argMax(v, (s, q)) AS `{key}`, "
            f"min(v) AS `{key}.min`, max(v) AS `{key}.max` FROM (SELECT step AS s, "
            f"value AS v, seq AS q, ts AS t FROM metrics WHERE {where}) "
            "GROUP BY intDiv(toInt128(s - bounds.1) * {b:UInt32}, "
            "toInt128(bounds.2 - bounds.1) + 1) AS bucket ORDER BY bucket",
            params,
        )

    def system_metrics(self, names: Sequence[str] | None = None) -> Table:
        return _table(
            self._reader,
            "SELECT ts, name, value FROM system_metrics WHERE run_id = {r:String} ORDER BY ts",
            {"r": self.id},
        )

    def alerts(self) -> Table:
        return _table(
            self._reader,
            "SELECT * FROM alerts_current WHERE run_id = {r:String} ORDER BY fired_at DESC",
            {"r": self.id},
        )

    def histograms(self, name: str | None = None) -> Table:
        return _table(
            self._reader,
            "SELECT name, step, bins, counts, ts FROM histograms WHERE run_id = {r:String} "
            "ORDER BY name, step",
            {"r": self.id},
        )


class Runs(list[Run]):
    total: int = 0


class Api:
    def __init__(
        self,
        clickhouse_url: str | None = None,
        *,
        database: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.settings = settings or Settings.load()
        self._reader = Reader(self.settings)

    def projects(self) -> Table:
        return _table(
            self._reader,
            "SELECT project, count() AS runs, countIf(status = 'running') AS running, "
            "max(last_event_at) AS last_activity FROM runs_current GROUP BY project "
            "ORDER BY last_activity DESC",
        )

    def runs(
        self,
        project: str | None = None,
        where: str | None = None,
        order_by: str | list[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> Runs:
        conds: list[str] = ["1"]
        params: dict[str, Any] = {}
        if project:
            conds.append("project = {p:String}")
            params["p"] = project
        if where:
            sql, fp = compile_filter(where)
            conds.append(f"({sql})")
            params.update(fp)
        cond = " AND ".join(conds)
        orders = [order_by] if isinstance(order_by, str) else list(order_by or ["-started_at"])
        parts: list[str] = []
        oparams: dict[str, Any] = {}
        for i, spec in enumerate(orders):
            desc = spec.startswith("-")
            o = spec.lstrip("-")
            if o.startswith(("config.", "summary.")):
                doc, key = o.split(".", 1)
                oparams[f"o{i}"] = key
                parts.append(f"JSONExtractFloat({doc}, {{o{i}:String}})")
            else:
                parts.append(f"`{o}`")
            parts[-1] += " DESC" if desc else ""
        total = self._reader.query(f"SELECT count() FROM runs_current WHERE {cond}", params).rows
        params.update(oparams)
        params["lim"] = limit if limit is not None else 10**9
        params["off"] = offset
        rows = self._reader.query(
            f"SELECT {_RUN_COLUMNS} FROM runs_current WHERE {cond} ORDER BY {', '.join(parts)}, "
            "run_id LIMIT {lim:UInt64} OFFSET {off:UInt64}",
            params,
        ).records()
        out = Runs(Run(self._reader, r) for r in rows)
        out.total = int(total[0][0])
        return out

    def run(self, run_id: str) -> Run:
        rows = self._reader.query(
            f"SELECT {_RUN_COLUMNS} FROM runs_current WHERE run_id = {{r:String}}", {"r": run_id}
        ).records()
        if not rows:
            raise LookupError(f"no run {run_id!r}")
        return Run(self._reader, rows[0])

    def sql(self, query: str, parameters: dict[str, Any] | None = None) -> Table:
        return _table(self._reader, query, parameters)

    def alerts(
        self, project: str | None = None, run_id: str | None = None, limit: int = 100
    ) -> Table:
        return _table(
            self._reader,
            "SELECT * FROM alerts_current WHERE ({p:String} = '' OR project = {p:String}) "
            "AND ({r:String} = '' OR run_id = {r:String}) ORDER BY fired_at DESC "
            "LIMIT {l:UInt32}",
            {"p": project or "", "r": run_id or "", "l": limit},
        )

    def close(self) -> None:
        self._reader.close()
