"""``runstream query``: read-only SQL against ClickHouse, printed as a table, CSV or JSON.

Every query goes through the read layer (:class:`runstream.read.Reader`): screened, read-only,
under the read limits, values bound as ``{name:Type}`` parameters. The table keeps the first
``--limit`` rows (default :data:`TABLE_LIMIT`); CSV and JSON stream every row as it arrives.
The renderers take any result shape: no rows, no columns, arrays, tuples, maps, NULLs, NaN, very
wide text, bytes that are not UTF-8, control characters (escaped: a value cannot move the
terminal's cursor or change its colours).
"""

from __future__ import annotations

import csv
import io
import math
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from numbers import Number
from typing import IO, Any

import orjson

from runstream.read import Reader
from runstream.settings import Settings

FORMATS = ("table", "csv", "json")
MAX_CELL = 60
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
        out.write(_table(result.columns, result.rows))
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


def render(columns: list[str], rows: Sequence[Sequence[Any]], fmt: str) -> str:
    """``rows`` as text in ``fmt`` (``table``, ``csv`` or ``json``)."""
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_flat(v) for v in row] for row in rows])
        return out.getvalue()
    if fmt == "json":
        records = [dict(zip(columns, [_json_value(v) for v in row], strict=True)) for row in rows]
        return orjson.dumps(records, option=orjson.OPT_INDENT_2).decode() + "\n"
    return _table(columns, rows)


def _is_number(value: Any) -> bool:
    return isinstance(value, (Number, Decimal)) and not isinstance(value, bool)


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    count = f"({len(rows)} row{'s' if len(rows) != 1 else ''})"
    if not columns:
        return count + "\n"
    heads = [_cell(c) for c in columns]
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [_width(h) for h in heads]
    for row in cells:
        widths = [max(w, _width(c)) for w, c in zip(widths, row, strict=True)]
    numeric = [
        bool(rows) and all(row[i] is None or _is_number(row[i]) for row in rows)
        for i in range(len(columns))
    ]

    def line(values: Sequence[str]) -> str:
        parts = []
        for v, w, num in zip(values, widths, numeric, strict=True):
            pad = " " * (w - _width(v))
            parts.append(pad + v if num else v + pad)
        return " | ".join(parts).rstrip()

    out = [line(heads), "-+-".join("-" * w for w in widths)]
    out.extend(line(row) for row in cells)
    out.append(count)
    return "\n".join(out) + "\n"


def _width(text: str) -> int:
    """Terminal columns of ``text``: East Asian wide characters take two."""
    if text.isascii():
        return len(text)
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _text(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, (list, tuple, dict)):
        return orjson.dumps(_json_value(value)).decode()
    return str(value)


def _flat(value: Any) -> str:
    """A CSV field: nested values as JSON, NULL as the empty field's neighbour ``NULL``."""
    return _text(value)


def _escape(text: str) -> str:
    """Control characters as escapes (``\\n``, ``\\x1b``): one line per row, and no value can
    drive the terminal."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif not ch.isprintable() and ch != " ":
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def _cell(value: Any) -> str:
    text = _escape(_text(value))
    if _width(text) <= MAX_CELL:
        return text
    cut = text[: MAX_CELL - 1]
    while _width(cut) > MAX_CELL - 1:
        cut = cut[:-1]
    return cut + "…"


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN: spell it as text, like the event schema does
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {_text(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return str(value)  # Int128/UInt256...: past what JSON readers (and orjson) hold exactly
    if isinstance(value, (str, int, float, bool, datetime, date)) or value is None:
        return value
    return str(value)  # Decimal, UUID, IP addresses: their ClickHouse text


def parse_params(items: Iterable[str]) -> dict[str, str]:
    """``--param name=value`` items as a dict; ClickHouse parses each value as the type its
    ``{name:Type}`` placeholder names."""
    from runstream.errors import ReadRefusedError

    params: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ReadRefusedError(f"--param takes name=value, not {item!r}")
        params[name.strip()] = value
    return params
