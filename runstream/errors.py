"""Exception types. Every message says what went wrong and what to do about it."""

from __future__ import annotations


class RunstreamError(Exception):
    """Base class of every error runstream raises on purpose."""


class SettingsError(RunstreamError, ValueError):
    """A setting (argument or RUNSTREAM_* environment variable) has an invalid value."""


class MissingExtraError(RunstreamError, ImportError):
    """A part of runstream needs an optional dependency that is not installed."""

    def __init__(self, part: str, extra: str, missing: str) -> None:
        super().__init__(
            f"{part} needs the '{missing}' package, which is not installed. "
            f"Install it with: pip install 'runstream[{extra}]'"
        )
        self.part = part
        self.extra = extra
        self.missing = missing


class SchemaError(RunstreamError, ValueError):
    """An event does not match the runstream event schema."""


class EventDecodeError(SchemaError):
    """Bytes could not be decoded into a runstream event.

    ``field`` names the offending field as a dotted path (``body.metrics.loss``), or is empty when
    the bytes are not an event at all (not JSON, not an object).
    """

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.reason = message


class UnsupportedSchemaVersionError(EventDecodeError):
    """The event was written by a newer runstream whose schema this version cannot read."""


class DeliveryError(RunstreamError):
    """Events could not be delivered to Kafka in time."""


class StackError(RunstreamError):
    """The local stack (Kafka, ClickHouse, workers) could not be started, stopped or queried."""


class ClickHouseError(RunstreamError):
    """ClickHouse rejected a statement or could not be reached."""


class ReadRefusedError(RunstreamError, ValueError):
    """The read layer (:mod:`runstream.read`) refused a statement before sending it: not a single
    read statement, a table function that reaches outside the database, a ``SETTINGS`` clause, or a
    value pasted where a ``{name:Type}`` parameter belongs. The message says what to write instead.
    """


class QueryError(ClickHouseError):
    """ClickHouse refused a read query. ``message`` is ClickHouse's own text (the part after
    ``DB::Exception:``), ``code`` its error code (62 syntax error, 60 unknown table, ...), or 0
    when the server was not reached."""

    def __init__(self, message: str, *, code: int = 0, name: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.name = name


class QueryLimitError(QueryError):
    """A read query ran into one of the read layer's limits (``read_max_execution_time``,
    ``read_max_memory_usage``, ``read_max_result_rows``) or the reader user's quota."""


class HistogramError(RunstreamError, ValueError):
    """A :class:`runstream.Histogram` cannot be built from what it was given (bins out of
    range, edges not ascending, counts negative...): the message says which and how to fix it."""


class ArtifactError(RunstreamError):
    """An artifact's content is asked for (``Artifact.download()``) where runstream has none: it
    records artifacts' names, digests and where they lie, not their bytes."""


class FilterError(RunstreamError, ValueError):
    """A ``where`` filter expression (``api.runs(where=...)``, ``runstream runs ls --where``)
    cannot be read. The message names what was expected and shows the expression with a caret
    under the offending token; ``expression``, ``position`` (0-based character offset) and
    ``reason`` hold the parts."""

    def __init__(self, reason: str, expression: str, position: int) -> None:
        super().__init__(_point_at(reason, expression, position))
        self.reason = reason
        self.expression = expression
        self.position = position


def _point_at(reason: str, expression: str, position: int, width: int = 72) -> str:
    """``reason``, then the expression on one line with a caret under ``position``.

    A long expression is cut to a window of ``width`` characters around the position; control
    characters print as spaces so that the caret stays under its character."""
    start = max(0, min(position - width // 2, len(expression) - width))
    shown = expression[start : start + width]
    prefix = "..." if start > 0 else ""
    suffix = "..." if start + width < len(expression) else ""
    line = "".join(" " if not c.isprintable() else c for c in shown)
    caret = " " * (len(prefix) + sum(map(_columns, line[: position - start]))) + "^"
    return f"{reason}\n  {prefix}{line}{suffix}\n  {caret}"


def _columns(char: str) -> int:
    """Terminal columns of one printable character: 2 for wide East Asian characters, 0 for
    combining marks, else 1 (so that the caret stays under its token)."""
    import unicodedata

    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


class RunNotFoundError(RunstreamError, LookupError):
    """``runstream.Api().run(run_id)`` found no such run. The message names the id and says how
    to list the runs there are; ``run_id`` (and ``project`` when one was given) hold them."""

    def __init__(self, run_id: str, project: str | None = None) -> None:
        where = f" in project {project!r}" if project is not None else ""
        super().__init__(
            f"no run {run_id!r}{where}: list the runs with runstream.Api().runs(project=...) "
            "or 'runstream runs ls --project NAME' (the run may also not have landed yet: "
            "is the sink running?)"
        )
        self.run_id = run_id
        self.project = project


class ReadArgumentError(RunstreamError, ValueError):
    """An argument of the Python read API (:mod:`runstream.read.api`) cannot be used: an ``x``
    the run does not have, ``samples`` or a ``limit`` out of range, a run id found in several
    projects. The message says what to pass instead."""


class WandbFilterError(RunstreamError, ValueError):
    """A wandb-style ``filters`` or ``order`` of ``runstream.wandb.Api().runs(...)`` (MongoDB
    query operators, wandb's field names) that runstream cannot translate into its ``where``
    language: an operator or field it does not support, or a value of the wrong type. The
    message names the operator or field and the path to it inside the filter."""
