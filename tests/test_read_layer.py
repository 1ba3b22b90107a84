"""The read layer (runstream.read.Reader) against the real ClickHouse: hostile SQL is refused
before it is sent, ClickHouse's readonly refuses what a parser trick would get through, the limits
stop endless and huge queries, values travel only as query parameters, results stream; and after
every one of them the database is as it was and the server still answers (issue 12, "One read
layer" and the tests of hostile input)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from runstream.errors import (
    ClickHouseError,
    QueryError,
    QueryLimitError,
    ReadRefusedError,
    SettingsError,
)
from runstream.read import Reader, screen
from runstream.read.screen import READ_STATEMENTS, Token, tokens
from runstream.settings import Settings
from runstream.sinks.clickhouse import connect
from tests.conftest import Services, isolated_settings

GUARD_ROWS = 1000


@pytest.fixture(scope="module")
def read_settings(services: Services) -> Settings:
    """One database for the module (migrated), with a table `guard` of GUARD_ROWS rows."""
    settings = isolated_settings(services, prefix="rd")
    admin = connect(settings)
    admin.command("CREATE TABLE guard (x UInt64) ENGINE = MergeTree ORDER BY x")
    admin.command(f"INSERT INTO guard SELECT number FROM numbers({GUARD_ROWS})")
    return settings


def snapshot(settings: Settings) -> list[tuple[Any, ...]]:
    """Every table of the database with its row count (exact: count() of each), and the
    server's uptime (it restarted if this goes down)."""
    admin = connect(settings)
    names = [
        r[0]
        for r in admin.query(
            "SELECT name FROM system.tables WHERE database = {db:String} AND engine LIKE "
            "'%MergeTree' ORDER BY name",
            parameters={"db": settings.clickhouse_database},
        ).result_rows
    ]
    counts = [(n, admin.query(f"SELECT count() FROM `{n}`").result_rows[0][0]) for n in names]
    every = admin.query(
        "SELECT name, engine FROM system.tables WHERE database = {db:String} ORDER BY name",
        parameters={"db": settings.clickhouse_database},
    ).result_rows
    return [*counts, *[tuple(r) for r in every]]


@pytest.fixture
def untouched(read_settings: Settings) -> Iterator[Settings]:
    """The module's settings; after the test, the same tables with the same rows, and a server
    that answers."""
    before = snapshot(read_settings)
    uptime = connect(read_settings).query("SELECT uptime()").result_rows[0][0]
    yield read_settings
    assert snapshot(read_settings) == before
    assert ("guard", GUARD_ROWS) in before
    assert connect(read_settings).query("SELECT uptime()").result_rows[0][0] >= uptime


@pytest.fixture
def reader(untouched: Settings) -> Iterator[Reader]:
    with Reader(untouched) as r:
        yield r


def test_reads_the_database_with_parameters(reader: Reader) -> None:
    result = reader.query(
        "SELECT count() AS n, max(x) AS top FROM guard WHERE x >= {low:UInt64}", {"low": 990}
    )
    assert (result.columns, result.types, result.rows) == (
        ["n", "top"],
        ["UInt64", "UInt64"],
        [(10, 999)],
    )
    assert result.records() == [{"n": 10, "top": 999}]
    assert reader.query("SHOW TABLES LIKE 'guard'").rows == [("guard",)]
    assert reader.query("DESCRIBE TABLE guard").rows[0][:2] == ("x", "UInt64")
    assert reader.query("EXISTS TABLE guard").rows == [(1,)]
    assert reader.query("WITH 2 AS k SELECT k * 3;").rows == [(6,)]
    assert sorted(reader.query("(SELECT 1) UNION ALL (SELECT 2)").rows) == [(1,), (2,)]
    assert len(reader.query("EXPLAIN SELECT * FROM guard").rows) > 0


