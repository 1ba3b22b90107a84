"""The one place read queries are sent to ClickHouse (the Python API, ``runstream query``, the UI).

Every query:

- is screened first (:func:`runstream.read.screen.screen`): one read statement, no table function
  that reaches outside the database, no ``SETTINGS`` clause;
- takes its values only as server-side query parameters (``{name:Type}`` in the SQL, the value in
  ``parameters``; clickhouse-connect sends them as ``param_<name>``): a parameter the SQL does not
  name as a placeholder is refused, so nothing is ever pasted into the SQL text;
- runs with ``readonly=2`` and the limits of the settings (``max_execution_time``,
  ``max_memory_usage``, ``max_result_rows`` with ``result_overflow_mode='throw'``). ``readonly=2``
  rather than 1 because the limits travel with each query and ``readonly=1`` refuses every
  setting a query carries (ClickHouse docs, "Permissions for queries": with 2, read queries and
  settings; with either, no writes and no DDL). The first query of a :class:`Reader` checks that
  the server applied them (a client library may drop a setting it thinks read-only).
"""

from __future__ import annotations

import http.client
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from runstream._extras import require
from runstream.deploy.local.reader_user import local_reader
from runstream.errors import ClickHouseError, QueryError, QueryLimitError, ReadRefusedError
from runstream.read.screen import placeholders, screen, tokens
from runstream.settings import Settings

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SERVER_ERROR = re.compile(
    r"Code: (\d+)\. DB::Exception: (.*?)(?: \(([A-Z_]+)\))?(?: \(version [^)]*\))?\s*"
    r"(?:\(for url [^)]*\))?\s*$",
    re.S,
)
# ClickHouse error codes of the limits: TOO_MANY_ROWS_OR_BYTES, TIMEOUT_EXCEEDED,
# MEMORY_LIMIT_EXCEEDED, QUOTA_EXCEEDED (docs "Restrictions on query complexity", "Quotas").
_LIMIT_CODES = frozenset({396, 159, 241, 201})


@dataclass(frozen=True)
class Result:
    """A whole (small) result: column names, ClickHouse types (``Nullable(String)``...) and rows.

    ``truncated`` is True when :meth:`Reader.query` stopped at its ``limit`` and more rows exist.
    """

    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool = False

    def records(self) -> list[dict[str, Any]]:
        """Rows as dicts keyed by column name."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


@dataclass
class Limits:
    """What each read query may use; from the ``read_*`` settings unless given."""

    max_execution_time: float
    max_memory_usage: int
    max_result_rows: int
    extra: dict[str, Any] = field(default_factory=dict)

    def clickhouse_settings(self) -> dict[str, Any]:
        return {
            "readonly": 2,
            "max_execution_time": self.max_execution_time,
            "timeout_overflow_mode": "throw",
            "max_memory_usage": self.max_memory_usage,
            "max_result_rows": self.max_result_rows,
            "result_overflow_mode": "throw",
            **self.extra,
        }


# ClickHouse's exception as it ends a body it had started to send (a limit hit half-way).
_TRAILING_ERROR = re.compile(rb"Code: \d+\. DB::Exception: .*?\(version [^)]*\)", re.S)
# How urllib3 / clickhouse-connect report a body that ended before its end.
_BROKEN = ("IncompleteRead", "Response ended prematurely", "Connection broken")


def _trailing_error(exc: BaseException) -> str | None:
    """ClickHouse's exception text from the end of a broken response body, if the exception
    chain holds it. ClickHouse cannot take back the rows it has sent, so an error after the
    first block is written at the end of the body (between ``__exception__`` markers, ClickHouse
    docs, "HTTP interface: exception handling during HTTP streaming") and the chunked encoding is
    left unfinished so that no client reads the body as complete; urllib3 then raises
    ``ProtocolError(..., http.client.IncompleteRead)`` whose ``partial`` holds the last bytes
    read, that text included."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        error = todo.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        partial = getattr(error, "partial", None)
        if isinstance(error, http.client.IncompleteRead) and isinstance(partial, bytes):
            found = _TRAILING_ERROR.findall(partial[-65536:])
            if found:
                return str(found[-1].decode("utf-8", "replace"))
        todo += [a for a in error.args if isinstance(a, BaseException)]
        todo += [e for e in (error.__cause__, error.__context__) if e is not None]
    return None


