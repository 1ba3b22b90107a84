"""The ``where`` filter language (runstream.read.filters): parsing, errors, the SQL it emits
(every literal and key a parameter), and what it selects in a real ClickHouse."""

from __future__ import annotations

import math
import re
from datetime import timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from runstream.errors import FilterError
from runstream.read.filters import MAX_DEPTH, compile_filter, compile_order
from tests.helpers import write_runs


def params_of(expression: str) -> dict[str, Any]:
    return compile_filter(expression)[1]


def error_of(expression: str) -> FilterError:
    with pytest.raises(FilterError) as info:
        compile_filter(expression)
    return info.value


# Each construct.


def test_a_text_column_compares_with_a_bound_string() -> None:
    sql, params = compile_filter('status == "finished"')
    assert sql == "(`status` = {f0:String})"
    assert params == {"f0": "finished"}


@pytest.mark.parametrize(
    ("op", "sql_op"),
    [("==", "="), ("!=", "!="), ("<", "<"), ("<=", "<="), (">", ">"), (">=", ">=")],
)
def test_every_comparison_operator(op: str, sql_op: str) -> None:
    sql, params = compile_filter(f"job_type {op} 'train'")
    assert sql == f"(`job_type` {sql_op} {{f0:String}})"
    assert params == {"f0": "train"}


def test_group_is_quoted_as_the_keyword_it_is_in_sql() -> None:
    assert compile_filter('group == "a"')[0] == "(`group` = {f0:String})"


def test_a_literal_on_the_left_flips_the_operator() -> None:
    assert compile_filter("1e-3 < config.lr") == compile_filter("config.lr > 1e-3")


def test_numbers_in_every_spelling() -> None:
    for text, value in [("1", 1.0), ("-2.5", -2.5), ("1e-3", 0.001), (".5", 0.5), ("3E+2", 300.0)]:
        assert params_of(f"config.x > {text}")["f1"] == value
    assert params_of("config.x>-1")["f1"] == -1.0


def test_string_escapes() -> None:
    assert params_of(r'name == "a\"b\\c\n\u00e9"')["f0"] == 'a"b\\c\né'
    assert params_of(r"name == 'it\'s'")["f0"] == "it's"
    assert params_of("""name == 'say "hi"'""")["f0"] == 'say "hi"'
    # Other backslashes stay, so that regular expressions read as written.
    assert params_of(r'name =~ "^run-\d+\.$"')["f0"] == r"^run-\d+\.$"


def test_config_keys_dotted_nested_and_bracketed_are_parameters() -> None:
    sql, params = compile_filter("config.optimizer.lr > 0.1")
    # The dotted path is tried as one top-level key first, then as nested keys.
    assert params == {"f0": "optimizer", "f1": "lr", "f2": "optimizer.lr", "f3": 0.1}
    assert "JSONHas(config, {f2:String})" in sql
    assert "JSONExtractRaw(config, {f0:String}, {f1:String})" in sql
    sql, params = compile_filter('config["odd key"]["x.y"] == "a"')
    assert params == {"f0": "odd key", "f1": "x.y", "f2": "a"}
    assert "JSONHas" not in sql  # brackets name keys exactly
    assert params_of('summary["val/loss"] < 0.2') == {"f0": "val/loss", "f1": 0.2}
    assert params_of("summary.val/loss < 0.2") == {"f0": "val/loss", "f1": 0.2}


def test_config_against_a_number_a_string_a_bool_and_null() -> None:
    assert "toFloat64OrNull" in compile_filter("config.lr < 1")[0]
    assert "JSONExtractString" in compile_filter('config.opt == "adam"')[0]
    sql, params = compile_filter("config.amp == true")
    assert sql == "(JSONExtractRaw(config, {f0:String}) = {f1:String})"
    assert params == {"f0": "amp", "f1": "true"}
    sql, params = compile_filter("config.x == null")
    assert params["f1"] == "null" and "= ''" in sql  # a missing key is null too


