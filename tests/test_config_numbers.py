"""Issue 10 item 3, ClickHouse half: what ``runs_current`` gives back for a run's config, summary,
environment and tags is what was sent, type included (1.0 stays a float, 1e20 a number, -0.0
keeps its sign, integers up to 2**64 - 1 stay exact integers).

Values go through the real path: Kafka, the sink, the materialized views, ``runs_current``.
"""

from __future__ import annotations

import itertools
import math
import struct
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

import runstream
from runstream.settings import Settings
from runstream.sinks.consumer import Sink
from tests.helpers import records_of, sink_until
from tests.samples import sample_event
from tests.test_processors import produce

pytestmark = pytest.mark.integration

EDGE_FLOATS = [
    1.0, -0.0, 0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1e308, 1.7976931348623157e308,
    1.8e19, 1e20, 1e21, 2.0**63, 2.0**64, 0.1 + 0.2, 1 / 3, 123456789.12345678, 9007199254740993.0,
]  # fmt: skip
EDGE_INTS = [0, -1, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), 2**64 - 1]
FLOATS = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(EDGE_FLOATS)
INTS = st.integers(-(2**63), 2**64 - 1) | st.sampled_from(EDGE_INTS)
TEXT = st.text(max_size=8) | st.sampled_from(["", "/", 'a"b\\c', "\u2028\x00\x1f", "é🚀"])
SCALARS = st.none() | st.booleans() | INTS | FLOATS | TEXT
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=10,
)
DOCS = st.dictionaries(TEXT, VALUES, max_size=6)
# Summary keys other than the metric the run logs, whose derived value is checked on its own.
SUMMARIES = st.dictionaries(TEXT.filter(lambda k: k not in ("", "m")), VALUES, max_size=5)


def same(a: Any, b: Any) -> bool:
    """Equal and of the same type all the way down; floats bit for bit (-0.0 is not 0.0)."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return struct.pack("<d", a) == struct.pack("<d", b)
    if type(a) is dict:
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def merged(base: dict[str, Any], *patches: dict[str, Any]) -> dict[str, Any]:
    """A merge patch on top-level keys: a null removes the key."""
    out = dict(base)
    for patch in patches:
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = value
    return out


_RUNS = itertools.count()


def run_events(case: dict[str, Any]) -> Iterator[dict[str, Any]]:
    bodies: list[tuple[str, dict[str, Any]]] = [
        (
            "run_started",
            {
                "name": case["run_id"],
                "config": case["config"],
                "tags": case["tags"],
                "environment": case["environment"],
            },
        ),
        ("config_updated", {"config": case["patch"]}),
        ("metrics_logged", {"step": 0, "metrics": {"m": case["metric"]}}),
        ("summary_updated", {"summary": case["summary_1"]}),
        ("summary_updated", {"summary": case["summary_2"]}),
        ("heartbeat", {"step": 0}),
    ]
    for seq, (type_name, body) in enumerate(bodies):
        event = sample_event(type_name, seq=seq, run_id=case["run_id"])
        event["body"] = body
        yield event


CASES = st.fixed_dictionaries(
    {
        "config": DOCS,
        "patch": DOCS,
        "summary_1": SUMMARIES,
        "summary_2": SUMMARIES,
        "metric": FLOATS,
        "tags": st.lists(TEXT.filter(bool), max_size=3),
        "environment": st.fixed_dictionaries(
            {"python": TEXT, "hostname": TEXT, "argv": st.lists(TEXT, max_size=3)}
        ),
    }
)


@pytest.fixture
def sink(settings: Settings) -> Iterator[Sink]:
    own = Sink(settings)
    yield own
    own.close()


@hypothesis_settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cases=st.lists(CASES, min_size=1, max_size=6))
def test_config_summary_environment_and_tags_come_back_as_sent(
    settings: Settings, sink: Sink, cases: list[dict[str, Any]]
) -> None:
    for case in cases:
        case["run_id"] = f"n{next(_RUNS)}"
    produce(settings, [e for case in cases for e in run_events(case)])
    db = settings.clickhouse_database
    ids = [case["run_id"] for case in cases]
    query = f"SELECT * FROM {db}.runs_current WHERE run_id IN {{ids:Array(String)}}"
    sink_until(
        settings,
        lambda c: len(records_of(settings, query + " AND last_seq = 5", ids=ids)) == len(ids),
        timeout=20,
        sink=sink,
    )
    found = {row["run_id"]: row for row in records_of(settings, query, ids=ids)}
    for case in cases:
        row = found[case["run_id"]]
        config = orjson.loads(row["config"])
        assert same(config, merged(case["config"], case["patch"])), (config, case)
        summary = orjson.loads(row["summary"])
        want = {"m": case["metric"], **merged({}, case["summary_1"], case["summary_2"])}
        assert same(summary, want), (summary, want)
        environment = orjson.loads(row["environment"])
        assert same({k: environment[k] for k in case["environment"]}, case["environment"])
        assert row["tags"] == case["tags"]


def test_the_issues_numbers_come_back_from_the_sdk_as_sent(settings: Settings) -> None:
    """The example of the issue through the SDK: floats from 1.8e19 to 1e21 came back as
    strings, 1.0 as 1, -0.0 as 0."""
    values = {
        "lr": 0.1, "one": 1.0, "f19": 1.8e19, "f20": 1e20, "f21": 1e21, "neg_zero": -0.0,
        "tiny": 5e-324, "huge": 1e308, "digits": 0.12345678901234568, "int": 2**64 - 1,
        "int_min": -(2**63), "nested": {"one": 1.0, "list": [1e20, 2, 2.5, -0.0]},
    }  # fmt: skip
    quiet = settings.with_overrides(system_metrics_interval=0)
    run = runstream.init(settings=quiet, id="numbers", project="p", config=values)
    run.summary.update(values)
    run.log({"loss": 1.0, "big": 1e20, "zero": -0.0})
    assert run.finish().ok
    db = settings.clickhouse_database
    query = f"SELECT config, summary FROM {db}.runs_current WHERE status = 'finished'"
    sink_until(settings, lambda c: len(records_of(settings, query)) == 1)
    row = records_of(settings, query)[0]
    assert same(orjson.loads(row["config"]), values)
    summary = orjson.loads(row["summary"])
    assert same(summary, {**values, "loss": 1.0, "big": 1e20, "zero": -0.0})
    assert math.copysign(1.0, summary["zero"]) == -1.0
