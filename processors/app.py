"""``runstream processors``: the faust app that keeps live run state and metric summaries.

    events topic ──> aggregate agent ──> faust table "runs" (one entry per run; changelog topic)
       ticks ───────┘       │
                            ├──> <prefix>.runs, <prefix>.summaries  (compacted: latest per key)
                            └──> <prefix>.alerts                    (alert versions)

One table entry per run holds everything about it: its state, the summaries of its metrics and
its alert evaluator's state. Events are taken in batches (``take_events``): a batch folds all
its events of a run and writes the run's entry once, so the changelog gets one record per run
per batch, not one per event and metric. A run's events all live on one partition and its entry
is written to that partition of the changelog: a worker that takes the partition over after a
crash restores exactly those runs.

The records for the output topics go through a confluent-kafka producer (librdkafka, a few
microseconds each, where faust's own producer costs tens), flushed at the end of every batch,
before faust can commit the batch's offsets.

Crash detection: a timer on every worker looks at the runs of its own partitions and, for a run
silent longer than the heartbeat timeout, sends a tick to ``<prefix>.processor-ticks`` on the
run's partition. The agent reads ticks like events, so the crash is decided and written in the
stream, with the run's state at hand.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import weakref
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any

import orjson
from confluent_kafka import Producer

from runstream.errors import DeliveryError, EventDecodeError
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
        # The changelog records are a run each (a few KB): faust's producer defaults (16 KB
        # batches, no linger) sent them nearly one per request and held the stream back.
        producer_max_batch_size=1_000_000,
        producer_linger=0.005,
        producer_compression_type="lz4",
        broker_max_poll_records=10_000,
        stream_buffer_maxsize=50_000,
    )
    events = app.topic(
        topics.events, topics.processor_ticks, key_serializer="raw", value_serializer="raw"
    )
    dead_letters = app.topic(topics.dead_letters, key_serializer="raw", value_serializer="raw")
    ticks = app.topic(topics.processor_ticks, key_serializer="raw", value_serializer="raw")
    runs = app.Table("runs", default=None)  # run key -> {"run", "summaries", "alerts"}
    output = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "enable.idempotence": True,
            "linger.ms": 5,
            "compression.type": "lz4",
            "client.id": "runstream-processors",
        }
    )

    def publish(topic: str, key: str, record: dict[str, Any] | bytes) -> None:
        value = record if isinstance(record, bytes) else orjson.dumps(to_wire(record))
        while True:
            try:
                output.produce(topic, key=key.encode(), value=value)
                return
            except BufferError:  # librdkafka's queue is full: let it drain
                output.poll(0.05)

    def flush_outputs() -> None:
        if output.flush(30) > 0:
            # Better to stop than to commit offsets of events whose results never left.
            raise DeliveryError("the processors could not publish their results within 30 s")

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

    rules_file = settings.alert_rules_path
    rules_seen: list[float | None] = [None]

    def current_rules() -> list[Any]:
        try:
            rules_seen[0] = rules_file.stat().st_mtime
        except FileNotFoundError:
            rules_seen[0] = None
            return []
        return list(load_rules(rules_file))

    def saved_alert_state(project: str, run_id: str) -> Any:
        entry = runs.get(run_key(project, run_id))
        return entry.get("alerts") if entry else None

    evaluator = AlertEvaluator(current_rules(), loader=saved_alert_state)
    app.runstream_evaluator = evaluator  # type: ignore[attr-defined]

    def publish_alerts(alerts: list[Any], *, save: bool = True) -> None:
        for alert in alerts:
            stats.alerts += 1
            publish(topics.alerts, alert.run_id, alert.to_json())
        if not save:
            return
        for project, run_id in evaluator.take_dirty():
            key = run_key(project, run_id)
            entry = runs.get(key)
            if entry is not None and entry["run"].get("partition") is not None:
                entry["alerts"] = evaluator.state_of(project, run_id)
                write(runs, key, entry, entry["run"]["partition"])

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
            by_run: dict[str, list[tuple[Any, int]]] = defaultdict(list)
            crash_checks: list[str] = []
            for event in batch:
                message = event.message
                if message.topic == topics.processor_ticks:
                    crash_checks.append(message.key.decode())
                    continue
                try:
                    decoded = decode_event(message.value)
                except EventDecodeError as exc:
                    await dead_letter(event, str(exc))
                    continue
                key = run_key(decoded.project, decoded.run_id)
                by_run[key].append((decoded, message.partition))
            for key, items in by_run.items():
                fold_batch(key, items)
            for key in crash_checks:
                check_crash(key)
            flush_outputs()
            # The changelog records of this batch must be in Kafka before faust may commit the
            # batch's offsets; a worker killed in between must find them on restart.
            await app.producer.flush()

    def fold_batch(key: str, items: list[tuple[Any, int]]) -> None:
        first = items[0][0]
        entry = runs.get(key) or {
            "run": new_run_state(first.project, first.run_id),
            "summaries": {},
            "alerts": None,
        }
        state, summaries = entry["run"], entry["summaries"]
        touched: set[str] = set()
        alerts: list[Any] = []
        for decoded, partition in items:
            if not fold_run(state, decoded, partition):
                stats.duplicates += 1
                continue
            stats.events += 1
            alerts += evaluator.observe(decoded)
            if decoded.type == "metrics_logged":
                body = decoded.body
                for name, value in body.metrics.items():
                    summary = summaries.get(name)
                    if summary is None:
                        summary = summaries[name] = new_summary(
                            decoded.project, decoded.run_id, name
                        )
                    fold_point(summary, value, body.step, decoded.seq)
                    touched.add(name)
        state["seen_at"] = time.time()  # this worker's clock, for crash detection only
        publish(topics.runs, key, state)
        for name in touched:
            summary = settle(summaries[name], summary_choice(state, name))
            publish(topics.summaries, summary_key(state["project"], state["run_id"], name), summary)
        publish_alerts(alerts, save=False)
        evaluator.take_dirty()
        entry["alerts"] = evaluator.state_of(state["project"], state["run_id"])
        write(runs, key, entry, items[-1][1])

    def check_crash(key: str) -> None:
        entry = runs.get(key)
        if entry is None:
            return
        state = entry["run"]
        if state["status"] != ALIVE or not silent(state, time.time()):
            return
        # Recorded as the time it was last heard of: the same on a replay.
        last = datetime.fromisoformat(state["last_event_at"].replace("Z", "+00:00"))
        if mark_crashed(state, last):
            stats.crashed += 1
            publish(topics.runs, key, state)
            publish_alerts(
                evaluator.run_crashed(state["project"], state["run_id"], last), save=False
            )
            evaluator.take_dirty()
            entry["alerts"] = evaluator.state_of(state["project"], state["run_id"])
            write(runs, key, entry, state["partition"])

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
        for key, entry in list(runs.items()):
            state = entry["run"] if entry else None
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
                publish_alerts(evaluator.set_rules(rules, datetime.now(timezone.utc)))
        publish_alerts(evaluator.tick(datetime.now(timezone.utc)))
        flush_outputs()

    app.runstream_table = runs  # type: ignore[attr-defined]
    return app


def run_worker(settings: Settings) -> int:
    """Run one worker until SIGTERM or SIGINT (``runstream processors``)."""
    from faust.worker import Worker

    app = build_app(settings)
    worker = Worker(app, loglevel="INFO", redirect_stdouts=False, quiet=True)
    try:
        worker.execute_from_commandline()  # returns only by exiting the process
    finally:
        # The directory is this process's own (tables live in memory): leave none behind.
        shutil.rmtree(app.conf.datadir, ignore_errors=True)
    return 0
