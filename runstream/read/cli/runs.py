"""``runstream runs ls`` and ``runstream runs show``: runs through :class:`runstream.Api`.

``runs ls`` prints one row per run (newest first unless ``--sort``): ``--columns`` picks
``id, project, name, status, tags, group, job_type, started_at, finished_at, runtime,
last_step, exit_code`` and any ``config.KEY`` / ``summary.KEY`` (a dotted key is the top-level
key of that name if there is one, else the nested path, as in filters). ``runtime`` is seconds
from ``started_at`` to ``finished_at`` (to the last event while running).

``runs show RUN_ID`` prints the run's fields, config, summary, its metrics with a unicode
sparkline each (:data:`SPARK_BUCKETS` buckets of ``run.history(samples=...)``: the value at each
bucket's last step) and its last :data:`LAST_EVENTS` events; as JSON when piped.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from runstream.errors import FilterError, ReadArgumentError, RunNotFoundError
from runstream.read.cli.output import (
    choose_format,
    escape,
    is_terminal,
    json_value,
    print_table,
    write_rows,
)
from runstream.read.cli.runref import one_run, parse_run
from runstream.read.run import document_value
from runstream.settings import Settings

DEFAULT_COLUMNS = ("id", "name", "status", "started_at", "runtime", "last_step")
PLAIN_COLUMNS = (
    "id", "project", "name", "status", "tags", "group", "job_type", "started_at", "finished_at",
    "runtime", "last_step", "exit_code",
)  # fmt: skip
SPARK_BUCKETS = 30
SPARK_METRICS = 50
LAST_EVENTS = 5
_BARS = "▁▂▃▄▅▆▇█"
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_/\-]+")  # a key the filter language writes after a dot


def sparkline(values: Sequence[float | None]) -> str:
    """One character per value, ``▁`` (lowest) to ``█`` (highest); a blank for a missing or NaN
    value; all ``▄`` when every value is the same."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return " " * len(values)
    low, high = min(finite), max(finite)
    out = []
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(" ")
        elif high == low:
            out.append(_BARS[3])
        else:
            out.append(_BARS[round((v - low) / (high - low) * (len(_BARS) - 1))])
    return "".join(out)


def runtime(run: Any) -> float | None:
    end = run.finished_at or run.last_event_at
    if run.started_at is None or end is None:
        return None
    seconds: float = (end - run.started_at).total_seconds()
    return round(seconds, 3)


