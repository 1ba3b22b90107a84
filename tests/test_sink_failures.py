"""The sink under failure: kill -9 at each stage, ClickHouse away, several sinks in a group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import runstream
from runstream.deploy.local.admin import ensure_topics
from runstream.deploy.local.stack import LocalStack
from runstream.settings import Settings
from runstream.sinks.consumer import Sink
from runstream.sinks.migrations import migrate
from runstream.sinks.observability import MetricsServer, SinkStats, scrape
from tests.conftest import services_only_stack
from tests.helpers import rows, scalar, sink_until

pytestmark = pytest.mark.integration

RUNS = 6
STEPS = 300


def log_runs(
    settings: Settings, runs: int = RUNS, steps: int = STEPS, prefix: str = "run"
) -> list[str]:
    quiet = settings.with_overrides(system_metrics_interval=0, heartbeat_interval=3600)
    ids = []
    for index in range(runs):
        run = runstream.init(settings=quiet, project="sinktest", id=f"{prefix}-{index}")
        for step in range(steps):
            run.log({"loss": 1.0 / (step + 1), "acc": step / steps}, step=step)
        assert run.finish().ok
        ids.append(run.id)
    return ids


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def expected_events(runs: int = RUNS, steps: int = STEPS) -> int:
    return runs * (steps + 2)  # run_started, the steps, run_finished (no explicit summary)


def assert_exactly_once(settings: Settings, runs: int = RUNS, steps: int = STEPS) -> None:
    db = settings.clickhouse_database
    assert scalar(settings, f"SELECT count() FROM {db}.events") == expected_events(runs, steps)
    assert scalar(settings, f"SELECT count() FROM {db}.metrics") == runs * steps * 2
    per_run = rows(
        settings,
        f"SELECT run_id, count(), uniqExact(seq), max(seq) FROM {db}.events GROUP BY run_id",
    )
    assert all(count == uniq == high + 1 == steps + 2 for _, count, uniq, high in per_run)


CRASHING_SINK = """
import os, signal, sys
from runstream.settings import Settings
from runstream.sinks import batch
from runstream.sinks.consumer import Sink

stage = sys.argv[1]
original = batch.EventBatch.write

def write(self, client, database, seen):
    if stage == "before_insert":
        os.kill(os.getpid(), signal.SIGKILL)
    original(self, client, database, seen)
    if stage == "after_insert":  # written to ClickHouse, offsets not committed
        os.kill(os.getpid(), signal.SIGKILL)

batch.EventBatch.write = write
sink = Sink(Settings.load())
if stage == "after_commit":
    sink.poll(5.0)
    while sink.flush() == 0 and sink.stats.batches == 0:
        sink.poll(1.0)
    os.kill(os.getpid(), signal.SIGKILL)
while True:
    sink.poll(1.0)
    sink.flush()
