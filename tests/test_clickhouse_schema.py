"""The derived ClickHouse schema (migrations 0002+): system_metrics, runs, run_summaries, alerts
and the query views, fed only by what the sink already inserts (events, metrics)."""

from __future__ import annotations

import itertools
import math
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from runstream.errors import ClickHouseError
from runstream.schemas import Topics, encode
from runstream.schemas.events import dump_metric_value
from runstream.settings import Settings
from runstream.sinks import migrations, queries
from runstream.sinks.batch import EventBatch, _insert
from runstream.sinks.clickhouse import connect
from runstream.sinks.consumer import Sink
from runstream.sinks.snapshots import refresh
from tests.helpers import records_of as records
from tests.helpers import rows, scalar, sink_until
from tests.samples import BODIES, sample_event

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 28, 19, 0, 0, 123456, tzinfo=timezone.utc)
NEW_OBJECTS = {
    "run_fields",
    "run_fields_mv",
    "system_metrics",
    "system_metrics_mv",
    "runs",
    "runs_mv",
    "runs_current",
    "runs_computed",
    "run_snapshots",
    "metric_blocks",
    "metric_blocks_mv",
    "run_summaries",
    "run_summaries_mv",
    "run_summaries_current",
    "alerts",
    "alerts_mv",
    "alerts_current",
    "latest_runs",
    "metric_history",
    "best_runs",
    "downsample",
    "histograms",
    "histograms_mv",
    "artifacts",
    "artifacts_mv",
}


