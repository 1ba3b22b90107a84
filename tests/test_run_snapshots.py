"""runs_current from stored rows (migration 0014): it says what runs_computed (0013's view) says,
after any events in any batches, and the sink keeps it so, crashes included: a batch's offsets are
committed only after its runs' rows are refreshed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runstream.schemas import Topics, encode, event_dict, uuid7
from runstream.settings import Settings
from runstream.sinks import migrations, snapshots
from runstream.sinks.batch import EventBatch
from runstream.sinks.clickhouse import connect
from runstream.sinks.dedup import SeenSequences
from tests.conftest import Services, isolated_settings
from tests.helpers import rows, scalar, sink_until
from tests.samples import PRODUCER

pytestmark = pytest.mark.integration

DIFFER = "SELECT count() FROM (SELECT * FROM {a} EXCEPT SELECT * FROM {b})"


def agree(settings: Settings) -> None:
    """runs_current and runs_computed hold the same rows (both ways: none missing, none extra)."""
    for a, b in (("runs_current", "runs_computed"), ("runs_computed", "runs_current")):
        assert scalar(settings, DIFFER.format(a=a, b=b)) == 0, (a, b)


def event(project: str, run_id: str, seq: int, type_: str, body: dict[str, Any]) -> bytes:
    ts = f"2026-11-30T10:{seq // 60 % 60:02d}:{seq % 60:02d}.000001Z"
    return encode(event_dict(id=uuid7(), type=type_, project=project, run_id=run_id, seq=seq,
                             ts=ts, producer=PRODUCER, body=body))  # fmt: skip


# --- what runs send: every event kind that changes a run's row -------------------------------
keys = st.sampled_from(["lr", "loss", "acc", "val/loss", "val/acc", "note", "epochs"])
values = st.one_of(
    st.none(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.sampled_from(["NaN", "Infinity", "text", ""]),
)
metric_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.integers(-1000, 1000),
    st.sampled_from(["NaN", "Infinity", "-Infinity"]),
)
bodies = st.one_of(
    st.tuples(st.just("run_started"), st.fixed_dictionaries({
        "name": st.sampled_from(["", "a", "b"]),
        "config": st.dictionaries(keys, values, max_size=3),
        "tags": st.lists(st.sampled_from(["x", "y"]), max_size=2)})),
    st.tuples(st.just("config_updated"), st.fixed_dictionaries(
        {"config": st.dictionaries(keys, values, max_size=3)})),
    st.tuples(st.just("summary_updated"), st.fixed_dictionaries(
        {"summary": st.dictionaries(keys, values, max_size=3)})),
    st.tuples(st.just("metrics_logged"), st.fixed_dictionaries({
        "step": st.integers(0, 50), "metrics": st.dictionaries(keys, metric_values, min_size=1,
                                                               max_size=3)})),
    st.tuples(st.just("metric_defined"), st.fixed_dictionaries({
        "name": st.sampled_from(["loss", "val/*", "acc"]),
        "summary": st.sampled_from(["min", "max", "mean", "last"])})),
    st.tuples(st.just("run_updated"), st.fixed_dictionaries({"name": st.sampled_from(["c", "d"])})),
    st.tuples(st.just("heartbeat"), st.fixed_dictionaries({"step": st.integers(0, 50)})),
    st.tuples(st.just("run_finished"), st.fixed_dictionaries({
        "status": st.sampled_from(["finished", "failed"]), "exit_code": st.integers(0, 3)})),
)  # fmt: skip
runs_sent = st.lists(
    st.tuples(st.sampled_from(["p", "q"]), st.sampled_from(["r1", "r2", "r3"]), bodies),
    min_size=1,
    max_size=30,
)


@pytest.fixture(scope="module")
def world(services: Services) -> Iterator[Settings]:
    yield isolated_settings(services, "snap")


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(sent=runs_sent, cuts=st.lists(st.integers(1, 30), min_size=1, max_size=6),
       again=st.booleans())  # fmt: skip
def test_stored_rows_say_what_runs_computed_says_after_every_batch(
    world: Settings, sent: list[tuple[str, str, tuple[str, dict[str, Any]]]], cuts: list[int],
    again: bool,
) -> None:  # fmt: skip
    """Events of a few runs in two projects, cut into batches at random, each written as the
    sink writes it and its runs refreshed: after every batch, the stored rows are the computed
    ones (a batch sent twice, as after a crash, changes nothing)."""
    client = connect(world)
    database = world.clickhouse_database
    for table in ("events", "runs", "run_fields", "run_summaries", "metrics", "run_updates",
                  "run_snapshots"):  # fmt: skip
        client.command(f"TRUNCATE TABLE {table}")
    seqs: dict[tuple[str, str], int] = {}
    messages = []
    for project, run_id, (type_, body) in sent:
        seq = seqs.get((project, run_id), 0)
        seqs[(project, run_id)] = seq + 1
        messages.append((run_id, event(project, run_id, seq, type_, body)))
    seen = SeenSequences(client, database)
    start, offset = 0, 0
    for cut in [*cuts, len(messages)]:
        part = messages[start : start + cut]
        start += cut
        if not part:
            continue
        for _ in range(2 if again else 1):
            batch = EventBatch()
            for i, (run_id, value) in enumerate(part):
                batch.add("events", 0, offset + i, run_id.encode(), value)
            assert not batch.dead_letters, batch.dead_letters[0].reason
            batch.write(client, database, seen)
            runs = {(a.event.project, a.event.run_id) for a in batch.accepted}
            snapshots.refresh(client, database, runs)
            agree(world)
        offset += len(part)
    assert scalar(world, "SELECT count() FROM runs_current") == len(seqs)


def test_refresh_of_every_run_and_of_nothing(world: Settings) -> None:
    client = connect(world)
    database = world.clickhouse_database
    client.command("TRUNCATE TABLE run_snapshots")
    assert snapshots.refresh(client, database, []) == 0
    assert scalar(world, "SELECT count() FROM run_snapshots") == 0
    assert snapshots.refresh(client, database) == -1
    agree(world)
    assert snapshots.refresh(client, database, [("p", "no such run")]) == 1
    agree(world)  # a run without events gets no row


def test_migration_0014_fills_the_table_from_what_is_there(services: Services) -> None:
    test_settings = isolated_settings(services, "mig14")
    client = connect(test_settings)
    batch = EventBatch()
    for i, (type_, body) in enumerate([
        ("run_started", {"name": "old", "config": {"lr": 0.1}}),
        ("metrics_logged", {"step": 0, "metrics": {"loss": 2.5}}),
        ("run_finished", {"status": "finished", "exit_code": 0}),
    ]):  # fmt: skip
        batch.add("events", 0, i, b"old", event("p", "old", i, type_, body))
    database = test_settings.clickhouse_database
    batch.write(client, database, SeenSequences(client, database))
    # As a database from before 0014: no stored rows, 0014 not applied.
    client.command("TRUNCATE TABLE run_snapshots")
    client.command(
        "ALTER TABLE schema_migrations DELETE WHERE version = 14 SETTINGS mutations_sync = 2"
    )
    assert scalar(test_settings, "SELECT count() FROM runs_current") == 0
    assert migrations.migrate(test_settings) == ["0014_run_snapshots"]
    assert rows(test_settings, "SELECT run_id, status, summary FROM runs_current") == [
        ("old", "finished", '{"loss":2.5}')
    ]
    agree(test_settings)
    migration = next(m for m in migrations.available() if m.version == 14)
    for statement in migration.statements(test_settings.clickhouse_database):  # again: harmless
        client.command(statement)
    assert scalar(test_settings, "SELECT count() FROM run_snapshots") == 1


# --- the sink: refresh, then commit ----------------------------------------------------------
def _send(settings_: Settings, project: str, run_id: str, events: list[tuple[str, dict[str, Any]]],
          seq0: int = 0) -> None:  # fmt: skip
    producer = Producer({"bootstrap.servers": settings_.kafka_bootstrap})
    for i, (type_, body) in enumerate(events):
        producer.produce(Topics(settings_.topic_prefix).events, key=run_id.encode(),
                         value=event(project, run_id, seq0 + i, type_, body))  # fmt: skip
    assert producer.flush(10) == 0


def _committed(settings_: Settings) -> int:
    """Sum of the sink group's committed offsets over the events topic's partitions."""
    consumer = Consumer({"bootstrap.servers": settings_.kafka_bootstrap,
                         "group.id": settings_.sink_group})  # fmt: skip
    topic = Topics(settings_.topic_prefix).events
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
    finally:
        consumer.close()
    return sum(max(0, tp.offset) for tp in found)


LIFE = [
    ("run_started", {"name": "live", "config": {"lr": 0.01}, "tags": ["t"]}),
    ("metrics_logged", {"step": 0, "metrics": {"loss": 1.5, "acc": 0.25}}),
    ("metrics_logged", {"step": 1, "metrics": {"loss": 0.5, "acc": "NaN"}}),
]


def test_the_sink_keeps_runs_current_as_new_as_the_events(services: Services) -> None:
    test_settings = isolated_settings(services, "snapsink")
    _send(test_settings, "p", "live", LIFE)

    def shows(summary: str, status: str) -> Any:
        def done(client: Any) -> bool:
            found = client.query("SELECT summary, status FROM runs_current").result_rows
            return [tuple(r) for r in found] == [(summary, status)]

        return done

    sink = sink_until(test_settings, shows('{"acc":"NaN","loss":0.5}', "running"), timeout=60)
    _send(test_settings, "p", "live", [("summary_updated", {"summary": {"best": 7}}),
                                       ("run_finished", {"status": "finished", "exit_code": 0})],
          seq0=3)  # fmt: skip
    sink_until(test_settings, shows('{"acc":"NaN","best":7,"loss":0.5}', "finished"), timeout=60)
    agree(test_settings)
    assert _committed(test_settings) == 5
    assert sink.stats.insert_failures == 0


KILLED_AT_REFRESH = """
import os, signal
from runstream.settings import Settings
from runstream.sinks import consumer