HOSTILE = [
    "INSERT INTO guard VALUES (1)",
    "DROP TABLE guard",
    "ALTER TABLE guard DELETE WHERE 1",
    "SYSTEM SHUTDOWN",
    "CREATE TABLE evil (x UInt8) ENGINE = Memory",
    "TRUNCATE TABLE guard",
    "RENAME TABLE guard TO g2",
    "OPTIMIZE TABLE guard FINAL",
    "KILL QUERY WHERE 1",
    "SET readonly = 0",
    "GRANT ALL ON *.* TO default",
    "SELECT 1; DROP TABLE guard",
    "SELECT 1; DROP TABLE guard;",
    "SELECT 1 /* a comment */; DROP TABLE guard",
    "SELECT 1 -- a comment\n; DROP TABLE guard",
    "SELECT 1 # a comment\n; DROP TABLE guard",
    "/* SELECT */ DROP TABLE guard",
    "-- SELECT\nDROP TABLE guard",
    "SELECT 'a'; DROP TABLE guard; SELECT 'b'",
    "SELECT 1 /* unterminated ; DROP TABLE guard",
    "SELECT 'unterminated ; DROP TABLE guard",
    "SELECT `unterminated ; DROP TABLE guard",
    "SELECT $$ unterminated ; DROP TABLE guard",
    "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT file('/etc/passwd')",
    "SELECT * FROM FILE('/etc/passwd')",
    "SELECT * FROM `file`('/etc/passwd', 'LineAsString')",
    "SELECT * FROM \"file\"('/etc/passwd', 'LineAsString')",
    "SELECT * FROM file /* gap */ ('/etc/passwd', 'LineAsString')",
    "SELECT * FROM file\n('/etc/passwd', 'LineAsString')",
    "SELECT * FROM db.file('/etc/passwd', 'LineAsString')",
    "SELECT catboostEvaluate('/etc/passwd', 1)",
    "SELECT * FROM url('http://127.0.0.1:18123/ping', 'LineAsString')",
    "SELECT * FROM s3('http://127.0.0.1/b/k.csv')",
    "SELECT * FROM s3Cluster('c', 'http://127.0.0.1/b/k.csv')",
    "SELECT * FROM remote('127.0.0.1', system.one)",
    "SELECT * FROM remoteSecure('127.0.0.1', system.one)",
    "SELECT * FROM cluster('default', system.one)",
    "SELECT * FROM mysql('h:3306', 'db', 't', 'u', 'p')",
    "SELECT * FROM postgresql('h:5432', 'db', 't', 'u', 'p')",
    "SELECT * FROM executable('cat /etc/passwd', 'TSV', 'x String')",
    "SELECT * FROM input('x String')",
    "SELECT * FROM hdfs('hdfs://h/f', 'TSV', 'x String')",
    "SELECT * FROM azureBlobStorage('u', 'c', 'b')",
    "SELECT * FROM icebergS3('http://h/t')",
    "WITH x AS (SELECT * FROM file('/etc/passwd')) SELECT * FROM x",
    "SELECT * FROM guard WHERE x IN (SELECT * FROM url('http://h', 'TSV', 'x UInt64'))",
    "SELECT count() FROM numbers(10) SETTINGS max_execution_time = 0",
    "SELECT count() FROM numbers(10) settings readonly = 0",
    "SELECT 1 INTO OUTFILE '/tmp/x'",
    "",
    "  ;  ",
    "-- only a comment",
]


@pytest.mark.parametrize("sql", HOSTILE)
def test_hostile_sql_is_refused_before_it_is_sent(reader: Reader, sql: str) -> None:
    with pytest.raises(ReadRefusedError) as refused:
        reader.query(sql)
    message = str(refused.value)
    assert message and any(
        hint in message
        for hint in ("only read statements", "more than one statement", "reads outside",
                     "SETTINGS", "never closed", "empty", "OUTFILE")
    ), message  # fmt: skip
    with pytest.raises(ReadRefusedError):
        list(reader.stream(sql))


def test_strings_and_comments_are_not_statements(reader: Reader) -> None:
    """What looks like a statement inside a string, identifier or comment is data."""
    assert reader.query("SELECT 'DROP TABLE guard; SELECT 1' AS s").rows == [
        ("DROP TABLE guard; SELECT 1",)
    ]
    assert reader.query("SELECT 1 -- ; DROP TABLE guard").rows == [(1,)]
    assert reader.query("SELECT 1 /* ; DROP /* nested */ TABLE guard */").rows == [(1,)]
    assert reader.query("SELECT 'it''s; \\' ; file(' AS s").rows == [("it's; ' ; file(",)]
    assert reader.query('SELECT 1 AS "file"').rows == [(1,)]
    assert reader.query("SELECT x AS url FROM guard ORDER BY x LIMIT 1").rows == [(0,)]
    assert reader.query("SELECT $$a;b$$").rows == [("a;b",)]
    assert reader.query("SELECT 2; -- the end").rows == [(2,)]
    assert reader.query("SELECT 3 -- the end").rows == [(3,)]
    assert reader.query("SELECT 4 /* the end */ ;;").rows == [(4,)]