def test_and_or_not_and_parentheses_nest_as_written() -> None:
    sql, _ = compile_filter('not (status == "a" or status == "b") and name == "c"')
    assert sql == (
        "((NOT ((`status` = {f0:String}) OR (`status` = {f1:String}))) AND (`name` = {f2:String}))"
    )
    sql, _ = compile_filter('status == "a" or status == "b" and name == "c"')
    assert (
        sql == "((`status` = {f0:String}) OR ((`status` = {f1:String}) AND (`name` = {f2:String})))"
    )
    assert compile_filter('STATUS == "a"'.lower().replace("status", "status"))[0]
    assert compile_filter('status == "a" AND NOT name == "b"')[0] == (
        "((`status` = {f0:String}) AND (NOT (`name` = {f1:String})))"
    )


def test_tags_membership_and_regex() -> None:
    assert compile_filter('"baseline" in tags') == ("has(tags, {f0:String})", {"f0": "baseline"})
    assert compile_filter("'x' not in tags")[0] == "(NOT has(tags, {f0:String}))"
    assert compile_filter('tags =~ "^gpu"')[0] == "arrayExists(t -> match(t, {f0:String}), tags)"


def test_in_a_list_and_not_in() -> None:
    sql, params = compile_filter('name in ["a", "b",]')
    assert sql == "((`name` = {f0:String}) OR (`name` = {f1:String}))"
    assert params == {"f0": "a", "f1": "b"}
    assert compile_filter('name not in ["a"]')[0] == "(NOT (`name` = {f0:String}))"
    assert compile_filter("name in []") == ("0", {})
    sql, params = compile_filter("config.bs in [16, 32]")
    assert params == {"f0": "bs", "f1": 16.0, "f2": 32.0}  # the key is bound once
    assert sql.count("{f0:String}") == 2


def test_regex_match_and_no_match() -> None:
    assert compile_filter('name =~ "^bert-"') == ("match(`name`, {f0:String})", {"f0": "^bert-"})
    assert compile_filter('name !~ "x"')[0] == "(NOT match(`name`, {f0:String}))"
    assert "match(" in compile_filter('config.opt =~ "ad"')[0]


def test_times_compare_with_iso_strings_in_utc() -> None:
    sql, params = compile_filter('created_at >= "2026-01-31T12:00:00+02:00"')
    assert sql == "ifNull(`started_at` >= toDateTime64({f0:String}, 6, 'UTC'), 0)"
    assert params == {"f0": "2026-01-31 10:00:00.000000"}
    assert params_of('finished_at < "2026-02-01"') == {"f0": "2026-02-01 00:00:00.000000"}
    assert params_of('started_at > "0001-02-03T04:05:06.5Z"') == {
        "f0": "0001-02-03 04:05:06.500000"
    }
    assert "out of range" in str(error_of('started_at > "0001-01-01T00:00:00+01:00"'))
    assert compile_filter("finished_at == null") == ("(`finished_at` IS NULL)", {})
    assert compile_filter("finished_at != null") == ("(`finished_at` IS NOT NULL)", {})


def test_the_parameter_prefix_is_the_callers_choice() -> None:
    assert compile_filter('name == "a"', prefix="w") == ("(`name` = {w0:String})", {"w0": "a"})
    with pytest.raises(ValueError):
        compile_filter('name == "a"', prefix="x}")


def test_the_module_is_pure_it_needs_no_clickhouse_driver() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['clickhouse_connect'] = None\n"
        "from runstream.read.filters import compile_filter\n"
        "print(compile_filter('status == \"x\"')[1])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "{'f0': 'x'}"


# Errors point at the offending token.


@pytest.mark.parametrize(
    ("expression", "reason", "caret"),
    [
        (
            "config.lr > ",
            "expected a value (a number, a quoted string, true, false or null) after '>'",
            12,
        ),
        ("status = 'x'", "'=' is not an operator: compare with '=='", 7),
        ("foo == 1", "unknown name 'foo'", 0),
        ("status == 1", "status holds text: compare it with a quoted string", 10),
        ('status == "a" status', "expected 'and', 'or' or the end of the filter", 14),
        ('(status == "a"', "expected ')' or 'and' or 'or'", 14),
        ("name == 'open", "string not closed", 8),
        (
            "config.lr",
            "expected an operator (==, !=, <, <=, >, >=, =~, !~, in) after 'config.lr'",
            9,
        ),
        ("config > 1", "expected a key, as in config.lr", 7),
        ("config[1] > 1", "expected a quoted key", 7),
        ('started_at > "yesterday"', "expected an ISO 8601 time", 13),
        ("config.amp < true", "true compares with == and != only", 13),
        ("name =~ 5", "expected a quoted regular expression", 8),
        ("", "empty filter", 0),
        ("status == 'a' && name == 'b'", "'&' is not an operator: write 'and'", 14),
        ("1 in tags", "tags are strings", 0),
        ("config.x > 1e999", "number out of range", 11),
        ("status == 'a' and", "expected a condition", 17),
        ('name =~ "(x"', "not a regular expression: missing ), unterminated subpattern", 8),
    ],
)
def test_errors_say_what_was_expected_with_a_caret(
    expression: str, reason: str, caret: int
) -> None:
    error = error_of(expression)
    assert str(error).startswith(reason), str(error)
    assert error.position == caret
    assert error.expression == expression
    lines = str(error).split("\n")
    assert lines[1] == "  " + expression
    assert lines[2] == "  " + " " * caret + "^"
    assert isinstance(error, ValueError)


