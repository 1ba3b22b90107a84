"""The SDK against the real broker: offline + sync, outages, SIGKILL, resume."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

import runstream
from runstream.cli import main
from runstream.deploy.local.admin import ensure_topics
from runstream.deploy.local.stack import LocalStack
from runstream.producers.run import ResumeError
from runstream.schemas import Topics
from runstream.settings import Settings
from tests.conftest import free_port, services_only_stack
from tests.helpers import rows, scalar, sink_until

pytestmark = pytest.mark.integration


def topic_events(settings: Settings, expected: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Every message of the events topic (fresh consumer group), decoded as JSON."""
    topic = Topics(settings.topic_prefix).events
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"reader-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    idle_after_expected = 0
    while time.monotonic() < deadline:
        batch = [m for m in consumer.consume(1000, timeout=0.5) if m.error() is None]
        events += [orjson.loads(m.value()) for m in batch]
        if len(events) >= expected:
            idle_after_expected = idle_after_expected + 1 if not batch else 0
            if idle_after_expected >= 2:  # nothing more arrives: no duplicates hiding behind
                break
    consumer.close()
    return events


def message_count(settings: Settings) -> int:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "count"})
    topic = Topics(settings.topic_prefix).events
    total = 0
    for partition in range(settings.topic_partitions):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        total += high - low
    consumer.close()
    return total