"""


@pytest.mark.parametrize("stage", ["before_insert", "after_insert", "after_commit"])
def test_kill_9_at_each_stage_leaves_every_event_exactly_once(
    settings: Settings, stage: str
) -> None:
    log_runs(settings)
    small_batches = settings.with_overrides(sink_batch_rows=500, sink_session_timeout=6)
    env = {
        "RUNSTREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "RUNSTREAM_CLICKHOUSE_URL": settings.clickhouse_url,
        "RUNSTREAM_CLICKHOUSE_DATABASE": settings.clickhouse_database,
        "RUNSTREAM_TOPIC_PREFIX": settings.topic_prefix,
        "RUNSTREAM_SINK_GROUP": settings.sink_group,
        "RUNSTREAM_SINK_BATCH_ROWS": "500",
        "RUNSTREAM_SINK_METRICS_PORT": "0",
        "RUNSTREAM_SINK_SESSION_TIMEOUT": "6",
    }
    crashed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CRASHING_SINK), stage],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    db = settings.clickhouse_database
    if stage == "before_insert":
        assert scalar(settings, f"SELECT count() FROM {db}.events") == 0
    else:
        assert scalar(settings, f"SELECT count() FROM {db}.events") > 0

    # Restarted (same group): it resumes at the last commit and finishes the job, exactly once.
    sink_until(
        small_batches,
        lambda c: scalar(settings, f"SELECT count() FROM {db}.events") >= expected_events(),
    )
    time.sleep(1.0)
    assert_exactly_once(settings)


def test_two_sinks_in_one_group_land_each_event_once(settings: Settings) -> None:
    stop = threading.Event()
    sinks = [Sink(settings.with_overrides(sink_batch_rows=400)) for _ in range(2)]
    threads = [threading.Thread(target=s.run, args=(stop,)) for s in sinks]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while not all(s.stats.partitions for s in sinks):  # both joined the group
            assert time.monotonic() < deadline, "the two sinks did not share the partitions"
            time.sleep(0.2)
        log_runs(settings)
        db = settings.clickhouse_database
        deadline = time.monotonic() + 90
        while scalar(settings, f"SELECT count() FROM {db}.events") < expected_events():
            assert time.monotonic() < deadline, "the sinks did not land every event"
            time.sleep(0.3)
        time.sleep(1.5)  # anything doubled would land now
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert_exactly_once(settings)
    assert all(s.stats.batches > 0 for s in sinks), "both sinks took part"


@pytest.fixture(scope="module")
def own_clickhouse_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A stack of this module's own, whose ClickHouse the test stops and starts."""
    with services_only_stack(tmp_path_factory.mktemp("chstop")) as stack:
        yield stack


def test_clickhouse_killed_and_restarted_mid_stream_loses_nothing(
    own_clickhouse_stack: LocalStack, tmp_path: Path
) -> None:
    stack = own_clickhouse_stack
    settings = stack.settings.with_overrides(
        topic_prefix="chstop",
        clickhouse_database="chstop",
        sink_group="chstop",
        dir=tmp_path / "spool",
        sink_batch_rows=300,
        sink_batch_seconds=0.2,
    )
    ensure_topics(settings)
    migrate(settings)
    sink = Sink(settings)
    stop = threading.Event()
    thread = threading.Thread(target=sink.run, args=(stop,))
    thread.start()
    try:
        log_runs(settings, runs=2, prefix="before")
        wait_until(lambda: sink.stats.events >= expected_events(2), "the first runs to land")
        stack.stop_service("clickhouse", kill=True)
        log_runs(settings, runs=2, prefix="during")
        # The sink fails to insert, pauses its partitions and backs off.
        wait_until(lambda: sink.stats.paused and sink.stats.insert_failures > 0, "a pause")
        stack.start_service("clickhouse")
        log_runs(settings, runs=2, prefix="after")
        deadline = time.monotonic() + 90
        db = settings.clickhouse_database
        while time.monotonic() < deadline:
            try:
                if scalar(settings, f"SELECT count() FROM {db}.events") >= 3 * expected_events(2):
                    break
            except Exception:
                pass
            time.sleep(0.5)
    finally:
        stop.set()
        thread.join(60)
    time.sleep(0.5)
    assert not sink.stats.paused
    db = settings.clickhouse_database
    assert scalar(settings, f"SELECT count() FROM {db}.events") == 3 * expected_events(2)
    assert scalar(settings, f"SELECT count() FROM {db}.metrics") == 6 * STEPS * 2


def test_metrics_endpoint_speaks_prometheus() -> None:
    stats = SinkStats(events=42, lag_messages=7)
    server = MetricsServer.start(0, stats)
    assert server is not None
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        values = scrape(url)
        assert values["runstream_sink_events_total"] == 42
        assert values["runstream_sink_lag_messages"] == 7
        with urllib.request.urlopen(url) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = response.read().decode()
        assert "# TYPE runstream_sink_events_total counter" in text
    finally:
        server.stop()
