"""The result type of the Python read API (:mod:`runstream.read.api`): a :class:`Table`.

A table is columnar when pyarrow is installed: it holds the ``pyarrow.Table`` built from
ClickHouse's own Arrow output (never row by row in Python), and ``to_pandas`` / ``to_polars`` hand
that over with Arrow's zero-copy conversions where the types allow. Without pyarrow it holds plain
rows (tuples, as clickhouse-connect decodes them) and builds frames from those.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from runstream._extras import require


def has_arrow() -> bool:
    """Whether pyarrow can be imported (the columnar path)."""
    try:
        import pyarrow  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return False
    return True


class Table:
    """Rows of a read result with named columns.

    ``columns``: the column names, in order; ``len(table)``: the number of rows; iterating gives
    one ``dict`` per row. ``to_records()`` (list of dicts), ``to_arrow()`` (``pyarrow.Table``),
    ``to_pandas()`` (``pandas.DataFrame``), ``to_polars()`` (``polars.DataFrame``): each raises
    :class:`runstream.errors.MissingExtraError` naming the extra (``arrow``, ``pandas``,
    ``polars``) when its library is missing. ClickHouse types map as Arrow maps them: ``Int64`` to
    int64, ``Float64`` to float64 (NaN kept), ``DateTime64(6, 'UTC')`` to ``timestamp[us, UTC]``,
    ``Array(String)`` to a list of strings, ``Nullable(T)`` to T with nulls.
    """

    def __init__(
        self,
        *,
        arrow: Any = None,
        columns: Sequence[str] = (),
        rows: Sequence[Sequence[Any]] | None = None,
    ) -> None:
        self._arrow = arrow
        self._columns = list(arrow.column_names) if arrow is not None else list(columns)
        self._rows: list[Sequence[Any]] | None = None if rows is None else list(rows)
        if arrow is None and self._rows is None:
            self._rows = []

    @classmethod
    def from_arrow(cls, table: Any) -> Table:
        return cls(arrow=table)

    @classmethod
    def from_rows(cls, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
        return cls(columns=columns, rows=rows)

    @property
    def columns(self) -> list[str]:
        return list(self._columns)

    def __len__(self) -> int:
        if self._arrow is not None:
            return int(self._arrow.num_rows)
        assert self._rows is not None
        return len(self._rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self._arrow is not None:
            for batch in self._arrow.to_batches(max_chunksize=10_000):
                yield from batch.to_pylist()
            return
        assert self._rows is not None
        for row in self._rows:
            yield dict(zip(self._columns, row, strict=True))

    def __getitem__(self, column: str) -> list[Any]:
        """The values of one column, as a list."""
        if column not in self._columns:
            raise KeyError(f"no column {column!r}; the columns are {self._columns}")
        if self._arrow is not None:
            return list(self._arrow.column(column).to_pylist())
        index = self._columns.index(column)
        assert self._rows is not None
        return [row[index] for row in self._rows]

    def first(self, column: str) -> Any:
        """The value of ``column`` in the first row (IndexError when there are no rows)."""
        if self._arrow is not None:
            return self._arrow.column(column)[0].as_py()
        assert self._rows is not None
        return self._rows[0][self._columns.index(column)]

    def __repr__(self) -> str:
        return f"Table({len(self)} rows, columns={self._columns})"

    def rename(self, names: Sequence[str]) -> Table:
        """The same data under other column names (as many as there are columns)."""
        if self._arrow is not None:
            return Table(arrow=self._arrow.rename_columns(list(names)))
        return Table(columns=names, rows=self._rows)

    def to_records(self) -> list[dict[str, Any]]:
        """One dict per row, keyed by column name."""
        if self._arrow is not None:
            return list(self._arrow.to_pylist())
        return list(self)

    def to_arrow(self) -> Any:
        """A ``pyarrow.Table`` (the one ClickHouse sent, when it came as Arrow)."""
        pa = require("pyarrow", part="Table.to_arrow()", extra="arrow")
        if self._arrow is not None:
            return self._arrow
        assert self._rows is not None
        return pa.table({c: [r[i] for r in self._rows] for i, c in enumerate(self._columns)})

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame``. From Arrow: numbers keep their dtypes (int64, float64),
        times are ``datetime64[us, UTC]``, strings use pandas' default string dtype."""
        pd = require("pandas", part="Table.to_pandas()", extra="pandas")
        if self._arrow is not None:
            return self._arrow.to_pandas()
        assert self._rows is not None
        return pd.DataFrame.from_records(self._rows, columns=self._columns)

    def to_polars(self) -> Any:
        """A ``polars.DataFrame``."""
        pl = require("polars", part="Table.to_polars()", extra="polars")
        if self._arrow is not None:
            return pl.from_arrow(self._arrow, rechunk=False)
        assert self._rows is not None
        return pl.DataFrame(
            [list(r) for r in self._rows], schema=self._columns, orient="row", strict=False
        )


def unique_columns(names: Sequence[str]) -> list[str]:
    """``names`` made unique the way ``pandas.read_csv`` names duplicate columns (pandas docs,
    "read_csv": ``'X', 'X.1', ... 'X.N'``): the first column of a name keeps it, each later one
    gets ``.1``, ``.2``... (the first such suffix no other column holds). ``history`` uses it so
    that a metric named like its x column (``step``, ``time``, a step metric) never replaces x:
    ``["step", "step"]`` -> ``["step", "step.1"]``."""
    taken = set(names)
    seen: set[str] = set()
    out: list[str] = []
    for name in names:
        if name not in seen:
            seen.add(name)
            out.append(name)
            continue
        n = 1
        while f"{name}.{n}" in taken or f"{name}.{n}" in seen:
            n += 1
        unique = f"{name}.{n}"
        seen.add(unique)
        out.append(unique)
    return out