def test_the_caret_stays_under_its_token_after_wide_characters_and_tabs() -> None:
    lines = str(error_of('name == "日本"\tand = 1')).split("\n")
    assert lines[1] == '  name == "日本" and = 1'
    assert lines[2] == "  " + " " * (17 + 2) + "^"  # 日 and 本 take two columns each


def test_the_example_of_the_issue_reads_as_expected() -> None:
    assert str(error_of("config.lr > ")).startswith("expected a value")
    assert "after '>'" in str(error_of("config.lr > "))


def test_a_long_expression_is_shown_around_the_offending_token() -> None:
    expression = " and ".join(["status == 'a'"] * 40) + " and status ="
    error = error_of(expression)
    line, caret = str(error).split("\n")[1:]
    assert line.startswith("  ...")
    assert len(line) < 90
    assert line[caret.index("^")] == "="


def test_deep_nesting_and_huge_input_are_refused_not_a_recursion_error() -> None:
    assert "nested deeper" in str(error_of("(" * 5_000 + "status == 'a'" + ")" * 5_000))
    assert "nested deeper" in str(error_of("not " * 4_000 + "status == 'a'"))
    ok = "(" * (MAX_DEPTH - 1) + "status == 'a'" + ")" * (MAX_DEPTH - 1)
    assert compile_filter(ok)[1] == {"f0": "a"}
    assert "longer than" in str(error_of("status == '" + "x" * 30_000 + "'"))


# Generated expressions.

# A field, the kinds of literal it takes, the operators it takes.
_FIELDS: list[tuple[str, str]] = [
    ("status", "string"),
    ("name", "string"),
    ("group", "string"),
    ("job_type", "string"),
    ("started_at", "time"),
    ("finished_at", "time"),
    ("config.KEY", "any"),
    ("config.KEY.KEY", "any"),
    ("summary[KEY]", "any"),
    ("config[KEY][KEY]", "any"),
]
# Marked text: the marker cannot occur in SQL we write, so finding it there means input leaked.
_MARK = "§"
_text = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=0, max_size=12
).map(lambda s: _MARK + s)
# Keys after a dot start with a marker too (letters, as a key after a dot must be).
_SEGMENT_MARK = "Zq"
_segment = st.from_regex(r"[A-Za-z0-9_/\-]{0,8}", fullmatch=True).map(lambda s: _SEGMENT_MARK + s)
_numbers = st.floats(allow_nan=False, allow_infinity=False, width=64)
_times = st.datetimes().map(lambda d: d.isoformat())


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def number_text(value: float) -> str:
    return repr(value)


@st.composite
def comparisons(draw: st.DrawFn) -> tuple[str, list[str]]:
    """One comparison, as the expression and the marked strings it holds."""
    field, kind = draw(st.sampled_from(_FIELDS))
    marks: list[str] = []
    while "KEY" in field:
        if "[KEY]" in field:
            key = draw(_text)
            marks.append(key)
            field = field.replace("[KEY]", f"[{quote(key)}]", 1)
        else:
            field = field.replace("KEY", draw(_segment), 1)
    shape = draw(st.sampled_from(["compare", "regex", "in", "tags"]))
    if shape == "tags":
        value = draw(_text)
        return f"{quote(value)} {draw(st.sampled_from(['in', 'not in']))} tags", [value]
    if shape == "regex" and kind != "time":
        value = re.escape(draw(_text))
        marks.append(value)
        return f"{field} {draw(st.sampled_from(['=~', '!~']))} {quote(value)}", marks
    if kind == "time":
        literal = quote(draw(_times))
    elif kind == "string":
        value = draw(_text)
        marks.append(value)
        literal = quote(value)
    else:
        choice = draw(st.sampled_from(["number", "string", "bool"]))
        if choice == "number":
            literal = number_text(draw(_numbers))
        elif choice == "string":
            value = draw(_text)
            marks.append(value)
            literal = quote(value)
        else:
            literal = draw(st.sampled_from(["true", "false", "null"]))
    if shape == "in":
        return f"{field} in [{literal}, {literal}]", marks
    op = draw(
        st.sampled_from(
            ["==", "!="]
            if literal in ("true", "false", "null")
            else ["==", "!=", "<", "<=", ">", ">="]
        )
    )
    return f"{field} {op} {literal}", marks


