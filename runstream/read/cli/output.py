"""What the read commands print: rich tables in a terminal, CSV or JSON when piped.

``--format`` chooses; without it a terminal gets a ``table`` (aligned and coloured by ``rich``)
and a pipe or file gets ``csv``, which every tool reads. The table takes any result shape: no
rows, no columns, arrays, tuples, maps, NULLs, NaN, very wide text, East Asian wide characters
(two columns each), bytes that are not UTF-8 and control characters. Control characters are
escaped (``\\n``, ``\\x1b``) before rich sees the text, and cells are ``rich.text.Text`` (never
console markup): a value can neither move the terminal's cursor nor change its colours, and a row
is always one line. Cells are cut at :data:`MAX_CELL` columns with ``…``.

Off a terminal (``--format table | less``) the table is plain text: ``a | b`` header, ``--+--``
rule, numbers right-aligned, no colour, lines without trailing blanks.
"""

from __future__ import annotations

import csv
import io
import math
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from numbers import Number
from typing import IO, Any

import orjson

FORMATS = ("table", "csv", "json")
MAX_CELL = 60

# rich box of the plain table: no edges; "|" between columns, "-+-" under the header.
_PLAIN_BOX = "    \n  | \n -+ \n  | \n -+ \n -+ \n  | \n    \n"


def choose_format(fmt: str | None, out: IO[str] | None = None) -> str:
    """``fmt`` if given, else ``table`` on a terminal and ``csv`` otherwise."""
    if fmt is not None:
        return fmt
    stream = out if out is not None else sys.stdout
    isatty = getattr(stream, "isatty", None)
    return "table" if isatty is not None and isatty() else "csv"


def is_terminal(out: IO[str]) -> bool:
    isatty = getattr(out, "isatty", None)
    return bool(isatty is not None and isatty())


def console(out: IO[str] | None = None, *, stderr: bool = False) -> Any:
    """A rich Console on ``out`` (stdout) that never reads markup or emoji in our text."""
    from runstream._extras import require

    rich_console = require("rich.console", part="the read commands' output", extra="read")
    return rich_console.Console(file=out, stderr=stderr, highlight=False, markup=False, emoji=False)


def table_text(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    terminal: bool = False,
    width: int | None = None,
    title: str | None = None,
    count: bool = True,
) -> str:
    """``rows`` as a rich table, ending with ``(N rows)`` unless not ``count``. ``terminal``:
    coloured, with rich's box, fitted to ``width`` columns (long cells shrink with ``…``);
    otherwise plain text."""
    footer = f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n" if count else ""
    if not columns:
        return footer
    from runstream._extras import require

    require("rich", part="the read commands' tables", extra="read")  # csv and json need none
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    numeric = [
        bool(rows) and all(row[i] is None or _is_number(row[i]) for row in rows)
        for i in range(len(columns))
    ]
    out = io.StringIO()
    if terminal:
        target = Console(
            file=out, width=width or 100, force_terminal=True, color_system="standard",
            highlight=False, markup=False, emoji=False,
        )  # fmt: skip
        table = Table(box=box.SIMPLE_HEAD, header_style="bold cyan", title=title)
    else:
        target = Console(
            file=out, width=10**6, force_terminal=False, no_color=True, color_system=None,
            highlight=False, markup=False, emoji=False,
        )  # fmt: skip
        table = Table(
            box=box.Box(_PLAIN_BOX), show_edge=False, pad_edge=False, padding=(0, 1),
            header_style="", title=title,
        )  # fmt: skip
    for i, (name, num) in enumerate(zip(columns, numeric, strict=True)):
        # In a narrow terminal rich shrinks the widest columns first; no column below 12
        # characters (or its own width), so that names stay readable.
        own = max([_width(_cell(name))] + [_width(_styled(row[i], terminal).plain) for row in rows])
        table.add_column(
            Text(_cell(name)),
            min_width=min(own, 12) if terminal else None,
            justify="right" if num else "left",
            no_wrap=True,
            overflow="ellipsis" if terminal else "ignore",
            style=("green" if num else None) if terminal else None,
        )
    for row in rows:
        table.add_row(*[_styled(v, terminal) for v in row])
    target.print(table)
    text = out.getvalue()
    if not terminal:
        text = "\n".join(line.rstrip() for line in text.splitlines()) + "\n"
    return text + footer


