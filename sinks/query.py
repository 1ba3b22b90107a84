"""``runstream query``: read-only SQL against ClickHouse, printed as a table, CSV or JSON.

Every query goes through the read layer (:class:`runstream.read.Reader`): screened, read-only,
under the read limits, values bound as ``{name:Type}`` parameters. The table keeps the first
``--limit`` rows (default :data:`TABLE_LIMIT`); CSV and JSON stream every row as it arrives.
The table is drawn by rich (:mod:`runstream.read.cli.output`: coloured in a terminal, plain text
otherwise) and takes any result shape: no rows, no columns, arrays, tuples, maps, NULLs, NaN, very
wide text, bytes that are not UTF-8, control characters (escaped: a value cannot move the
terminal's cursor or change its colours).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any

import orjson

from runstream.read import Reader
from runstream.read.cli.output import FORMATS, MAX_CELL, is_terminal, render, table_text
from runstream.read.cli.output import flat as _flat
from runstream.read.cli.output import json_value as _json_value
from runstream.settings import Settings

__all__ = [
    "FORMATS",
    "MAX_CELL",
    "TABLE_LIMIT",
    "RawParam",
    "parse_params",
    "render",
    "run_query",
    "write_result",
]

TABLE_LIMIT = 1000


def run_query(
    settings: Settings, sql: str, parameters: Mapping[str, Any] | None = None
) -> tuple[list[str], list[Sequence[Any]]]:
    """Column names and rows of one read query (through :class:`runstream.read.Reader`)."""
    with Reader(settings) as reader:
        result = reader.query(sql, parameters)
    return result.columns, list(result.rows)


def write_result(
    reader: Reader,
    sql: str,
    parameters: Mapping[str, Any] | None,
    fmt: str,
    out: IO[str],
    *,
    limit: int | None = None,
) -> int:
    """Run ``sql`` and write its result to ``out`` in ``fmt``; returns the number of rows
    written. ``table`` reads at most ``limit`` rows (default :data:`TABLE_LIMIT`) and says when
    there were more; ``csv``/``json`` stream block by block (all rows unless ``limit``)."""
    if fmt == "table":
        result = reader.query(sql, parameters, limit=TABLE_LIMIT if limit is None else limit)
        terminal = is_terminal(out)
        width = None
        if terminal:
            import shutil

            width = shutil.get_terminal_size().columns
        out.write(table_text(result.columns, result.rows, terminal=terminal, width=width))
        if result.truncated:
            out.write(f"(only the first {len(result.rows)}: more rows exist; raise --limit)\n")
        return len(result.rows)
    written = 0
    with reader.open_stream(sql, parameters) as stream:
        columns = stream.columns
        if fmt == "csv":
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(columns)
        else:
            out.write("[")
        for whole in stream:
            block = whole if limit is None else whole[: max(limit - written, 0)]
            if fmt == "csv":
                writer.writerows([_flat(v) for v in row] for row in block)
            else:
                for i, row in enumerate(block):
                    record = dict(zip(columns, [_json_value(v) for v in row], strict=True))
                    out.write(
                        ("," if written or i else "") + "\n  " + orjson.dumps(record).decode()
                    )
            written += len(block)
            if limit is not None and written >= limit:
                break  # leaving the stream closes it: ClickHouse cancels the rest
        if fmt == "json":
            out.write("\n]\n" if written else "]\n")
    return written


class RawParam:
    """A ``--param`` value sent to ClickHouse as typed, for the server to parse as its
    placeholder's type: ``['a','b']`` for ``{p:Array(String)}``, ``{'k':1}`` for a Map,
    ``2026-01-02 03:04:05`` for a DateTime, ``\\N`` for a NULL (as ``clickhouse-client
    --param_NAME=VALUE`` sends it; ClickHouse docs "Queries with parameters": the value is in
    the escaped text format, so a backslash starts an escape).

    clickhouse-connect quotes and escapes a Python ``str`` (``format_bind_value``: a ``'`` in an
    array literal becomes ``\\'``, which the server cannot parse); any other object it sends as
    ``str(value)``, untouched: this wrapper is that object."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"RawParam({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RawParam) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def parse_params(items: Iterable[str]) -> dict[str, RawParam]:
    """``--param name=value`` items as a dict of :class:`RawParam`: ClickHouse parses each value
    as the type its ``{name:Type}`` placeholder names."""
    from runstream.errors import ReadRefusedError

    params: dict[str, RawParam] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ReadRefusedError(f"--param takes name=value, not {item!r}")
        params[name.strip()] = RawParam(value)
    return params
