"""`runstream query` against the real ClickHouse: SQL from an argument, a file or stdin, --param,
--limit, read-only with the read layer's limits, ClickHouse's message and a non-zero exit for bad
SQL, and a table renderer that takes any result shape (issue 12, "CLI")."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from runstream import cli
from runstream.settings import Settings
from runstream.sinks.clickhouse import connect
from runstream.sinks.query import MAX_CELL, render
from tests.conftest import Services, isolated_settings


@pytest.fixture(scope="module")
def query_settings(services: Services) -> Settings:
    settings = isolated_settings(services, prefix="qc")
    admin = connect(settings)
    admin.command("CREATE TABLE guard (x UInt64, s String) ENGINE = MergeTree ORDER BY x")
    admin.command("INSERT INTO guard SELECT number, toString(number) FROM numbers(50)")
    return settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("RUNSTREAM_")]:
        monkeypatch.delenv(key)


def run(settings: Settings, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(
        [
            "query",
            "--clickhouse",
            settings.clickhouse_url,
            "--database",
            settings.clickhouse_database,
            *args,
        ]
    )
    out, err = capsys.readouterr()
    return code, out, err


def guard_count(settings: Settings) -> int:
    return int(connect(settings).query("SELECT count() FROM guard").result_rows[0][0])


def test_sql_from_an_argument(query_settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        query_settings, "SELECT x, s FROM guard WHERE x < 3 ORDER BY x", "--format", "table",
        capsys=capsys,
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert out.splitlines() == ["x | s", "--+--", "0 | 0", "1 | 1", "2 | 2", "(3 rows)"]


def test_sql_from_a_file_and_from_stdin(
    query_settings: Settings,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "q.sql"
    path.write_text("-- how many\nSELECT count() AS n\nFROM guard;\n", encoding="utf-8")
    assert run(query_settings, "-f", str(path), "--format", "csv", capsys=capsys) == (
        0,
        "n\n50\n",
        "",
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO("SELECT max(x) AS top FROM guard\n"))
    assert run(query_settings, "-", "--format", "json", capsys=capsys)[:2] == (
        0,
        '[\n  {"top":49}\n]\n',
    )
    code, _, err = run(query_settings, "SELECT 1", "-f", str(path), capsys=capsys)
    assert code == 2 and "not both" in err
    code, _, err = run(query_settings, capsys=capsys)
    assert code == 2 and "-f FILE" in err
    code, _, err = run(query_settings, "-f", str(tmp_path / "missing.sql"), capsys=capsys)
    assert code == 2 and "cannot read" in err


def test_params_are_bound_by_clickhouse(
    query_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        query_settings,
        "SELECT count() AS n, {label:String} AS label FROM guard WHERE x >= {low:UInt64}",
        "--param",
        "low=45",
        "--param",
        "label=it's; DROP TABLE guard",
        "--format",
        "json",
        capsys=capsys,
    )
    assert code == 0
    assert json.loads(out) == [{"n": 5, "label": "it's; DROP TABLE guard"}]
    code, _, err = run(query_settings, "SELECT {low:UInt64}", "--param", "low", capsys=capsys)
    assert code == 2 and "name=value" in err
    code, _, err = run(query_settings, "SELECT {low:UInt64}", capsys=capsys)
    assert code == 2 and "--param low=" in err
    code, _, err = run(query_settings, "SELECT {low:UInt64}", "--param", "low=abc", capsys=capsys)
    assert code == 1 and "ClickHouse:" in err  # ClickHouse says the value is not a UInt64
    assert guard_count(query_settings) == 50


def test_limit(query_settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        query_settings, "SELECT x FROM guard ORDER BY x", "--limit", "2", "--format", "table",
        capsys=capsys,
    )  # fmt: skip
    assert code == 0
    assert out.splitlines() == [
        "x",
        "-",
        "0",
        "1",
        "(2 rows)",
        "(only the first 2: more rows exist; raise --limit)",
    ]
    code, out, _ = run(
        query_settings, "SELECT number FROM numbers(100000000000)", "--format", "csv",
        "--limit", "3", capsys=capsys,
    )  # fmt: skip
    assert (code, out) == (0, "number\n0\n1\n2\n")
    code, out, _ = run(
        query_settings, "SELECT x FROM guard", "--format", "json", "--limit", "0", capsys=capsys
    )
    assert (code, out) == (0, "[]\n")
    with pytest.raises(SystemExit):
        cli.main(["query", "SELECT 1", "--limit", "-1"])
    capsys.readouterr()


@pytest.mark.parametrize(
    "sql",
    [
        "DROP TABLE guard",
        "INSERT INTO guard VALUES (1, 'x')",
        "ALTER TABLE guard DELETE WHERE 1",
        "SYSTEM SHUTDOWN",
        "CREATE TABLE evil (x UInt8) ENGINE = Memory",
        "SELECT 1; DROP TABLE guard",
        "SELECT 1 /* hidden */ ; DROP TABLE guard",
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        "SELECT count() FROM numbers(10) SETTINGS max_execution_time = 0",
    ],
)
def test_writes_are_refused(
    query_settings: Settings, capsys: pytest.CaptureFixture[str], sql: str
) -> None:
    code, out, err = run(query_settings, sql, capsys=capsys)
    assert (code, out) == (2, "")
    assert err.startswith("runstream query: refused: ")
    assert guard_count(query_settings) == 50
    assert connect(query_settings).query("EXISTS TABLE guard").result_rows == [(1,)]


def test_limits_apply(
    query_settings: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNSTREAM_READ_MAX_EXECUTION_TIME", "1")
    code, out, err = run(
        query_settings,
        "SELECT count() FROM numbers(1000000000000) WHERE cityHash64(number) = 0",
        capsys=capsys,
    )
    assert out == ""
    assert code == 1 and "Timeout exceeded" in err and "RUNSTREAM_READ_MAX_EXECUTION_TIME" in err
    monkeypatch.setenv("RUNSTREAM_READ_MAX_RESULT_ROWS", "10")
    code, _, err = run(query_settings, "SELECT x FROM guard", "--format", "csv", capsys=capsys)
    assert code == 1 and "RUNSTREAM_READ_MAX_RESULT_ROWS" in err


def test_bad_sql_shows_clickhouses_message(
    query_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(query_settings, "SELECT * FROM no_such_table", capsys=capsys)
    assert (code, out) == (1, "")
    assert err.startswith("runstream: error: ClickHouse: ") and "no_such_table" in err
    code, _, err = run(query_settings, "SELECT (1", capsys=capsys)
    assert code == 1 and "Syntax error" in err


def test_aggregate_states_get_a_hint(
    query_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """A column of partial aggregates (as runs and run_summaries hold) points to the *_current
    views instead of only the client's "deserialization not supported" (issue 13, finding 3)."""
    sql = "SELECT argMaxState(toString(number), number) AS s FROM numbers(3)"
    code, out, err = run(query_settings, sql, capsys=capsys)
    assert out == ""
    assert code == 1 and "runs_current / run_summaries_current" in err, err


