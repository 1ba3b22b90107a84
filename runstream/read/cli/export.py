"""``runstream export``: a project's runs, metrics and system metrics to Parquet or CSV files.

ClickHouse writes the files' bytes (``FORMAT Parquet`` / ``FORMAT CSVWithNames``) and the export
streams them through :meth:`runstream.read.Reader.raw_stream` into the files a megabyte at a time:
memory stays flat whatever the size; nothing is parsed or re-encoded in Python.

Files in ``--out DIR`` (``.parquet`` or ``.csv``):

- ``metrics``: ``project, run_id, name, step, ts, value``, one row per logged point, ordered by
  ``project, run_id, name, step`` (the table's key, so ClickHouse reads it in order);
- ``runs``: every column of ``runs_current`` (``config`` and ``summary`` as JSON text, ``tags``
  an array), one row per run;
- ``system_metrics``: ``project, run_id, name, ts, value``, ordered by run, name and time.

Limits: each export query runs read-only with the read limits, except two it needs lifted for
itself: ``max_result_rows`` is raised to the counted rows plus a margin for rows logged while the
export runs (:func:`result_rows_for`), never below ``read_max_result_rows``; ``max_execution_time``
is ``--timeout`` (600 s by default, the most the shipped reader profile allows). A reader user
whose profile caps either (``deploy/compose/clickhouse/users.xml``: 10 billion rows, 600 s)
refuses a bigger export with ClickHouse's message: export it in parts with ``--run`` or
``--where``.

A file is written as ``.NAME.partial`` and renamed when ClickHouse has sent all of it; a query
that fails half-way (its body then ends with ClickHouse's exception) leaves no file behind.

One folder, one export: the files are written into a staging folder inside ``DIR``
(:data:`STAGING`) and moved into ``DIR`` only when every one of them is whole, with a manifest
``export.json`` (:data:`MANIFEST`: project, selection, tables with their rows and bytes, format,
time). A ``DIR`` that holds an earlier export (any runstream export file, or its manifest) is
refused without ``--force``; with it the earlier export is replaced whole: its files that this
export does not write are removed, so that ``--tables metrics`` never leaves an older
``runs.parquet`` beside the new metrics. A failed export leaves the earlier one as it was.

CSV is written for other tools: ``tags`` as a JSON array (``toJSONString``), NULL as an empty
field (``format_csv_null_representation``), times as ISO 8601 in UTC with ``Z``
(``date_time_output_format = 'iso'``; ClickHouse docs, "Format settings").
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runstream.errors import FilterError, QueryError, ReadRefusedError
from runstream.read.cli.selection import Selection, select_runs
from runstream.read.reader import Reader
from runstream.settings import Settings

# table -> the SELECT of its file (the selection's condition goes after WHERE).
TABLES: dict[str, str] = {
    "metrics": "SELECT project, run_id, name, step, ts, value FROM metrics WHERE {where} "
    "ORDER BY project, run_id, name, step",
    "runs": "SELECT * FROM runs_current WHERE {where} ORDER BY project, run_id",
    "system_metrics": "SELECT project, run_id, name, ts, value FROM system_metrics "
    "WHERE {where} ORDER BY project, run_id, name, ts",
}
# CSV only: the runs' tags as JSON text rather than a ClickHouse array literal.
CSV_TABLES: dict[str, str] = {
    **TABLES,
    "runs": "SELECT * REPLACE (toJSONString(tags) AS tags) FROM runs_current WHERE {where} "
    "ORDER BY project, run_id",
}
# ClickHouse's output settings of a CSV export (ClickHouse docs, "Format settings").
CSV_SETTINGS: dict[str, Any] = {
    "date_time_output_format": "iso",
    "format_csv_null_representation": "",
}
FORMATS = {"parquet": ("Parquet", ".parquet"), "csv": ("CSVWithNames", ".csv")}
#: The manifest of an export, written last into DIR.
MANIFEST = "export.json"
#: The folder inside DIR where an export's files are written until all of them are whole.
STAGING = ".runstream-export.partial"
#: Every file name an export may write: what ``--force`` replaces and what marks an export.
EXPORT_FILES = frozenset(
    [MANIFEST, *(f"{table}{suffix}" for table in TABLES for _, suffix in FORMATS.values())]
)
DEFAULT_TIMEOUT = 600.0
_TAIL = 64 * 1024
_EXCEPTION = re.compile(rb"__exception__|Code: \d+\. DB::Exception: ")


@dataclass(frozen=True)
class Written:
    """One exported file: its path, rows (counted before; read back from Parquet's footer when
    pyarrow is installed) and bytes."""

    table: str
    path: Path
    rows: int
    bytes: int


def result_rows_for(counted: int, floor: int) -> int:
    """``max_result_rows`` of an export query of ``counted`` rows: 10% and 100,000 rows more
    (points logged while it runs), at least ``floor`` (``read_max_result_rows``)."""
    return max(floor, counted + counted // 10 + 100_000)


def export_command(args: argparse.Namespace, settings: Settings) -> int:
    """Exit status: 0 with every file written, 1 when ClickHouse refused or a limit stopped a
    query (its message; no partial file left) or nothing matches, 2 when refused before
    sending (a bad ``--where``, files that exist without ``--force``)."""
    try:
        selection = select_runs(args.project, args.run or (), args.where)
    except FilterError as exc:
        print(f"runstream export: bad --where: {exc}", file=sys.stderr)
        return 2
    fmt, suffix = FORMATS[args.format]
    out = Path(args.out)
    tables = args.tables or list(TABLES)
    unknown = [t for t in tables if t not in TABLES]
    if unknown:
        print(
            f"runstream export: unknown --tables {', '.join(unknown)}: choose from "
            f"{', '.join(TABLES)}",
            file=sys.stderr,
        )
        return 2
    if out.exists() and not out.is_dir():
        print(f"runstream export: --out {out} is not a directory", file=sys.stderr)
        return 2
    staging = out / STAGING
    targets = {table: staging / f"{table}{suffix}" for table in tables}
    existing = sorted(str(out / name) for name in EXPORT_FILES if (out / name).exists())
    if existing and not args.force:
        print(
            f"runstream export: {out} holds an earlier export ({', '.join(existing)}): choose "
            "another --out, or pass --force to replace that export whole",
            file=sys.stderr,
        )
        return 2
    try:
        with Reader(settings) as reader:
            counts = _counts(reader, selection, sorted({*tables, "runs"}))
        if counts["runs"] == 0:
            what = f"project {args.project!r}"
            if args.run:
                what += f", run(s) {', '.join(args.run)}"
            if args.where:
                what += f", --where {args.where!r}"
            print(f"runstream export: no runs match ({what}): nothing written", file=sys.stderr)
            return 1
        try:
            shutil.rmtree(staging, ignore_errors=True)  # what a killed export left
            staging.mkdir(parents=True)
        except OSError as exc:
            print(
                f"runstream export: cannot create --out {out}: {exc.strerror or exc}",
                file=sys.stderr,
            )
            return 2
        try:
            staged = _export(settings, selection, targets, counts, fmt=fmt, timeout=args.timeout)
            written = _publish(out, staged, args, counts["runs"])
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except ReadRefusedError as exc:
        print(f"runstream export: refused: {exc}", file=sys.stderr)
        return 2
    except QueryError as exc:
        print(f"runstream export: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"runstream export: cannot write into {out}: {exc}", file=sys.stderr)
        return 1
    for item in written:
        print(f"{item.path}\t{item.rows} rows\t{item.bytes} bytes")
    return 0


def _publish(
    out: Path, staged: list[Written], args: argparse.Namespace, runs: int
) -> list[Written]:
    """Move the whole, staged files into ``out``, remove the earlier export's other files, and
    write the manifest last."""
    from datetime import datetime, timezone

    import orjson

    from runstream._version import __version__

    names = {item.path.name for item in staged}
    (out / MANIFEST).unlink(missing_ok=True)  # no manifest while the folder changes
    for name in sorted(EXPORT_FILES - names - {MANIFEST}):
        (out / name).unlink(missing_ok=True)
    written = []
    for item in staged:
        os.replace(item.path, out / item.path.name)
        written.append(Written(item.table, out / item.path.name, item.rows, item.bytes))
    manifest = {
        "project": args.project,
        "runs": list(args.run) if args.run else None,
        "where": args.where,
        "run_count": runs,
        "format": args.format,
        "tables": {
            item.table: {"file": item.path.name, "rows": item.rows, "bytes": item.bytes}
            for item in written
        },
        "exported_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        "runstream": __version__,
    }
    partial = out / f".{MANIFEST}.partial"
    partial.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    os.replace(partial, out / MANIFEST)
    return written


def _counts(reader: Reader, selection: Selection, tables: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for table in tables:
        source = "runs_current" if table == "runs" else table
        result = reader.query(
            f"SELECT count() FROM {source} WHERE {selection.condition}", selection.parameters
        )
        counts[table] = int(result.rows[0][0])
    return counts


def _export(
    settings: Settings,
    selection: Selection,
    targets: dict[str, Path],
    counts: dict[str, int],
    *,
    fmt: str,
    timeout: float,
) -> list[Written]:
    from runstream._extras import require

    progress_mod = require("rich.progress", part="runstream export's progress bar", extra="read")
    from runstream.read.cli.output import console

    err = console(stderr=True)
    columns = (
        progress_mod.TextColumn("{task.description:<15}"),
        progress_mod.BarColumn(),
        progress_mod.TextColumn("{task.fields[rows]:>25}"),
        progress_mod.TextColumn("{task.fields[size]:>10}"),
        progress_mod.TimeElapsedColumn(),
    )
    written: list[Written] = []
    with progress_mod.Progress(*columns, console=err, disable=not err.is_terminal) as bar:
        tasks = {
            table: bar.add_task(
                table, total=None, start=False, rows=f"{counts[table]:,} rows", size=""
            )
            for table in targets
        }
        for table, path in targets.items():
            task = tasks[table]
            bar.start_task(task)
            limit = result_rows_for(counts[table], settings.read_max_result_rows)
            csv = fmt != "Parquet"
            sql = (CSV_TABLES if csv else TABLES)[table].format(where=selection.condition)
            meter = _Meter(bar, task, counts[table], rows_known=csv)
            with Reader(settings, max_execution_time=timeout, max_result_rows=limit) as reader:
                if csv:  # output settings only; the limits stay as the reader set them
                    extra = {**CSV_SETTINGS, **reader.limits.extra}
                    reader.limits = dataclasses.replace(reader.limits, extra=extra)
                size = _write(reader.raw_stream(sql, selection.parameters, fmt=fmt), path, meter)
            rows = _rows_of(path, fmt, counts[table])
            bar.update(
                task, total=max(rows, 1), completed=max(rows, 1), rows=f"{rows:,} rows",
                size=_size(size),
            )  # fmt: skip
            written.append(Written(table, path, rows, size))
    return written


def _size(count: int) -> str:
    from rich.filesize import decimal

    return str(decimal(count))


class _Meter:
    """Progress of one file. CSV: rows as its newlines arrive (a value with a newline in it
    counts twice, so it is capped at the counted rows), bar of rows; Parquet: its rows are
    known only from the footer at the end, so bytes, with a pulsing bar until then."""

    def __init__(self, bar: Any, task: Any, total: int, *, rows_known: bool) -> None:
        self.bar, self.task, self.total, self.rows_known = bar, task, total, rows_known
        self.bytes = 0
        self.lines = 0

    def __call__(self, chunk: bytes) -> None:
        self.bytes += len(chunk)
        if not self.rows_known:
            self.bar.update(self.task, size=_size(self.bytes))
            return
        self.lines += chunk.count(b"\n")
        done = min(max(self.lines - 1, 0), self.total)  # the first line is the header
        self.bar.update(
            self.task, total=max(self.total, 1), completed=done,
            rows=f"{done:,}/{self.total:,} rows", size=_size(self.bytes),
        )  # fmt: skip


def _write(chunks: Iterator[bytes], path: Path, advance: Callable[[bytes], None]) -> int:
    """``chunks`` into ``path`` through a ``.partial`` file; the size written. Raises
    :class:`QueryError` with ClickHouse's message when the body ends with an exception."""
    partial = path.with_name(f".{path.name}.partial")
    size = 0
    tail = b""
    try:
        with partial.open("wb") as file:
            for chunk in chunks:
                file.write(chunk)
                size += len(chunk)
                tail = (tail + chunk)[-_TAIL:]
                advance(chunk)
        found = _EXCEPTION.search(tail)
        if found:
            message = tail[found.start() :].decode("utf-8", "replace")
            message = message.replace("__exception__", "").strip()
            raise QueryError(f"ClickHouse stopped the export of {path.name}: {message}")
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return size


def _rows_of(path: Path, fmt: str, counted: int) -> int:
    """Rows in the file: from the Parquet footer when pyarrow can read it (which also proves the
    file whole), else the count taken before the export."""
    if fmt != "Parquet":
        return counted
    try:
        import pyarrow.parquet as pq  # type: ignore[import-untyped]
    except ImportError:
        return counted
    return int(pq.ParquetFile(path).metadata.num_rows)
