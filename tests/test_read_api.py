"""The Python read API (runstream.Api, runstream.read.{Run, Table}) against the real ClickHouse.

The data is inserted straight into `events` (the materialized views derive metrics, runs_current
and the rest), once per module, through the ordinary client: never through the read layer."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import runstream
from runstream.errors import (
    FilterError,
    QueryError,
    ReadArgumentError,
    ReadRefusedError,
    RunNotFoundError,
)
from runstream.read import Api, Run, Table
from runstream.read.run import parse_document
from runstream.schemas import json_safe_metrics
from runstream.settings import Settings
from runstream.sinks.clickhouse import connect
from tests.conftest import Services, isolated_settings
from tests.helpers import land_events, scalar

T0 = datetime(2026, 11, 1, 12, 0, 0, tzinfo=timezone.utc)
STEPS = 100
SPIKE = 37


def event(type_name: str, run_id: str, seq: int, project: str = "vision", **body: Any) -> list[Any]:
    """A row of `events`: ts is T0 + seq seconds."""
    return [
        uuid.uuid4(),
        1,
        type_name,
        project,
        run_id,
        seq,
        T0 + timedelta(seconds=seq),
        "runstream-python",
        "0.1.0",
        "gpu-01",
        4242,
        orjson.dumps(body).decode(),
        0,
        seq,
    ]


def loss(step: int) -> float:
    return 1000.0 if step == SPIKE else 1.0 / (step + 1)


def run_one_events() -> list[list[Any]]:
    """r1: finished, config with exact numbers, loss every step (a spike at SPIKE), acc every
    second step, epoch every 10 steps as the step metric of loss."""
    rows = [
        event(
            "run_started",
            "r1",
            0,
            name="first",
            config={"lr": 0.001, "batch": 32, "big": 2**63 + 5, "opt": {"name": "adam"}},
            tags=["baseline", "a"],
            group="g1",
            job_type="train",
            notes="n1",
        ),
        event("metric_defined", "r1", 1, name="loss", step_metric="epoch", summary="min"),
    ]
    seq = 2
    for step in range(STEPS):
        metrics: dict[str, float] = {"loss": loss(step)}
        if step % 2 == 0:
            metrics["acc"] = step / 100
        if step % 10 == 0:
            metrics["epoch"] = float(step // 10)
        rows.append(event("metrics_logged", "r1", seq, step=step, metrics=metrics))
        seq += 1
    rows.append(
        event("metrics_logged", "r1", seq, step=STEPS, metrics=json_safe_metrics({"nan": math.nan}))
    )
    rows.append(event("system_metrics", "r1", seq + 1, metrics={"cpu": 50.0, "gpu.0.temp": 70.0}))
    rows.append(
        event("alert_raised", "r1", seq + 2, title="Spike", text="loss spiked", level="warn")
    )
    rows.append(
        event(
            "histogram_logged",
            "r1",
            seq + 3,
            step=5,
            histograms={"grad/w": {"bins": [-1.0, 0.0, 1.0], "counts": [3, 5]}},
        )
    )
    rows.append(event("summary_updated", "r1", seq + 4, summary={"best": 0.5, "inf": "Infinity"}))
    rows.append(event("run_finished", "r1", seq + 5, exit_code=0, status="finished"))
    return rows


def other_events() -> list[list[Any]]:
    return [
        event("run_started", "r2", 0, name="second", config={"lr": 0.01, "batch": 64}, tags=["b"]),
        event("metrics_logged", "r2", 1, step=0, metrics={"loss": 0.25}),
        event("run_started", "r3", 0, name="third", config={"lr": 0.1}, tags=[], group="g2"),
        event("metrics_logged", "r3", 1, step=0, metrics={"loss": 0.75}),
        event("run_finished", "r3", 2, exit_code=1, status="failed"),
        event("run_started", "r4", 0, project="audio", name="fourth", config={}),
    ]


@pytest.fixture(scope="module")
def seeded(services: Services) -> Settings:
    settings = isolated_settings(services, "api")
    land_events(settings, run_one_events() + other_events())
    return settings


@pytest.fixture(scope="module")
def api(seeded: Settings) -> Iterator[Api]:
    with runstream.Api(settings=seeded) as api:
        yield api


# --- projects, runs, run --------------------------------------------------------------------


def test_projects_count_runs_newest_first(api: Api) -> None:
    projects = api.projects()
    assert projects.columns == ["project", "runs", "running", "last_activity"]
    records = {r["project"]: r for r in projects}
    assert records["vision"]["runs"] == 3 and records["vision"]["running"] == 1
    assert records["audio"]["runs"] == 1
    assert projects.first("project") == "vision"  # r1's events are the newest


def test_run_reads_every_field_and_parses_documents_exactly(api: Api) -> None:
    run = api.run("r1")
    assert isinstance(run, Run)
    assert (run.id, run.project, run.name, run.status) == ("r1", "vision", "first", "finished")
    assert run.tags == ["baseline", "a"] and run.group == "g1" and run.job_type == "train"
    assert run.notes == "n1" and run.exit_code == 0 and run.last_step == STEPS
    assert run.config == {"lr": 0.001, "batch": 32, "big": 2**63 + 5, "opt": {"name": "adam"}}
    assert isinstance(run.config["batch"], int) and isinstance(run.config["big"], int)
    assert run.summary["best"] == 0.5 and run.summary["inf"] == math.inf
    assert math.isnan(run.summary["nan"])
    assert run.summary["loss"] == 1 / STEPS  # min, as metric_defined chose
    assert run.started_at == T0 and run.started_at.tzinfo is not None
    assert run.finished_at is not None and run.finished_at > run.started_at
    assert api.run("vision/r1").id == "r1" and api.run("r1", project="vision").id == "r1"


def test_parse_document_keeps_ints_and_reads_non_finite_strings() -> None:
    doc = parse_document(
        '{"a": 1, "b": 1.0, "c": "NaN", "d": ["-Infinity"], "e": 123456789012345678901}'
    )
    assert doc["a"] == 1 and isinstance(doc["a"], int) and isinstance(doc["b"], float)
    assert math.isnan(doc["c"]) and doc["d"] == [-math.inf] and doc["e"] == 123456789012345678901
    assert parse_document("") == {}


def test_unknown_run_says_how_to_list_runs(api: Api) -> None:
    with pytest.raises(RunNotFoundError) as info:
        api.run("nope'; DROP TABLE events --")
    assert isinstance(info.value, LookupError)
    assert "nope'; DROP TABLE events --" in str(info.value) and "runs(" in str(info.value)
    with pytest.raises(RunNotFoundError):
        api.run("r1", project="audio")


def test_runs_of_a_project_with_total_newest_first(api: Api) -> None:
    runs = api.runs("vision")
    assert runs.total == 3 and len(runs) == 3
    assert [r.id for r in runs] == ["r1", "r2", "r3"]  # same started_at: by run id
    assert {r.id for r in runs} == {"r1", "r2", "r3"}
    assert api.runs().total == 4
    assert api.runs(where=" ", order_by="").total == 4  # an empty search box


def test_runs_where_and_order_by(api: Api) -> None:
    assert [r.id for r in api.runs("vision", order_by="config.lr")] == ["r1", "r2", "r3"]
    assert [r.id for r in api.runs("vision", order_by="-config.lr")] == ["r3", "r2", "r1"]
    assert [r.id for r in api.runs(where="config.lr >= 0.01", order_by="config.lr")] == ["r2", "r3"]
    runs = api.runs("vision", where='"baseline" in tags or status == "failed"', order_by="name")
    assert [r.id for r in runs] == ["r1", "r3"]
    # Runs without the key come last, in both directions.
    assert [r.id for r in api.runs(order_by="config.batch")][-2:] in (["r3", "r4"], ["r4", "r3"])
    assert [r.id for r in api.runs(order_by="-config.batch")][:2] == ["r2", "r1"]
    assert [r.id for r in api.runs(order_by=["status", "-name"])] == ["r3", "r1", "r2", "r4"]


def test_runs_page_with_limit_and_offset(api: Api) -> None:
    pages = [api.runs(order_by="name", limit=2, offset=o) for o in (0, 2, 4)]
    assert [[r.id for r in p] for p in pages] == [["r1", "r4"], ["r2", "r3"], []]
    assert [p.total for p in pages] == [4, 4, 4]
    assert api.runs(limit=0).total == 4 and len(api.runs(limit=0)) == 0
    assert [r.id for r in api.runs(order_by="name", offset=3)] == ["r3"]
    with pytest.raises(ReadArgumentError):
        api.runs(limit=-1)


def test_runs_frames_keep_types(api: Api) -> None:
    runs = api.runs("vision", order_by="name")
    frame = runs.to_pandas()
    assert list(frame["run_id"]) == ["r1", "r2", "r3"]
    assert str(frame["last_step"].dtype) == "int64"
    assert str(frame["started_at"].dtype).startswith("datetime64[us")
    assert frame["config"][0].startswith("{")  # JSON text, parsed lazily by Run
    polars = runs.to_polars()
    assert polars["run_id"].to_list() == ["r1", "r2", "r3"]
    assert str(polars["tags"].dtype).startswith("List")
    arrow = runs.to_arrow()
    assert arrow.num_rows == 3 and arrow.schema.field("started_at").type.tz == "UTC"
    records = runs.to_records()
    assert records[0]["run_id"] == "r1" and records[0]["tags"] == ["baseline", "a"]


def test_empty_project_gives_empty_tables_with_columns(api: Api) -> None:
    runs = api.runs("nothing-here")
    assert runs.total == 0 and len(runs) == 0 and list(runs) == []
    assert "run_id" in runs.columns and "config" in runs.columns
    frame = runs.to_pandas()
    assert len(frame) == 0 and "summary" in frame.columns
    assert api.alerts(project="nothing-here").columns[:2] == ["alert_id", "rule"]


# --- hostile input ---------------------------------------------------------------------------


def test_hostile_where_order_by_and_keys_are_refused_or_bound(api: Api, seeded: Settings) -> None:
    db = seeded.clickhouse_database
    before = scalar(seeded, f"SELECT count() FROM {db}.events")
    with pytest.raises(FilterError):
        api.runs(where="1; DROP TABLE events")
    with pytest.raises(FilterError):
        api.runs(order_by="name; DROP TABLE events")
    with pytest.raises(FilterError):
        api.runs(order_by="tags")
    assert api.runs(where='name == "\'; DROP TABLE events --"').total == 0
    assert api.runs(order_by='config["\'; DROP TABLE events --"]').total == 4
    run = api.run("r1")
    table = run.history(["loss", "x'); DROP TABLE events --"])
    assert table.columns == ["step", "loss", "x'); DROP TABLE events --"]
    assert all(v is None for v in table["x'); DROP TABLE events --"])
    with pytest.raises(ReadRefusedError):
        api.sql("DROP TABLE events")
    with pytest.raises((ReadRefusedError, QueryError)):
        api.sql("SELECT * FROM file('/etc/passwd')")
    assert scalar(seeded, f"SELECT count() FROM {db}.events") == before


def test_a_regex_only_re2_refuses_is_a_filter_error(api: Api) -> None:
    with pytest.raises(FilterError) as info:
        api.runs(where='name =~ "(?=a)b"')
    assert "RE2" in str(info.value)


def test_sql_binds_parameters(api: Api) -> None:
    table = api.sql("SELECT name FROM runs_current WHERE run_id = {run:String}", {"run": "r2"})
    assert table.to_records() == [{"name": "second"}]


# --- history ---------------------------------------------------------------------------------


def test_history_of_one_key_is_every_point(api: Api) -> None:
    table = api.run("r1").history("loss")
    assert table.columns == ["step", "loss"]
    assert table["step"] == list(range(STEPS))
    assert table["loss"] == [loss(s) for s in range(STEPS)]
    frame = table.to_pandas()
    assert str(frame["step"].dtype) == "int64" and str(frame["loss"].dtype) == "float64"


def test_history_of_several_keys_is_wide_with_nulls(api: Api) -> None:
    table = api.run("r1").history(["loss", "acc"], min_step=10, max_step=13)
    assert table.to_records() == [
        {"step": 10, "loss": loss(10), "acc": 0.1},
        {"step": 11, "loss": loss(11), "acc": None},
        {"step": 12, "loss": loss(12), "acc": 0.12},
        {"step": 13, "loss": loss(13), "acc": None},
    ]
    all_keys = api.run("r1").history()
    assert all_keys.columns == ["step", "acc", "epoch", "loss", "nan"]
    assert len(all_keys) == STEPS + 1 and math.isnan(all_keys["nan"][-1])


def test_history_x_time_and_relative_time(api: Api) -> None:
    run = api.run("r1")
    times = run.history("loss", x="time", max_step=2)
    assert times.columns == ["time", "loss"]
    assert times["time"] == [T0 + timedelta(seconds=2 + s) for s in range(3)]
    relative = run.history(["loss", "acc"], x="relative_time", max_step=2)
    assert relative["relative_time"] == [2.0, 3.0, 4.0]


def test_history_against_a_step_metric(api: Api) -> None:
    run = api.run("r1")
    assert run.step_metrics() == ["epoch"]
    table = run.history("loss", x="epoch", min_step=8, max_step=21)
    assert table.columns == ["epoch", "loss"]
    assert table["epoch"] == [0.0, 0.0] + [1.0] * 10 + [2.0, 2.0]
    assert table["loss"] == [loss(s) for s in range(8, 22)]
    with pytest.raises(ReadArgumentError) as info:
        run.history("loss", x="nope")
    assert "epoch" in str(info.value)


def test_samples_keep_the_spike(api: Api) -> None:
    run = api.run("r1")
    table = run.history(["loss", "acc"], samples=10)
    assert table.columns == ["step", "loss", "loss.min", "loss.max", "acc", "acc.min", "acc.max"]
    assert len(table) <= 10
    assert max(table["loss.max"]) == 1000.0
    assert min(table["loss.min"]) == loss(STEPS - 1)
    one = run.history("loss", samples=1)
    assert one.to_records() == [
        {
            "step": STEPS - 1,
            "loss": loss(STEPS - 1),
            "loss.min": loss(STEPS - 1),
            "loss.max": 1000.0,
        }
    ]
    zoomed = run.history("loss", samples=5, min_step=40, max_step=49)
    assert zoomed["step"] == [41, 43, 45, 47, 49] and max(zoomed["loss.max"]) == loss(40)
    with pytest.raises(ReadArgumentError):
        run.history("loss", samples=0)


def test_samples_against_a_step_metric(api: Api) -> None:
    table = api.run("r1").history("loss", x="epoch", samples=10)
    assert table["epoch"] == [float(e) for e in range(10)]


def test_unknown_key_alone_gives_no_rows(api: Api) -> None:
    table = api.run("r1").history("nope")
    assert table.columns == ["step", "nope"] and len(table) == 0


def test_scan_history_pages_in_step_order(api: Api) -> None:
    rows = list(api.run("r1").scan_history(["loss", "acc"], page_size=7))
    assert [r["step"] for r in rows] == list(range(STEPS))
    assert rows[3] == {"step": 3, "loss": loss(3), "acc": None}
    assert rows[4] == {"step": 4, "loss": loss(4), "acc": 0.04}
    ranged = list(api.run("r1").scan_history("loss", page_size=3, min_step=5, max_step=9))
    assert [r["step"] for r in ranged] == [5, 6, 7, 8, 9]


# --- other reads ----------------------------------------------------------------------------


def test_events_system_metrics_alerts_histograms_metric_names(api: Api) -> None:
    run = api.run("r1")
    events = run.events()
    assert events["seq"] == sorted(events["seq"]) and len(events) == STEPS + 8
    assert events.first("type") == "run_started"
    assert run.metric_names() == ["acc", "epoch", "loss", "nan"]
    system = run.system_metrics()
    assert {r["name"]: r["value"] for r in system} == {"cpu": 50.0, "gpu.0.temp": 70.0}
    assert run.system_metrics("cpu")["name"] == ["cpu"]
    alerts = run.alerts()
    assert alerts["title"] == ["Spike"] and api.alerts(run_id="r1")["title"] == ["Spike"]
    hist = run.histograms()
    assert hist.to_records()[0]["bins"] == [-1.0, 0.0, 1.0]
    assert hist["counts"] == [[3.0, 5.0]] and len(run.histograms("nope")) == 0


def test_table_without_arrow_uses_rows(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    import runstream.read.api as module

    monkeypatch.setattr(module, "has_arrow", lambda: False)
    table = api.run("r1").history(["loss", "acc"], max_step=1)
    assert isinstance(table, Table) and table._arrow is None
    assert table.to_records() == [
        {"step": 0, "loss": 1.0, "acc": 0.0},
        {"step": 1, "loss": 0.5, "acc": None},
    ]
    assert list(table.to_pandas()["loss"]) == [1.0, 0.5]
    assert table.to_polars()["step"].to_list() == [0, 1]
    assert table.to_arrow().column("step").to_pylist() == [0, 1]


def test_no_keys_gives_the_x_column_alone(api: Api) -> None:
    run = api.run("r1")
    for x in ("step", "time", "relative_time", "epoch"):
        table = run.history([], x=x)
        assert table.columns == [x] and len(table) == 0
    assert list(run.scan_history([])) == []
    assert api.run("r4", project="audio").history().columns == ["step"]


def test_history_frames_in_polars_and_arrow(api: Api) -> None:
    table = api.run("r1").history(["loss", "acc"], x="time", max_step=3)
    polars = table.to_polars()
    assert polars.columns == ["time", "loss", "acc"]
    assert str(polars["time"].dtype).startswith("Datetime") and polars["acc"].null_count() == 2
    arrow = table.to_arrow()
    assert str(arrow.schema.field("loss").type) == "double"
    assert table.to_records()[1]["acc"] is None


def test_a_missing_library_names_its_extra(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from runstream.errors import MissingExtraError

    table = api.run("r1").history("loss", max_step=1)
    monkeypatch.setitem(sys.modules, "polars", None)
    with pytest.raises(MissingExtraError) as info:
        table.to_polars()
    assert info.value.extra == "polars" and "runstream[polars]" in str(info.value)
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(MissingExtraError) as info:
        table.to_pandas()
    assert info.value.extra == "pandas"


def test_import_runstream_does_not_load_the_read_side() -> None:
    import subprocess
    import sys

    code = (
        "import sys, runstream; "
        "assert 'clickhouse_connect' not in sys.modules and 'runstream.read' not in sys.modules; "
        "api = runstream.Api; from runstream.read import Api, Run, Table, Runs; "
        "assert api is Api; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_sinks_queries_take_a_reader_or_a_client(api: Api, seeded: Settings) -> None:
    from runstream.sinks import queries

    db = seeded.clickhouse_database
    by_reader = queries.metric_history(api.reader, db, "r1", "loss", max_step=2)
    by_client = queries.metric_history(connect(seeded), db, "r1", "loss", max_step=2)
    assert [p.value for p in by_reader] == [p.value for p in by_client] == [1.0, 0.5, 1 / 3]
    latest = queries.latest_runs(api.reader, db, "vision")
    assert {r["run_id"] for r in latest} == {"r1", "r2", "r3"}


def test_samples_agree_with_the_downsample_view(api: Api, seeded: Settings) -> None:
    from runstream.sinks import queries

    buckets = queries.downsample(api.reader, seeded.clickhouse_database, "r1", "loss", 7)
    table = api.run("r1").history("loss", samples=7).to_records()
    assert [r["step"] for r in table] == [b.last_step for b in buckets]
    assert [r["loss"] for r in table] == [b.last for b in buckets]
    assert [r["loss.min"] for r in table] == [b.min for b in buckets]
    assert [r["loss.max"] for r in table] == [b.max for b in buckets]


@hsettings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(key=st.text(max_size=30))
def test_any_key_text_is_bound_never_pasted(api: Api, seeded: Settings, key: str) -> None:
    db = seeded.clickhouse_database
    run = api.run("r1")
    table = run.history(["loss", key], max_step=1) if key != "loss" else run.history(key)
    assert table.columns[-1] == key
    quoted = orjson.dumps(key).decode()
    assert len(api.runs(order_by=f"-config[{quoted}]")) == 4
    assert api.runs(where=f"config[{quoted}] == {quoted}").total == 0
    assert scalar(seeded, f"SELECT count() FROM {db}.events") == len(
        run_one_events() + other_events()
    )


@pytest.mark.parametrize(
    ("order_by", "reason", "caret"),
    [
        ("-tags", "tags is a list", 1),
        ("config.", "expected a key name after '.'", 7),
        ("-config.", "expected a key name after '.'", 8),
        ("summary.loss desc", "'-name' sorts descending", 13),
        (" -nme", "unknown name 'nme'", 2),
    ],
)
def test_order_by_errors_point_at_the_name(
    api: Api, order_by: str, reason: str, caret: int
) -> None:
    with pytest.raises(FilterError) as info:
        api.runs(order_by=order_by)
    assert reason in info.value.reason and info.value.position == caret


def test_a_run_id_with_a_slash_is_no_project_path(settings: Settings) -> None:
    rows = [
        event("run_started", "x/y", 0, project="p1"),
        event("run_started", "y", 0, project="x"),
        event("run_started", "a/b", 0, project="p1"),
    ]
    land_events(settings, rows)
    with runstream.Api(settings=settings) as api:
        assert (api.run("x/y").project, api.run("x/y").id) == ("x", "y")  # project/id first
        assert api.run("x/y", project="p1").id == "x/y"
        assert (api.run("a/b").project, api.run("a/b").id) == ("p1", "a/b")  # no project "a"


def test_sql_turns_datetime_seconds_back_into_times(api: Api) -> None:
    table = api.sql(
        "SELECT toStartOfMinute(ts) AS minute, toUInt32(count()) AS n FROM metrics "
        "WHERE run_id = {run:String} GROUP BY minute ORDER BY minute",
        {"run": "r1"},
    )
    assert str(table.to_arrow().schema.field("minute").type) == "timestamp[s, tz=UTC]"
    assert str(table.to_arrow().schema.field("n").type) == "uint32"  # a number stays one
    assert table.first("minute") == T0 and sum(table["n"]) == STEPS + STEPS // 2 + STEPS // 10 + 1