def refresh(client, database, runs=None):
    os.kill(os.getpid(), signal.SIGKILL)  # the batch is in ClickHouse, its runs not refreshed

consumer.refresh = refresh
sink = consumer.Sink(Settings.load())
while True:
    sink.poll(0.2)
"""


def test_a_sink_killed_before_the_refresh_committed_nothing_and_the_next_one_refreshes(
    services: Services,
) -> None:
    """The crash this order exists for: a batch written, the sink killed (-9) before its runs
    were refreshed. Its offsets were not committed, so the next sink reads the batch again,
    finds its events stored (nothing written twice) and refreshes the run."""
    test_settings = isolated_settings(services, "snapcrash")
    _send(test_settings, "p", "live", LIFE)
    env = {
        "RUNSTREAM_KAFKA_BOOTSTRAP": test_settings.kafka_bootstrap,
        "RUNSTREAM_CLICKHOUSE_URL": test_settings.clickhouse_url,
        "RUNSTREAM_CLICKHOUSE_DATABASE": test_settings.clickhouse_database,
        "RUNSTREAM_TOPIC_PREFIX": test_settings.topic_prefix,
        "RUNSTREAM_SINK_GROUP": test_settings.sink_group,
        "RUNSTREAM_SINK_METRICS_PORT": "0",
        "RUNSTREAM_SINK_SESSION_TIMEOUT": "6",
    }
    killed = subprocess.run([sys.executable, "-c", KILLED_AT_REFRESH], env={**os.environ, **env},
                            capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert scalar(test_settings, "SELECT count() FROM events") > 0
    assert scalar(test_settings, "SELECT count() FROM runs_computed") == 1
    assert scalar(test_settings, "SELECT count() FROM runs_current") == 0
    assert _committed(test_settings) == 0

    sink_until(test_settings, lambda c: c.query("SELECT count() FROM runs_current").result_rows
               == [(1,)])  # fmt: skip
    agree(test_settings)
    assert scalar(test_settings, "SELECT count() FROM events") == len(LIFE)  # none twice
    assert _committed(test_settings) == len(LIFE)


def test_a_refresh_that_fails_is_retried_before_the_commit(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runstream.sinks import consumer

    test_settings = isolated_settings(services, "snapfail", sink_snapshot_seconds=0.0)
    calls: list[int] = []
    committed_at_failure: list[int] = []

    def failing_once(client: Any, database: str, runs: Any = None) -> int:
        calls.append(1)
        if len(calls) == 1:
            committed_at_failure.append(_committed(test_settings))
            raise ConnectionError("ClickHouse went away")
        return snapshots.refresh(client, database, runs)

    monkeypatch.setattr(consumer, "refresh", failing_once)
    _send(test_settings, "p", "live", LIFE)
    sink = sink_until(test_settings, lambda c: c.query("SELECT count() FROM runs_current")
                      .result_rows == [(1,)])  # fmt: skip
    assert committed_at_failure == [0]  # nothing committed while the refresh failed
    assert len(calls) >= 2 and sink.stats.insert_failures >= 1
    assert _committed(test_settings) == len(LIFE)
    agree(test_settings)
    summary = scalar(test_settings, "SELECT summary FROM runs_current")
    assert summary == '{"acc":"NaN","loss":0.5}'