def _combine(
    children: st.SearchStrategy[tuple[str, list[str]]],
) -> st.SearchStrategy[tuple[str, list[str]]]:
    def join(
        parts: tuple[tuple[str, list[str]], tuple[str, list[str]]], word: str
    ) -> tuple[str, list[str]]:
        return f"({parts[0][0]}) {word} ({parts[1][0]})", parts[0][1] + parts[1][1]

    return st.one_of(
        st.tuples(children, children).map(lambda p: join(p, "and")),
        st.tuples(children, children).map(lambda p: join(p, "or")),
        children.map(lambda c: (f"not {c[0]}", c[1])),
        children.map(lambda c: (f"({c[0]})", c[1])),
    )


expressions = st.recursive(comparisons(), _combine, max_leaves=8)


@hsettings(max_examples=300, deadline=None)
@given(expressions)
def test_generated_expressions_parse_and_no_input_text_reaches_the_sql(
    case: tuple[str, list[str]],
) -> None:
    expression, marks = case
    sql, params = compile_filter(expression)
    assert _MARK not in sql
    assert _SEGMENT_MARK not in sql
    values = {v for v in params.values() if isinstance(v, str)}
    for mark in marks:
        assert mark in values
    # Every parameter the SQL names is bound, and every bound one is used.
    used = set(re.findall(r"\{(f[0-9]+):", sql))
    assert used == set(params)


@hsettings(max_examples=100, deadline=None)
@given(expressions, st.randoms(use_true_random=False))
def test_the_sql_depends_only_on_the_shape_of_the_expression(
    case: tuple[str, list[str]], rnd: Any
) -> None:
    """Replacing every marked text with another one of the same length changes the parameters,
    never the SQL."""
    expression, marks = case
    other = expression
    for mark in set(marks):
        if mark == _MARK:
            continue
        other = other.replace(quote(mark), quote(_MARK + "x" * (len(mark) - 1)))
    assert compile_filter(other)[0] == compile_filter(expression)[0]


_alphabet = st.sampled_from(
    [
        *"abcfgilnorstu_.[](),<>=!~\"'\\ -019eE§\n",
        "and",
        "or",
        "not",
        "in",
        "tags",
        "config",
        "summary",
        "status",
        "null",
        "true",
        "finished_at",
        '"x"',
        "1e5",
    ]
)


@hsettings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.text(max_size=60),
        st.lists(_alphabet, max_size=25).map(" ".join),
        st.lists(_alphabet, max_size=25).map("".join),
    )
)
def test_garbage_either_parses_or_raises_filter_error(expression: str) -> None:
    try:
        sql, params = compile_filter(expression)
    except FilterError as error:
        assert 0 <= error.position <= len(expression)
        assert "^" in str(error)
        return
    assert set(re.findall(r"\{(f[0-9]+):", sql)) == set(params)


# Against ClickHouse: what a filter selects from runs_current.

