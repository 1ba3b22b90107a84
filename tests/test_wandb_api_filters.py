"""wandb's MongoDB-style run filters and order (runstream.wandb.mongo): what they translate to,
the errors for what runstream does not read, and what they select in a real ClickHouse, checked
against a Python model of MongoDB's rules over generated filters."""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from runstream.errors import WandbFilterError
from runstream.read.filters import compile_filter
from runstream.wandb.mongo import to_order_by, to_where
from tests.helpers import write_runs

# Translation.


@pytest.mark.parametrize(
    ("filters", "where"),
    [
        (None, None),
        ({}, None),
        ({"state": "finished"}, 'status == "finished"'),
        ({"config.lr": {"$gt": 0.001}}, "config.lr > 0.001"),
        ({"config.lr.value": {"$lte": 1}}, "config.lr <= 1"),  # wandb's config.<key>.value
        ({"config.opt.value.value": 1}, "config.opt.value == 1"),
        ({"config.value": 1}, "config.value == 1"),
        ({"summary_metrics.val/loss": {"$lt": 0.2}}, "summary.val/loss < 0.2"),
        ({"config.batch size": 3}, 'config["batch size"] == 3'),
        ({"config.a b.c": True}, 'config["a b"]["c"] == true'),
        ({"display_name": {"$regex": "^a"}}, 'name =~ "^a"'),
        ({"displayName": {"$regex": "^a", "$options": "i"}}, 'name =~ "(?i)^a"'),
        ({"name": "abc123"}, 'run_id == "abc123"'),  # wandb's name is the run id
        ({"tags": "x"}, '"x" in tags'),
        ({"tags": {"$in": ["x", "y"]}}, '("x" in tags or "y" in tags)'),
        ({"tags": {"$all": ["x", "y"]}}, '("x" in tags and "y" in tags)'),
        ({"tags": {"$nin": ["x"]}}, 'not "x" in tags'),
        ({"group": None}, 'group == ""'),
        ({"jobType": {"$exists": True}}, 'job_type != ""'),
        ({"config.lr": {"$exists": False}}, "config.lr == null"),
        ({"config.lr": {"$ne": None}}, "not config.lr == null"),
        ({"config.lr": {"$in": []}}, '(not (run_id == "" or run_id != ""))'),
        ({"config.lr": {"$gt": 1, "$lt": 2}}, "(config.lr > 1 and config.lr < 2)"),
        ({"config.lr": {"$not": {"$gt": 1}}}, "not config.lr > 1"),
        ({"createdAt": {"$gt": "2026-01-01T00:00:00"}}, 'created_at > "2026-01-01T00:00:00"'),
        (
            {"created_at": {"$lt": datetime(2026, 1, 1, tzinfo=timezone.utc)}},
            'created_at < "2026-01-01T00:00:00+00:00"',
        ),
        (
            {"$or": [{"state": "failed"}, {"$nor": [{"group": "g"}, {"tags": "t"}]}]},
            '(status == "failed" or not (group == "g" or "t" in tags))',
        ),
        ({"state": "finished", "group": "g"}, '(status == "finished" and group == "g")'),
        ({"display_name": 'a"b\\c\n'}, 'name == "a\\"b\\\\c\n"'),
        ({"config.x": 2**60}, f"config.x == {float(2**60)!r}"),
    ],
)
def test_translation(filters: Any, where: str | None) -> None:
    assert to_where(filters) == where
    if where is not None:
        compile_filter(where)


def test_the_examples_of_wandbs_docs_translate() -> None:
    # wandb/apis/public/api.py, Api.runs.
    assert to_where({"config.experiment_name": "foo"}) == 'config.experiment_name == "foo"'
    assert (
        to_where({"$or": [{"config.experiment_name": "foo"}, {"config.experiment_name": "bar"}]})
        == '(config.experiment_name == "foo" or config.experiment_name == "bar")'
    )
    assert to_where({"config.experiment_name": {"$regex": "b.*"}}) == (
        'config.experiment_name =~ "b.*"'
    )
    assert to_where({"display_name": {"$regex": "^foo.*"}}) == 'name =~ "^foo.*"'
    assert to_order_by("+summary_metrics.loss") == "summary.loss"


