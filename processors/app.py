"""``runstream processors``: the faust app that keeps live run state and metric summaries.

    events topic ──> aggregate agent ──> faust tables (run state, summaries; changelog topics)
       ticks ───────┘       │
                            ├──> <prefix>.runs, <prefix>.summaries  (compacted: latest per key)
                            └──> <prefix>.alerts                    (alert versions)

Events are taken in batches (``take_events``): a batch folds all its events of a run into the
run's state and writes each changed table entry once, instead of once per event. A run's events
all live on one partition, so its table entries are written with that partition's event as the
current event, which is what puts them on the right changelog partition: a worker that takes
the partition over after a crash restores exactly those entries.

Crash detection: a timer on every worker looks at the runs of its own partitions and, for a run
silent longer than the heartbeat timeout, sends a tick to ``<prefix>.processor-ticks`` on the
run's partition. The agent reads ticks like events, so the crash is decided and written in the
stream, with the run's state at hand.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any

import orjson

from runstream.errors import EventDecodeError
from runstream.processors.aggregates import (
    ALIVE,
    fold_point,
    fold_run,
    mark_crashed,
    new_run_state,
    new_summary,
    run_key,
    settle,
    summary_choice,
    summary_key,
    to_wire,
)
from runstream.processors.alerting import AlertEvaluator
from runstream.processors.decoding import decode_event
from runstream.processors.rules import load_rules
from runstream.schemas import Topics
from runstream.settings import Settings

logger = logging.getLogger("runstream.processors")

TICK_SECONDS = 1.0
BATCH_SECONDS = 0.05


class _PartitionOf:
    """Stands for "an event of this partition" where faust asks for the current event."""

    def __init__(self, topic: str, partition: int) -> None:
        self.message = type("Message", (), {"topic": topic, "partition": partition})()


class ProcessorStats:
    """Counters of one worker (read by tests, the bench and the log)."""

    def __init__(self) -> None:
        self.events = 0
        self.batches = 0
        self.duplicates = 0
        self.dead_letters = 0
        self.crashed = 0
        self.alerts = 0


def build_app(settings: Settings) -> Any:
    """The faust app for ``settings``."""
    import faust
    from faust.streams import _current_event

    topics = Topics(settings.topic_prefix)
    app_id = settings.processor_group or f"{settings.topic_prefix}-processors"
    # Tables live in memory (rebuilt from their changelogs); faust still wants a directory of
    # its own per worker process.
    datadir = settings.home / "processors" / app_id / f"worker-{os.getpid()}"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        datadir=str(datadir),
        producer_acks=-1,
        broker_commit_every=1000,
        # A worker killed outright holds its partitions until its session expires.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
        broker_commit_interval=1.0,
        table_cleanup_interval=3600.0,
    )
    events = app.topic(
        topics.events, topics.processor_ticks, key_serializer="raw", value_serializer="raw"
    )
    runs_out = app.topic(topics.runs, key_serializer="raw", value_serializer="raw")
    summaries_out = app.topic(topics.summaries, key_serializer="raw", value_serializer="raw")
    dead_letters = app.topic(topics.dead_letters, key_serializer="raw", value_serializer="raw")
    ticks = app.topic(topics.processor_ticks, key_serializer="raw", value_serializer="raw")
    alerts_out = app.topic(topics.alerts, key_serializer="raw", value_serializer="raw")
    runs = app.Table("run_state", default=None)
    summaries = app.Table("metric_summaries", default=None)
    stats = ProcessorStats()
    app.runstream_stats = stats  # type: ignore[attr-defined]
    timeout = settings.processor_heartbeat_timeout or 3 * settings.heartbeat_interval

    def write(table: Any, key: str, value: Any, partition: int) -> None:
        # faust puts a table write on the changelog partition of the *current* event (in a
        # batch: the batch's last one; in a timer: none). A run's entries belong to the
        # partition of the run's events, so name it.
        shim = shims.get(partition)
        if shim is None:  # faust holds it by weak reference only: keep one per partition
            shim = shims[partition] = _PartitionOf(topics.events, partition)
        _current_event.set(weakref.ref(shim))  # type: ignore[arg-type]
        table[key] = value

    shims: dict[int, _PartitionOf] = {}

    alert_states = app.Table("alert_state", default=None)
    rules_file = settings.alert_rules_path
    rules_seen: list[float | None] = [None]

    def current_rules() -> list[Any]:
        try:
            rules_seen[0] = rules_file.stat().st_mtime
        except FileNotFoundError:
            rules_seen[0] = None
            return []
        return list(load_rules(rules_file))

    evaluator = AlertEvaluator(
        current_rules(), loader=lambda project, run_id: alert_states.get(run_key(project, run_id))
    )
    app.runstream_evaluator = evaluator  # type: ignore[attr-defined]

    async def publish_alerts(alerts: list[Any]) -> None:
        for alert in alerts:
            stats.alerts += 1
            await alerts_out.send(key=alert.run_id.encode(), value=alert.to_json())
        for project, run_id in evaluator.take_dirty():
            key = run_key(project, run_id)
            state = runs.get(key)
            if state is not None and state.get("partition") is not None:
                write(alert_states, key, evaluator.state_of(project, run_id), state["partition"])

    async def dead_letter(event: Any, reason: str) -> None:
        stats.dead_letters += 1
        message = event.message
        logger.warning("dead letter %s[%d]@%d: %s", message.topic, message.partition,
                       message.offset, reason)  # fmt: skip
        await dead_letters.send(
            key=message.key,
            value=message.value or b"",
            headers={
                "runstream.reason": reason.encode(),
                "runstream.consumer": b"processors",
                "runstream.topic": message.topic.encode(),
                "runstream.partition": str(message.partition).encode(),
                "runstream.offset": str(message.offset).encode(),
            },
        )

    @app.agent(events)
    async def aggregate(stream: Any) -> None:
        async for batch in stream.take_events(settings.processor_batch_events, BATCH_SECONDS):
            stats.batches += 1
            by_run: dict[str, list[tuple[Any, Any]]] = defaultdict(list)
            crash_checks: list[tuple[str, Any]] = []
            for event in batch:
                message = event.message
                if message.topic == topics.processor_ticks:
                    crash_checks.append((message.key.decode(), event))
                    continue
                try:
                    decoded = decode_event(message.value)
                except EventDecodeError as exc:
                    await dead_letter(event, str(exc))
                    continue
                by_run[run_key(decoded.project, decoded.run_id)].append((decoded, event))
            for key, items in by_run.items():
                await fold_batch(key, items)
            for key, _ in crash_checks:
                await check_crash(key)

    async def fold_batch(key: str, items: list[tuple[Any, Any]]) -> None:
        first = items[0][0]
        state = runs.get(key) or new_run_state(first.project, first.run_id)
        touched: dict[str, dict[str, Any]] = {}
        partition = items[-1][1].message.partition
        alerts: list[Any] = []
        for decoded, event in items:
            if not fold_run(state, decoded, event.message.partition):
                stats.duplicates += 1
                continue
            stats.events += 1
            alerts += evaluator.observe(decoded)
            body = decoded.body
            if decoded.type == "metrics_logged":
                for name, value in body.metrics.items():
                    skey = summary_key(decoded.project, decoded.run_id, name)
                    summary = touched.get(skey)
                    if summary is None:
                        summary = summaries.get(skey) or new_summary(
                            decoded.project, decoded.run_id, name
                        )
                        touched[skey] = summary
                    fold_point(summary, value, body.step, decoded.seq)
        state["seen_at"] = time.time()  # this worker's clock, for crash detection only
        write(runs, key, state, partition)
        await runs_out.send(key=key.encode(), value=orjson.dumps(to_wire(state)))
        for skey, summary in touched.items():
            settle(summary, summary_choice(state, summary["name"]))
            write(summaries, skey, summary, partition)
            await summaries_out.send(key=skey.encode(), value=orjson.dumps(to_wire(summary)))
        await publish_alerts(alerts)

    async def check_crash(key: str) -> None:
        state = runs.get(key)
        if state is None or state["status"] != ALIVE:
            return
        if not silent(state, time.time()):
            return
        # Recorded as the time it was last heard of: the same on a replay.
        last = datetime.fromisoformat(state["last_event_at"].replace("Z", "+00:00"))
        if mark_crashed(state, last):
            stats.crashed += 1
            write(runs, key, state, state["partition"])
            await runs_out.send(key=key.encode(), value=orjson.dumps(to_wire(state)))
            await publish_alerts(evaluator.run_crashed(state["project"], state["run_id"], last))

    assigned_at = [time.time()]

    def silent(state: dict[str, Any], now: float) -> bool:
        # A worker that has just (re)started or taken partitions over has not been listening:
        # give every run a full timeout from then, or it would call live runs crashed.
        heard = max(state.get("seen_at") or 0.0, assigned_at[0])
        return bool(state["status"] == ALIVE and now - heard >= timeout)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(app: Any, assigned: Any, **_: Any) -> None:
        assigned_at[0] = time.time()

    def active_partitions() -> set[int]:
        return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topics.events}

    @app.timer(interval=TICK_SECONDS)  # type: ignore[untyped-decorator]
    async def look_for_silent_runs() -> None:
        now = time.time()
        mine = active_partitions()  # not the standby copies of other workers' partitions
        for key, state in list(runs.items()):
            if state and state.get("partition") in mine and silent(state, now):
                await ticks.send(key=key.encode(), value=b"tick", partition=state["partition"])
        # Rules changed on disk (runstream alerts add|rm): open episodes of changed rules resolve.
        try:
            mtime: float | None = rules_file.stat().st_mtime
        except FileNotFoundError:
            mtime = None
        if mtime != rules_seen[0]:
            try:
                rules = current_rules()
            except Exception as exc:  # a half-written or broken file: keep the rules in force
                logger.warning("alert rules in %s not reloaded: %s", rules_file, exc)
                rules_seen[0] = mtime
            else:
                logger.info("alert rules reloaded from %s: %d rules", rules_file, len(rules))
                await publish_alerts(evaluator.set_rules(rules, datetime.now(timezone.utc)))
        await publish_alerts(evaluator.tick(datetime.now(timezone.utc)))

    app.runstream_tables = (runs, summaries)  # type: ignore[attr-defined]
    return app


def run_worker(settings: Settings) -> int:
    """Run one worker until SIGTERM or SIGINT (``runstream processors``)."""
    from faust.worker import Worker

    app = build_app(settings)
    worker = Worker(app, loglevel="INFO", redirect_stdouts=False, quiet=True)
    worker.execute_from_commandline()  # returns only by exiting the process
    return 0
