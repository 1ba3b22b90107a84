"""``runstream tail RUN``: follow a live run's metrics as they arrive, as ``tail -f`` follows a
file. ``RUN`` is ``RUN_ID``, ``PROJECT/RUN_ID`` (split at the last ``/``: a run id has none) or
``RUN_ID --project PROJECT`` (:mod:`runstream.read.cli.runref`); a bare id that is in several
projects is refused (exit 2) with the projects and how to pick one.

1. The run is looked up in ClickHouse (``runs_brief``). Known: its last ``-n`` steps (default 10)
   are printed from the ``metrics`` table. Ended already: then its status, and the command ends.
2. Then it reads the events topic (``<topic_prefix>.events``) from Kafka, from ``--lookback``
   seconds (default 120) before now, so that nothing logged while ClickHouse was being asked (or
   not yet written by a lagging sink) is missed. Steps up to the newest ClickHouse holds are
   skipped (they were printed, or ``-n`` left them out); with ``-n 0`` so is every step that
   reached Kafka before the command started: only what arrives after it prints. It uses
   ``assign()`` with a throw-away group id and never commits, so it moves no consumer group's
   offsets; it keeps the events whose key is the run id (every topic is keyed by run id,
   docs/events.md), decodes them with :func:`runstream.schemas.codec.decode` and keeps those of
   the run's project (a run id may be in several projects).
3. Each ``metrics_logged`` event prints one line ``STEP  name=value name=value`` (names sorted
   and escaped as every read command escapes text, :func:`runstream.read.cli.output.escape`;
   values as Python writes floats; integral values without ``.0``). A ``run_finished`` event
   prints ``run PROJECT/RUN_ID STATUS (exit code N)`` and the command exits: 0 when the status is
   ``finished``, 1 for ``failed``, ``crashed``, ``killed``.

A run that ClickHouse does not know is still followed when its events show up on Kafka within
``--wait`` seconds (default 10) of reading from ``--lookback`` ago: the sink may lag behind a run
that just started (a bare id then follows the project of the first event seen, and says so on
stderr if another project's run of that id shows up). Otherwise the command says so and exits 1.
Kafka unreachable: one line on stderr, exit 1. Ctrl-C exits 130 quietly.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import uuid
from collections.abc import Mapping
from typing import Any

from runstream.errors import EventDecodeError, ReadArgumentError, RunstreamError
from runstream.read.cli.output import escape
from runstream.read.cli.runref import RunRef, one_run, parse_run
from runstream.read.reader import Reader
from runstream.settings import Settings

#: Seconds to wait for Kafka's metadata before saying it cannot be reached.
KAFKA_TIMEOUT = 5.0


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
    """``STEP  name=value ...`` with names sorted; control characters in a name escaped."""
    values = " ".join(f"{escape(name)}={format_value(metrics[name])}" for name in sorted(metrics))
    return f"{step}  {values}"


def status_line(project: str, run_id: str, status: str, exit_code: int | None) -> str:
    """``run PROJECT/RUN_ID STATUS (exit code N)``, escaped."""
    code = "" if exit_code is None else f" (exit code {exit_code})"
    return escape(f"run {project}/{run_id} {status}{code}")


def exit_status(status: str) -> int:
    """0 for a run that ``finished``; 1 for ``failed``, ``crashed``, ``killed`` (or any other
    end)."""
    return 0 if status == "finished" else 1


def tail_command(args: argparse.Namespace, settings: Settings) -> int:
    """Exit status: 0 when the run finished (its status printed), 1 when it ended otherwise
    (failed, crashed, killed), is unknown to ClickHouse and Kafka, or Kafka or ClickHouse cannot
    be read; 2 for a run id in several projects without a project, 130 on Ctrl-C."""
    try:
        ref = parse_run(args.run_id, getattr(args, "project", None))
    except ReadArgumentError as exc:
        print(f"runstream tail: {exc}", file=sys.stderr)
        return 2
    started = time.time()
    with Reader(settings) as reader:
        try:
            known = one_run(reader, ref, "tail")
        except ReadArgumentError as exc:
            print(f"runstream tail: {exc}", file=sys.stderr)
            return 2
        last_step = -1
        if known:
            ref = RunRef(ref.run_id, known[0])
            bound: dict[str, Any] = {"project": known[0], "run": ref.run_id}
            if args.lines > 0:
                rows = reader.query(
                    "SELECT step, groupArray(name), groupArray(value) FROM ("
                    " SELECT step, name, argMax(value, seq) AS value FROM metrics"
                    " WHERE project = {project:String} AND run_id = {run:String}"
                    " GROUP BY step, name ORDER BY name)"
                    " GROUP BY step ORDER BY step DESC LIMIT {n:UInt64}",
                    {**bound, "n": args.lines},
                ).rows
                for step, names, values in reversed(rows):
                    print(format_line(int(step), dict(zip(names, values, strict=True))), flush=True)
                if rows:
                    last_step = int(rows[0][0])
            else:
                newest = reader.query(
                    "SELECT maxOrNull(step) FROM metrics"
                    " WHERE project = {project:String} AND run_id = {run:String}",
                    bound,
                ).rows
                if newest and newest[0][0] is not None:
                    last_step = int(newest[0][0])
    if known and known[1] != "running":
        print(status_line(known[0], ref.run_id, known[1], known[2]), flush=True)
        return exit_status(known[1])
    return _follow(
        settings, ref, last_step, known=bool(known), lookback=args.lookback, wait=args.wait,
        new_after=started if args.lines == 0 else None,
    )  # fmt: skip


def _follow(
    settings: Settings,
    ref: RunRef,
    last_step: int,
    *,
    known: bool,
    lookback: float,
    wait: float,
    new_after: float | None,
) -> int:
    """Follow ``ref`` on Kafka; ``new_after`` (epoch seconds): skip the steps that reached Kafka
    before it (``-n 0``)."""
    from runstream._extras import require

    kafka = require("confluent_kafka", part="runstream tail", extra="sinks")
    try:
        return _read(kafka, settings, ref, last_step, known=known, lookback=lookback,
                     wait=wait, new_after=new_after)  # fmt: skip
    except kafka.KafkaException as exc:
        error = exc.args[0] if exc.args else exc
        text = error.str() if hasattr(error, "str") else str(error)
        raise RunstreamError(
            f"cannot read Kafka at {settings.kafka_bootstrap}: {text}. Is it running? Check "
            "--kafka (RUNSTREAM_KAFKA_BOOTSTRAP)"
        ) from None


def _read(
    kafka: Any,
    settings: Settings,
    ref: RunRef,
    last_step: int,
    *,
    known: bool,
    lookback: float,
    wait: float,
    new_after: float | None,
) -> int:
    from runstream.schemas.codec import decode
    from runstream.schemas.topics import Topics

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
    key = ref.run_id.encode()
    project = ref.project  # None: a bare id ClickHouse does not know; the first event pins it
    guessed = project is None  # say so when a run of another project has the id too
    others: set[str] = set()
    new_after_ms = None if new_after is None else int(new_after * 1000)
    try:
        metadata = consumer.list_topics(topic, timeout=KAFKA_TIMEOUT).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise RunstreamError(
                f"the events topic {topic} is not there on {settings.kafka_bootstrap}: check "
                "--kafka and --topic-prefix (RUNSTREAM_TOPIC_PREFIX)"
            )
        since = int((time.time() - lookback) * 1000)
        wanted = [kafka.TopicPartition(topic, p, since) for p in sorted(metadata.partitions)]
        offsets = consumer.offsets_for_times(wanted, timeout=KAFKA_TIMEOUT)
        for tp in offsets:
            if tp.offset < 0:
                tp.offset = kafka.OFFSET_END  # nothing since then: only what comes next
        consumer.assign(offsets)
        deadline = None if known else time.monotonic() + wait
        while True:
            message = consumer.poll(0.5)
            if message is None:
                if deadline is not None and time.monotonic() > deadline:
                    name = escape(str(ref))
                    print(
                        f"runstream tail: run {name!r} not found: ClickHouse (runs_current) "
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
                raise kafka.KafkaException(message.error())
            if message.key() != key:
                continue
            try:
                event: Any = decode(message.value())
            except EventDecodeError as exc:
                print(f"runstream tail: skipped an event it cannot read: {exc}", file=sys.stderr)
                continue
            if project is None:
                project = event.project
            if event.project != project:  # the same run id in another project
                if guessed and event.project not in others:
                    others.add(event.project)
                    print(
                        escape(
                            f"runstream tail: run id {ref.run_id!r} is also in project "
                            f"{event.project!r}: following {project!r} only (pass "
                            f"{event.project}/{ref.run_id} for that one)"
                        ),
                        file=sys.stderr,
                        flush=True,
                    )
                continue
            deadline = None
            if event.type == "metrics_logged":
                body: Any = event.body
                if body.step <= last_step:
                    continue  # printed from ClickHouse already, or older than -n asked for
                if new_after_ms is not None and _kafka_ms(message) < new_after_ms:
                    continue  # -n 0: only what arrives after the command started
                print(format_line(body.step, body.metrics), flush=True)
            elif event.type == "run_finished":
                body = event.body
                print(status_line(project, ref.run_id, body.status, body.exit_code), flush=True)
                return exit_status(str(body.status))
            elif event.type == "run_resumed":
                last_step = -1  # a resumed run may log its steps again
    finally:
        consumer.close()


def _kafka_ms(message: Any) -> int:
    """The message's Kafka timestamp (ms), or now when it has none."""
    kind, ms = message.timestamp()
    return int(ms) if kind != 0 and ms >= 0 else int(time.time() * 1000)
