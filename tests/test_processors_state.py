"""Issue 10, item 8 against the real broker: a run of 100,000 metric names and a config of a
whole event do not stop the processors; every summary is right, a normal run goes on, a worker
killed with SIGKILL is replaced by one that restores the split state, and the sink stores the
records as they are now shaped."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer

from runstream.processors.aggregates import run_key
from runstream.schemas import Topics
from runstream.schemas.limits import MAX_RECORD_BYTES
from runstream.settings import Settings
from tests.helpers import records_of, sink_until, topic_records
from tests.samples import sample_event
from tests.test_processors import (
    comparable,
    expected_state,
    latest,
    produce,
    published_all,
    run_events,
    wait_for,
    worker,
)

pytestmark = pytest.mark.integration

N = 100_000
PER_EVENT = 5_000
NAMES = [f"layer{i // 1000:03d}/unit{i % 1000:03d}" for i in range(N)]


def step_of_every_name(step: int, seq0: int, value: float | None = None) -> list[dict[str, Any]]:
    events = []
    for start in range(0, N, PER_EVENT):
        e = sample_event("metrics_logged", seq=seq0 + len(events), run_id="big")
        e["body"] = {
            "step": step,
            "metrics": {
                name: float(start + j) if value is None else value
                for j, name in enumerate(NAMES[start : start + PER_EVENT])
            },
        }
        events.append(e)
    return events


def big_summaries(settings: Settings) -> dict[str, dict[str, Any]]:
    """Latest summary of each of the big run's metrics on the summaries topic."""
    prefix = run_key("vision", "big") + "\x1f"
    return {
        key.decode()[len(prefix) :]: record
        for key, record in topic_records(settings, Topics(settings.topic_prefix).summaries)
        if key.decode().startswith(prefix)
    }


def largest_record(settings: Settings, topic: str) -> int:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"sizes-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    largest = idle = 0
    while idle < 4:
        messages = [m for m in consumer.consume(1000, 0.5) if m.error() is None]
        idle = idle + 1 if not messages else 0
        for m in messages:
            largest = max(largest, len(m.key() or b"") + len(m.value() or b""))
    consumer.close()
    return largest


def test_a_run_of_100000_metric_names_and_a_huge_config_do_not_stop_the_processors(
    settings: Settings, tmp_path: Path
) -> None:
    started = sample_event("run_started", seq=0, run_id="big")
    wide = sample_event("run_started", seq=0, run_id="wide-config")
    wide["body"]["config"] = {"lr": 0.1, "blob": "x" * 850_000}  # a whole event's worth
    normal = run_events("n1", range(50))
    first = [started, *step_of_every_name(0, 1), wide, *normal]
    produce(settings, first)
    log = tmp_path / "a.log"

    def all_at(count: int) -> bool:
        found = big_summaries(settings)
        return len(found) == N and all(s["count"] == count for s in found.values())

    with worker(settings, log) as process:
        wait_for(published_all(settings, expected_state(normal)), 120, "the normal run folded")
        wait_for(lambda: all_at(1), 180, "every metric of the big run published")
        assert process.poll() is None
        process.send_signal(signal.SIGKILL)
        process.wait()
    time.sleep(12)  # the group's session of the dead member expires (see test_processors.py)

    # The successor restores the split state: the next step counts once on top of the first.
    second = step_of_every_name(1, 1 + N // PER_EVENT, value=-1.0)
    more = run_events("n1", range(50, 80), start=False, seq0=51)
    produce(settings, [*second, *more])
    with worker(settings, tmp_path / "b.log") as process:
        wait_for(lambda: all_at(2), 180, "the next step of every metric after the restart")
        expected = expected_state(normal + more)
        wait_for(published_all(settings, expected), 60, "the normal run went on")
        assert process.poll() is None
    found = big_summaries(settings)
    for i in (0, 1, 4_999, 5_000, 54_321, N - 1):
        s = found[NAMES[i]]
        assert (s["count"], s["min"], s["max"], s["last"], s["last_step"]) == (
            2, -1.0, max(float(i), -1.0), -1.0, 1
        ), NAMES[i]  # fmt: skip
        assert s["mean"] == (i - 1.0) / 2
    wrong = [
        name
        for i, name in enumerate(NAMES)
        if (found[name]["count"], found[name]["min"], found[name]["max"])
        != (2, -1.0, max(float(i), -1.0))
    ]
    assert not wrong, wrong[:5]
    live = latest(settings)
    assert comparable({k: live[k] for k in expected}) == comparable(expected)
    wide_record = live[run_key("vision", "wide-config")]
    assert wide_record["config"] == {"lr": 0.1} and "'blob'" in wide_record["left_out"]["config"]

    for name in ("a.log", "b.log"):
        text = (tmp_path / name).read_text(errors="replace")
        assert "MSG_SIZE_TOO_LARGE" not in text and "Traceback" not in text, text[-3000:]
    topics = Topics(settings.topic_prefix)
    changelog = f"{settings.topic_prefix}-processors-runs-changelog"
    for topic in (changelog, topics.runs, topics.summaries):
        assert 0 < largest_record(settings, topic) <= MAX_RECORD_BYTES, topic

    # The sink stores the records as they are: 100,000 live summaries, the bounded config.
    db = settings.clickhouse_database
    count = f"SELECT countIf(count = 2) FROM {db}.live_summaries_current WHERE run_id = 'big'"
    sink_until(settings, lambda c: c.query(count).result_rows[0][0] == N, timeout=240)
    [row] = records_of(
        settings,
        f"SELECT * FROM {db}.live_summaries_current WHERE run_id = 'big' AND name = {{n:String}}",
        n=NAMES[54_321],
    )
    assert (row["count"], row["min"], row["max"]) == (2, -1.0, 54_321.0)
    [wide_row] = records_of(
        settings, f"SELECT * FROM {db}.live_runs_current WHERE run_id = 'wide-config'"
    )
    assert orjson.loads(wide_row["config"]) == {"lr": 0.1}
