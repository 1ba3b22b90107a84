"""Edges of the Python read API against the real ClickHouse: metrics named like the x column,
``x=<step metric>`` with points stored at the step metric's value, argument checking, projects
with ``/``. Data inserted straight into `events` through the ordinary client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import runstream
from runstream.errors import ReadArgumentError
from runstream.read import Api
from runstream.read.table import unique_columns
from runstream.settings import Settings
from tests.conftest import Services, isolated_settings
from tests.helpers import land_events
from tests.test_read_api import event

EPOCHS = 3
PER_EPOCH = 10


def evil_events() -> list[list[Any]]:
    """evil: metrics named step, time, relative_time, _step and epoch (its step metric)."""
    rows = [
        event("run_started", "evil", 0, project="edges", name="evil"),
        event("metric_defined", "evil", 1, project="edges", name="loss", step_metric="epoch"),
    ]
    for s in range(5):
        metrics = {
            "step": s * 10.0,
            "time": 5.0,
            "relative_time": -1.0,
            "_step": 7.0,
            "loss": 1.0 / (s + 1),
            "epoch": float(s),
        }
        rows.append(
            event("metrics_logged", "evil", 2 + s, project="edges", step=s, metrics=metrics)
        )
    return rows


def epoch_events() -> list[list[Any]]:
    """ep: train/loss at steps 0..29; after every PER_EPOCH steps one log() of epoch and val/acc
    (defined against epoch) stored at step = epoch, as the SDK stores them."""
    rows = [
        event("run_started", "ep", 0, project="edges"),
        event("metric_defined", "ep", 1, project="edges", name="val/acc", step_metric="epoch"),
    ]
    seq = 2
    for step in range(EPOCHS * PER_EPOCH):
        rows.append(
            event(
                "metrics_logged",
                "ep",
                seq,
                project="edges",
                step=step,
                metrics={"train/loss": float(step)},
            )
        )
        seq += 1
        if step % PER_EPOCH == PER_EPOCH - 1:
            e = step // PER_EPOCH
            rows.append(
                event(
                    "metrics_logged",
                    "ep",
                    seq,
                    project="edges",
                    step=e,
                    metrics={"epoch": float(e), "val/acc": 0.5 + e},
                )
            )
            seq += 1
    return rows


def slash_events() -> list[list[Any]]:
    return [
        event("run_started", "s1", 0, project="team/vision/x"),
        event("run_started", "s2", 0, project="a"),
        event("run_started", "b/s2", 0, project="p"),
    ]


@pytest.fixture(scope="module")
def edges(services: Services) -> Settings:
    settings = isolated_settings(services, "edges")
    land_events(settings, evil_events() + epoch_events() + slash_events())
    return settings


@pytest.fixture(scope="module")
def api(edges: Settings) -> Iterator[Api]:
    with runstream.Api(settings=edges) as api:
        yield api


# --- #1: a metric named like the x column -------------------------------------------------------


def test_unique_columns_follows_pandas_read_csv() -> None:
    assert unique_columns(["step", "step"]) == ["step", "step.1"]
    assert unique_columns(["step", "step", "step.1"]) == ["step", "step.2", "step.1"]
    assert unique_columns(["a", "b"]) == ["a", "b"]


def test_a_metric_named_step_never_replaces_the_step(api: Api) -> None:
    run = api.run("evil")
    one = run.history("step")
    assert one.columns == ["step", "step.1"]
    assert one["step"] == [0, 1, 2, 3, 4]
    assert one["step.1"] == [0.0, 10.0, 20.0, 30.0, 40.0]
    wide = run.history(["step", "loss"])
    assert wide.columns == ["step", "step.1", "loss"]
    assert wide["step"] == [0, 1, 2, 3, 4]
    assert wide["step.1"] == [0.0, 10.0, 20.0, 30.0, 40.0]
    frame = wide.to_pandas()
    assert list(frame.columns) == ["step", "step.1", "loss"]
    assert frame["step"].tolist() == [0, 1, 2, 3, 4]


def test_a_metric_named_time_or_relative_time_keeps_x(api: Api) -> None:
    run = api.run("evil")
    times = run.history(["time"], x="time")
    assert times.columns == ["time", "time.1"]
    assert times["time.1"] == [5.0] * 5
    assert times["time"][0] != 5.0 and times["time"][0].year == 2026
    relative = run.history(["relative_time", "loss"], x="relative_time")
    assert relative.columns == ["relative_time", "relative_time.1", "loss"]
    assert relative["relative_time"] == [2.0, 3.0, 4.0, 5.0, 6.0]
    assert relative["relative_time.1"] == [-1.0] * 5


def test_samples_of_a_metric_named_step(api: Api) -> None:
    table = api.run("evil").history(["step"], samples=2)
    assert table.columns == ["step", "step.1", "step.min", "step.max"]
    assert table["step"] == [2, 4]  # the buckets' last steps: 0..2, 3..4
    assert table["step.1"] == [20.0, 40.0]
    assert table["step.min"] == [0.0, 30.0]
    assert table["step.max"] == [20.0, 40.0]


def test_scan_history_of_a_metric_named_step(api: Api) -> None:
    rows = list(api.run("evil").scan_history(["step", "_step"], page_size=2))
    assert rows == [{"step": s, "step.1": s * 10.0, "_step": 7.0} for s in range(5)]


def test_the_step_metric_as_x_and_as_a_key(api: Api) -> None:
    table = api.run("evil").history(x="epoch")
    assert table.columns == ["epoch", "_step", "epoch.1", "loss", "relative_time", "step", "time"]
    assert table["epoch"] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert table["epoch.1"] == table["epoch"]
    assert table["step"] == [0.0, 10.0, 20.0, 30.0, 40.0]


def test_runs_show_report_of_a_run_with_a_metric_named_step(api: Api) -> None:
    from runstream.read.cli.runs import _report

    report = _report(api, api.run("evil"))
    metrics = {m["name"]: m for m in report["metrics"]}
    assert metrics["step"]["min"] == 0.0 and metrics["step"]["max"] == 40.0
    assert metrics["time"]["min"] == 5.0


# --- #6: x = a step metric -----------------------------------------------------------------------


def test_step_metric_x_follows_event_order_not_step(api: Api) -> None:
    run = api.run("ep")
    table = run.history(["train/loss", "val/acc"], x="epoch")
    assert table.columns == ["epoch", "train/loss", "val/acc"]
    expected: list[tuple[Any, Any, Any]] = []
    for step in range(EPOCHS * PER_EPOCH):
        e = step // PER_EPOCH
        expected.append((None if e == 0 else float(e - 1), float(step), None))
        if step % PER_EPOCH == PER_EPOCH - 1:
            expected.append((float(e), None, 0.5 + e))
    assert list(zip(table["epoch"], table["train/loss"], table["val/acc"], strict=True)) == expected


def test_keys_defined_against_the_step_metric_get_its_value(api: Api) -> None:
    table = api.run("ep").history("val/acc", x="epoch")
    assert table["epoch"] == [0.0, 1.0, 2.0]
    assert table["val/acc"] == [0.5, 1.5, 2.5]
    loss = api.run("ep").history("train/loss", x="epoch", min_step=18, max_step=21)
    assert loss["epoch"] == [0.0, 0.0, 1.0, 1.0]  # steps 18, 19 in epoch 1's run-up; 20, 21 after
    assert loss["train/loss"] == [18.0, 19.0, 20.0, 21.0]


def test_samples_against_a_step_metric_use_the_bucket_last_point(api: Api) -> None:
    table = api.run("ep").history("train/loss", x="epoch", samples=3)
    assert table["epoch"] == [None, 0.0, 1.0]
    assert table["train/loss"] == [9.0, 19.0, 29.0]


# --- #11: arguments --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"limit": "5"}, "limit is a whole number"),
        ({"limit": True}, "limit is a whole number"),
        ({"limit": 2.0}, "limit is a whole number"),
        ({"limit": -1}, "limit is a whole number"),
        ({"offset": None}, "offset is a whole number"),
        ({"offset": False}, "offset is a whole number"),
        ({"offset": -3}, "offset is a whole number"),
        ({"where": 123}, "where is a filter expression"),
        ({"order_by": 5}, "order_by is a name"),
        ({"order_by": ["started_at", 1]}, "order_by is a name"),
        ({"project": 7}, "project is a project name"),
    ],
)
def test_runs_arguments_are_checked(api: Api, kwargs: dict[str, Any], says: str) -> None:
    with pytest.raises(ReadArgumentError, match=says):
        api.runs(**kwargs)


def test_runs_take_numpy_ints(api: Api) -> None:
    runs = api.runs("edges", limit=np.int64(1), offset=np.int64(0), order_by="run_id")
    assert [r.id for r in runs] == ["ep"] and runs.total == 2


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"samples": 2.5}, "samples is a whole number"),
        ({"samples": True}, "samples is a whole number"),
        ({"samples": 0}, "samples is a whole number"),
        ({"samples": 1_000_001}, "samples is a whole number"),
        ({"samples": "10"}, "samples is a whole number"),
        ({"keys": 5}, "keys is a metric name"),
        ({"keys": ["loss", None]}, "keys holds metric names"),
        ({"keys": {"loss"}}, "keys is a metric name"),
        ({"min_step": 1.5}, "min_step is a step"),
        ({"max_step": "9"}, "max_step is a step"),
        ({"min_step": True}, "min_step is a step"),
        ({"x": 3}, "x is 'step'"),
    ],
)
def test_history_arguments_are_checked(api: Api, kwargs: dict[str, Any], says: str) -> None:
    with pytest.raises(ReadArgumentError, match=says):
        api.run("evil").history(**{"keys": "loss", **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"page_size": 2.5}, "page_size is a whole number"),
        ({"page_size": True}, "page_size is a whole number"),
        ({"keys": 5}, "keys is a metric name"),
        ({"min_step": 0.5}, "min_step is a step"),
    ],
)
def test_scan_history_arguments_are_checked(api: Api, kwargs: dict[str, Any], says: str) -> None:
    with pytest.raises(ReadArgumentError, match=says):
        next(api.run("evil").scan_history(**{"keys": "loss", **kwargs}))


def test_history_takes_numpy_ints(api: Api) -> None:
    table = api.run("evil").history("loss", samples=np.int64(5), min_step=np.int64(1))
    assert table["step"] == [1, 2, 3, 4]


# --- #8: a project with "/" ------------------------------------------------------------------


def test_a_project_may_hold_slashes(api: Api) -> None:
    run = api.run("team/vision/x/s1")
    assert (run.project, run.id) == ("team/vision/x", "s1")
    assert (api.run("a/s2").project, api.run("a/s2").id) == ("a", "s2")
    b = api.run("b/s2")  # no project "b": the run id "b/s2" of project p
    assert (b.project, b.id) == ("p", "b/s2")
    assert (api.run("p/b/s2").project, api.run("p/b/s2").id) == ("p", "b/s2")  # earlier cut