def event(
    type_name: str, run_id: str, seq: int, project: str = "schema", **body: Any
) -> dict[str, Any]:
    """An event of ``run_id`` whose ts is T0 + seq seconds; ``body`` replaces sample fields."""
    e = sample_event(type_name, seq=seq, run_id=run_id)
    e["project"] = project
    e["ts"] = (T0 + timedelta(seconds=seq)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    e["body"].update(body)
    return e


def at(seq: int) -> datetime:
    """The ts of an event with this seq, as clickhouse-connect returns DateTime64 (naive UTC)."""
    return (T0 + timedelta(seconds=seq)).replace(tzinfo=None)


class Pipeline:
    """Produce events to Kafka and land them with one sink, one ClickHouse insert per call."""

    def __init__(self, settings: Settings, sink: Sink) -> None:
        self.settings = settings
        self.sink = sink
        self.topic = Topics(settings.topic_prefix).events
        self.producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
        self.sent = 0

    def land(self, events: list[dict[str, Any]]) -> None:
        for e in events:
            self.producer.produce(self.topic, key=e["run_id"].encode(), value=encode(e))
        assert self.producer.flush(30) == 0
        self.sent += len(events)
        db = self.settings.clickhouse_database
        sink_until(
            self.settings,
            lambda c: scalar(self.settings, f"SELECT count() FROM {db}.events") >= self.sent,
            sink=self.sink,
        )
        assert self.sink.stats.dead_letters == 0


@pytest.fixture
def pipeline(settings: Settings) -> Iterator[Pipeline]:
    sink = Sink(settings)
    try:
        yield Pipeline(settings, sink)
    finally:
        sink.close()


def same_float(a: float | None, b: float) -> bool:
    return a is not None and (a == b or (math.isnan(a) and math.isnan(b)))


# --- runs ---------------------------------------------------------------------------------------
def test_runs_current_shows_one_row_per_run_with_status_config_and_tags(
    settings: Settings, pipeline: Pipeline
) -> None:
    """Each run's events arrive over three inserts (three sink batches); the view merges the
    partial states, so every run has exactly one row without FINAL."""
    started: dict[str, Any] = {
        "config": {"lr": 0.001, "optim": {"name": "adam", "betas": [0.9, 0.999]}}
    }
    first = [
        event("run_started", "done", 0, **started, group="g1", job_type="train"),
        event("metrics_logged", "done", 1, step=0, metrics={"loss": 1.0}),
        event("run_started", "failed", 0, group="g1", name=None),
        event("run_started", "alive", 0, group="g2", tags=[]),
        event("run_started", "killed", 0),
        event("run_finished", "killed", 1, status="killed", exit_code=137),
    ]
    second = [
        # Top-level keys are replaced (optim loses betas), null removes a key, new keys add.
        event("config_updated", "done", 2, config={"optim": {"name": "sgd"}, "batch_size": 256}),
        event("heartbeat", "done", 3, step=0),
        event("tags_updated", "done", 4, tags=["promoted"]),
        event("config_updated", "done", 5, config={"lr": 0.05, "batch_size": None}),
        event("metrics_logged", "done", 6, step=1, metrics={"loss": 0.5}),
        event("run_finished", "failed", 1, status="failed", exit_code=1),
        event("heartbeat", "alive", 1, step=None),
        event("run_resumed", "killed", 2, step=1),
    ]
    third = [
        event("summary_updated", "done", 7, summary={"best": 0.5, "note": "ok"}),
        event("run_finished", "done", 8, status="finished", exit_code=0),
        event("heartbeat", "alive", 2, step=41),
        event("alert_raised", "alive", 3, title="slow", text="no step in 10 min", level="error"),
    ]
    for events in (first, second, third):
        pipeline.land(events)
    db = settings.clickhouse_database
    runs = {r["run_id"]: r for r in records(settings, f"SELECT * FROM {db}.runs_current")}
    assert sorted(runs) == ["alive", "done", "failed", "killed"]
    assert scalar(settings, f"SELECT count() FROM {db}.runs_current") == 4

    done = runs["done"]
    assert done["status"] == "finished" and done["exit_code"] == 0
    assert orjson.loads(done["config"]) == {"lr": 0.05, "optim": {"name": "sgd"}}
    assert done["tags"] == ["promoted"]
    assert (done["group"], done["job_type"], done["name"]) == ("g1", "train", "résnet-50 🚀")
    # Every metric of the run by its summary kind (last here), then the keys set explicitly.
    assert orjson.loads(done["summary"]) == {"best": 0.5, "note": "ok", "loss": 0.5}
    assert done["started_at"] == at(0) and done["finished_at"] == at(8)
    assert done["last_event_at"] == at(8) and done["last_heartbeat"] == at(3)
    assert done["last_step"] == 1 and done["last_seq"] == 8

    failed = runs["failed"]
    assert (failed["status"], failed["exit_code"], failed["finished_at"]) == ("failed", 1, at(1))
    assert failed["name"] == "failed", "a run without a name is shown by its id"
    assert orjson.loads(failed["config"]) == BODIES["run_started"]["config"]
    assert failed["tags"] == BODIES["run_started"]["tags"]

    alive = runs["alive"]
    assert (alive["status"], alive["exit_code"], alive["finished_at"]) == ("running", None, None)
    assert alive["last_heartbeat"] == at(2) and alive["last_step"] == 41 and alive["tags"] == []

    killed = runs["killed"]  # killed, then resumed: running again, no finish time or exit code
    assert (killed["status"], killed["exit_code"], killed["finished_at"]) == ("running", None, None)

    # Config filters work on the JSON text, top level and nested.
    assert rows(
        settings,
        f"SELECT run_id FROM {db}.runs_current WHERE JSONExtractFloat(config, 'lr') > 0.01",
    ) == [("done",)]
    assert rows(
        settings,
        f"SELECT run_id FROM {db}.runs_current "
        "WHERE JSONExtractString(config, 'optim', 'name') = 'adam' ORDER BY run_id",
    ) == [("alive",), ("failed",), ("killed",)]

    alerts = records(settings, f"SELECT * FROM {db}.alerts_current")
    assert len(alerts) == 1
    alert = alerts[0]
    assert (alert["rule"], alert["project"], alert["run_id"]) == ("user", "schema", "alive")
    assert (alert["level"], alert["title"], alert["text"]) == ("error", "slow", "no step in 10 min")
    assert alert["fired_at"] == at(3) and alert["resolved_at"] is None
    assert (alert["delivery_state"], alert["attempts"], alert["source_seq"]) == ("pending", 0, 3)
    assert alert["alert_id"] == scalar(
        settings, f"SELECT toString(event_id) FROM {db}.events WHERE type = 'alert_raised'"
    )


# --- run_summaries and metrics views -----------------------------------------------------------
def test_run_summaries_are_exact_across_inserts(settings: Settings, pipeline: Pipeline) -> None:
    """last is by step (not arrival), NaN is counted but never a min/max/mean, ties of min and
    max go to the earliest step, inf takes part like any value."""
    loss = {0: 3.0, 1: 1.0, 2: math.nan, 3: 1.0, 4: 2.0, 5: math.inf, 6: 0.5}
    steps = [0, 1, 2, 3, 6, 4, 5]  # step 6 is logged before 4 and 5: last must still be 0.5
    events = [event("run_started", "s", 0, group="a")]
    for seq, step in enumerate(steps, start=1):
        metrics: dict[str, Any] = {"loss": dump_metric_value(loss[step])}
        if step % 2 == 0:
            metrics["acc"] = step / 10
        events.append(event("metrics_logged", "s", seq, step=step, metrics=metrics))
    pipeline.land(events[:3])
    pipeline.land(events[3:6])
    pipeline.land(events[6:])

    db = settings.clickhouse_database
    summary = {r["name"]: r for r in records(settings, f"SELECT * FROM {db}.run_summaries_current")}
    assert sorted(summary) == ["acc", "loss"]
    s = summary["loss"]
    assert (s["last"], s["min"], s["max"]) == (0.5, 0.5, math.inf)
    assert (s["step_of_min"], s["step_of_max"], s["count"], s["nan_count"]) == (6, 5, 7, 1)
    assert (s["first_step"], s["last_step"]) == (0, 6)
    assert math.isinf(s["mean"])
    a = summary["acc"]
    assert (a["last"], a["min"], a["max"], a["count"], a["nan_count"]) == (0.6, 0.0, 0.6, 4, 0)
    assert (a["step_of_min"], a["step_of_max"]) == (0, 6)
    assert a["mean"] == pytest.approx((0.0 + 0.2 + 0.4 + 0.6) / 4)

    # Ties go to the earliest step, whichever insert each point came in.
    tie = [event("run_started", "tie", 0)] + [
        event("metrics_logged", "tie", i + 1, step=i, metrics={"x": v})
        for i, v in enumerate([2.0, 1.0, 2.0, 1.0])
    ]
    pipeline.land(tie[:3])
    pipeline.land(tie[3:])
    t = records(
        settings, f"SELECT * FROM {db}.run_summaries_current WHERE run_id = {{r:String}}", r="tie"
    )[0]
    assert (t["min"], t["step_of_min"], t["max"], t["step_of_max"]) == (1.0, 1, 2.0, 0)

    latest = queries.latest_runs(connect(settings), db, "schema")
    assert [r["run_id"] for r in latest] == ["s", "tie"]  # same start time: by run id
    assert latest[0]["last"] == {"loss": 0.5, "acc": 0.6}
    assert latest[0]["points"] == {"loss": 7, "acc": 4}
    assert latest[0]["max"]["loss"] == math.inf and latest[0]["status"] == "running"

    history = queries.metric_history(connect(settings), db, "s", "loss")
    assert [p.step for p in history] == list(range(7))
    assert all(same_float(p.value, loss[p.step]) for p in history)
    assert history[3].ts == at(4)  # step 3 was logged by seq 4
    sql_history = rows(
        settings, f"SELECT step, value FROM {db}.metric_history(run = 's', name = 'loss')"
    )
    assert [(step, v) for step, v in sql_history if not math.isnan(v)] == [
        (step, v) for step, v in sorted(loss.items()) if not math.isnan(v)
    ]
    assert [
        p.step
        for p in queries.metric_history(
            connect(settings), db, "s", "loss", project="schema", min_step=2, max_step=4
        )
    ] == [2, 3, 4]


def test_best_runs_picks_one_run_per_group(settings: Settings, pipeline: Pipeline) -> None:
    runs = {  # run: (group, val/loss values by step)
        "a1": ("sweep", [0.9, 0.4, 0.6]),
        "a2": ("sweep", [0.8, 0.3, 0.7]),
        "a3": ("sweep", [math.nan, 0.35, 0.2]),
        "b1": ("", [0.5, 0.45]),
        "c1": ("other", [math.nan]),
    }
    events = []
    for run, (group, values) in runs.items():
        events.append(event("run_started", run, 0, group=group, config={"lr": len(values)}))
        events += [
            event("metrics_logged", run, i + 1, step=i, metrics={"val/loss": dump_metric_value(v)})
            for i, v in enumerate(values)
        ]
    pipeline.land(events)
    db = settings.clickhouse_database
    client = connect(settings)

    best = {r["group"]: r for r in queries.best_runs(client, db, "schema", "val/loss", "min")}
    assert sorted(best) == ["", "sweep"], "a group whose runs only logged NaN has no best run"
    sweep, ungrouped = best["sweep"], best[""]
    assert (sweep["run_id"], sweep["value"], sweep["step"]) == ("a3", 0.2, 2)
    assert (ungrouped["run_id"], ungrouped["value"], ungrouped["step"]) == ("b1", 0.45, 1)
    assert orjson.loads(best["sweep"]["config"]) == {"lr": 3}

    worst = {r["group"]: r for r in queries.best_runs(client, db, "schema", "val/loss", "max")}
    assert (worst["sweep"]["run_id"], worst["sweep"]["value"]) == ("a1", 0.9)

    sql = rows(
        settings,
        f"SELECT `group`, run_id FROM {db}.best_runs(project = 'schema', metric = 'val/loss', "
        "goal = 'min') ORDER BY `group`",
    )
    assert sql == [("", "b1"), ("sweep", "a3")]
    with pytest.raises(Exception, match="goal must be"):
        client.query(f"SELECT * FROM {db}.best_runs(project = 'schema', metric = 'x', goal = 'm')")
    with pytest.raises(ValueError, match="goal"):
        queries.best_runs(client, db, "schema", "val/loss", "median")  # type: ignore[arg-type]
    # User values travel as query parameters, never as SQL text.
    assert queries.best_runs(client, db, "schema' OR 1 = 1 --", "val/loss") == []
    assert queries.latest_runs(client, db, "x') OR ('1' = '1") == []


def test_system_metrics_rows_keep_nan_and_infinities(
    settings: Settings, pipeline: Pipeline
) -> None:
    values = {"cpu.percent": 93.5, "gpu.0.temp": "NaN", "up": "Infinity", "down": "-Infinity"}
    pipeline.land(
        [
            event("run_started", "sys", 0),
            event("system_metrics", "sys", 1, metrics=values),
            event("system_metrics", "sys", 2, metrics={"cpu.percent": -0.0, "mem.rss": 1.5e9}),
        ]
    )
    db = settings.clickhouse_database
    got = rows(
        settings,
        f"SELECT name, seq, ts, value, bitShiftRight(reinterpretAsUInt64(value), 63) "
        f"FROM {db}.system_metrics ORDER BY name, ts",
    )
    assert [(name, seq, ts) for name, seq, ts, _, _ in got] == [
        ("cpu.percent", 1, at(1)),
        ("cpu.percent", 2, at(2)),
        ("down", 1, at(1)),
        ("gpu.0.temp", 1, at(1)),
        ("mem.rss", 2, at(2)),
        ("up", 1, at(1)),
    ]
    by_key = {(name, seq): (value, sign) for name, seq, _, value, sign in got}
    assert by_key[("cpu.percent", 1)] == (93.5, 0)
    assert by_key[("cpu.percent", 2)] == (0.0, 1), "-0.0 keeps its sign"
    assert by_key[("down", 1)][0] == -math.inf and by_key[("up", 1)][0] == math.inf
    assert math.isnan(by_key[("gpu.0.temp", 1)][0])
    assert by_key[("mem.rss", 2)][0] == 1.5e9
    # system metrics do not leak into the training metrics or their summaries
    assert scalar(settings, f"SELECT count() FROM {db}.metrics") == 0
    assert scalar(settings, f"SELECT count() FROM {db}.run_summaries_current") == 0


# --- downsampling -------------------------------------------------------------------------------
POINTS = 100_000
SPIKE_STEP = 61_803
DIP_STEP = 27_182


def _insert_points(settings: Settings, run_id: str, name: str, n: int) -> list[float]:
    """n points of a smooth curve with one spike and one dip, straight into `metrics`."""
    values = [math.sin(step / 5_000) for step in range(n)]
    values[SPIKE_STEP] = 1e9
    values[DIP_STEP] = -1e9
    values[5] = math.nan
    steps = list(range(n))
    connect(settings).insert(
        "metrics",
        [
            ["schema"] * n,
            [run_id] * n,
            [name] * n,
            steps,
            values,
            [T0 + timedelta(milliseconds=s) for s in steps],
            [s + 1 for s in steps],
        ],
        column_names=["project", "run_id", "name", "step", "value", "ts", "seq"],
        column_oriented=True,
        settings={"async_insert": 0},
    )
    return values


def test_downsample_returns_n_buckets_that_keep_every_spike(settings: Settings) -> None:
    values = _insert_points(settings, "long", "loss", POINTS)
    db = settings.clickhouse_database
    client = connect(settings)

    buckets = queries.downsample(client, db, "long", "loss", buckets=1000)
    assert len(buckets) == 1000
    assert [b.bucket for b in buckets] == list(range(1000))
    assert all(b.count == POINTS // 1000 for b in buckets)
    assert buckets[0].first_step == 0 and buckets[-1].last_step == POINTS - 1
    for left, right in itertools.pairwise(buckets):
        assert right.first_step == left.last_step + 1, "buckets tile the step range"
    finite = [v for v in values if not math.isnan(v)]
    assert max(b.max for b in buckets if b.max is not None) == max(finite) == 1e9
    assert min(b.min for b in buckets if b.min is not None) == min(finite) == -1e9
    spike = next(b for b in buckets if b.first_step <= SPIKE_STEP <= b.last_step)
    assert (spike.max, spike.step_of_max) == (1e9, SPIKE_STEP)
    dip = next(b for b in buckets if b.first_step <= DIP_STEP <= b.last_step)
    assert (dip.min, dip.step_of_min) == (-1e9, DIP_STEP)
    assert buckets[0].nan_count == 1 and sum(b.nan_count for b in buckets) == 1
    assert buckets[0].first == values[0] and buckets[-1].last == values[-1]
    assert buckets[500].first == values[50_000] and buckets[500].last == values[50_099]

    sql = rows(
        settings,
        f"SELECT bucket, count, min, max FROM {db}.downsample(run = 'long', name = 'loss', "
        "buckets = 7) ORDER BY bucket",
    )
    assert len(sql) == 7 and sum(r[1] for r in sql) == POINTS
    assert max(r[3] for r in sql) == 1e9 and min(r[2] for r in sql) == -1e9

    assert queries.downsample(client, db, "long", "nope") == []
    with pytest.raises(ValueError):
        queries.downsample(client, db, "long", "loss", buckets=0)

    # The summary of the same points, kept by the view on `metrics`, agrees.
    s = records(settings, f"SELECT * FROM {db}.run_summaries_current WHERE run_id = 'long'")[0]
    assert (s["count"], s["nan_count"], s["max"], s["step_of_max"]) == (POINTS, 1, 1e9, SPIKE_STEP)
    assert (s["min"], s["step_of_min"], s["last"]) == (-1e9, DIP_STEP, values[-1])


def test_downsample_of_a_few_points_gives_one_bucket_per_point(settings: Settings) -> None:
    db = settings.clickhouse_database
    connect(settings).insert(
        "metrics",
        [["schema", "few", "x", step, float(step), T0, step + 1] for step in (10, 20, 30)],
        column_names=["project", "run_id", "name", "step", "value", "ts", "seq"],
        settings={"async_insert": 0},
    )
    few = queries.downsample(connect(settings), db, "few", "x", buckets=1000)
    assert [(b.first_step, b.last_step, b.count, b.min, b.max) for b in few] == [
        (10, 10, 1, 10.0, 10.0),
        (20, 20, 1, 20.0, 20.0),
        (30, 30, 1, 30.0, 30.0),
    ]


def test_a_retried_sink_insert_lands_once_in_the_derived_tables(settings: Settings) -> None:
    """The sink retries a failed batch with the same deduplication token; the views' target
    tables keep their own deduplication window, so sums (count, mean) are not doubled."""
    db = settings.clickhouse_database
    client = connect(settings)
    batch = EventBatch()
    for offset, e in enumerate(
        [
            event("system_metrics", "retry", 0, metrics={"cpu": 1.0}),
            *(
                event("metrics_logged", "retry", s, step=s, metrics={"loss": float(s - 1)})
                for s in range(1, 11)
            ),
        ]
    ):
        batch.add("events", 0, offset, b"retry", encode(e))  # keyed by its run id
    assert not batch.dead_letters
    for _ in range(3):
        assert _insert(client, db, batch.accepted, batch.dedup_token("events")) == []
    refresh(client, db)  # as the sink does after its writes
    assert scalar(settings, f"SELECT count() FROM {db}.events") == 11
    assert scalar(settings, f"SELECT count() FROM {db}.metrics") == 10
    assert rows(settings, f"SELECT count, mean FROM {db}.run_summaries_current") == [(10, 4.5)]
    assert scalar(settings, f"SELECT count() FROM {db}.system_metrics") == 1
    assert scalar(settings, f"SELECT last_seq FROM {db}.runs_current") == 10


# --- migrations ---------------------------------------------------------------------------------
def _derived_snapshot(settings: Settings) -> list[tuple[Any, ...]]:
    db = settings.clickhouse_database
    return [
        *rows(settings, f"SELECT * FROM {db}.run_summaries_current ORDER BY run_id, name"),
        *rows(settings, f"SELECT * FROM {db}.runs_current ORDER BY run_id"),
        *rows(settings, f"SELECT * FROM {db}.system_metrics ORDER BY run_id, name, ts"),
        *rows(settings, f"SELECT * FROM {db}.alerts_current ORDER BY alert_id"),
        *rows(settings, f"SELECT * FROM {db}.artifacts ORDER BY run_id, seq"),
    ]


def _run_events(run_id: str, first_seq: int, n: int) -> list[dict[str, Any]]:
    events = []
    for seq in range(first_seq, first_seq + n):
        if seq == 0:
            events.append(event("run_started", run_id, 0, config={"lr": 0.1}))
        elif seq % 5 == 0:
            events.append(event("system_metrics", run_id, seq, metrics={"cpu": float(seq)}))
        elif seq % 7 == 0:
            events.append(event("alert_raised", run_id, seq, title=f"at {seq}"))
        else:
            events.append(event("metrics_logged", run_id, seq, step=seq, metrics={"loss": 1 / seq}))
    return events


@pytest.fixture
def old_database(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Settings, Pipeline]]:
    """A database created when only migration 0001 existed, with a sink of that version."""
    old = settings.with_overrides(
        clickhouse_database=f"{settings.clickhouse_database}_old",
        sink_group=f"{settings.sink_group}-old",
    )
    everything = migrations.available()
    monkeypatch.setattr(migrations, "available", lambda: everything[:1])
    assert migrations.migrate(old) == ["0001_events_and_metrics"]
    # The sink of that version wrote `metrics` itself; today's sink leaves it to the view of 0007.
    client = connect(old)
    for statement in everything[6].statements(old.clickhouse_database):
        client.command(statement)
    sink = Sink(old)
    try:
        yield old, Pipeline(old, sink)
    finally:
        sink.close()
        drop = f"DROP DATABASE IF EXISTS {old.clickhouse_database}"
        connect(old, database="default").command(drop)


def test_migrating_a_0001_database_backfills_and_then_follows(
    old_database: tuple[Settings, Pipeline], monkeypatch: pytest.MonkeyPatch
) -> None:
    old, pipeline = old_database
    db = old.clickhouse_database
    pipeline.land(
        [
            *_run_events("up", 0, 30),
            event("run_finished", "other", 0),
            event("artifact_logged", "other", 1),  # an artifact of the old sink: backfilled
        ]
    )
    tables = {r[0] for r in rows(old, f"SELECT name FROM system.tables WHERE database = '{db}'")}
    assert not tables & NEW_OBJECTS

    monkeypatch.undo()
    assert migrations.migrate(old) == [
        "0002_system_metrics",
        "0003_runs",
        "0004_run_summaries",
        "0005_alerts",
        "0006_query_views",
        "0007_metrics_from_events",
        "0008_live_state",
        "0009_exact_documents_and_summaries",
        "0010_alert_deliveries",
        "0011_run_details",
        "0012_histograms_and_artifacts",
        "0013_faster_runs_current",
        "0014_run_snapshots",
        "0015_metric_blocks",
    ]
    tables = {r[0] for r in rows(old, f"SELECT name FROM system.tables WHERE database = '{db}'")}
    assert tables >= NEW_OBJECTS

    def check(last_seq: int) -> None:
        logged = [s for s in range(1, last_seq + 1) if s % 5 and s % 7]
        summary = records(old, f"SELECT * FROM {db}.run_summaries_current WHERE run_id = 'up'")
        assert len(summary) == 1
        s = summary[0]
        assert (s["count"], s["first_step"], s["last_step"]) == (len(logged), 1, logged[-1])
        assert s["mean"] == pytest.approx(sum(1 / x for x in logged) / len(logged))
        assert (s["min"], s["step_of_min"]) == (1 / logged[-1], logged[-1])
        cpu = rows(old, f"SELECT seq, value FROM {db}.system_metrics ORDER BY seq")
        assert cpu == [(x, float(x)) for x in range(5, last_seq + 1, 5)]
        alerts = scalar(old, f"SELECT count() FROM {db}.alerts_current")
        assert alerts == len([x for x in range(1, last_seq + 1) if x % 7 == 0 and x % 5])
        runs = {r["run_id"]: r for r in records(old, f"SELECT * FROM {db}.runs_current")}
        assert runs["up"]["last_seq"] == last_seq and runs["up"]["status"] == "running"
        assert orjson.loads(runs["up"]["config"]) == {"lr": 0.1}
        assert orjson.loads(runs["up"]["summary"]) == {"loss": 1 / logged[-1]}
        assert runs["other"]["status"] == "finished"

    check(29)  # the backfill
    assert rows(
        old, f"SELECT run_id, seq, name, size, aliases, file_count FROM {db}.artifacts"
    ) == [("other", 1, "model.pt", 123456789, ["best", "v3"], 1)]
    before = _derived_snapshot(old)
    assert migrations.migrate(old) == []
    # A crash after the statements but before their record: they all run again, harmlessly.
    client = connect(old, database="default")
    for migration in migrations.available()[1:]:
        for statement in migration.statements(db):
            client.command(statement)
    assert _derived_snapshot(old) == before

    pipeline.land(_run_events("up", 30, 20))  # now through the materialized views
    check(49)


def test_backfill_racing_the_view_counts_every_point_once(settings: Settings) -> None:
    """Rows inserted between the view's creation and the backfill are the view's, rows before
    it the backfill's; the seq cut-off splits them exactly."""
    db = settings.clickhouse_database
    client = connect(settings, database="default")
    client.command(f"DROP VIEW {db}.run_summaries_mv")  # as before migration 0004
    insert = connect(settings)

    def points(seqs: range) -> None:
        insert.insert(
            "metrics",
            [["schema", "race", "m", s, float(s), T0, s] for s in seqs],
            column_names=["project", "run_id", "name", "step", "value", "ts", "seq"],
            settings={"async_insert": 0},
        )

    points(range(0, 100))  # before the migration
    _, view, backfill, _ = next(
        m for m in migrations.available() if m.name == "run_summaries"
    ).statements(db)
    client.command(view)
    points(range(100, 150))  # the sink kept writing: the view sees these
    client.command(backfill)
    client.command(backfill)
    s = records(settings, f"SELECT * FROM {db}.run_summaries_current")[0]
    assert (s["count"], s["min"], s["max"], s["last"]) == (150, 0.0, 149.0, 149.0)
    assert s["mean"] == pytest.approx(74.5)


# --- cluster rendering --------------------------------------------------------------------------
def test_local_rendering_is_the_files_unchanged() -> None:
    for migration in migrations.available():
        assert migration.statements("rs", None) == migration.statements("rs")
        for statement in migration.statements("rs"):
            assert migrations.render(statement, None) == [statement]


def test_cluster_rendering_makes_replicated_local_tables_and_distributed_ones() -> None:
    by_name = {m.name: m.statements("rs", cluster="prod") for m in migrations.available()}
    events_local, events, metrics_local, metrics = by_name["events_and_metrics"]
    assert events_local.startswith(
        "CREATE TABLE IF NOT EXISTS `rs`.events_local ON CLUSTER `prod`\n(\n    event_id"
    )
    assert (
        "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', "
        "'{replica}')\nPARTITION BY toYYYYMM(ts)" in events_local
    )
    assert "non_replicated_deduplication_window" in events_local  # the rest is kept as written
    assert events == (
        "CREATE TABLE IF NOT EXISTS `rs`.events ON CLUSTER `prod` AS `rs`.events_local "
        "ENGINE = Distributed(`prod`, 'rs', 'events_local', cityHash64(run_id))"
    )
    assert "Gorilla" in metrics_local and "metrics_local" in metrics

    runs = by_name["runs"]
    assert "ReplicatedAggregatingMergeTree(" in runs[0]
    view = next(s for s in runs if s.startswith("CREATE MATERIALIZED VIEW"))
    assert view.startswith("CREATE MATERIALIZED VIEW IF NOT EXISTS `rs`.runs_mv ON CLUSTER `prod`")
    assert "TO `rs`.runs_local" in view and "FROM `rs`.events_local" in view
    assert "`rs`.events\n" not in view and "`rs`.events " not in view
    backfill = next(s for s in runs if s.startswith("INSERT"))
    assert "INSERT INTO `rs`.runs\n" in backfill and "FROM `rs`.events\n" in backfill
    assert backfill.endswith("SETTINGS distributed_product_mode = 'local'")
    current = next(s for s in runs if s.startswith("CREATE VIEW"))
    assert current.startswith("CREATE VIEW IF NOT EXISTS `rs`.runs_current ON CLUSTER `prod` AS")
    assert "FROM `rs`.runs AS r" in current  # readers go through the Distributed table

    alerts = by_name["alerts"]
    assert (
        "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', "
        "'{replica}', updated_at)" in alerts[0]
    )
    summaries_backfill = next(s for s in by_name["run_summaries"] if s.startswith("INSERT"))
    assert summaries_backfill.endswith(
        "SETTINGS join_use_nulls = 1, distributed_product_mode = 'local'"
    )
    every = [s for statements in by_name.values() for s in statements]
    assert all("ON CLUSTER `prod`" in s for s in every if s.startswith("CREATE"))
    assert all("{database}" not in s.split("ENGINE")[0] for s in every)
    with pytest.raises(ClickHouseError, match="cannot render"):
        migrations.render("ALTER TABLE `rs`.events ADD COLUMN x UInt8", "prod")


def test_migrate_in_cluster_mode_runs_every_statement_on_the_cluster() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.commands: list[str] = []

        def command(self, sql: str) -> None:
            self.commands.append(sql)

        def query(self, sql: str) -> Any:
            return type("Result", (), {"result_rows": []})()

        def insert(self, *args: Any, **kwargs: Any) -> None:
            pass

    client = Recorder()
    name = f"c{uuid.uuid4().hex[:8]}"
    applied = migrations.migrate(Settings.load(clickhouse_database=name), client, cluster="prod")
    assert len(applied) == len(migrations.available())
    assert client.commands[0] == f"CREATE DATABASE IF NOT EXISTS `{name}` ON CLUSTER `prod`"
    assert "schema_migrations ON CLUSTER `prod`" in client.commands[1]
    assert "ReplicatedReplacingMergeTree(" in client.commands[1]
    ddl = [c for c in client.commands if not c.startswith("INSERT")]
    assert all("ON CLUSTER `prod`" in c for c in ddl)
