"""Issue 10, items 2 and 4, end to end: the SDK, real Kafka, the sink and ClickHouse."""

from __future__ import annotations

import pytest

import runstream
from runstream.settings import Settings
from tests.helpers import rows, scalar, sink_until

pytestmark = pytest.mark.integration


def quiet(settings: Settings) -> Settings:
    return settings.with_overrides(system_metrics_interval=0, heartbeat_interval=3600)


def test_lower_and_step_less_points_all_land_with_their_steps(settings: Settings) -> None:
    db = settings.clickhouse_database
    run = runstream.init(project="steps", settings=quiet(settings))
    run.log({"a": 1.0})  # 0
    run.log({"b": 1.0}, step=10)
    run.log({"a": 2.0})  # 11
    run.log({"b": 2.0}, step=3)  # lower than the highest: stored
    run.log({"b": 3.0}, step=3)  # the same step again: a second point
    run.log({"a": 3.0})  # 12
    for step in range(5):  # a second counter of its own, as a second thread would have
        run.log({"c": float(step)}, step=step)
    result = run.finish()
    assert result.ok, result

    sink = sink_until(
        settings,
        lambda c: scalar(settings, f"SELECT countIf(type='run_finished') FROM {db}.events") == 1,
    )
    assert sink.stats.dead_letters == 0
    points = rows(
        settings,
        f"SELECT name, step, value FROM {db}.metrics WHERE run_id = '{run.id}' "
        "ORDER BY name, step, value",
    )
    assert points == [
        ("a", 0, 1.0), ("a", 11, 2.0), ("a", 12, 3.0),
        ("b", 3, 2.0), ("b", 3, 3.0), ("b", 10, 1.0),
        ("c", 0, 0.0), ("c", 1, 1.0), ("c", 2, 2.0), ("c", 3, 3.0), ("c", 4, 4.0),
    ]  # fmt: skip


def test_a_run_with_100000_metric_names_in_one_call_lands_every_point(
    settings: Settings,
) -> None:
    db = settings.clickhouse_database
    names = 100_000
    run = runstream.init(project="wide", settings=quiet(settings), config={"lr": 0.1})
    run.log({f"layer_{i // 100}/unit_{i % 100}/grad_norm": float(i) for i in range(names)})
    run.log({"loss": 1.0})
    result = run.finish()
    assert result.ok, result

    sink = sink_until(
        settings,
        lambda c: scalar(settings, f"SELECT countIf(type='run_finished') FROM {db}.events") == 1,
        timeout=120,
    )
    assert sink.stats.dead_letters == 0
    assert rows(
        settings,
        f"SELECT count(), uniqExact(name), min(step), max(step), sum(value) FROM {db}.metrics "
        f"WHERE run_id = '{run.id}' AND name != 'loss'",
    ) == [(names, names, 0, 0, float(sum(range(names))))]
    assert scalar(settings, f"SELECT step FROM {db}.metrics WHERE name = 'loss'") == 1
    assert scalar(settings, f"SELECT max(length(body)) FROM {db}.events") < 900_000