@pytest.mark.parametrize(
    ("filters", "named"),
    [
        ({"config.lr": {"$size": 3}}, "'$size'"),
        ({"$where": "this.a > 1"}, "'$where'"),
        ({"$text": {"$search": "x"}}, "'$text'"),
        ({"config.lr": {"$elemMatch": {}}}, "'$elemMatch'"),
        ({"$or": [{"state": "x"}, {"config.a": {"$type": "string"}}]}, "'$type'"),
        ({"host": "gpu-1"}, "'host'"),
        ({"duration": {"$gt": 1}}, "'duration'"),
        ({"config": {"lr": 1}}, "'config'"),
        ({"tags": ["a", "b"]}, "tags"),
        ({"config.lr": [1, 2]}, "config.lr"),
        ({"config.lr": {"$in": 1}}, "$in takes a list"),
        ({"$and": []}, "non-empty list"),
        ({"state": 3}, "state holds text"),
        ({"config.lr": {"$gt": None}}, "$gt compares"),
        ({"config.lr": float("nan")}, '"NaN"'),
        ({"config.lr": {"$regex": "a", "$options": "x"}}, "$options"),
        ({"config.lr": {"$regex": "("}}, "regular expression"),
        ({"config.lr": {"$gt": 1, "x": 2}}, "mixed operators"),
        ({"config..a": 1}, "empty key"),
        ({"tags": {"$gt": "a"}}, "$gt does not apply to tags"),
        ({"config.a": {"$all": ["x"]}}, "$all on tags only"),
    ],
)
def test_what_runstream_does_not_read_is_named_in_the_error(filters: Any, named: str) -> None:
    with pytest.raises(WandbFilterError) as info:
        to_where(filters)
    assert named in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("filters", "says", "not_says"),
    [
        ("state=finished", "filters must be a dict", None),
        ("state=finished", "runstream.Api().runs(where=...)", None),
        (["state"], "filters must be a dict (wandb's type", None),
        ([], "filters must be a dict", None),
        (3, "not int 3", None),
        ({"$not": {"state": "finished"}}, "$not is not a top-level operator", "at the top level"),
        ({"$not": {"state": "finished"}}, "{'state': {'$not': {'$eq': 'finished'}}}", None),
        ({"$not": {"state": "finished"}}, "'$nor'", None),
        ({"$eq": 1}, "$eq goes on a field, not at the top level", None),
        ({"$size": 1}, "at the top level of a filter $and, $or, $nor", None),
        ({"config.lr": {"$size": 1}}, "on a field it reads $eq", None),
        ({"state": {"$or": [{"state": "x"}]}}, "$or goes at the top level", None),
        ({"$and": None}, "$and takes a list of filters (dicts), not None", None),
        ({"$or": {"state": "x"}}, "$or takes a list of filters (dicts)", None),
        ({"$nor": "state"}, "$nor takes a list of filters (dicts)", None),
        ({"$and": [None]}, "a filter is a dict of fields and operators, not NoneType", None),
        ({"$or": [["state", "x"]]}, "filters['$or'][0]", None),
        ({"config.lr": {"$in": None}}, "$in takes a list of values, not None", None),
        ({"state": {"$not": None}}, "$not takes operators", None),
        ({"state": {"$not": ["x"]}}, "$not takes operators", None),
        ({None: 1}, "a filter key is a string", None),
    ],
)
def test_inputs_of_the_wrong_type_at_any_level_get_clear_errors(
    filters: Any, says: str, not_says: str | None
) -> None:
    with pytest.raises(WandbFilterError) as info:
        to_where(filters)
    assert says in str(info.value)
    if not_says is not None:
        assert not_says not in str(info.value)