def assert_exactly_once_in_order(events: list[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    mine = [e for e in events if e["run_id"] == run_id]
    seqs = [e["seq"] for e in mine]
    assert seqs == list(range(len(mine))), "each seq once, in order, no gaps"
    assert len({e["id"] for e in mine}) == len(mine)
    return mine


def test_offline_run_then_sync_lands_exactly_once_and_sync_twice_changes_nothing(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    offline = settings.with_overrides(mode="offline", system_metrics_interval=0)
    run = runstream.init(settings=offline, project="offline")
    for step in range(300):
        run.log({"loss": 1 / (step + 1), "acc": step / 300}, step=step)
    result = run.finish()
    # started, 300 steps, finished (no explicit summary key: no final summary_updated)
    assert result.offline and result.produced == 302
    assert message_count(settings) == 0, "offline mode sends nothing"

    args = ["sync", str(settings.dir), "--kafka", settings.kafka_bootstrap]
    assert main(args) == 0
    assert "302 of 302 events delivered" in capsys.readouterr().out
    assert main(args) == 0
    assert "nothing to deliver" in capsys.readouterr().out
    assert message_count(settings) == 302

    db = settings.clickhouse_database
    sink_until(settings, lambda c: scalar(settings, f"SELECT count() FROM {db}.events") >= 302)
    assert scalar(settings, f"SELECT count() FROM {db}.metrics") == 600
    assert scalar(settings, f"SELECT uniqExact(seq) FROM {db}.events") == 302


@pytest.fixture(scope="module")
def outage_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A stack of this module's own, whose broker the tests stop and start."""
    with services_only_stack(tmp_path_factory.mktemp("outage")) as stack:
        yield stack


def test_broker_killed_mid_run_then_restarted_lands_every_event_in_order(
    outage_stack: LocalStack, tmp_path: Path
) -> None:
    settings = outage_stack.settings.with_overrides(
        topic_prefix="outage", dir=tmp_path / "spool", finish_timeout=90, system_metrics_interval=0
    )
    ensure_topics(settings)
    run = runstream.init(settings=settings, project="outage")
    slowest = 0.0
    for step in range(3000):
        if step == 1000:
            outage_stack.stop_service("kafka", kill=True)
        if step == 2000:
            outage_stack.start_service("kafka")
        started = time.perf_counter()
        run.log({"loss": 1 / (step + 1), "step_copy": float(step)}, step=step)
        slowest = max(slowest, time.perf_counter() - started)
        if step % 100 == 0:
            time.sleep(0.01)  # a training loop does other things too
    result = run.finish()
    assert result.ok, result
    # Latency percentiles are the benchmark's job (bench/outage.py); here only "never blocks",
    # with room for a busy 2-core CI machine.
    assert slowest < 0.25, f"run.log blocked for {slowest * 1000:.1f} ms during the outage"

    events = assert_exactly_once_in_order(topic_events(settings, 3003), run.id)
    steps = [e["body"]["step"] for e in events if e["type"] == "metrics_logged"]
    assert steps == list(range(3000))
    assert events[-1]["type"] == "run_finished"


KILLED_SCRIPT = """
import os, signal, sys, time
import runstream
from runstream.settings import Settings
# The broker address is wrong on purpose: everything stays in the spool, as in an outage.
settings = Settings.load(kafka_bootstrap="127.0.0.1:{dead_port}", dir=sys.argv[1],
                         topic_prefix=sys.argv[2], system_metrics_interval=0)
run = runstream.init(settings=settings, id="killed-run", project="crash")
for step in range(500):
    run.log({{"loss": 1.0 / (step + 1), "acc": step / 500}}, step=step)
time.sleep(1.0)  # let the worker spool what was logged
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_sigkill_then_sync_lands_everything_that_was_spooled(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    script = textwrap.dedent(KILLED_SCRIPT.format(dead_port=free_port()))
    done = subprocess.run(
        [sys.executable, "-c", script, str(settings.dir), settings.topic_prefix],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert main(["sync", str(settings.dir), "--kafka", settings.kafka_bootstrap]) == 0
    assert "501 of 501 events delivered" in capsys.readouterr().out

    db = settings.clickhouse_database
    sink_until(settings, lambda c: scalar(settings, f"SELECT count() FROM {db}.events") >= 501)
    assert scalar(settings, f"SELECT count() FROM {db}.metrics") == 1000
    assert rows(settings, f"SELECT min(seq), max(seq), count() FROM {db}.events") == [(0, 500, 501)]
    # Syncing again finds the spool delivered.
    assert main(["sync", str(settings.dir), "--kafka", settings.kafka_bootstrap]) == 0
    assert message_count(settings) == 501


def test_resume_continues_steps_and_sequence_numbers(settings: Settings) -> None:
    quiet = settings.with_overrides(system_metrics_interval=0)
    first = runstream.init(settings=quiet, id="resumable", project="resume", config={"lr": 1})
    for step in range(10):
        first.log({"loss": float(step)})
    assert first.finish().ok
    db = settings.clickhouse_database
    sink_until(settings, lambda c: scalar(settings, f"SELECT count() FROM {db}.events") >= 12)

    # Resumed on another machine: no local spool, position read from ClickHouse.
    elsewhere = quiet.with_overrides(dir=settings.dir.parent / "elsewhere")
    second = runstream.init(settings=elsewhere, id="resumable", resume="must", project="resume")
    assert second.step == 10
    for _ in range(5):
        second.log({"loss": -1.0})
    assert second.finish().ok

    # And once more from the local spool alone, with ClickHouse unreachable.
    offline_ch = elsewhere.with_overrides(clickhouse_url=f"http://127.0.0.1:{free_port()}")
    third = runstream.init(settings=offline_ch, id="resumable", resume="allow", project="resume")
    assert third.step == 15
    third.log({"loss": -2.0})
    assert third.finish().ok

    sink_until(settings, lambda c: scalar(settings, f"SELECT count() FROM {db}.metrics") >= 16)
    assert rows(settings, f"SELECT step FROM {db}.metrics ORDER BY step") == [
        (s,) for s in range(16)
    ]
    seqs = [r[0] for r in rows(settings, f"SELECT seq FROM {db}.events ORDER BY seq")]
    assert seqs == list(range(len(seqs)))
    assert scalar(settings, f"SELECT countIf(type = 'run_resumed') FROM {db}.events") == 2

    with pytest.raises(ResumeError, match="already exists"):
        runstream.init(settings=quiet, id="resumable", resume="never", project="resume")
    with pytest.raises(ResumeError, match="not found"):
        runstream.init(settings=quiet, id="never-seen", resume="must")


def test_heartbeats_are_sent_while_the_run_is_alive(settings: Settings) -> None:
    run = runstream.init(
        settings=settings.with_overrides(heartbeat_interval=0.2, system_metrics_interval=0)
    )
    run.log({"loss": 1.0}, step=41)
    time.sleep(1.1)
    run.finish()
    events = assert_exactly_once_in_order(topic_events(settings, 8), run.id)
    beats = [e for e in events if e["type"] == "heartbeat"]
    assert len(beats) >= 3
    assert beats[-1]["body"]["step"] == 41


def test_finish_never_hangs_when_the_broker_is_unreachable(tmp_path: Path) -> None:
    settings = Settings.load(
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        dir=tmp_path / "spool",
        finish_timeout=1.0,
        system_metrics_interval=0,
    )
    run = runstream.init(settings=settings)
    for step in range(100):
        run.log({"loss": 1.0}, step=step)
    started = time.monotonic()
    result = run.finish()
    assert time.monotonic() - started < 2.0
    assert not result.ok and result.pending == result.produced == 102
    state = orjson.loads((tmp_path / "spool" / "runs" / run.id / "state.json").read_bytes())
    assert state["acked_through"] == -1 and state["next_seq"] == 102
    assert os.path.getsize(next((tmp_path / "spool" / "runs" / run.id).glob("seg-*.log"))) > 0


def test_a_silent_broker_is_reported_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from runstream.producers import worker

    monkeypatch.setattr(worker, "ACK_SILENCE_WARNING_SECONDS", 0.3)
    settings = Settings.load(
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        dir=tmp_path / "spool",
        finish_timeout=0.1,
        system_metrics_interval=0,
        heartbeat_interval=3600,
    )
    with caplog.at_level(logging.WARNING, logger="runstream"):
        run = runstream.init(settings=settings)
        run.log({"loss": 1.0})
        time.sleep(1.5)
        run.finish()
    silences = [r for r in caplog.records if "acknowledged nothing" in r.getMessage()]
    assert len(silences) == 1
    assert settings.kafka_bootstrap in silences[0].getMessage()
