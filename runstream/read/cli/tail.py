"""``runstream tail RUN_ID``: follow a live run's metrics as they arrive, as ``tail -f`` follows a
file.

1. The run is looked up in ``runs_current``. Known: its last ``-n`` steps (default 10) are
   printed from the ``metrics`` table. Finished already: then its status, and the command ends.
2. Then it reads the events topic (``<topic_prefix>.events``) from Kafka, from ``--lookback``
   seconds (default 120) before now, so that nothing logged while ClickHouse was being asked (or
   not yet written by a lagging sink) is missed; steps ClickHouse already printed are skipped.
   It uses ``assign()`` with a throw-away group id and never commits, so it moves no consumer
   group's offsets; it keeps the events whose key is the run id (every topic is keyed by run id,
   docs/events.md) and decodes them with :func:`runstream.schemas.codec.decode`.
3. Each ``metrics_logged`` event prints one line ``STEP  name=value name=value`` (names sorted,
   values as Python writes floats; integral values without ``.0``). A ``run_finished`` event
   prints ``run RUN_ID STATUS (exit code N)`` and the command exits 0.

A run that ``runs_current`` does not know is still followed when its events show up on Kafka
within ``--wait`` seconds (default 10) of reading from ``--lookback`` ago: the sink may lag behind
a run that just started. Otherwise the command says so and exits 1. Ctrl-C exits 130 quietly.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import uuid
from collections.abc import Mapping
from typing import Any

from runstream.errors import EventDecodeError, RunstreamError
from runstream.read.reader import Reader
from runstream.settings import Settings


def format_value(value: Any) -> str:
    """A metric value as printed: integral floats without ``.0``, others as ``repr``; NaN and
    infinities as ``nan``, ``inf``, ``-inf``."""
    if isinstance(value, str):
        value = float(value)  # the schema's "NaN", "Infinity"
    number = float(value)
    if math.isfinite(number) and number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    return repr(number) if math.isfinite(number) else str(number)


def format_line(step: int, metrics: Mapping[str, Any]) -> str:
    """``STEP  name=value ...`` with names sorted."""
    values = " ".join(f"{name}={format_value(metrics[name])}" for name in sorted(metrics))
    return f"{step}  {values}"


def tail_command(args: argparse.Namespace, settings: Settings) -> int:
    """Exit status: 0 when the run finished (its status printed), 1 when the run is unknown
    to ClickHouse and Kafka or ClickHouse refused, 130 on Ctrl-C."""
    run_id: str = args.run_id
    with Reader(settings) as reader:
        known = reader.query(
            "SELECT project, status, exit_code FROM runs_current WHERE run_id = {run:String} "
            "ORDER BY last_event_at DESC LIMIT 1",
            {"run": run_id},
        ).rows
        last_step = -1
        if known and args.lines > 0:
            rows = reader.query(
                "SELECT step, groupArray(name), groupArray(value) FROM ("
                " SELECT step, name, argMax(value, seq) AS value FROM metrics"
                " WHERE project = {project:String} AND run_id = {run:String}"
                " GROUP BY step, name ORDER BY name)"
                " GROUP BY step ORDER BY step DESC LIMIT {n:UInt64}",
                {"project": known[0][0], "run": run_id, "n": args.lines},
            ).rows
            for step, names, values in reversed(rows):
                print(format_line(int(step), dict(zip(names, values, strict=True))), flush=True)
            if rows:
                last_step = int(rows[0][0])
    if known and known[0][1] != "running":
        exit_code = known[0][2]
        print(f"run {run_id} {known[0][1]} (exit code {exit_code})", flush=True)
        return 0
    return _follow(
        settings, run_id, last_step, known=bool(known), lookback=args.lookback, wait=args.wait
    )


def _follow(
    settings: Settings, run_id: str, last_step: int, *, known: bool, lookback: float, wait: float
) -> int:
    from runstream._extras import require
    from runstream.schemas.codec import decode
    from runstream.schemas.topics import Topics

    kafka = require("confluent_kafka", part="runstream tail", extra="sinks")
    topic = Topics(settings.topic_prefix).events
    consumer = kafka.Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            # assign() below: the group id is never joined and nothing is committed.
            "group.id": f"runstream-tail-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "latest",
            "log_level": 0,
        }
    )
    key = run_id.encode()
    try:
        metadata = consumer.list_topics(topic, timeout=10.0).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise RunstreamError(
                f"the events topic {topic} is not there on {settings.kafka_bootstrap}: check "
                "--kafka and --topic-prefix (RUNSTREAM_TOPIC_PREFIX)"
            )
        since = int((time.time() - lookback) * 1000)
        wanted = [kafka.TopicPartition(topic, p, since) for p in sorted(metadata.partitions)]
        offsets = consumer.offsets_for_times(wanted, timeout=10.0)
        for tp in offsets:
            if tp.offset < 0:
                tp.offset = kafka.OFFSET_END  # nothing since then: only what comes next
        consumer.assign(offsets)
        deadline = None if known else time.monotonic() + wait
        while True:
            message = consumer.poll(0.5)
            if message is None:
                if deadline is not None and time.monotonic() > deadline:
                    print(
                        f"runstream tail: run {run_id!r} not found: ClickHouse (runs_current) "
                        f"does not know it and the events topic {topic} had none of its events "
                        f"in the last {lookback:.0f}s nor the {wait:.0f}s waited. Check the id "
                        "(runstream runs ls), --topic-prefix, or raise --wait / --lookback.",
                        file=sys.stderr,
                    )
                    return 1
                continue
            if message.error() is not None:
                if message.error().code() == kafka.KafkaError._PARTITION_EOF:
                    continue
                raise RunstreamError(f"Kafka: {message.error()}")
            if message.key() != key:
                continue
            deadline = None
            try:
                event: Any = decode(message.value())
            except EventDecodeError as exc:
                print(f"runstream tail: skipped an event it cannot read: {exc}", file=sys.stderr)
                continue
            if event.type == "metrics_logged":
                body: Any = event.body
                if body.step <= last_step:
                    continue  # printed from ClickHouse already
                print(format_line(body.step, body.metrics), flush=True)
            elif event.type == "run_finished":
                body = event.body
                print(f"run {run_id} {body.status} (exit code {body.exit_code})", flush=True)
                return 0
            elif event.type == "run_resumed":
                last_step = -1  # a resumed run may log its steps again
    finally:
        consumer.close()