HOSTILE = "'; DROP TABLE events --"
RUNS: dict[str, dict[str, Any]] = {
    "r-alpha": {
        "name": "alpha",
        "config": {
            "lr": 0.01,
            "batch": 32,
            "optimizer": {"name": "adam", "lr": 0.001},
            "odd key": "x y",
            "amp": True,
        },
        "tags": ["baseline", "gpu-a100"],
        "group": "g1",
        "job_type": "train",
        "log": {"val/loss": [0.5, 0.1], "acc": [0.9]},
        "exit_code": 0,
    },
    "r-beta": {
        "name": "beta",
        "config": {"lr": 0.0001, "optimizer": {"name": "sgd"}, "optimizer.lr": 0.5, "amp": False},
        "tags": ["sweep"],
        "group": "g2",
        "job_type": "eval",
        "log": {"val/loss": [0.7, 0.4]},
        "exit_code": 1,
    },
    "r-gamma": {
        "name": "gamma 'quoted' \"double\" back\\slash ünïcødé",
        "config": {"lr": "0.01", "note": 'it\'s "odd" \\ ünï'},
        "tags": ["baseline", "ünï"],
        "group": "g1",
        "job_type": "train",
        "log": {},
        "exit_code": 0,
    },
    "r-delta": {
        "name": HOSTILE,
        "config": {"lr": None, HOSTILE: 1},
        "tags": [],
        "group": "",
        "job_type": "",
        "log": {"val/loss": [float("nan")]},
        "exit_code": 0,
    },
}

# (filter, the runs it selects)
CASES: list[tuple[str, set[str]]] = [
    ('status == "finished"', {"r-alpha", "r-gamma", "r-delta"}),
    ('status == "failed" or name == "alpha"', {"r-alpha", "r-beta"}),
    ('not (status == "failed" or name == "alpha")', {"r-gamma", "r-delta"}),
    ('"baseline" in tags and not group == "g2"', {"r-alpha", "r-gamma"}),
    ('"baseline" not in tags', {"r-beta", "r-delta"}),
    ('"ünï" in tags', {"r-gamma"}),
    ('tags =~ "^gpu-"', {"r-alpha"}),
    ('name =~ "^(alpha|beta)$"', {"r-alpha", "r-beta"}),
    ('name !~ "a"', {"r-delta"}),  # its name has no lower-case a
    ('name in ["beta", "alpha", "nope"]', {"r-alpha", "r-beta"}),
    ("config.lr > 1e-3", {"r-alpha"}),  # r-gamma's lr is a string, r-delta's null
    ("config.lr <= 0.01", {"r-alpha", "r-beta"}),
    ('config.lr == "0.01"', {"r-gamma"}),
    ("config.lr == null", {"r-delta"}),  # null, or no key at all
    ("config.missing == null", set(RUNS)),
    ("config.lr != null", {"r-alpha", "r-beta", "r-gamma"}),
    ("not config.lr > 1e-3", {"r-beta", "r-gamma", "r-delta"}),
    ("config.batch == 32 and config.amp == true", {"r-alpha"}),
    ("config.amp == false", {"r-beta"}),
    ("config.amp != true", {"r-beta"}),  # a missing key is not != either
    ('config.optimizer.name == "adam"', {"r-alpha"}),
    ('config["optimizer"]["name"] in ["adam", "sgd"]', {"r-alpha", "r-beta"}),
    ("config.optimizer.lr < 0.01", {"r-alpha"}),  # r-beta's top-level "optimizer.lr" is 0.5
    ("config.optimizer.lr == 0.5", {"r-beta"}),
    ('config["optimizer.lr"] == 0.5', {"r-beta"}),
    ('config["odd key"] == "x y"', {"r-alpha"}),
    ('config.note == "it\'s \\"odd\\" \\\\ ünï"', {"r-gamma"}),
    ('config.note =~ "^it.s"', {"r-gamma"}),
    ('summary["val/loss"] < 0.2', {"r-alpha"}),
    ("summary.val/loss >= 0.2", {"r-beta"}),  # NaN (r-delta) is neither
    ('summary["val/loss"] < 0.2 or summary.acc > 0.5', {"r-alpha"}),
    ('summary["val/loss"] == "NaN"', {"r-delta"}),  # NaN is also the string "NaN"
    ("(summary.acc > 0.5 or config.amp == false) and group == 'g2'", {"r-beta"}),
    ('started_at > "2000-01-01" and finished_at < "2999-01-01T00:00:00Z"', set(RUNS)),
    ('created_at < "2000-01-01"', set()),
    ("finished_at == null", set()),
    # Hostile text is a value like any other: it selects the run that has it, or nothing.
    (f'name == "{HOSTILE}"', {"r-delta"}),
    (f'config["{HOSTILE}"] == 1', {"r-delta"}),
    ('name == "\'); DROP TABLE events; --"', set()),
    ('name == "x\' OR 1=1 --"', set()),
    (r"""name =~ ".*'\) OR \(1=1" """, set()),
    ('name == "gamma \'quoted\' \\"double\\" back\\\\slash ünïcødé"', {"r-gamma"}),
    ("\"}' , tags) OR has(tags, '\" in tags", set()),
    ('config["lr\'), 1) OR (1"] > 0', set()),
    ('name == "\\u0000\\n\\t{f0:String}"', set()),
]

