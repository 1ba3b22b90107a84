"""runstream's read side: every read query (the Python API, ``runstream query``, the UI) goes
through :class:`Reader`, which screens it, binds values as ClickHouse query parameters and runs it
read-only under limits. docs/read.md says what is guaranteed and how."""

from __future__ import annotations

from runstream.errors import FilterError, QueryError, QueryLimitError, ReadRefusedError
from runstream.read.filters import compile_filter
from runstream.read.reader import Limits, Reader, Result
from runstream.read.screen import screen

__all__ = [
    "FilterError",
    "Limits",
    "QueryError",
    "QueryLimitError",
    "ReadRefusedError",
    "Reader",
    "Result",
    "compile_filter",
    "screen",
]