def query_error(exc: Exception, limits: Limits | None = None) -> QueryError:
    """ClickHouse's own message out of a clickhouse-connect exception, as a :class:`QueryError`
    (:class:`QueryLimitError` for a limit or quota). A result stream that broke off half-way
    gives ClickHouse's exception from the end of the body when it can be read; else a
    :class:`QueryError` saying that a read limit (``limits``) may have stopped it."""
    text = str(exc)
    if "AggregateFunction" in text and "not supported" in text:
        # runs, run_summaries, live_runs... hold partial aggregates (states) the client cannot
        # read; their *_current views finish them (docs/sql.md).
        return QueryError(
            f"the query failed: {text}. A column of type AggregateFunction holds partial "
            "aggregates: use runs_current / run_summaries_current (the *_current views), or "
            "finish the state in the query, e.g. argMaxMerge(name) ... GROUP BY run_id"
        )
    match = _SERVER_ERROR.search(text)
    if not match:
        trailing = _trailing_error(exc)
        if trailing is not None:
            match = _SERVER_ERROR.search(trailing)
    if not match:
        if limits is not None and any(b in text for b in _BROKEN):
            return QueryError(
                "the result stream broke off before its end, and ClickHouse's reason could not "
                f"be read ({text}). A read limit may have stopped it: "
                f"RUNSTREAM_READ_MAX_RESULT_ROWS (now {limits.max_result_rows}), "
                f"RUNSTREAM_READ_MAX_EXECUTION_TIME (now {limits.max_execution_time} s), "
                f"RUNSTREAM_READ_MAX_MEMORY_USAGE (now {limits.max_memory_usage} bytes); "
                "raise the one that applies, or aggregate or LIMIT the query"
            )
        return QueryError(f"the query failed: {text}")
    code, message, name = int(match.group(1)), match.group(2).strip(), match.group(3) or ""
    kind = QueryLimitError if code in _LIMIT_CODES else QueryError
    hint = ""
    if code == 396:
        hint = " (raise RUNSTREAM_READ_MAX_RESULT_ROWS, or aggregate or LIMIT the query)"
    elif code == 159:
        hint = " (raise RUNSTREAM_READ_MAX_EXECUTION_TIME, or narrow the query)"
    elif code == 241:
        hint = " (raise RUNSTREAM_READ_MAX_MEMORY_USAGE, or narrow the query)"
    elif code == 201:
        hint = " (the reader user's quota: wait for its interval to end, or raise it in users.xml)"
    elif code == 452:
        hint = (
            " (the reader user's profile bounds this limit: keep RUNSTREAM_READ_* within its "
            "constraints, or raise them in users.xml, deploy/compose/clickhouse/users.xml)"
        )
    elif code == 164 and "readonly" in message and "modify" in message:
        hint = (
            " (the reader user's profile has readonly=1, which refuses the limits runstream sends "
            "with each query: give it readonly=2, as deploy/compose/clickhouse/users.xml does)"
        )
    return kind(f"ClickHouse: {message}{hint}", code=code, name=name)