# Hostile text outside a string is no filter at all.
REFUSED = [
    HOSTILE,
    "name == '\\'' or 1 == 1",
    "status == 'a'; DROP TABLE events",
    "status == 'a' -- comment",
    "file('/etc/passwd') == 'x'",
    "config.lr > 1) OR (1 = 1",
    "status == 'a' /* */",
    'name =~ ".*\') OR (1=1"',
]


@pytest.mark.integration
def test_filters_select_exactly_the_expected_runs_in_clickhouse(settings: Any) -> None:
    from runstream.sinks.clickhouse import connect

    write_runs(settings, "filters", RUNS)
    client = connect(settings)
    tables = client.query("SELECT name FROM system.tables WHERE database = currentDatabase()")
    before = (
        sorted(r[0] for r in tables.result_rows),
        client.command("SELECT count() FROM events"),
    )
    assert client.command("SELECT count() FROM runs_current") == len(RUNS)

    wrong = []
    for expression, expected in CASES:
        sql, params = compile_filter(expression)
        result = client.query(
            f"SELECT run_id FROM runs_current WHERE project = {{project:String}} AND {sql}",
            parameters={**params, "project": "filters"},
        )
        got = {r[0] for r in result.result_rows}
        if got != expected:
            wrong.append((expression, sorted(got), sorted(expected)))
    assert not wrong, "\n".join(map(str, wrong))
    # Times to the microsecond, in any offset.
    started = client.query(
        "SELECT started_at, finished_at FROM runs_current WHERE run_id = 'r-beta'"
    ).result_rows[0]
    at = started[0].replace(tzinfo=timezone.utc)
    for expression, expected_beta in [
        (f'started_at == "{at.isoformat()}"', True),
        (f'created_at == "{at.astimezone(timezone(timedelta(hours=-5))).isoformat()}"', True),
        (f'started_at < "{at.isoformat()}"', False),
        (f'started_at <= "{at.isoformat()}" and finished_at >= "{at.isoformat()}"', True),
        (f'started_at > "{(at - timedelta(microseconds=1)).isoformat()}"', True),
    ]:
        sql, params = compile_filter(expression)
        got = client.query(
            f"SELECT run_id FROM runs_current WHERE {sql}", parameters=params
        ).result_rows
        assert ("r-beta" in {r[0] for r in got}) is expected_beta, expression

    for expression in REFUSED:
        with pytest.raises(FilterError):
            compile_filter(expression)

    # Every shape the grammar allows is SQL ClickHouse runs, with any values bound.
    @hsettings(max_examples=60, deadline=None)
    @given(expressions)
    def runs_in_clickhouse(case: tuple[str, list[str]]) -> None:
        sql, params = compile_filter(case[0])
        client.query(f"SELECT count() FROM runs_current WHERE {sql}", parameters=params)

    runs_in_clickhouse()

    # And they select what a model of the rules in Python says, over the runs written above.
    @hsettings(max_examples=150, deadline=None)
    @given(modelled())
    def agrees_with_the_model(case: tuple[str, Any]) -> None:
        expression, predicate = case
        sql, params = compile_filter(expression)
        result = client.query(
            f"SELECT run_id FROM runs_current WHERE {sql}", parameters=params
        ).result_rows
        expected = {run_id for run_id in RUNS if predicate(run_id)}
        assert {r[0] for r in result} == expected, expression

    agrees_with_the_model()

    tables = client.query("SELECT name FROM system.tables WHERE database = currentDatabase()")
    after = (sorted(r[0] for r in tables.result_rows), client.command("SELECT count() FROM events"))
    assert after == before


# A model of the comparison rules (docs/read.md, "How config and summary values compare"), to
# check generated filters against: each generated filter comes with a Python predicate on a run.

_MISSING = object()