def _unscreened(reader: Reader, sql: str) -> Any:
    """Send ``sql`` with the reader's connection and settings, past the screen: what a parser
    trick that fooled the screen would reach."""
    return reader.client().query(sql, settings=reader.limits.clickhouse_settings())


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO guard VALUES (1)",
        "INSERT INTO guard SELECT number FROM numbers(10)",
        "DROP TABLE guard",
        "ALTER TABLE guard DELETE WHERE 1",
        "ALTER TABLE guard ADD COLUMN y UInt8",
        "CREATE TABLE evil (x UInt8) ENGINE = Memory",
        "TRUNCATE TABLE guard",
        "RENAME TABLE guard TO g2",
        "OPTIMIZE TABLE guard FINAL",
        # Not SHUTDOWN: this server is shared. Every SYSTEM statement meets the same check
        # ("Cannot execute query in readonly mode"); the screen refuses SHUTDOWN above.
        "SYSTEM STOP MERGES guard",
        "SELECT count() FROM guard SETTINGS readonly = 0",
    ],
)
def test_clickhouse_refuses_writes_the_screen_would_miss(reader: Reader, sql: str) -> None:
    """The real guarantee: ClickHouse's readonly, on every query the read layer sends."""
    with pytest.raises(Exception, match=r"READONLY|readonly") as refused:
        _unscreened(reader, sql)
    assert "Code: 164" in str(refused.value)


def test_every_query_runs_read_only_under_the_limits(untouched: Settings) -> None:
    with Reader(
        untouched, max_execution_time=7, max_memory_usage=3 * 1024**3, max_result_rows=123
    ) as reader:
        got = reader.query(
            "SELECT getSetting('readonly'), getSetting('max_execution_time'), "
            "getSetting('max_memory_usage'), getSetting('max_result_rows'), "
            "getSetting('result_overflow_mode')"
        ).rows
    assert got == [(2, 7.0, 3 * 1024**3, 123, "throw")]


def test_an_endless_query_is_stopped_by_max_execution_time(untouched: Settings) -> None:
    endless = "SELECT count() FROM numbers(1000000000000) WHERE cityHash64(number) = 0"
    with Reader(untouched, max_execution_time=1) as reader:
        started = time.monotonic()
        with pytest.raises(
            QueryLimitError, match=r"Timeout exceeded.*RUNSTREAM_READ_MAX_EXECUTION_TIME"
        ) as stopped:
            reader.query(endless)
        assert time.monotonic() - started < 10
        assert stopped.value.code == 159
        assert reader.query("SELECT 1").rows == [(1,)]  # the reader still works


def test_a_huge_result_is_stopped_by_max_result_rows(untouched: Settings) -> None:
    with Reader(untouched, max_result_rows=500) as reader:
        with pytest.raises(QueryLimitError, match="RUNSTREAM_READ_MAX_RESULT_ROWS") as stopped:
            reader.query("SELECT x FROM guard")
        assert stopped.value.code == 396
        with pytest.raises(QueryLimitError):
            for _ in reader.stream("SELECT number FROM numbers(10000000)"):
                pass
        assert reader.query("SELECT count() FROM guard").rows == [
            (GUARD_ROWS,)
        ]  # aggregates are fine


def test_memory_is_bounded_by_max_memory_usage(untouched: Settings) -> None:
    with Reader(untouched, max_memory_usage=8 * 1024**2) as reader:
        with pytest.raises(QueryLimitError, match="RUNSTREAM_READ_MAX_MEMORY_USAGE") as stopped:
            reader.query("SELECT length(groupArray(number)) FROM numbers(20000000)")
        assert stopped.value.code == 241


def test_limit_stops_reading_and_cancels_the_rest(reader: Reader) -> None:
    started = time.monotonic()
    result = reader.query("SELECT number FROM numbers(1000000000000)", limit=5)
    assert result.rows == [(0,), (1,), (2,), (3,), (4,)] and result.truncated
    assert time.monotonic() - started < 10
    whole = reader.query("SELECT x FROM guard ORDER BY x", limit=GUARD_ROWS)
    assert len(whole.rows) == GUARD_ROWS and not whole.truncated
    assert reader.query("SELECT 1", limit=0).rows == []


def test_streaming_yields_blocks_as_they_arrive(reader: Reader) -> None:
    blocks = list(reader.stream("SELECT number FROM numbers(300000)"))
    assert len(blocks) > 1  # not one list of everything
    assert sum(len(b) for b in blocks) == 300000
    assert sum(row[0] for b in blocks for row in b) == sum(range(300000))
    with reader.open_stream(
        "SELECT x, toString(x) AS s FROM guard WHERE x < {n:UInt64}", {"n": 3}
    ) as stream:
        assert (stream.columns, stream.types) == (["x", "s"], ["UInt64", "String"])
        assert [tuple(r) for b in stream for r in b] == [(0, "0"), (1, "1"), (2, "2")]


