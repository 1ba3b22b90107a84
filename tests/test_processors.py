"""The stream processors against the real broker: live run state and metric summaries, exact
across a killed worker, shared by two workers, equal to a replay, and equal to ClickHouse."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from runstream.deploy.local.workers import child_env, settings_env
from runstream.processors.aggregates import (
    fold_point,
    fold_run,
    new_run_state,
    new_summary,
    run_key,
    settle,
    summary_choice,
    summary_key,
    to_wire,
)
from runstream.processors.decoding import decode_event
from runstream.schemas import Topics, encode
from runstream.settings import Settings
from tests.helpers import records_of, sink_until, topic_records
from tests.samples import sample_event

pytestmark = pytest.mark.integration

# Fields that are this worker's own business, not the run's.
LOCAL_FIELDS = {"seen_at", "partition"}


@contextlib.contextmanager
def worker(settings: Settings, log: Path, **extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """``runstream processors`` in a process of its own, as in production."""
    env = child_env({**settings_env(settings), **extra})
    env["RUNSTREAM_TOPIC_PARTITIONS"] = str(settings.topic_partitions)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "runstream", "processors"], env=env, stdout=out, stderr=out
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def produce(settings: Settings, events: list[dict[str, Any]]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    topic = Topics(settings.topic_prefix).events
    for e in events:
        producer.produce(topic, key=e["run_id"].encode(), value=encode(e))
    assert producer.flush(30) == 0


def run_events(
    run_id: str, steps: range, *, start: bool = True, seq0: int = 0
) -> list[dict[str, Any]]:
    events = []
    seq = seq0
    if start:
        e = sample_event("run_started", seq=seq, run_id=run_id)
        events.append(e)
        seq += 1
    for step in steps:
        e = sample_event("metrics_logged", seq=seq, run_id=run_id)
        e["body"] = {
            "step": step,
            "metrics": {
                "loss": 1.0 / (step + 1),
                "acc": (step % 17) / 17,
                "odd": "NaN" if step % 13 == 0 else float(step % 5),
            },
        }
        events.append(e)
        seq += 1
    return events


def expected_state(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The pure fold over the events: what every worker must end up publishing."""
    runs: dict[str, dict[str, Any]] = {}
    summaries: dict[str, dict[str, Any]] = {}
    for raw in events:
        event = decode_event(encode(raw))
        key = run_key(event.project, event.run_id)
        state = runs.setdefault(key, new_run_state(event.project, event.run_id))
        if not fold_run(state, event) or event.type != "metrics_logged":
            continue
        for name, value in event.body.metrics.items():
            skey = summary_key(event.project, event.run_id, name)
            summary = summaries.setdefault(skey, new_summary(event.project, event.run_id, name))
            fold_point(summary, value, event.body.step, event.seq)
    for summary in summaries.values():
        settle(
            summary,
            summary_choice(runs[run_key(summary["project"], summary["run_id"])], summary["name"]),
        )
    return {**runs, **summaries}


def latest(settings: Settings) -> dict[str, dict[str, Any]]:
    """Everything on the runs and summaries topics, latest record per key."""
    topics = Topics(settings.topic_prefix)
    return {
        key.decode(): {k: v for k, v in record.items() if k not in LOCAL_FIELDS}
        for key, record in topic_records(settings, topics.runs, topics.summaries)
    }


def history(settings: Settings, key: str) -> list[dict[str, Any]]:
    """Every version of one run's state on the runs topic, oldest first."""
    runs = Topics(settings.topic_prefix).runs
    return [record for k, record in topic_records(settings, runs) if k.decode() == key]


def comparable(state: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """As published: local fields left out, NaN and infinities as the wire's strings."""
    return {
        key: to_wire({k: v for k, v in record.items() if k not in LOCAL_FIELDS})
        for key, record in state.items()
    }


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1.0)
    raise AssertionError(f"{what}: not within {timeout}s")


def published_all(settings: Settings, expected: dict[str, dict[str, Any]]) -> Callable[[], bool]:
    def check() -> bool:
        found = latest(settings)
        return all(
            key in found and found[key].get("version") == want["version"]
            for key, want in expected.items()
        )

    return check


def test_a_worker_folds_runs_and_summaries_like_the_pure_fold(
    settings: Settings, tmp_path: Path
) -> None:
    events = run_events("r1", range(300)) + run_events("r2", range(150))
    finished = sample_event("run_finished", seq=301, run_id="r1")
    produce(settings, [*events, finished])
    expected = expected_state([*events, finished])
    with worker(settings, tmp_path / "worker.log"):
        wait_for(published_all(settings, expected), 90, "the worker published every key")
    found = latest(settings)
    assert comparable({k: found[k] for k in expected}) == comparable(expected)
    r1 = found[run_key("vision", "r1")]
    assert (r1["status"], r1["last_step"], r1["exit_code"]) == ("finished", 299, 0)
    odd = found[summary_key("vision", "r1", "odd")]
    assert odd["nan_count"] == len([s for s in range(300) if s % 13 == 0])