def _styled(value: Any, terminal: bool) -> Any:
    from rich.text import Text

    if terminal and isinstance(value, float) and math.isfinite(value):
        # On screen 6 significant digits keep columns narrow; csv and json give every digit.
        text = Text(f"{value:.6g}")
    else:
        text = Text(_cell(value))
    if terminal and value is None:
        text.stylize("dim")
    return text


def print_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    out: IO[str] | None = None,
    *,
    title: str | None = None,
    count: bool = True,
) -> None:
    """:func:`table_text` on ``out`` (stdout), coloured and fitted when it is a terminal."""
    stream = out if out is not None else sys.stdout
    terminal = is_terminal(stream)
    width = None
    if terminal:
        import shutil

        width = shutil.get_terminal_size().columns
    stream.write(
        table_text(columns, rows, terminal=terminal, width=width, title=title, count=count)
    )


def write_rows(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    fmt: str,
    out: IO[str] | None = None,
    *,
    title: str | None = None,
) -> int:
    """``rows`` in ``fmt`` (``table``, ``csv``, ``json``) on ``out``; returns the row count."""
    stream = out if out is not None else sys.stdout
    listed = list(rows)
    if fmt == "table":
        print_table(columns, listed, stream, title=title)
    else:
        stream.write(render(list(columns), listed, fmt))
    return len(listed)


def render(columns: list[str], rows: Sequence[Sequence[Any]], fmt: str) -> str:
    """``rows`` as text in ``fmt`` (``table`` plain, ``csv`` or ``json``)."""
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[flat(v) for v in row] for row in rows])
        return out.getvalue()
    if fmt == "json":
        records = [dict(zip(columns, [json_value(v) for v in row], strict=True)) for row in rows]
        return orjson.dumps(records, option=orjson.OPT_INDENT_2).decode() + "\n"
    return table_text(columns, rows)


def _is_number(value: Any) -> bool:
    return isinstance(value, (Number, Decimal)) and not isinstance(value, bool)


def width(text: str) -> int:
    """Terminal columns of ``text``: East Asian wide characters take two."""
    if text.isascii():
        return len(text)
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def text_of(value: Any) -> str:
    """One value as text: NULL, true/false, repr of floats (nan, inf), ISO times, nested values
    as JSON, bytes as UTF-8 with ``\\x..`` for the rest."""
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
        return orjson.dumps(json_value(value)).decode()
    return str(value)


def flat(value: Any) -> str:
    """A CSV field: nested values as JSON, NULL as ``NULL``."""
    return text_of(value)


def escape(text: str) -> str:
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
    text = escape(value if isinstance(value, str) else text_of(value))
    if width(text) <= MAX_CELL:
        return text
    cut = text[: MAX_CELL - 1]
    while width(cut) > MAX_CELL - 1:
        cut = cut[:-1]
    return cut + "…"


def cell(value: Any) -> str:
    """``value`` as one escaped table cell of at most :data:`MAX_CELL` columns."""
    return _cell(value)


def json_value(value: Any) -> Any:
    """``value`` as something orjson writes: NaN and infinities as the event schema's text
    (``"NaN"``, ``"Infinity"``, ``"-Infinity"``), bytes decoded, big
    integers as text, other ClickHouse types (Decimal, UUID, IP) as their text."""
    if isinstance(value, float) and not math.isfinite(value):
        # JSON has no NaN: spell it as text, as the event schema does (docs/events.md)
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {text_of(k): json_value(v) for k, v in value.items()}
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return str(value)  # Int128/UInt256...: past what JSON readers (and orjson) hold exactly
    if isinstance(value, (str, int, float, bool, datetime, date)) or value is None:
        return value
    return str(value)


_width = width  # table_text has a parameter of that name
