"""Helpers of the integration tests: run the sink until rows landed, read what landed."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from runstream.settings import Settings
from runstream.sinks.batch import EVENT_COLUMNS
from runstream.sinks.clickhouse import connect
from runstream.sinks.consumer import Sink
from runstream.sinks.snapshots import refresh


def land_events(settings: Settings, rows: list[list[Any]]) -> None:
    """Rows of ``events`` (in EVENT_COLUMNS' order) inserted straight into ClickHouse as one
    sink batch, then every run's stored row refreshed, as the sink does after its writes."""
    client = connect(settings)
    client.insert("events", rows, column_names=list(EVENT_COLUMNS), settings={"async_insert": 0})
    refresh(client, settings.clickhouse_database)


def sink_until(
    settings: Settings, done: Callable[[Any], bool], timeout: float = 60.0, sink: Sink | None = None
) -> Sink:
    """Run a sink in this thread until ``done(client)`` holds; fails after ``timeout`` seconds."""
    own = sink is None
    sink = sink or Sink(settings)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            sink.poll(0.2)
            sink.flush()
            if done(sink.client):
                return sink
        raise AssertionError(f"the sink did not land the expected rows within {timeout}s")
    finally:
        if own:
            sink.close()


def write_runs(settings: Settings, project: str, runs: dict[str, dict[str, Any]]) -> None:
    """Log ``runs`` (run id -> spec: name, config, tags, group, job_type, log {metric: [values]},
    exit_code and, optionally, status) with the SDK into ``project``; run the sink until all
    of them are finished in ``runs_current``."""
    import runstream

    for run_id, spec in runs.items():
        run = runstream.init(
            settings=settings,
            id=run_id,
            project=project,
            name=spec["name"],
            config=spec["config"],
            tags=spec["tags"],
            group=spec["group"] or None,
            job_type=spec["job_type"] or None,
        )
        for metric, values in spec["log"].items():
            for value in values:
                run.log({metric: value})
        assert run.finish(exit_code=spec["exit_code"], status=spec.get("status")).ok

    def landed(client: Any) -> bool:
        done = client.query(
            "SELECT count() FROM runs_current WHERE project = {p:String} "
            "AND status != 'running' AND config != '{}'",
            parameters={"p": project},
        ).result_rows[0][0]
        return bool(done == len(runs))

    sink_until(settings, landed)


def scalar(settings: Settings, sql: str) -> Any:
    return connect(settings).query(sql).result_rows[0][0]


def rows(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in connect(settings).query(sql).result_rows]


def records_of(settings: Settings, sql: str, **parameters: Any) -> list[dict[str, Any]]:
    """Rows as dicts by column name."""
    result = connect(settings).query(sql, parameters=parameters)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def topic_records(settings: Settings, *topics: str) -> list[tuple[bytes, dict[str, Any]]]:
    """Every record on ``topics`` so far, as (key, JSON value), in each partition's order."""
    import orjson
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"read-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe(list(topics))
    found: list[tuple[bytes, dict[str, Any]]] = []
    idle = 0
    while idle < 4:  # two quiet seconds: the end
        messages = [m for m in consumer.consume(1000, 0.5) if m.error() is None]
        idle = idle + 1 if not messages else 0
        found += [(m.key() or b"", orjson.loads(m.value() or b"null")) for m in messages]
    consumer.close()
    return found