def test_the_list_of_supported_operators_says_where_each_works() -> None:
    with pytest.raises(WandbFilterError) as info:
        to_where({"config.lr": {"$size": 1}})
    field_part, _, top_part = str(info.value).partition("at the top level of a filter")
    assert "$not" in field_part and "$and" not in field_part.split("on a field it reads")[1]
    assert top_part.strip() == "$and, $or, $nor"


def test_an_order_that_is_not_a_string_is_refused() -> None:
    for order in (5, ["-created_at"], {"created_at": -1}):
        with pytest.raises(WandbFilterError, match="order is a string"):
            to_order_by(order)  # type: ignore[arg-type]


def test_the_error_says_where_in_the_filter_the_operator_is() -> None:
    with pytest.raises(WandbFilterError, match=r"filters\['\$or'\]\[1\]\['config.a'\]\.\$size"):
        to_where({"$or": [{"state": "x"}, {"config.a": {"$size": 1}}]})


def test_a_filter_deeper_than_the_language_reads_is_an_error_not_a_recursion_error() -> None:
    deep: dict[str, Any] = {"state": "x"}
    for _ in range(100):
        deep = {"$or": [deep, {"state": "y"}]}
    with pytest.raises(WandbFilterError, match="nested deeper"):
        to_where(deep)


@pytest.mark.parametrize(
    ("order", "order_by"),
    [
        (None, "started_at"),
        ("", "started_at"),
        ("+created_at", "started_at"),
        ("-created_at", "-started_at"),
        ("createdAt", "started_at"),
        ("-summary_metrics.val_loss", "-summary.val_loss"),
        ("+config.lr.value", "config.lr"),
        ("config.optimizer.lr", "config.optimizer.lr"),
        ("-display_name", "-name"),
    ],
)
def test_order(order: str | None, order_by: str) -> None:
    assert to_order_by(order) == order_by


def test_an_order_runstream_cannot_sort_by_is_named() -> None:
    for order in ("-username", "heartbeat_at"):
        with pytest.raises(WandbFilterError, match=f"'{order}'"):
            to_order_by(order)


# Against ClickHouse: what the translated filters select, by hand and against a model.

HOSTILE = "'; DROP TABLE events --"
RUNS: dict[str, dict[str, Any]] = {
    "w-a": {
        "name": "alpha",
        "config": {
            "lr": 0.01,
            "batch": 32,
            "optimizer": {"name": "adam", "lr": 0.001},
            "amp": True,
            "arch": "resnet",
        },
        "tags": ["baseline", "gpu"],
        "group": "g1",
        "job_type": "train",
        "log": {"val_loss": [0.5, 0.1], "acc": [0.9]},
        "exit_code": 0,
        "status": "finished",
    },
    "w-b": {
        "name": "beta",
        "config": {"lr": 0.0001, "optimizer": {"name": "sgd"}, "amp": False, "arch": "vit"},
        "tags": ["sweep"],
        "group": "g2",
        "job_type": "eval",
        "log": {"val_loss": [0.7, 0.4]},
        "exit_code": 1,
        "status": "failed",
    },
    "w-c": {
        "name": 'gamma "q" \\ ünï',
        "config": {"lr": "0.01", "arch": None},
        "tags": ["baseline", "ünï"],
        "group": None,
        "job_type": None,
        "log": {},
        "exit_code": 0,
        "status": "finished",
    },
    "w-d": {
        "name": HOSTILE,
        "config": {"lr": None, "batch": 64, HOSTILE: 1},
        "tags": [],
        "group": "g1",
        "job_type": "train",
        "log": {"val_loss": [float("nan")], "acc": [0.3]},
        "exit_code": 137,
        "status": "crashed",
    },
}