def test_arrow_results(reader: Reader) -> None:
    pa = pytest.importorskip("pyarrow")
    table = reader.arrow(
        "SELECT x, toString(x) AS s FROM guard WHERE x < {n:UInt64} ORDER BY x", {"n": 3}
    )
    assert isinstance(table, pa.Table)
    assert table.to_pydict() == {"x": [0, 1, 2], "s": ["0", "1", "2"]}
    batches = list(reader.arrow_stream("SELECT number FROM numbers(300000)"))
    assert sum(b.num_rows for b in batches) == 300000
    assert isinstance(reader.table("SELECT 1 AS one"), pa.Table)
    with pytest.raises(ReadRefusedError):
        reader.arrow("DROP TABLE guard")


def test_records_without_pyarrow(reader: Reader, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow fails
    assert reader.table("SELECT 1 AS one, 'a' AS s") == [{"one": 1, "s": "a"}]


def test_bad_sql_shows_clickhouses_message(reader: Reader) -> None:
    with pytest.raises(QueryError, match="Unknown table expression identifier 'nope'") as bad:
        reader.query("SELECT * FROM nope")
    assert bad.value.code == 60 and not isinstance(bad.value, QueryLimitError)
    with pytest.raises(QueryError, match="Syntax error"):
        reader.query("SELECT (1")


def test_parameters_must_be_placeholders(reader: Reader) -> None:
    with pytest.raises(ReadRefusedError, match=r"\{name:String\}|placeholder"):
        reader.query("SELECT %(name)s", {"name": "x"})
    with pytest.raises(ReadRefusedError, match="without a value"):
        reader.query("SELECT {name:String}")
    with pytest.raises(ReadRefusedError, match="identifiers"):
        reader.query("SELECT {a:String}", {"a": "x", "b-c": 1})
    # a placeholder inside a string is text, not a parameter
    with pytest.raises(ReadRefusedError, match="no \\{name:Type\\} placeholder"):
        reader.query("SELECT '{v:String}'", {"v": "x"})


@hsettings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=st.text(max_size=60))
def test_any_value_travels_as_a_parameter(reader: Reader, value: str) -> None:
    """A value, whatever it holds (quotes, `; DROP`, backslashes, braces), comes back as itself:
    it never became SQL."""
    hostile = value + "'; DROP TABLE guard; --{x:String}\\"
    assert reader.query("SELECT {v:String}", {"v": hostile}).rows == [(hostile,)]


@hsettings(max_examples=200, deadline=None)
@given(
    sql=st.text(alphabet=st.sampled_from(list("SELECTDROPfile();'\"`$#-/*{}: \n1ab")), max_size=40)
)
def test_the_screen_only_ever_refuses(sql: str) -> None:
    """On any text the screen returns the statement or raises ReadRefusedError, nothing else;
    what it lets through starts with a read keyword and holds no ';' outside strings."""
    try:
        passed = screen(sql)
    except ReadRefusedError:
        return
    assert sql.strip().startswith(passed)
    toks = [t for t in tokens(passed) if t != Token("punct", "(")]
    assert toks[0].kind == "word" and toks[0].text.upper() in READ_STATEMENTS
    body = tokens(passed)
    while body and body[-1] == Token("punct", ";"):
        body.pop()
    assert Token("punct", ";") not in body


def test_read_settings_come_from_the_environment() -> None:
    s = Settings.load(
        env={
            "RUNSTREAM_READ_MAX_EXECUTION_TIME": "12.5",
            "RUNSTREAM_READ_MAX_MEMORY_USAGE": "1073741824",
            "RUNSTREAM_READ_MAX_RESULT_ROWS": "77",
            "RUNSTREAM_READ_CLICKHOUSE_USER": "runstream_reader",
            "RUNSTREAM_READ_CLICKHOUSE_PASSWORD": "s3cret",
        }
    )
    assert (s.read_max_execution_time, s.read_max_memory_usage, s.read_max_result_rows) == (
        12.5,
        2**30,
        77,
    )
    assert s.read_clickhouse_user == "runstream_reader"
    assert (
        s.read_clickhouse_password is not None
        and s.read_clickhouse_password.get_secret_value() == "s3cret"
    )
    assert "s3cret" not in repr(s)
    defaults = Settings.load(env={})
    assert (
        defaults.read_max_execution_time,
        defaults.read_max_memory_usage,
        defaults.read_max_result_rows,
    ) == (30.0, 2 * 1024**3, 10_000_000)
    with pytest.raises(SettingsError, match="RUNSTREAM_READ_MAX_RESULT_ROWS"):
        Settings.load(env={"RUNSTREAM_READ_MAX_RESULT_ROWS": "0"})
    with pytest.raises(SettingsError, match="RUNSTREAM_READ_MAX_EXECUTION_TIME"):
        Settings.load(env={"RUNSTREAM_READ_MAX_EXECUTION_TIME": "-1"})