class Stream:
    """Blocks of rows as ClickHouse sends them (:meth:`Reader.open_stream`). ``columns`` and
    ``types`` are known before the first block; errors while reading (a limit hit half-way)
    raise :class:`QueryError` / :class:`QueryLimitError`."""

    def __init__(
        self, context: Any, columns: list[str], types: list[str], limits: Limits | None = None
    ) -> None:
        self._context = context
        self.columns = columns
        self.types = types
        self._limits = limits

    def __iter__(self) -> Iterator[Sequence[Sequence[Any]]]:
        try:
            yield from self._context
        except GeneratorExit:
            raise
        except Exception as exc:
            raise query_error(exc, self._limits) from exc

    def close(self) -> None:
        self._context.__exit__(None, None, None)

    def __enter__(self) -> Stream:
        self._context.__enter__()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Reader:
    """Read-only queries against the runstream database.

    ``Reader(settings)`` connects lazily as ``settings.read_clickhouse_user`` (or the user of
    ``clickhouse_url``) to ``settings.clickhouse_database``. ``max_execution_time`` (seconds),
    ``max_memory_usage`` (bytes) and ``max_result_rows`` override the ``read_*`` settings for this
    reader. Raises :class:`ReadRefusedError` before sending a statement it will not run,
    :class:`QueryError` with ClickHouse's message when the server refuses one, and
    :class:`QueryLimitError` when a limit stops one.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        max_execution_time: float | None = None,
        max_memory_usage: int | None = None,
        max_result_rows: int | None = None,
        client: Any = None,
    ) -> None:
        self.settings = settings or Settings.load()
        s = self.settings.with_overrides(
            read_max_execution_time=max_execution_time,
            read_max_memory_usage=max_memory_usage,
            read_max_result_rows=max_result_rows,
        )
        self.limits = Limits(
            s.read_max_execution_time, s.read_max_memory_usage, s.read_max_result_rows
        )
        self._client = client
        self._verified = False

    # --- connection -----------------------------------------------------------------------
    def client(self) -> Any:
        """The clickhouse-connect client (connected and checked on first use)."""
        if self._client is None:
            self._client = _connect(self.settings)
        _quiet_client_logs()
        if not self._verified:
            self._verify()
        return self._client

    def _verify(self) -> None:
        """Check that the server runs our queries read-only and under our limits: a client
        library that drops a setting must not leave a writable session behind."""
        names = ("readonly", "max_execution_time", "max_memory_usage", "max_result_rows")
        sql = "SELECT " + ", ".join(f"getSetting('{n}')" for n in names)
        try:
            row = self._client.query(sql, settings=self.limits.clickhouse_settings()).result_rows[0]
        except Exception as exc:
            raise _connection_error(self.settings, exc) from exc
        got = dict(zip(names, row, strict=True))
        wanted = {
            "max_execution_time": self.limits.max_execution_time,
            "max_memory_usage": self.limits.max_memory_usage,
            "max_result_rows": self.limits.max_result_rows,
        }
        unlimited = [k for k, v in wanted.items() if not got[k] or float(got[k]) > float(v)]
        if not int(got["readonly"]) or unlimited:
            raise ClickHouseError(
                f"ClickHouse did not apply the read-only settings (readonly={got['readonly']}, "
                f"{', '.join(f'{k}={got[k]}' for k in unlimited)}): the read side will not run "
                "queries without them. Check the reader user's profile (deploy/README.md)."
            )
        self._verified = True

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
            self._verified = False

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- queries --------------------------------------------------------------------------
    def prepare(
        self, sql: str, parameters: Mapping[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        """The screened SQL and its parameters, or :class:`ReadRefusedError` saying why not.

        Every parameter must appear in the SQL as ``{name:Type}``: clickhouse-connect would
        otherwise format a value into the SQL text on the client."""
        checked = screen(sql)
        params = dict(parameters or {})
        if params:
            bad = [name for name in params if not _NAME.match(name)]
            if bad:
                raise ReadRefusedError(f"parameter names must be identifiers, not {bad}")
            named = placeholders(checked)
            missing = sorted(set(params) - named)
            if missing:
                raise ReadRefusedError(
                    f"parameter(s) {', '.join(missing)} have no {{name:Type}} placeholder in the "
                    f"SQL: write e.g. {{{missing[0]}:String}} where the value goes"
                )
        unbound = sorted(placeholders(checked) - set(params))
        if unbound:
            raise ReadRefusedError(
                f"the SQL has placeholder(s) {', '.join(unbound)} without a value: pass "
                f"parameters={{{unbound[0]!r}: ...}} (runstream query: --param {unbound[0]}=...)"
            )
        return checked, params

    def query(
        self,
        sql: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        limit: int | None = None,
    ) -> Result:
        """Run one read statement and return its result.

        ``limit`` keeps the first ``limit`` rows (the rest is not read: the stream is closed and
        ClickHouse cancels the query); ``Result.truncated`` says whether there were more."""
        if limit is not None and limit < 0:
            raise ReadRefusedError(f"limit must be 0 or more, not {limit}")
        rows: list[tuple[Any, ...]] = []
        truncated = False
        with self.open_stream(sql, parameters) as stream:
            for block in stream:
                if limit is not None and len(rows) + len(block) > limit:
                    rows.extend(tuple(r) for r in block[: limit - len(rows)])
                    truncated = True
                    break
                rows.extend(tuple(r) for r in block)
        columns, types = stream.columns, stream.types
        return Result(columns, types, rows, truncated)

    def open_stream(self, sql: str, parameters: Mapping[str, Any] | None = None) -> Stream:
        """A :class:`Stream` of the result's blocks, with its column names and types; use it as a
        context manager (leaving it early cancels the query)."""
        checked, params = self.prepare(sql, parameters)
        client = self.client()
        try:
            context = client.query_row_block_stream(
                checked, parameters=params or None, settings=self.limits.clickhouse_settings()
            )
        except Exception as exc:
            raise query_error(exc) from exc
        columns = list(context.source.column_names)
        types = [t.name for t in context.source.column_types]
        if not columns and _is_select(checked):
            # No rows, no block: ClickHouse sent no header. Ask it for the result's columns,
            # without running the query again (DESCRIBE only analyses it).
            try:
                described = client.query(
                    f"DESCRIBE ({checked})",
                    parameters=params or None,
                    settings=self.limits.clickhouse_settings(),
                ).result_rows
            except Exception as exc:
                context.source.close()
                raise query_error(exc) from exc
            columns = [str(row[0]) for row in described]
            types = [str(row[1]) for row in described]
        return Stream(context, columns, types, self.limits)

    def stream(
        self, sql: str, parameters: Mapping[str, Any] | None = None
    ) -> Iterator[Sequence[Sequence[Any]]]:
        """Blocks of rows (each a sequence of row sequences, ClickHouse's block size), read as
        they arrive: memory holds one block at a time. Close the iterator (or leave the ``for``
        loop) to stop the query early."""
        with self.open_stream(sql, parameters) as stream:
            yield from stream

    def arrow(self, sql: str, parameters: Mapping[str, Any] | None = None) -> Any:
        """The result as a ``pyarrow.Table`` built from ClickHouse's Arrow output (strings as
        Arrow strings). Needs pyarrow (``pip install 'runstream[arrow]'``); see :meth:`records`
        for plain rows without it."""
        require("pyarrow", part="Arrow results", extra="arrow")
        checked, params = self.prepare(sql, parameters)
        client = self.client()
        try:
            return client.query_arrow(
                checked,
                parameters=params or None,
                settings=self.limits.clickhouse_settings(),
                use_strings=True,
            )
        except Exception as exc:
            raise query_error(exc) from exc

    def arrow_stream(self, sql: str, parameters: Mapping[str, Any] | None = None) -> Iterator[Any]:
        """``pyarrow.RecordBatch``-sized ``pyarrow.Table`` s, one per ClickHouse block, as they
        arrive (ClickHouse's ArrowStream output): for results of any size at flat memory."""
        require("pyarrow", part="Arrow results", extra="arrow")
        checked, params = self.prepare(sql, parameters)
        client = self.client()
        try:
            with client.query_arrow_stream(
                checked,
                parameters=params or None,
                settings=self.limits.clickhouse_settings(),
                use_strings=True,
            ) as stream:
                yield from stream
        except GeneratorExit:
            raise
        except Exception as exc:
            raise query_error(exc, self.limits) from exc

    def raw_stream(
        self,
        sql: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        fmt: str,
        chunk_size: int = 1 << 20,
    ) -> Iterator[bytes]:
        """The result in ClickHouse output format ``fmt`` (``Parquet``, ``CSVWithNames``, ...) as
        byte chunks of up to ``chunk_size`` as they arrive: for exports of any size at flat
        memory. Screened, read-only and under this reader's limits like every query; ``fmt`` must
        be a format name (letters only) and is appended by the client as ``FORMAT fmt``.

        ClickHouse cannot take back what it has sent: a limit or error half-way ends the body
        with ClickHouse's exception text (after the marker ``__exception__`` on servers that tag
        it). :func:`runstream.read.cli.export` checks the end of each file for it."""
        if not fmt.isalpha():
            raise ReadRefusedError(f"an output format is a name such as Parquet, not {fmt!r}")
        checked, params = self.prepare(sql, parameters)
        client = self.client()
        try:
            response = client.raw_stream(
                checked,
                parameters=params or None,
                settings=self.limits.clickhouse_settings(),
                fmt=fmt,
            )
        except Exception as exc:
            raise query_error(exc) from exc
        try:
            while True:
                try:
                    chunk = response.read(chunk_size)
                except Exception as exc:
                    raise query_error(exc, self.limits) from exc
                if not chunk:
                    return
                yield bytes(chunk)
        finally:
            response.close()

    def table(self, sql: str, parameters: Mapping[str, Any] | None = None) -> Any:
        """A ``pyarrow.Table`` when pyarrow is installed, else a list of dicts (one per row)."""
        try:
            import pyarrow  # type: ignore[import-untyped]  # noqa: F401
        except ImportError:
            return self.records(sql, parameters)
        return self.arrow(sql, parameters)

    def records(
        self, sql: str, parameters: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Rows as dicts keyed by column name."""
        return self.query(sql, parameters).records()


def _is_select(sql: str) -> bool:
    first = next((t for t in tokens(sql) if t.text != "("), None)
    return first is not None and first.kind == "word" and first.text.upper() in ("SELECT", "WITH")


def _connection_error(settings: Settings, exc: Exception) -> ClickHouseError:
    text = str(exc)
    if "Code:" in text:
        return query_error(exc)
    return ClickHouseError(
        f"cannot reach ClickHouse at {settings.clickhouse_url_redacted}: {text}. Is it running? "
        "Start the local stack with 'runstream dev up' or set RUNSTREAM_CLICKHOUSE_URL."
    )


class _OwnErrors(logging.Filter):
    """Drops clickhouse-connect's log record of a chunk it failed to read: it raises that error
    to us right after, and the read side reports it as a :class:`QueryError` (a stray traceback
    on stderr from a library's log would only repeat it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "unexpected failure to read next chunk"


_OWN_ERRORS = _OwnErrors()


def _quiet_client_logs() -> None:
    logger = logging.getLogger("clickhouse_connect.driver.httputil")
    if _OWN_ERRORS not in logger.filters:
        logger.addFilter(_OWN_ERRORS)


def _connect(settings: Settings) -> Any:
    """A clickhouse-connect client as the reader user; no settings of its own (each query
    carries the read settings). The reader user: read_clickhouse_user when set; else the local
    stack's ``runstream_reader`` when ``settings.home`` runs the server of clickhouse_url
    (:func:`~runstream.deploy.local.reader_user.local_reader`); else the URL's user."""
    clickhouse_connect = require("clickhouse_connect", part="the read side", extra="sinks")
    parts = urlsplit(settings.clickhouse_url)
    host, port = settings.clickhouse_host_port
    user = settings.read_clickhouse_user or parts.username or "default"
    local = None if settings.read_clickhouse_user else local_reader(settings)
    if local is not None:  # the local stack's read-only user (runstream dev up)
        user, password = local
    elif settings.read_clickhouse_password is not None:
        password = settings.read_clickhouse_password.get_secret_value()
    elif settings.read_clickhouse_user and settings.read_clickhouse_user != parts.username:
        password = ""  # another user than the URL's: its password is not the URL's
    else:
        password = parts.password or ""
    try:
        return clickhouse_connect.get_client(
            host=host,
            port=port,
            username=user,
            password=password,
            secure=parts.scheme == "https",
            database=settings.clickhouse_database,
            # No HTTP session: read queries need none (their settings travel with each), and a
            # session lets only one query run at a time, so a query sent right after a stream
            # ended could be refused with SESSION_IS_LOCKED (373) before the server released it.
            autogenerate_session_id=False,
        )
    except Exception as exc:
        if "UNKNOWN_DATABASE" in str(exc):
            raise ClickHouseError(
                f"database {settings.clickhouse_database!r} does not exist on "
                f"{settings.clickhouse_url_redacted}; create it with 'runstream migrate'"
            ) from exc
        raise _connection_error(settings, exc) from exc