CASES: list[tuple[dict[str, Any], set[str]]] = [
    ({"state": "finished"}, {"w-a", "w-c"}),
    ({"state": {"$in": ["failed", "crashed"]}}, {"w-b", "w-d"}),
    ({"config.lr": {"$gt": 0.001}}, {"w-a"}),  # w-c's lr is a string, w-d's null
    ({"config.lr": {"$ne": 0.01}}, {"w-b", "w-c", "w-d"}),  # $ne holds without the value too
    ({"config.lr": None}, {"w-d"}),
    ({"config.lr": {"$exists": True}}, {"w-a", "w-b", "w-c"}),
    ({"config.batch": {"$exists": False}}, {"w-b", "w-c"}),
    ({"config.optimizer.name": {"$in": ["adam", "sgd"]}}, {"w-a", "w-b"}),
    ({"config.optimizer.lr.value": {"$lt": 0.01}}, {"w-a"}),
    ({"config.amp": True}, {"w-a"}),
    ({"config.amp": {"$ne": True}}, {"w-b", "w-c", "w-d"}),
    ({"summary_metrics.val_loss": {"$lt": 0.2}}, {"w-a"}),
    ({"summary_metrics.val_loss": {"$gte": 0.2}}, {"w-b"}),  # NaN is neither
    ({"summary_metrics.val_loss": "NaN"}, {"w-d"}),
    ({"tags": "baseline"}, {"w-a", "w-c"}),
    ({"tags": {"$in": ["sweep", "ünï"]}}, {"w-b", "w-c"}),
    ({"tags": {"$nin": ["baseline"]}}, {"w-b", "w-d"}),
    ({"tags": {"$all": ["baseline", "gpu"]}}, {"w-a"}),
    ({"tags": {"$regex": "^gp"}}, {"w-a"}),
    ({"display_name": {"$regex": "^(alpha|beta)$"}}, {"w-a", "w-b"}),
    ({"display_name": {"$regex": "^ALPHA", "$options": "i"}}, {"w-a"}),
    ({"name": "w-b"}, {"w-b"}),
    ({"group": None}, {"w-c"}),
    ({"jobType": "train", "group": "g1"}, {"w-a", "w-d"}),
    ({"$or": [{"state": "failed"}, {"display_name": "alpha"}]}, {"w-a", "w-b"}),
    ({"$nor": [{"state": "failed"}, {"display_name": "alpha"}]}, {"w-c", "w-d"}),
    ({"$and": [{"tags": "baseline"}, {"config.lr": {"$type": "x"}}]}, set()),  # refused below
    ({"createdAt": {"$gt": "2000-01-01T00:00:00Z"}}, set(RUNS)),
    ({"createdAt": {"$lt": "2000-01-01"}}, set()),
    ({"display_name": HOSTILE}, {"w-d"}),
    ({f"config.{HOSTILE}": 1}, {"w-d"}),
    ({"display_name": 'gamma "q" \\ ünï'}, {"w-c"}),
    ({"display_name": "x' OR 1=1 --"}, set()),
    ({"config.lr') OR (1": {"$gt": 0}}, set()),
]


@pytest.mark.integration
def test_translated_filters_select_what_mongodb_rules_say_in_clickhouse(settings: Any) -> None:
    from runstream.sinks.clickhouse import connect

    write_runs(settings, "wandbfilters", RUNS)
    client = connect(settings)
    events_before = client.command("SELECT count() FROM events")

    def selected(filters: dict[str, Any]) -> set[str]:
        where = to_where(filters)
        assert where is not None
        sql, params = compile_filter(where)
        result = client.query(f"SELECT run_id FROM runs_current WHERE {sql}", parameters=params)
        return {r[0] for r in result.result_rows}

    wrong = []
    for filters, expected in CASES:
        try:
            got = selected(filters)
        except WandbFilterError as error:
            assert "$type" in str(error)
            continue
        if got != expected:
            wrong.append((filters, sorted(got), sorted(expected)))
    assert not wrong, "\n".join(map(str, wrong))

    @hsettings(max_examples=80, deadline=None)
    @given(modelled())
    def agrees_with_the_model(case: tuple[dict[str, Any], Any]) -> None:
        filters, predicate = case
        assert selected(filters) == {r for r in RUNS if predicate(r)}, filters

    agrees_with_the_model()
    assert client.command("SELECT count() FROM events") == events_before