def human_seconds(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{seconds:.1f}s"


def document_column(column: str) -> tuple[str, tuple[str, ...], bool] | None:
    """``config.KEY`` / ``summary.KEY`` / ``config["a.b"]["c"]`` (the filter language's
    names, docs/read.md "Filters") as ``(document, keys, exact)``; ``exact`` when a bracket
    names a key (then the path is walked as written; a dotted name reads the top-level key of
    that name first, as in filters). None for any other column; :class:`FilterError` for a
    ``config``/``summary`` name it cannot read."""
    if not column.startswith(("config", "summary")):
        return None
    from runstream.read.filters import _tokens

    tokens = _tokens(column)
    name = tokens[0]
    if name.kind != "name" or name.text not in ("config", "summary"):
        return None
    keys: list[str] = []
    exact = False
    i = 1
    while tokens[i].kind != "end":
        here = tokens[i]
        if here.text == "." and tokens[i + 1].kind == "segment":
            keys.append(tokens[i + 1].text)
            i += 2
        elif here.text == "[" and tokens[i + 1].kind == "string" and tokens[i + 2].text == "]":
            keys.append(str(tokens[i + 1].value))
            exact = True
            i += 3
        else:
            raise FilterError(
                f'expected .KEY or ["KEY"], as in {name.text}.lr or {name.text}["a.b"]',
                column,
                here.pos,
            )
    if not keys:
        raise FilterError(f'a key, as in {name.text}.lr or {name.text}["a.b"]', column, len(column))
    return name.text, tuple(keys), exact


def column_value(run: Any, column: str, *, table: bool) -> Any:
    doc = document_column(column)
    if doc is not None:
        document = run.config if doc[0] == "config" else run.summary
        if not doc[2]:
            return document_value(document, ".".join(doc[1]))
        value: Any = document
        for key in doc[1]:
            if not isinstance(value, Mapping) or key not in value:
                return None
            value = value[key]
        return value
    if column == "runtime":
        seconds = runtime(run)
        return human_seconds(seconds) if table else seconds
    if column in ("tags",):
        return ",".join(run.tags) if table else list(run.tags)
    value = getattr(run, column)
    if table and isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return value


def _api(settings: Settings) -> Any:
    """An :class:`~runstream.read.api.Api` whose tables are plain rows: the commands print a
    page of runs, never a frame, and importing pyarrow (with pandas, which ``pyarrow.array``
    imports when it is installed) took most of a ``runs ls``'s time."""
    from runstream.read.api import Api
    from runstream.read.table import Table

    class RowsApi(Api):
        def table(self, sql: str, parameters: Mapping[str, Any] | None = None) -> Table:
            result = self.reader.query(sql, parameters)
            return Table.from_rows(result.columns, result.rows)

    return RowsApi(settings=settings)


def ls_command(args: argparse.Namespace, settings: Settings) -> int:
    """Exit status: 0, 1 when ClickHouse refused, 2 for a bad ``--where``/``--sort``/
    ``--columns`` (said before sending)."""
    columns = list(args.columns or DEFAULT_COLUMNS)
    if not args.columns and args.project is None:
        columns.insert(1, "project")
    bad = []
    for c in columns:
        try:
            if c not in PLAIN_COLUMNS and document_column(c) is None:
                bad.append(c)
        except FilterError as exc:
            print(f"runstream runs ls: --columns {c}: {exc}", file=sys.stderr)
            return 2
    if bad:
        print(
            f"runstream runs ls: unknown column(s) {', '.join(bad)}: choose from "
            f'{", ".join(PLAIN_COLUMNS)}, config.KEY, summary.KEY, config["KEY"]',
            file=sys.stderr,
        )
        return 2
    fmt = choose_format(args.format)
    try:
        with _api(settings) as api:
            runs = api.runs(
                project=args.project, where=args.where, order_by=args.sort,
                limit=args.limit or None,
            )  # fmt: skip
            rows = [[column_value(r, c, table=fmt == "table") for c in columns] for r in runs]
    except FilterError as exc:
        message = str(exc)
        if message.startswith("order_by:"):  # the API's name for what the CLI calls --sort
            message = "--sort:" + message[len("order_by:") :]
        print(f"runstream runs ls: {message}", file=sys.stderr)
        return 2
    except ReadArgumentError as exc:
        print(f"runstream runs ls: {exc}", file=sys.stderr)
        return 2
    write_rows(columns, rows, fmt)
    if fmt == "table" and runs.total > len(rows):
        print(f"({len(rows)} of {runs.total} runs: raise --limit, or --limit 0 for all)")
    return 0


def show_command(args: argparse.Namespace, settings: Settings) -> int:
    """Exit status: 0, 1 for a run that does not exist (or ClickHouse refused), 2 for an id in
    several projects without ``PROJECT/`` or ``--project``."""
    fmt = args.format or ("table" if is_terminal(sys.stdout) else "json")
    try:
        ref = parse_run(args.run_id, getattr(args, "project", None))
        with _api(settings) as api:
            try:
                run = api.run(ref.run_id, project=ref.project)  # ref.run_id holds no "/"
            except ReadArgumentError:  # in several projects: name them, the CLI's way
                one_run(api.reader, ref, "runs show")
                raise
            report = _report(api, run)
    except RunNotFoundError:
        where = f" in project {ref.project!r}" if ref.project is not None else ""
        print(
            escape(
                f"runstream runs show: no run {ref.run_id!r}{where}: list the runs with "
                "`runstream runs ls` (--project NAME) (the run may also not have landed yet: "
                "is the sink running?)"
            ),
            file=sys.stderr,
        )
        return 1
    except ReadArgumentError as exc:
        print(f"runstream runs show: {exc}", file=sys.stderr)
        return 2
    if fmt == "json":
        import orjson

        sys.stdout.write(
            orjson.dumps(json_value_deep(report), option=orjson.OPT_INDENT_2).decode() + "\n"
        )
        return 0
    _print_report(report)
    return 0


def json_value_deep(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): json_value_deep(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value_deep(v) for v in value]
    return json_value(value)


def _report(api: Any, run: Any) -> dict[str, Any]:
    names = run.metric_names()
    metrics = []
    if names:
        shown = names[:SPARK_METRICS]
        history = run.history(shown, samples=SPARK_BUCKETS)
        for i, name in enumerate(shown):
            # By position: a metric named "step" comes as "step.1" (docs/read.md, "History").
            value, low, high = history.columns[1 + 3 * i : 4 + 3 * i]
            values = [None if v is None else float(v) for v in history[value]]
            lows = [v for v in history[low] if v is not None]
            highs = [v for v in history[high] if v is not None]
            metrics.append(
                {
                    "name": name,
                    "last": document_value(run.summary, name) if name in run.summary else None,
                    "min": min(lows) if lows else None,
                    "max": max(highs) if highs else None,
                    "sparkline": sparkline(values),
                }
            )
    events = api.sql(
        "SELECT seq, ts, type FROM events WHERE project = {project:String} AND "
        "run_id = {run:String} ORDER BY seq DESC LIMIT {n:UInt32}",
        {"project": run.project, "run": run.id, "n": LAST_EVENTS},
    ).to_records()
    for event in events:  # plain rows (see _api) bring DateTime64 without its zone: UTC
        if isinstance(event["ts"], datetime) and event["ts"].tzinfo is None:
            event["ts"] = event["ts"].replace(tzinfo=timezone.utc)
    return {
        "run": {
            "id": run.id, "project": run.project, "name": run.name, "status": run.status,
            "exit_code": run.exit_code, "started_at": run.started_at,
            "finished_at": run.finished_at, "runtime": runtime(run), "last_step": run.last_step,
            "last_event_at": run.last_event_at, "tags": list(run.tags), "group": run.group,
            "job_type": run.job_type, "notes": run.notes,
        },
        "config": run.config,
        "summary": run.summary,
        "metrics": metrics,
        "metrics_not_shown": max(len(names) - SPARK_METRICS, 0),
        "last_events": list(reversed(events)),
    }  # fmt: skip


def key_path(keys: Sequence[str]) -> str:
    """A path of keys as the filter language writes it after ``config`` (docs/read.md,
    "Filters"): ``.key`` for a key of letters, digits, ``_``, ``/``, ``-``; ``["key"]`` (JSON
    quoted) for any other, so that the nested ``optimizer.lr`` and a top-level key
    ``"optimizer.lr"`` (``["optimizer.lr"]``) never print the same."""
    import orjson

    out = ""
    for key in keys:
        if _PLAIN_KEY.fullmatch(key):
            out += f".{key}" if out else key
        else:
            out += f"[{orjson.dumps(key).decode()}]"
    return out


def _flatten(document: Mapping[str, Any], keys: tuple[str, ...] = ()) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for key, value in document.items():
        path = (*keys, str(key))
        if isinstance(value, Mapping) and value:
            rows.extend(_flatten(value, path))
        else:
            rows.append([key_path(path), value])
    return rows


def _print_report(report: dict[str, Any]) -> None:
    run = dict(report["run"])
    run["runtime"] = human_seconds(run["runtime"])
    run["tags"] = ",".join(run["tags"])
    for key in ("started_at", "finished_at", "last_event_at"):
        if isinstance(run[key], datetime):
            run[key] = run[key].strftime("%Y-%m-%d %H:%M:%S UTC")
    sections: list[tuple[str, list[str], list[list[Any]]]] = [
        ("run", ["field", "value"], [[k, v] for k, v in run.items() if v not in ("", None)]),
        ("config", ["key", "value"], _flatten(report["config"])),
        ("summary", ["key", "value"], _flatten(report["summary"])),
        (
            "metrics",
            ["name", "last", "min", "max", "history"],
            [[m["name"], m["last"], m["min"], m["max"], m["sparkline"]] for m in report["metrics"]],
        ),
        (
            "last events",
            ["seq", "ts", "type"],
            [[e["seq"], e["ts"], e["type"]] for e in report["last_events"]],
        ),
    ]
    for i, (title, columns, rows) in enumerate(sections):
        sys.stdout.write(("\n" if i else "") + f"{title}:\n")
        if rows:
            print_table(columns, rows, count=False)
        else:
            sys.stdout.write("(none)\n")
    if report["metrics_not_shown"]:
        sys.stdout.write(f"({report['metrics_not_shown']} more metrics not shown)\n")
