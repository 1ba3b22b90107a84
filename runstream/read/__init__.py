"""runstream's read side: every read query (the Python API, ``runstream query``, the UI) goes
through :class:`Reader`, which screens it, binds values as ClickHouse query parameters and runs it
read-only under limits. docs/read.md says what is guaranteed and how."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runstream.errors import FilterError, QueryError, QueryLimitError, ReadRefusedError
from runstream.read.filters import compile_filter
from runstream.read.reader import Limits, Reader, Result
from runstream.read.screen import screen

if TYPE_CHECKING:
    from runstream.read.api import Api, Runs
    from runstream.read.run import Run
    from runstream.read.table import Table

_LAZY = {"Api": "api", "Runs": "api", "Run": "run", "Table": "table"}


def __getattr__(name: str) -> Any:
    # The Python API is imported on first use: `from runstream.read import Reader` stays light.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"runstream.read.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'runstream.read' has no attribute {name!r}")


__all__ = [
    "Api",
    "FilterError",
    "Limits",
    "QueryError",
    "QueryLimitError",
    "ReadRefusedError",
    "Reader",
    "Result",
    "Run",
    "Runs",
    "Table",
    "compile_filter",
    "screen",
]