def test_a_killed_worker_resumes_from_its_changelog_with_exact_summaries(
    settings: Settings, tmp_path: Path
) -> None:
    first = run_events("k1", range(200)) + run_events("k2", range(200))
    produce(settings, first)
    with worker(settings, tmp_path / "a.log") as process:
        wait_for(published_all(settings, expected_state(first)), 90, "first half folded")
        process.send_signal(signal.SIGKILL)  # no flush, no commit of what it was doing
        process.wait()
    # Let the group notice (session timeout 10 s): a worker joining a group that still counts
    # the dead member was seen to be assigned nothing until the next rebalance.
    time.sleep(12)
    second = run_events("k1", range(200, 400), start=False, seq0=201)
    second += run_events("k2", range(200, 300), start=False, seq0=201)
    produce(settings, second)
    expected = expected_state(first + second)
    with worker(settings, tmp_path / "b.log"):
        wait_for(published_all(settings, expected), 120, "second half folded after restart")
    found = latest(settings)
    assert comparable({k: found[k] for k in expected}) == comparable(expected)
    assert found[summary_key("vision", "k1", "loss")]["count"] == 400  # not one point twice


def test_two_workers_share_the_partitions_and_agree_with_a_replay(
    settings: Settings, tmp_path: Path
) -> None:
    events = [e for r in range(12) for e in run_events(f"s{r}", range(60))]
    produce(settings, events)
    expected = expected_state(events)
    with worker(settings, tmp_path / "a.log"), worker(settings, tmp_path / "b.log"):
        wait_for(published_all(settings, expected), 120, "two workers folded everything")
    live = latest(settings)
    assert comparable({k: live[k] for k in expected}) == comparable(expected)

    # A new app id reads the events topic from the start: the replay ends where live did.
    replay = settings.with_overrides(topic_prefix=settings.topic_prefix)
    with worker(replay, tmp_path / "replay.log", RUNSTREAM_PROCESSOR_GROUP="replay"):
        wait_for(
            lambda: (
                len(
                    [
                        1
                        for k, v in latest(settings).items()
                        if k in expected and v["version"] == expected[k]["version"]
                    ]
                )
                == len(expected)
            ),
            120,
            "the replay published every key",
        )


def test_live_state_lands_in_clickhouse_and_matches_the_derived_tables(
    settings: Settings, tmp_path: Path
) -> None:
    events = [*run_events("c1", range(100)), sample_event("run_finished", seq=101, run_id="c1")]
    produce(settings, events)
    expected = expected_state(events)
    with worker(settings, tmp_path / "worker.log"):
        wait_for(published_all(settings, expected), 90, "published")
    db = settings.clickhouse_database
    sink_until(
        settings,
        lambda c: (
            c.query(f"SELECT count() FROM {db}.live_summaries_current").result_rows[0][0] == 3
            and c.query(f"SELECT count() FROM {db}.run_summaries_current").result_rows[0][0] == 3
        ),
    )
    live = {
        r["name"]: r for r in records_of(settings, f"SELECT * FROM {db}.live_summaries_current")
    }
    derived = {
        r["name"]: r for r in records_of(settings, f"SELECT * FROM {db}.run_summaries_current")
    }
    for name, row in derived.items():
        mine = live[name]
        for field in ("count", "nan_count", "first_step", "last_step", "min", "max", "step_of_min",
                      "step_of_max", "last"):  # fmt: skip
            assert mine[field] == row[field], (name, field)
        assert mine["mean"] == pytest.approx(row["mean"], rel=1e-12)
    run = records_of(settings, f"SELECT * FROM {db}.live_runs_current")[0]
    assert (run["status"], run["last_step"], run["exit_code"]) == ("finished", 99, 0)
    assert orjson.loads(run["config"])["lr"] == 0.001


def test_a_silent_run_becomes_crashed_and_a_later_event_revives_it(
    settings: Settings, tmp_path: Path
) -> None:
    produce(settings, run_events("quiet", range(5)))
    key = run_key("vision", "quiet")
    with worker(settings, tmp_path / "w.log", RUNSTREAM_PROCESSOR_HEARTBEAT_TIMEOUT="3"):
        wait_for(lambda: latest(settings).get(key, {}).get("status") == "crashed", 60, "crashed")
        crashed = latest(settings)[key]
        assert crashed["ended_at"] == crashed["last_event_at"]  # when it was last heard of
        produce(settings, run_events("quiet", range(5, 6), start=False, seq0=6))
        # Running again with the new event folded in; silent again, it crashes again later.
        wait_for(
            lambda: any(
                v["status"] == "running" and v["last_seq"] == 6 for v in history(settings, key)
            ),
            60,
            "revived",
        )


def test_a_failed_table_recovery_crashes_the_worker_instead_of_hanging() -> None:
    import asyncio
    import inspect
    import logging

    import faust.tables.recovery

    from runstream.processors.app import _RecoveryFailed

    # The one sign faust gives that its recovery loop ended (faust-streaming 0.15.3): if an
    # upgrade words it otherwise, the handler below must follow.
    assert 'logger.warning(f"Error in recovery {ex}")' in inspect.getsource(faust.tables.recovery)

    loop = asyncio.new_event_loop()
    crashed: list[BaseException] = []

    class App:
        def __init__(self) -> None:
            self.loop = loop

        async def crash(self, reason: BaseException) -> None:
            crashed.append(reason)

    recovery = logging.getLogger("faust.tables.recovery")
    handler = _RecoveryFailed(App())
    recovery.addHandler(handler)
    try:
        recovery.warning("No event received for active tp since recovery start")  # not fatal
        recovery.warning("Error in recovery %s", "unexpected character")
        loop.run_until_complete(asyncio.sleep(0.05))
    finally:
        recovery.removeHandler(handler)
        loop.close()
    assert [str(reason) for reason in crashed] == [
        "faust could not restore the table: Error in recovery unexpected character"
    ]