def test_an_unknown_reader_user_says_so(read_settings: Settings) -> None:
    settings = read_settings.with_overrides(read_clickhouse_user="no_such_reader")
    with pytest.raises(ClickHouseError, match=r"no_such_reader|Authentication|AUTHENTICATION"):
        Reader(settings).query("SELECT 1")


def test_a_client_that_dropped_readonly_is_refused(read_settings: Settings) -> None:
    """If the session were writable (a library dropping the settings), the reader stops."""

    class Careless:
        def __init__(self) -> None:
            self.real = connect(read_settings)

        def query(self, sql: str, **_: Any) -> Any:
            return self.real.query(sql)  # the read settings never reach the server

        def close(self) -> None:
            self.real.close()

    with pytest.raises(ClickHouseError, match="did not apply the read-only settings"):
        Reader(read_settings, client=Careless()).query("SELECT 1")


def test_deploy_ships_a_reader_user_separate_from_the_sinks() -> None:
    """deploy/compose/clickhouse/users.xml: runstream_reader is read-only with runstream's
    limits as its defaults, constraints that keep them from being lifted, a quota, and SELECT on
    the runstream database only (no source grant: file() and url() are the server's to refuse)."""
    import xml.etree.ElementTree as ET
    from pathlib import Path

    import yaml

    root = Path(__file__).parent.parent / "deploy" / "compose"
    users = ET.parse(root / "clickhouse" / "users.xml").getroot()
    profile = users.find("profiles/runstream_reader")
    user = users.find("users/runstream_reader")
    assert profile is not None and user is not None
    defaults = Settings.load(env={})
    assert profile.findtext("readonly") == "2"
    assert float(profile.findtext("max_execution_time") or 0) == defaults.read_max_execution_time
    assert int(profile.findtext("max_memory_usage") or 0) == defaults.read_max_memory_usage
    assert int(profile.findtext("max_result_rows") or 0) == defaults.read_max_result_rows
    assert profile.findtext("result_overflow_mode") == "throw"
    for name in ("max_execution_time", "max_memory_usage", "max_result_rows"):
        bounds = profile.find(f"constraints/{name}")
        assert bounds is not None and float(bounds.findtext("min") or 0) > 0, name  # 0: no limit
        assert float(bounds.findtext("max") or 0) >= float(profile.findtext(name) or 0), name
    assert user.findtext("profile") == user.findtext("quota") == "runstream_reader"
    assert users.find("quotas/runstream_reader/interval/queries") is not None
    password = user.find("password")
    assert password is not None and password.get("from_env") == "CLICKHOUSE_READER_PASSWORD"
    grants = [q.text for q in user.findall("grants/query")]
    assert grants == ["GRANT SELECT ON runstream.*", "GRANT CREATE TEMPORARY TABLE ON *.*"]
    assert users.find("users/runstream") is None  # the sink's user is the image's, not a reader
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())
    env = compose["x-clickhouse-env"]
    assert env["CLICKHOUSE_READER_PASSWORD"].startswith("${CLICKHOUSE_READER_PASSWORD:?")
    assert env["CLICKHOUSE_USER"] == "runstream"


@pytest.mark.parametrize(
    ("text", "kind", "code", "says"),
    [
        (
            "Received ClickHouse exception, code: 201, server response: Code: 201. DB::Exception: "
            "Quota for user `r` for 3600s has been exceeded: queries: 20001/20000. "
            "(QUOTA_EXCEEDED) (version 26.9.2.1) (for url http://h:8123)",
            QueryLimitError,
            201,
            "quota",
        ),
        (
            "Code: 164. DB::Exception: Cannot modify 'max_execution_time' setting in readonly "
            "mode. (READONLY) (for url http://h:8123)",
            QueryError,
            164,
            "readonly=2",
        ),
        ("connection refused", QueryError, 0, "connection refused"),
    ],
)
def test_clickhouse_errors_are_told_plainly(
    text: str, kind: type[QueryError], code: int, says: str
) -> None:
    from runstream.read.reader import query_error

    error = query_error(RuntimeError(text))
    assert type(error) is kind and error.code == code
    assert says in str(error) and "for url" not in str(error)