SHAPES = """
SELECT
    CAST(NULL AS Nullable(String)) AS null_text,
    [[1, 2], [], [3]] AS nested,
    map('a', [1.5, nan], 'b', []) AS a_map,
    (1, 'two', [NULL, 3]) AS a_tuple,
    repeat('wide ', 100) AS wide,
    repeat('中', 50) AS cjk,
    unhex('00ff80fe') AS binary,
    concat('line1', char(10), 'line2', char(27), '[31mred', char(9)) AS control,
    toDecimal64(1.25, 4) AS dec,
    toUUID('00000000-0000-0000-0000-000000000001') AS uuid,
    toIPv4('10.0.0.1') AS ip,
    toDateTime64('2026-01-02 03:04:05.678', 3, 'UTC') AS at,
    toDate('2026-01-02') AS day,
    CAST('b', 'Enum8(\\'a\\' = 1, \\'b\\' = 2)') AS enum,
    toLowCardinality('lc') AS lc,
    inf AS infinite,
    '' AS empty,
    true AS flag
"""


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_every_result_shape_renders(
    query_settings: Settings, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    code, out, err = run(query_settings, SHAPES, "--format", fmt, capsys=capsys)
    assert (code, err) == (0, "")
    if fmt == "table":
        assert "\x1b" not in out  # a value cannot drive the terminal
        lines = out.splitlines()
        assert len(lines) == 4 and lines[-1] == "(1 row)"
        names = [c.strip() for c in lines[0].split(" | ")]
        row = dict(zip(names, [c.strip() for c in lines[2].split(" | ")], strict=True))
        assert row["null_text"] == "NULL"
        assert row["nested"] == "[[1,2],[],[3]]"
        assert row["a_map"] == '{"a":[1.5,"NaN"],"b":[]}'
        assert row["a_tuple"] == '[1,"two",[null,3]]'
        assert row["wide"].endswith("…") and len(row["wide"]) == MAX_CELL
        assert row["cjk"] == "中" * 29 + "…"  # 29 wide characters and the ellipsis: 59 columns
        assert row["control"] == "line1\\nline2\\x1b[31mred\\t"
        assert (row["dec"], row["ip"], row["day"], row["enum"], row["lc"]) == (
            "1.2500", "10.0.0.1", "2026-01-02", "b", "lc",
        )  # fmt: skip
        assert (row["infinite"], row["flag"], row["empty"]) == ("inf", "true", "")
    elif fmt == "json":
        (record,) = json.loads(out)
        assert record["null_text"] is None and record["nested"] == [[1, 2], [], [3]]
        assert record["a_map"] == {"a": [1.5, "NaN"], "b": []}
        assert record["control"] == "line1\nline2\x1b[31mred\t"  # JSON escapes it: \u001b
        assert record["uuid"] == "00000000-0000-0000-0000-000000000001"
        assert record["infinite"] == "Infinity" and record["flag"] is True
    else:
        header, *body = out.splitlines()
        assert header.startswith("null_text,nested,a_map,")
        assert body[-1].endswith(",inf,,true")


def test_no_rows_and_metadata_statements(
    query_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        query_settings, "SELECT x, s FROM guard WHERE x > 1000", "--format", "table", capsys=capsys
    )
    assert (code, out) == (0, "x | s\n--+--\n(0 rows)\n")
    code, out, _ = run(
        query_settings, "SELECT x FROM guard WHERE 0", "--format", "json", capsys=capsys
    )
    assert (code, out) == (0, "[]\n")
    code, out, _ = run(
        query_settings, "SELECT x FROM guard WHERE 0", "--format", "csv", capsys=capsys
    )
    assert (code, out) == (0, "x\n")
    code, out, _ = run(query_settings, "DESCRIBE TABLE guard", "--format", "table", capsys=capsys)
    assert code == 0 and out.splitlines()[2].startswith("x    | UInt64")
    code, out, _ = run(query_settings, "SHOW TABLES", capsys=capsys)
    assert code == 0 and "guard" in out


def test_render_without_columns() -> None:
    assert render([], [], "table") == "(0 rows)\n"
    assert render([], [], "json") == "[]\n"
    assert render([], [], "csv") == "\n"


_VALUES: Any = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@hsettings(max_examples=150, deadline=None)
@given(
    columns=st.lists(st.text(max_size=10), max_size=5).flatmap(
        lambda cols: st.tuples(
            st.just(cols),
            st.lists(st.lists(_VALUES, min_size=len(cols), max_size=len(cols)), max_size=5),
        )
    )
)
def test_the_renderers_take_any_values(columns: tuple[list[str], list[list[Any]]]) -> None:
    names, rows = columns
    table = render(names, rows, "table")
    lines = table.splitlines()
    assert lines[-1] == f"({len(rows)} row{'s' if len(rows) != 1 else ''})"
    assert len(lines) == (len(rows) + 3 if names else 1)  # one line per row, whatever the values
    assert all(ch.isprintable() or ch == "\n" for ch in table)
    assert len(json.loads(render(names, rows, "json"))) == len(rows) or not names
    render(names, rows, "csv")


def test_piped_output_is_csv_and_a_terminal_gets_a_coloured_table(
    query_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        query_settings, "SELECT x, s FROM guard WHERE x < 2 ORDER BY x", capsys=capsys
    )
    assert (code, out) == (0, "x,s\n0,0\n1,1\n")  # not a terminal: csv without --format
    from runstream.read.cli.output import table_text

    text = table_text(
        ["n", "text"], [[1, "a\x1b[31mred\nx"], [None, "中文"]], terminal=True, width=80
    )
    assert "\x1b[" in text  # rich's colours
    assert "\x1b[31mred" not in text and "a\\x1b[31mred\\nx" in text  # the value's are escaped
    assert text.endswith("(2 rows)\n") and "中文" in text


def test_a_format_clause_is_refused_before_sending(
    query_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    for sql in ("SELECT 1 FORMAT JSON", "select 1 format CSV;", "SELECT 1 FORMAT JSON -- x"):
        code, out, err = run(query_settings, sql, capsys=capsys)
        assert (code, out) == (2, "")
        assert "FORMAT clause" in err and "use --format table|csv|json" in err
    # a column or a string named format is not a clause
    code, out, _ = run(
        query_settings, "SELECT 'FORMAT JSON' AS format", "--format", "csv", capsys=capsys
    )
    assert (code, out) == (0, "format\nFORMAT JSON\n")


def test_params_are_raw_text_the_server_parses_as_their_type(
    query_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        query_settings,
        "SELECT {a:Array(String)} AS a, {m:Map(String, UInt8)} AS m, "
        "toString({d:DateTime('UTC')}) AS d, {n:Nullable(String)} AS n, "
        "{nn:Nullable(UInt8)} AS nn, {s:String} AS s",
        "--param", "a=['a','b''c']",
        "--param", "m={'k':1,'j':2}",
        "--param", "d=2026-01-02 03:04:05",
        "--param", "n=\\N",
        "--param", "nn=7",
        "--param", "s=it's [x]",
        "--format", "json",
        capsys=capsys,
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert json.loads(out) == [
        {
            "a": ["a", "b'c"], "m": {"k": 1, "j": 2}, "d": "2026-01-02 03:04:05", "n": None,
            "nn": 7, "s": "it's [x]",
        }
    ]  # fmt: skip
    code, _, err = run(
        query_settings,
        "SELECT count() FROM guard WHERE s IN {p:Array(String)}",
        "--param", "p=['1','2','3']", "--format", "csv",
        capsys=capsys,
    )  # fmt: skip
    assert code == 0