# A model of the rules (runstream.wandb.mongo's docstring; MongoDB's where runstream keeps them).

_MISSING = object()


def _value(run_id: str, field: str) -> Any:
    spec = RUNS[run_id]
    if field.startswith("summary_metrics."):
        points = spec["log"].get(field.removeprefix("summary_metrics."))
        return points[-1] if points else _MISSING  # the summary kind is last
    if field.startswith("config."):
        path = field.removeprefix("config.").removesuffix(".value")
        config = spec["config"]
        if path in config:
            return config[path]
        value: Any = config
        for key in path.split("."):
            if not isinstance(value, dict) or key not in value:
                return _MISSING
            value = value[key]
        return value
    return {
        "state": spec["status"],
        "name": run_id,
        "display_name": spec["name"],
        "group": spec["group"] or "",
        "jobType": spec["job_type"] or "",
        "tags": spec["tags"],
    }[field]


def _as_stored(value: Any) -> Any:
    """NaN and the infinities are the strings the event schema writes."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _equal(value: Any, literal: Any) -> bool:
    if literal is None:
        return value is _MISSING or value is None or value == ""
    if isinstance(literal, bool):
        return value is literal
    if _is_number(literal):
        return _is_number(value) and float(value) == literal
    return _as_stored(value) == literal


_PY = {
    "$gt": lambda a, b: a > b,
    "$gte": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b,
    "$lte": lambda a, b: a <= b,
}


def _holds(field: str, op: str, arg: Any, run_id: str) -> bool:
    value = _value(run_id, field)
    if field == "tags":
        return {
            "$eq": lambda: arg in value,
            "$ne": lambda: arg not in value,
            "$in": lambda: any(a in value for a in arg),
            "$nin": lambda: not any(a in value for a in arg),
            "$all": lambda: all(a in value for a in arg),
            "$regex": lambda: any(re.search(arg, t) for t in value),
        }[op]()
    if op == "$eq":
        return _equal(value, arg)
    if op == "$ne":
        return not _equal(value, arg)
    if op == "$in":
        return any(_equal(value, a) for a in arg)
    if op == "$nin":
        return not any(_equal(value, a) for a in arg)
    if op == "$exists":
        present = value is not _MISSING and value is not None and value != ""
        return present is arg
    if op == "$regex":
        stored = _as_stored(value)
        return isinstance(stored, str) and re.search(arg, stored) is not None
    if _is_number(arg):
        return _is_number(value) and bool(_PY[op](float(value), arg))
    stored = _as_stored(value)
    return isinstance(stored, str) and bool(_PY[op](stored, arg))


_DOC_FIELDS = [
    "config.lr",
    "config.batch",
    "config.amp",
    "config.arch",
    "config.optimizer.name",
    "config.optimizer.lr.value",
    "summary_metrics.val_loss",
    "summary_metrics.acc",
]
_TEXT_FIELDS = ["state", "display_name", "name", "group", "jobType"]
_NUMBERS = [0.0001, 0.001, 0.01, 0.1, 0.4, 0.5, 32, 64, -1.0]
_STRINGS = ["adam", "sgd", "0.01", "NaN", "resnet", "vit", "finished", "failed", "crashed",
            "alpha", "beta", "g1", "g2", "", "train", "w-a", "w-c"]  # fmt: skip
_REGEXES = ["^a", "a", "^(adam|sgd)$", "NaN", "0\\.01", "t$", "^w-[ab]$", "ï"]
_TAGS = ["baseline", "gpu", "sweep", "ünï", "none"]


@st.composite
def _leaf(draw: st.DrawFn) -> tuple[str, str, Any]:
    kind = draw(st.sampled_from(["doc", "text", "tags"]))
    if kind == "tags":
        op = draw(st.sampled_from(["$eq", "$ne", "$in", "$nin", "$all", "$regex"]))
        if op in ("$in", "$nin", "$all"):
            return "tags", op, draw(st.lists(st.sampled_from(_TAGS), max_size=3))
        if op == "$regex":
            return "tags", op, draw(st.sampled_from(["^b", "u", "ï", "^x"]))
        return "tags", op, draw(st.sampled_from(_TAGS))
    field = draw(st.sampled_from(_DOC_FIELDS if kind == "doc" else _TEXT_FIELDS))
    op = draw(st.sampled_from(["$eq", "$ne", "$in", "$nin", "$exists", "$regex", *_PY]))
    if op == "$exists":
        return field, op, draw(st.booleans())
    if op == "$regex":
        return field, op, draw(st.sampled_from(_REGEXES))
    strings = st.sampled_from(_STRINGS)
    if kind == "text":
        scalars: st.SearchStrategy[Any] = strings
    elif op in _PY:
        scalars = st.one_of(st.sampled_from(_NUMBERS), strings)
    else:
        scalars = st.one_of(
            st.sampled_from(_NUMBERS), strings, st.sampled_from([True, False, None])
        )
    if op in ("$in", "$nin"):
        return field, op, draw(st.lists(scalars, max_size=3))
    return field, op, draw(scalars)


def _leaf_filter(leaf: tuple[str, str, Any], plain: bool) -> tuple[dict[str, Any], Any]:
    field, op, arg = leaf

    def predicate(r: str) -> bool:
        return _holds(field, op, arg, r)

    if op == "$eq" and plain:
        return {field: arg}, predicate
    return {field: {op: arg}}, predicate


@st.composite
def _comparison(draw: st.DrawFn) -> tuple[dict[str, Any], Any]:
    leaf = draw(_leaf())
    filters, predicate = _leaf_filter(leaf, draw(st.booleans()))
    if draw(st.integers(0, 5)) == 0 and leaf[1] != "$eq":  # {"f": {"$not": {...}}}
        field = leaf[0]
        inner = filters[field]
        return {field: {"$not": inner}}, lambda r: not predicate(r)
    return filters, predicate


def _combine(
    children: st.SearchStrategy[tuple[dict[str, Any], Any]],
) -> st.SearchStrategy[tuple[dict[str, Any], Any]]:
    def logical(
        args: tuple[str, list[tuple[dict[str, Any], Any]]],
    ) -> tuple[dict[str, Any], Any]:
        op, parts = args
        filters = [p[0] for p in parts]
        preds = [p[1] for p in parts]
        if op == "$and":
            return {op: filters}, lambda r: all(p(r) for p in preds)
        if op == "$or":
            return {op: filters}, lambda r: any(p(r) for p in preds)
        return {op: filters}, lambda r: not any(p(r) for p in preds)

    def merged(parts: list[tuple[dict[str, Any], Any]]) -> tuple[dict[str, Any], Any]:
        # Several keys in one dict: all of them (MongoDB's implicit and). A part whose keys
        # are taken already (or a $-operator) goes into an $and beside them.
        filters: dict[str, Any] = {}
        for f, _ in parts:
            if any(k in filters or k.startswith("$") for k in f):
                filters.setdefault("$and", []).append(f)
            else:
                filters.update(f)
        preds = [p for _, p in parts]
        return filters, lambda r: all(p(r) for p in preds)

    return st.one_of(
        st.tuples(
            st.sampled_from(["$and", "$or", "$nor"]), st.lists(children, min_size=1, max_size=3)
        ).map(logical),
        st.lists(children, min_size=2, max_size=3).map(merged),
    )


def modelled() -> st.SearchStrategy[tuple[dict[str, Any], Any]]:
    return st.recursive(_comparison(), _combine, max_leaves=6)