def _value(run_id: str, field: str) -> Any:
    spec = RUNS[run_id]
    if field.startswith("summary."):
        points = spec["log"].get(field.removeprefix("summary."))
        return points[-1] if points else _MISSING  # the summary kind is last
    if field.startswith("config."):
        config, path = spec["config"], field.removeprefix("config.")
        if path in config:  # a dotted path is a top-level key first
            return config[path]
        value: Any = config
        for key in path.split("."):
            if not isinstance(value, dict) or key not in value:
                return _MISSING
            value = value[key]
        return value
    return {"status": "failed" if spec["exit_code"] else "finished"}.get(field, spec.get(field))


_PY_OP = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _holds(value: Any, op: str, literal: Any) -> bool:
    if literal is None or isinstance(literal, bool):  # null, true, false: == and != only
        if literal is None:
            is_null = value is _MISSING or value is None
            return is_null if op == "==" else not is_null
        if op == "==":
            return value is literal
        return value is not _MISSING and value is not literal
    if isinstance(literal, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return bool(_PY_OP[op](float(value), literal))
    if isinstance(value, float) and not math.isfinite(value):  # the schema writes "NaN"...
        value = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return isinstance(value, str) and bool(_PY_OP[op](value, literal))


_NUMBER_POOL = [0.0001, 0.001, 0.01, 0.1, 0.4, 0.5, 0.7, 32.0, -1.0]
_STRING_POOL = ["adam", "sgd", "0.01", "finished", "failed", "alpha", "beta", "g1", "g2", "x y"]


@st.composite
def _modelled_comparison(draw: st.DrawFn) -> tuple[str, Any]:
    kind = draw(st.sampled_from(["text", "json", "tag"]))
    if kind == "tag":
        tag = draw(st.sampled_from(["baseline", "sweep", "gpu-a100", "ünï", "none"]))
        return f"{quote(tag)} in tags", lambda r: tag in RUNS[r]["tags"]
    if kind == "text":
        field = draw(st.sampled_from(["status", "name", "group", "job_type"]))
        literal: Any = draw(st.sampled_from(_STRING_POOL))
        text = quote(literal)
    else:
        field = draw(
            st.sampled_from(
                [
                    "config.lr",
                    "config.batch",
                    "config.amp",
                    "config.optimizer.name",
                    "config.optimizer.lr",
                    "summary.val/loss",
                    "summary.acc",
                ]
            )
        )
        literal = draw(
            st.one_of(
                st.sampled_from(_NUMBER_POOL),
                st.sampled_from(_STRING_POOL),
                st.sampled_from([True, False, None]),
            )
        )
        if literal is None or isinstance(literal, bool):
            text = {None: "null", True: "true", False: "false"}[literal]
        elif isinstance(literal, float):
            text = repr(literal)
        else:
            text = quote(literal)
    ops = ["==", "!="] if literal is None or isinstance(literal, bool) else list(_PY_OP)
    op = draw(st.sampled_from(ops))
    return f"{field} {op} {text}", lambda r: _holds(_value(r, field), op, literal)


def _modelled_combine(
    children: st.SearchStrategy[tuple[str, Any]],
) -> st.SearchStrategy[tuple[str, Any]]:
    def both(p: tuple[tuple[str, Any], tuple[str, Any]]) -> tuple[str, Any]:
        (a, fa), (b, fb) = p
        return f"({a} and {b})", lambda r: fa(r) and fb(r)

    def either(p: tuple[tuple[str, Any], tuple[str, Any]]) -> tuple[str, Any]:
        (a, fa), (b, fb) = p
        return f"({a} or {b})", lambda r: fa(r) or fb(r)

    def negated(c: tuple[str, Any]) -> tuple[str, Any]:
        return f"not {c[0]}", lambda r: not c[1](r)

    return st.one_of(
        st.tuples(children, children).map(both),
        st.tuples(children, children).map(either),
        children.map(negated),
    )


def modelled() -> st.SearchStrategy[tuple[str, Any]]:
    return st.recursive(_modelled_comparison(), _modelled_combine, max_leaves=5)


def test_order_only_names_sort_but_do_not_filter() -> None:
    """last_step and last_event_at (the runs table's Step column) sort; a filter refuses them."""
    assert compile_order("last_step") == (["`last_step`"], {})
    assert compile_order(" last_event_at ") == (["`last_event_at`"], {})
    with pytest.raises(FilterError, match="unknown name 'last_step'"):
        compile_filter("last_step > 3")
    with pytest.raises(FilterError, match="unknown name"):
        compile_order("last_steps")
