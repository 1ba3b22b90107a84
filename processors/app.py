"""``runstream processors``: the faust app that keeps live run state and metric summaries.

    events topic ──> EventReader ──> Aggregator ──> faust table "runs" (one entry per run)
       (batches, confluent-kafka)        │               └──> its changelog topic
                                         ├──> <prefix>.runs, <prefix>.summaries  (compacted)
    ticks topic ──> faust agent ─────────┘──> <prefix>.alerts                    (alert versions)
       (crash checks)

faust runs the group: it splits the partitions among the workers (those of the ticks topic,
co-partitioned with the events and the changelog), restores the table of a worker's partitions
from the changelog, and keeps standby copies. The events themselves are read around faust's
per-message path, in batches of thousands (:mod:`runstream.processors.reader`), once faust has
restored the table for them; the :class:`~runstream.processors.aggregator.Aggregator` folds a
batch, publishes the results and the changelog records, and only after Kafka has all of them
are the batch's offsets committed. A worker killed in between reads the batch again, and the
``seq`` of every run and metric leaves out what was already folded in.

Crash detection: a timer on every worker looks at the runs of its own partitions and, for a run
silent longer than the heartbeat timeout, sends a tick to ``<prefix>.processor-ticks`` on the
run's partition. The agent reads the ticks and decides, with the run's state at hand.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from runstream.processors.aggregator import Aggregator, Outputs
from runstream.processors.reader import EventReader
from runstream.processors.rules import load_rules
from runstream.schemas import Topics
from runstream.settings import Settings

logger = logging.getLogger("runstream.processors")

TICK_SECONDS = 1.0
WAIT_SECONDS = 0.2  # for the first event of a batch; then the reader looks for rebalances


def build_app(settings: Settings) -> Any:
    """The faust app for ``settings``."""
    import faust

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
        # A worker killed outright holds its partitions until its session expires.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
        broker_commit_interval=1.0,
        table_cleanup_interval=3600.0,
    )
    ticks = app.topic(topics.processor_ticks, key_serializer="raw", value_serializer="raw")
    # run key -> entry (msgpack; see Aggregator), written by the Aggregator, restored by faust
    runs = app.Table("runs", default=None, key_type=bytes, value_type=bytes)  # bytes: raw
    outputs = Outputs(settings)
    rules_file = settings.alert_rules_path
    rules_seen: list[float | None] = [None]

    def current_rules() -> list[Any]:
        try:
            rules_seen[0] = rules_file.stat().st_mtime
        except FileNotFoundError:
            rules_seen[0] = None
            return []
        return list(load_rules(rules_file))

    aggregator = Aggregator(
        settings, runs.data, runs.changelog_topic.get_topic_name(), outputs, current_rules()
    )
    evaluator = aggregator.evaluator
    reader = EventReader(settings, topics.events, f"{app_id}-events")
    app.runstream_aggregator = aggregator  # type: ignore[attr-defined]
    busy = asyncio.Lock()  # one batch at a time, and no rebalance in the middle of one
    pool = ThreadPoolExecutor(1, thread_name_prefix="runstream-events")  # librdkafka's waits

    def my_partitions() -> frozenset[int]:
        if app.rebalancing or not app.tables.actives_ready:
            return frozenset()
        return frozenset(
            tp.partition
            for tp in app.assignor.assigned_actives()
            if tp.topic == topics.processor_ticks
        )

    def finish(positions: dict[int, int]) -> None:
        # The batch's results and changelog records first, then its offsets: a worker killed
        # in between reads the batch again rather than losing it.
        outputs.flush()
        reader.commit(positions)

    async def read_events() -> None:
        loop = asyncio.get_running_loop()
        while not app.should_stop:
            async with busy:
                mine = my_partitions()
                if mine != reader.partitions:
                    logger.info("reading events of partitions %s", sorted(mine))
                    reader.assign(mine)
                    aggregator.take_over(mine)
                if mine:
                    messages = await loop.run_in_executor(
                        pool, reader.take, settings.processor_batch_events, WAIT_SECONDS
                    )
                    if messages:
                        positions = aggregator.process(messages)
                        await loop.run_in_executor(pool, finish, positions)
            if not mine:
                await asyncio.sleep(WAIT_SECONDS)

    @app.task  # type: ignore[untyped-decorator]
    async def events_task() -> None:
        try:
            await read_events()
        except Exception as exc:
            # Not a worker that stays up and folds nothing: stop, and let the restart resume.
            logger.exception("the processors stopped reading events")
            await app.crash(exc)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(app: Any, revoked: Any, **_: Any) -> None:
        async with busy:  # the batch in progress ends, and commits, first
            reader.assign(())
            aggregator.take_over(frozenset())
            await asyncio.get_running_loop().run_in_executor(pool, outputs.flush)

    # faust-streaming 0.15.3 logs an exception in its recovery loop as a warning and ends the
    # loop: the worker then waits forever for a table that is never restored. Crash instead,
    # so that the restart tries again.
    logging.getLogger("faust.tables.recovery").addHandler(_RecoveryFailed(app))

    @app.agent(ticks)
    async def crash_checks(stream: Any) -> None:
        async for event in stream.events():
            aggregator.check_crash(event.message.key.decode())

    @app.timer(interval=TICK_SECONDS)  # type: ignore[untyped-decorator]
    async def look_for_silent_runs() -> None:
        now = time.time()
        for key, partition in aggregator.silent_runs(now):
            outputs.send(topics.processor_ticks, key.encode(), b"tick", partition)
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
                aggregator.publish_alerts(evaluator.set_rules(rules, datetime.now(timezone.utc)))
        aggregator.publish_alerts(evaluator.tick(datetime.now(timezone.utc)))
        await asyncio.get_running_loop().run_in_executor(None, outputs.flush)

    return app


class _RecoveryFailed(logging.Handler):
    def __init__(self, app: Any) -> None:
        super().__init__(logging.WARNING)
        self.app = app

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Error in recovery"):
            error = RuntimeError(f"faust could not restore the table: {message}")
            loop = self.app.loop
            loop.call_soon_threadsafe(lambda: loop.create_task(self.app.crash(error)))


def run_worker(settings: Settings) -> int:
    """Run one worker until SIGTERM or SIGINT (``runstream processors``)."""
    from faust.worker import Worker

    app = build_app(settings)
    # A batch holds tens of thousands of young objects at once (the decoded events); with the
    # default thresholds the collector walks them, and the app's long-lived objects, many times
    # per batch (+20% events/s without). Nothing here builds reference cycles to speak of.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    worker = Worker(app, loglevel="INFO", redirect_stdouts=False, quiet=True)
    try:
        worker.execute_from_commandline()  # returns only by exiting the process
    finally:
        # The directory is this process's own (tables live in memory): leave none behind.
        shutil.rmtree(app.conf.datadir, ignore_errors=True)
    return 0
