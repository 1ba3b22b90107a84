"""Issue 10 item 7: every view of a run's summary agrees, across resumed sessions.

A run defines ``val/loss`` as summarised by its minimum and logs 1.0 down to 0.19; a second
session resumes the same id, defines it again and logs 0.5 down to 0.41. ``runs_current.summary``,
``run_summaries_current`` and the processors' ``live_summaries_current`` must all say 0.19, and
a ``mean`` metric the mean over the points of both sessions. Tried with today's SDK (whose
closing ``summary_updated`` carries values derived from one session) and with events as an SDK
sends them that puts only the keys set explicitly there.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson
import pytest

import runstream
from runstream.settings import Settings
from tests.helpers import records_of, sink_until
from tests.samples import same, sample_event
from tests.test_processors import produce, worker

pytestmark = pytest.mark.integration

SESSION_1 = {"val/loss": [1.0, 0.8, 0.6, 0.4, 0.19], "score": [0.5] * 5, "val/acc": [0.2, 0.9]}
SESSION_2 = {"val/loss": [0.5, 0.45, 0.41], "score": [0.9] * 5, "val/acc": [0.3]}
KINDS = {"val/loss": "min", "score": "mean", "val/*": "max"}
# What every view must say: val/loss by its minimum over both sessions, score by its mean over
# both sessions, val/acc set explicitly in session 2 (the key set by the user wins over max).
EXPECTED = {"val/loss": 0.19, "score": 0.7, "val/acc": 0.25}


def _sdk_session(settings: Settings, values: dict[str, list[float]], **init: Any) -> None:
    run = runstream.init(settings=settings, id="sdk-run", project="agree", **init)
    for name, kind in KINDS.items():
        run.define_metric(name, summary=kind)  # type: ignore[arg-type]
    for name, points in values.items():
        for value in points:
            run.log({name: value})
    if "resume" in init:
        run.summary["val/acc"] = 0.25
        run.summary["epochs"] = 2.0
    else:
        run.summary["note"] = "session one"
    assert run.finish().ok


def _crafted_events(run_id: str) -> list[dict[str, Any]]:
    """Two sessions as an SDK that sends only explicit keys in its closing summary."""
    events: list[dict[str, Any]] = []

    def add(type_name: str, body: dict[str, Any]) -> None:
        event = sample_event(type_name, seq=len(events), run_id=run_id)
        event["project"] = "agree"
        event["body"] = body
        events.append(event)

    step = 0
    for session, values in ((1, SESSION_1), (2, SESSION_2)):
        if session == 1:
            add("run_started", {"name": run_id, "config": {"lr": 1.0}})
        else:
            add("run_resumed", {"step": step})
        for name, kind in KINDS.items():
            add("metric_defined", {"name": name, "summary": kind})
        if session == 1:
            add("metric_defined", {"name": "w[0]*", "summary": "min"})
            add("metric_defined", {"name": "nan/min", "summary": "min"})
            add("metric_defined", {"name": "nan/mean", "summary": "mean"})
        for name, points in values.items():
            for value in points:
                add("metrics_logged", {"step": step, "metrics": {name: value}})
                step += 1
        if session == 1:
            odd = {"w[0]/x": 2.0, "nan/min": "NaN", "nan/mean": "NaN", "up": "Infinity"}
            add("metrics_logged", {"step": step, "metrics": odd})
            add("metrics_logged", {"step": step + 1, "metrics": {"w[0]/x": 3.0}})
            step += 2
            add("summary_updated", {"summary": {"note": "session one"}})
            add("summary_updated", {"summary": {"note": "session one"}})  # the closing one
        else:
            add("summary_updated", {"summary": {"val/acc": 0.25}})
            add("summary_updated", {"summary": {"epochs": 2.0}})
            add("summary_updated", {"summary": {"val/acc": 0.25, "epochs": 2.0}})  # closing
        add("run_finished", {"exit_code": 0, "status": "finished"})
    return events


def _summary(settings: Settings, run_id: str) -> dict[str, Any]:
    row = records_of(
        settings,
        f"SELECT summary FROM {settings.clickhouse_database}.runs_current"
        " WHERE run_id = {r:String}",
        r=run_id,
    )
    parsed: dict[str, Any] = orjson.loads(row[0]["summary"])
    return parsed


def _by_name(settings: Settings, table: str, run_id: str) -> dict[str, dict[str, Any]]:
    rows = records_of(
        settings,
        f"SELECT * FROM {settings.clickhouse_database}.{table} WHERE run_id = {{r:String}}",
        r=run_id,
    )
    return {row["name"]: row for row in rows}


def test_every_view_of_a_resumed_runs_summary_agrees(settings: Settings, tmp_path: Path) -> None:
    quiet = settings.with_overrides(system_metrics_interval=0)
    _sdk_session(quiet, SESSION_1)
    _sdk_session(quiet, SESSION_2, resume="allow")
    produce(settings, _crafted_events("crafted-run"))
    db = settings.clickhouse_database
    landed = (
        f"SELECT count() FROM {db}.live_summaries_current AS l"
        f" INNER JOIN {db}.run_summaries_current AS d USING (project, run_id, name)"
        f" WHERE l.count = d.count"
    )
    with worker(settings, tmp_path / "worker.log"):
        sink_until(settings, lambda c: c.query(landed).result_rows[0][0] == 3 + 7, timeout=120)

    for run_id in ("sdk-run", "crafted-run"):
        summary = _summary(settings, run_id)
        derived = _by_name(settings, "run_summaries_current", run_id)
        live = _by_name(settings, "live_summaries_current", run_id)
        assert (
            summary["val/loss"] == 0.19 == derived["val/loss"]["min"] == live["val/loss"]["value"]
        )
        assert summary["score"] == derived["score"]["mean"] == pytest.approx(0.7, rel=1e-12)
        assert live["score"]["value"] == pytest.approx(summary["score"], rel=1e-12)
        assert summary["val/acc"] == 0.25  # set explicitly: wins over the derived max (0.9)
        assert live["val/acc"]["value"] == derived["val/acc"]["max"] == 0.9
        assert summary["epochs"] == 2.0 and type(summary["epochs"]) is float
        assert summary["note"] == "session one"
        assert set(summary) == {*derived, "epochs", "note"}

    crafted = _summary(settings, "crafted-run")
    derived = _by_name(settings, "run_summaries_current", "crafted-run")
    live = _by_name(settings, "live_summaries_current", "crafted-run")
    # A pattern is a prefix ('w[0]*' is no glob); NaN points are left out of min, max and mean.
    assert crafted["w[0]/x"] == 2.0 == live["w[0]/x"]["value"]
    assert crafted["nan/min"] is None and derived["nan/min"]["min"] is None
    assert live["nan/min"]["value"] is None
    assert crafted["nan/mean"] == "NaN" and math.isnan(derived["nan/mean"]["mean"])
    assert math.isnan(live["nan/mean"]["value"])
    assert crafted["up"] == "Infinity" and live["up"]["value"] == math.inf

    # The config too, in both places: 1.0 stays a float.
    query = "SELECT config FROM {db}.{table} WHERE run_id = 'crafted-run'"
    for table in ("runs_current", "live_runs_current"):
        config = orjson.loads(records_of(settings, query.format(db=db, table=table))[0]["config"])
        assert config == {"lr": 1.0} and type(config["lr"]) is float, table


def test_the_sdks_own_summary_says_what_the_stored_one_says(settings: Settings) -> None:
    """A fresh user's finding: run.summary in the training process followed other rules than
    the stored summary for NaN points, steps logged out of order and keys set to None."""
    run = runstream.init(settings=settings, id="own", project="agree")
    run.define_metric("mean_nan", summary="mean")
    run.define_metric("min_nan", summary="min")
    run.define_metric("max_all_nan", summary="max")
    run.define_metric("mean_all_nan", summary="mean")
    for value in (1.0, math.nan, 3.0):
        run.log({"mean_nan": value, "plain": value})
    for value in (math.nan, math.nan, 3.0):
        run.log({"min_nan": value})
    for _ in range(2):
        run.log({"max_all_nan": math.nan, "mean_all_nan": math.nan})
    run.log({"late": 1.0}, step=100)
    run.log({"late": 2.0}, step=5)  # a lower step: not the last value
    run.log({"late": 3.0}, step=100)  # the same highest step again: the latest of it
    run.log({"acc": 0.5})
    run.summary["acc"] = None  # removed
    run.summary["note"] = "kept"
    own = dict(run.summary)
    assert run.finish().ok
    done = "SELECT count() FROM runs_current WHERE run_id = 'own' AND status = 'finished'"
    sink_until(settings, lambda c: c.query(done).result_rows[0][0] == 1)
    stored = orjson.loads(records_of(settings, "SELECT summary FROM runs_current "
                                               "WHERE run_id = 'own'")[0]["summary"])  # fmt: skip
    stored = {k: math.nan if v == "NaN" else v for k, v in stored.items()}
    assert sorted(own) == sorted(stored)
    for key, value in stored.items():
        assert same(own[key], value), (key, own[key], value)
    assert own["mean_nan"] == 2.0 and own["min_nan"] == 3.0 and own["max_all_nan"] is None
    assert math.isnan(own["mean_all_nan"]) and own["late"] == 3.0 and "acc" not in own
