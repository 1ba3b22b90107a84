"""A result past ``read_max_result_rows`` that ClickHouse stops half-way through sending (finding
5 of issue 12's fresh user): every streaming path of the Reader, ``Api.sql`` and ``runstream
query`` raise :class:`QueryLimitError` naming RUNSTREAM_READ_MAX_RESULT_ROWS, with ClickHouse's
own message read from the end of the body, and nothing of clickhouse-connect's log reaches
stderr. Against the real ClickHouse; the rows come from ``numbers()``."""

from __future__ import annotations

import http.client
import logging
import os
from collections.abc import Callable
from typing import Any

import pytest
from urllib3.exceptions import ProtocolError

import runstream
from runstream import cli
from runstream.errors import QueryError, QueryLimitError
from runstream.read.reader import Limits, Reader, query_error
from runstream.settings import Settings
from tests.conftest import Services, isolated_settings

LIMIT = 300_000
# Far past the limit: ClickHouse has sent its first blocks (status 200, headers gone) when the
# limit stops it, so the exception can only come at the end of the body.
SQL = "SELECT number, toString(number) AS s FROM numbers(3000000)"


@pytest.fixture(scope="module")
def limited(services: Services) -> Settings:
    return isolated_settings(services, "limits")


def _drain(iterator: Any) -> None:
    for _ in iterator:
        pass


READS: dict[str, Callable[[Reader], Any]] = {
    "query": lambda r: r.query(SQL),
    "stream": lambda r: _drain(r.stream(SQL)),
    "arrow_stream": lambda r: _drain(r.arrow_stream(SQL)),
    "raw_stream": lambda r: _drain(r.raw_stream(SQL, fmt="CSV")),
    "arrow": lambda r: r.arrow(SQL),
}


def _broken_mid_stream(exc: BaseException) -> bool:
    """Whether the exception chain holds the broken body (the case this file is about)."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if any(e is s for s in seen):
            continue
        seen.append(e)
        if isinstance(e, (http.client.IncompleteRead, ProtocolError)):
            return True
        todo += [a for a in e.args if isinstance(a, BaseException)]
        todo += [c for c in (e.__cause__, e.__context__) if c is not None]
    return False


@pytest.mark.parametrize("read", sorted(READS))
def test_a_limit_hit_mid_stream_is_a_query_limit_error(
    limited: Settings,
    read: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    with Reader(limited, max_result_rows=LIMIT) as reader, pytest.raises(QueryLimitError) as info:
        READS[read](reader)
    assert info.value.code == 396
    assert "Limit for result exceeded" in str(info.value)
    assert "RUNSTREAM_READ_MAX_RESULT_ROWS" in str(info.value)
    if read in ("arrow_stream", "raw_stream"):  # the paths that lost the message before
        assert _broken_mid_stream(info.value)
    logged = [r for r in caplog.records if r.name.startswith("clickhouse_connect")]
    assert not [r for r in logged if r.levelno >= logging.WARNING]
    assert "Traceback" not in capfd.readouterr().err


def test_api_sql_past_the_limit(limited: Settings) -> None:
    settings = limited.with_overrides(read_max_result_rows=LIMIT)
    with runstream.Api(settings=settings) as api, pytest.raises(QueryLimitError) as info:
        api.sql(SQL)
    assert "RUNSTREAM_READ_MAX_RESULT_ROWS" in str(info.value)


def test_query_cli_past_the_limit(
    limited: Settings, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith("RUNSTREAM_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("RUNSTREAM_READ_MAX_RESULT_ROWS", str(LIMIT))
    code = cli.main(
        [
            "query",
            "--clickhouse",
            limited.clickhouse_url,
            "--database",
            limited.clickhouse_database,
            SQL,
            "--format",
            "csv",
        ]
    )
    out, err = capfd.readouterr()
    assert code == 1
    assert "RUNSTREAM_READ_MAX_RESULT_ROWS" in err and "Limit for result exceeded" in err
    assert "Traceback" not in err and "unexpected failure" not in err
    assert len(out.splitlines()) <= LIMIT + 1  # what was sent before the limit, header included


def test_the_exception_at_the_end_of_a_body_is_read() -> None:
    tail = (
        b"850315\n850316\n\r\n__exception__\r\nyrjwamggymibnphc\r\nCode: 396. DB::Exception: "
        b"Limit for result exceeded, max rows: 1.00 million, current rows: 1.05 million. "
        b"(TOO_MANY_ROWS_OR_BYTES) (version 26.9.2.1)\n149 yrjwamggymibnphc\r\n__exception__\r\n"
    )
    broken = ProtocolError("Connection broken: IncompleteRead(598 bytes read)", None)
    broken.args = (broken.args[0], http.client.IncompleteRead(tail))
    error = query_error(broken)
    assert isinstance(error, QueryLimitError) and error.code == 396
    assert str(error).startswith("ClickHouse: Limit for result exceeded, max rows: 1.00 million")


def test_a_broken_stream_without_a_reason_says_a_limit_may_have_stopped_it() -> None:
    broken = ProtocolError(
        "Connection broken: IncompleteRead(0 bytes read)", http.client.IncompleteRead(b"")
    )
    error = query_error(broken, Limits(30.0, 2**31, 1234))
    assert type(error) is QueryError
    text = str(error)
    assert "RUNSTREAM_READ_MAX_RESULT_ROWS (now 1234)" in text
    assert "RUNSTREAM_READ_MAX_EXECUTION_TIME (now 30.0 s)" in text
    assert "broke off" in text
