"""Faults a fresh user found in runstream.wandb (issue 11, round 2), each checked as a kind: a
step metric value that is not a step, two step metrics in one call, every documented form of
``config.update``/``setdefaults``, a lone ``str`` where wandb takes a list, ``finish()`` while
an exception propagates, define_metric arguments and calls without a run counted. Values are
checked in ClickHouse where they land there."""

from __future__ import annotations

import logging
import math
import os
from argparse import Namespace
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as settings_
from hypothesis import strategies as st

import runstream
from runstream import wandb
from runstream.errors import HistogramError
from runstream.producers.metric_defs import step_or_reason
from runstream.settings import Settings
from tests.helpers import rows, scalar, sink_until

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def clean_wandb(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith("WANDB_"):
            monkeypatch.delenv(key)
    monkeypatch.setattr(runstream, "no_run_calls", {})
    wandb.teardown()
    yield
    wandb.teardown()


def finished(settings: Settings, run_id: str) -> None:
    db = settings.clickhouse_database
    sink_until(settings, lambda c: scalar(settings, f"SELECT countIf(type='run_finished' AND "
                                          f"run_id='{run_id}') FROM {db}.events") == 1)  # fmt: skip


def points(settings: Settings, run_id: str, name: str) -> list[tuple[int, float]]:
    db = settings.clickhouse_database
    return [(int(s), float(v)) for s, v in rows(settings, f"SELECT step, value FROM {db}.metrics "
            f"WHERE run_id = '{run_id}' AND name = '{name}' ORDER BY step, value")]  # fmt: skip


# --- item 4: two step metrics in one call ------------------------------------------------------
def test_two_step_metrics_in_one_call_store_each_metric_at_its_own_step(
    settings: Settings,
) -> None:
    run = wandb.init(project="p", settings=settings)
    wandb.define_metric("train/*", step_metric="global_step")
    wandb.define_metric("val/*", step_metric="epoch")
    wandb.log({"global_step": 100, "epoch": 2, "train/loss": 0.5, "val/loss": 0.7, "lr": 0.1})
    wandb.log({"train/loss": 0.4, "val/loss": 0.6})  # step_sync: the last value of each
    wandb.log({"global_step": 200, "train/loss": 0.3, "val/loss": 0.5, "epoch": 3})
    result = wandb.finish()
    assert result is not None and not result.refused
    finished(settings, run.id)
    assert points(settings, run.id, "train/loss") == [(100, 0.4), (100, 0.5), (200, 0.3)]
    assert points(settings, run.id, "val/loss") == [(2, 0.6), (2, 0.7), (3, 0.5)]
    assert points(settings, run.id, "global_step") == [(100, 100.0), (200, 200.0)]
    assert points(settings, run.id, "epoch") == [(2, 2.0), (3, 3.0)]
    # A key without a definition goes with the first key that has one (the call's first step).
    assert points(settings, run.id, "lr") == [(100, 0.1)]


# --- item 3: a step metric value that is not a step ------------------------------------------
def test_a_step_metric_value_that_is_not_a_step_takes_runstreams_counter(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    run = wandb.init(project="p", settings=settings)
    wandb.define_metric("val/*", step_metric="epoch")
    with caplog.at_level(logging.WARNING, logger="runstream"):
        wandb.log({"epoch": 1, "val/loss": 0.8})  # step 1; the counter is now 2
        wandb.log({"epoch": 1.5, "val/loss": 0.7})  # counter: 2
        wandb.log({"epoch": -3, "val/loss": 0.6})  # counter: 3
        wandb.log({"epoch": math.nan, "val/loss": 0.5})  # counter: 4
        wandb.log({"epoch": 2**64, "val/loss": 0.4})  # counter: 5
        wandb.log({"epoch": 2.5, "val/loss": 0.3})  # counter: 6 (a second fraction)
        wandb.log({"val/loss": 0.2})  # step_sync: the last valid value, 1
    assert run.refused_by_kind["step"] == 5
    said = [r.getMessage() for r in caplog.records if "step metric 'epoch'" in r.getMessage()]
    assert len(said) == 3, said  # one per kind: not whole (1.5, nan, 2.5), negative, too high
    wandb.finish()
    finished(settings, run.id)
    assert points(settings, run.id, "val/loss") == [
        (1, 0.2), (1, 0.8), (2, 0.7), (3, 0.6), (4, 0.5), (5, 0.4), (6, 0.3)
    ]  # fmt: skip


@settings_(max_examples=200, deadline=None)
@given(st.one_of(st.floats(allow_nan=True), st.integers(min_value=-(2**70), max_value=2**70)))
def test_a_step_is_exactly_a_whole_number_from_0_to_int64_max(value: Any) -> None:
    step, why = step_or_reason(value)
    whole = (isinstance(value, int) or math.isfinite(value)) and value == int(value)
    if whole and 0 <= int(value) <= 2**63 - 1:
        assert step == int(value) and why == ""
    else:
        assert step is None and why


# --- item 5: config.update / setdefaults / __setitem__ forms --------------------------------------
def test_every_documented_form_of_config_update_works(settings: Settings) -> None:
    wandb.config.update({"pre": 1}, True)  # before init: a scratch dict, no exception
    wandb.config.setdefaults({"pre2": 2})
    run = wandb.init(project="p", settings=settings)
    wandb.config.update({"a": 1}, True)
    wandb.config.update({"b": 2}, allow_val_change=True)
    wandb.config.update(d={"c": 3})
    wandb.config.update(Namespace(e=5), False)
    wandb.config.update([("pairs", 1)])
    wandb.config.update({"f": 1}, True, g=7)
    wandb.config.setdefaults({"a": 99, "h": 8})
    wandb.config.setdefaults(d=Namespace(i=9))
    wandb.config["j"] = 10
    wandb.config.__setitem__("k", 11)
    wandb.config.l = 12
    wandb.config.update_locked({"m": 13}, user="sweep")
    run.config.update({"n": 14}, True)
    run.config.setdefaults(Namespace(o=15))
    run.config.update("config.yaml")  # wandb reads the file; refused, counted, no exception
    expected = dict(a=1, b=2, c=3, e=5, pairs=1, f=1, g=7, h=8, i=9, j=10, k=11, l=12, m=13,
                    n=14, o=15)  # fmt: skip
    assert run.config.as_dict() == expected
    assert wandb.config.as_dict() == expected
    assert run.refused_by_kind == {"config": 1}
    wandb.finish()


# --- item 6: a lone str where wandb takes a list ------------------------------------------------
def test_a_lone_str_where_wandb_takes_a_list_is_one_element(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = wandb.init(project="p", tags="single", config={"lr": 1, "l": 2, "r": 3},
                     config_include_keys="lr", settings=settings)  # fmt: skip
    assert run.tags == ("single",)
    assert run.config.as_dict() == {"lr": 1}  # not "l" and "r", the characters of "lr"
    run.tags = "renamed"  # type: ignore[assignment]
    assert run.tags == ("renamed",)
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    art = wandb.Artifact("ckpt", "model")
    art.add_file(str(model))
    run.log_artifact(art, aliases="best")
    wandb.log_artifact(str(model), name="raw", type="model", aliases="latest")
    wandb.use_artifact("other:v1", type="model", aliases="prod")
    wandb.finish()
    other = wandb.init(project="p", settings=wandb.Settings(run_tags="one"),
                       config={"lr": 1, "l": 2}, config_exclude_keys="lr")  # fmt: skip
    assert other.tags == ("one",) and other.config.as_dict() == {"l": 2}
    wandb.finish()
    monkeypatch.setenv("WANDB_TAGS", "x, y")
    third = wandb.init(project="p", settings=settings)
    assert third.tags == ("x", "y")
    wandb.finish()
    finished(settings, run.id)
    db = settings.clickhouse_database
    sink_until(settings, lambda c: scalar(settings, f"SELECT count() FROM {db}.artifacts "
                                          f"WHERE run_id = '{run.id}'") == 3)  # fmt: skip
    got = rows(settings, f"SELECT name, aliases FROM {db}.artifacts WHERE run_id = '{run.id}' "
               "ORDER BY name")  # fmt: skip
    assert [(n, list(a)) for n, a in got] == [
        ("ckpt", ["best"]), ("other:v1", ["prod"]), ("raw", ["latest"])
    ]  # fmt: skip


# --- item 7: finish() while an exception propagates --------------------------------------------
def test_finish_without_exit_code_during_an_exception_records_failed(settings: Settings) -> None:
    run = wandb.init(project="p", settings=settings)
    with pytest.raises(RuntimeError):
        try:
            wandb.log({"loss": 1.0})
            raise RuntimeError("boom")
        finally:
            wandb.finish()
    killed = wandb.init(project="p", settings=settings)
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        killed.finish()  # run.finish(), as accelerate's WandBTracker.finish() calls it
    explicit = wandb.init(project="p", settings=settings)
    try:
        raise ValueError("handled")
    except ValueError:
        explicit.finish(exit_code=0)  # an explicit exit_code wins
    normal = wandb.init(project="p", settings=settings)
    wandb.finish()
    db = settings.clickhouse_database
    sink_until(settings, lambda c: scalar(settings, f"SELECT countIf(type='run_finished') "
                                          f"FROM {db}.events") == 4)  # fmt: skip
    got = dict(rows(settings, f"SELECT run_id, status FROM {db}.runs_current FINAL"))
    assert got == {run.id: "failed", killed.id: "killed", explicit.id: "finished",
                   normal.id: "finished"}  # fmt: skip


# --- item 10: define_metric arguments, calls without a run ------------------------------
def test_define_metric_arguments_not_kept_are_counted(settings: Settings) -> None:
    run = wandb.init(project="p", settings=settings)
    wandb.define_metric("a", summary="median")
    wandb.define_metric("b", summary="min,max")
    wandb.define_metric("c", summary="none")
    wandb.define_metric("d", summary="min", goal="sideways")
    wandb.define_metric("e", summary="min")  # kept as given: not counted
    assert run.refused_by_kind == {"argument": 4}
    result = wandb.finish()
    assert result is not None and result.refused == 4


def test_calls_without_a_run_are_warned_once_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="runstream"):
        wandb.alert("title", "text")
        wandb.alert("title", "text")
        wandb.summary.update({"best": 1})
        wandb.summary["best"] = 2
        wandb.define_metric("loss", summary="min")
        wandb.log_artifact("nothing")
        wandb.watch(object())
    assert runstream.no_run_calls == {
        "wandb.alert": 2, "wandb.summary": 2, "wandb.define_metric": 1,
        "wandb.log_artifact": 1, "wandb.watch": 1,
    }  # fmt: skip
    said = [r.getMessage() for r in caplog.records if "with no run" in r.getMessage()]
    assert len(said) == 5
    assert dict(wandb.summary) == {}


# --- docs: wandb.Error, Histogram, the module names table both ways ------------------------------
def test_wandb_error_is_the_base_error_class() -> None:
    assert wandb.Error is wandb.errors.Error
    assert issubclass(wandb.errors.UsageError, wandb.Error)


def test_wandb_histogram_is_a_runstream_histogram_that_never_raises() -> None:
    assert issubclass(wandb.Histogram, runstream.Histogram)
    with pytest.raises(HistogramError):
        runstream.Histogram([1.0], num_bins=10_000)
    assert wandb.Histogram([1.0], num_bins=10_000).refusal  # refused when logged


# --- the init_trackers message -----------------------------------------------------------
def test_check_arguments_names_the_call_once() -> None:
    from runstream.integrations._lazy_run import check_arguments

    owner = 'init_trackers(init_kwargs={"runstream": ...})'
    with pytest.raises(
        TypeError, match=r"^init_trackers\(init_kwargs=\{\"runstream\": \.\.\.\}\) got 'bogus'"
    ):
        check_arguments(owner, {"bogus": 1}, None)
    with pytest.raises(TypeError, match=r"^RunstreamLogger\(\) got 'bogus'"):
        check_arguments("RunstreamLogger", {"bogus": 1}, None)


def test_an_empty_run_name_is_refused_once_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.test_sdk_local import offline_settings

    run = runstream.init(settings=offline_settings(tmp_path), name="kept")
    with caplog.at_level(logging.WARNING, logger="runstream"):
        run.name = ""
        run.name = None  # type: ignore[assignment]
    assert run.name == "kept"
    assert run.refused_by_kind == {"name": 2}
    assert [r.getMessage() for r in caplog.records] == [
        "runstream: run.name = '' ignored: a name is non-empty text (warned once)"
    ]
    assert run.finish().refused == 2
