"""Ingest throughput: a pre-filled events topic into ClickHouse, in metric points per second.

    python -m bench.sink_ingest [--events 200000] [--runs 200] [--rounds 0]

The topic is filled first with ``--events`` events of 10 metrics each (as the SDK encodes them),
spread over ``--runs`` runs. Then, in the same invocation, on the same data:

1. ``runstream sink`` (one process, in-process here): check each event, leave out re-sent
   ones, one INSERT of the events' JSON per batch (ClickHouse's views fan the points out into
   ``metrics`` and the derived tables), commit; the next batch is read while one is written;
2. ClickHouse's own Kafka table engine reading the same topic, with a materialized view that
   extracts the metric points into a table of the same shape (no validation, no dead letters,
   no exactly-once) -- when the server can run it. The chdb-core 26.9 server lists the engine
   but refuses to create such a table ("Shutdown was called"), so then:
3. a plain confluent-kafka consumer doing the inserts naively: decode each message with
   orjson and insert its rows one message at a time (on the first ``--naive-events`` events).
"""

from __future__ import annotations

import argparse
import statistics
import time

import orjson
from confluent_kafka import Producer

from bench.common import local_stack, machine, table
from runstream.schemas import Topics
from runstream.schemas.codec import EnvelopeEncoder
from runstream.schemas.ids import uuid7
from runstream.settings import Settings
from runstream.sinks.clickhouse import connect
from runstream.sinks.consumer import Sink
from runstream.sinks.migrations import migrate

PRODUCER = {"sdk": "runstream-python", "version": "bench", "host": "bench", "pid": 1}


def fill(settings: Settings, events: int, runs: int) -> float:
    topic = Topics(settings.topic_prefix).events
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 50,
                         "compression.type": "lz4", "batch.size": 1_000_000})  # fmt: skip
    encoders = [
        EnvelopeEncoder(project="bench", run_id=f"run-{r}", producer=PRODUCER) for r in range(runs)
    ]
    steps = events // runs
    started = time.perf_counter()
    for step in range(steps):
        for r, encoder in enumerate(encoders):
            metrics = ",".join(f'"metric_{i}":{step * 0.001 + i + r:.6f}' for i in range(10))
            body = f'{{"step":{step},"metrics":{{{metrics}}}}}'.encode()
            value = encoder.encode(uuid7(), "metrics_logged", step, "2026-11-28T12:00:00.000000Z",
                                   body)  # fmt: skip
            while True:
                try:
                    producer.produce(topic, value=value, key=f"run-{r}")
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.poll(0)
    producer.flush(120)
    return time.perf_counter() - started


def runstream_sink(settings: Settings, events: int) -> tuple[float, float, Sink]:
    """(seconds from the first message to the last commit, seconds to join the group, sink)."""
    sink = Sink(settings)
    created = time.perf_counter()
    while sink.batch.messages == 0 and sink.stats.events == 0:
        sink.poll(0.05)  # joining the consumer group: not ingest time
    started = time.perf_counter()
    deadline = started + 600
    while sink.stats.events < events and time.perf_counter() < deadline:
        sink.poll(0.5)
    sink.flush()
    elapsed = time.perf_counter() - started
    sink.close()
    return elapsed, started - created, sink


def kafka_engine(settings: Settings, points: int) -> float | str:
    client = connect(settings, database="default")
    db = "kafka_engine_bench"
    topic = Topics(settings.topic_prefix).events
    client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    client.command(
        f"CREATE TABLE {db}.points (run_id String, name LowCardinality(String), step Int64, "
        "value Float64) ENGINE = MergeTree ORDER BY (run_id, name, step)"
    )
    try:
        client.command(
            f"CREATE TABLE {db}.queue (raw String) ENGINE = Kafka SETTINGS "
            f"kafka_broker_list = '{settings.kafka_bootstrap}', kafka_topic_list = '{topic}', "
            "kafka_group_name = 'clickhouse-kafka-engine-bench', kafka_format = 'JSONAsString', "
            "kafka_max_block_size = 65536, kafka_num_consumers = 1"
        )
    except Exception as exc:
        return f"unavailable: {str(exc).split('DB::Exception: ')[-1].split('(for url')[0].strip()}"
    started = time.perf_counter()
    client.command(
        f"CREATE MATERIALIZED VIEW {db}.extract TO {db}.points AS SELECT "
        "JSONExtractString(raw, 'run_id') AS run_id, kv.1 AS name, "
        "JSONExtractInt(raw, 'body', 'step') AS step, kv.2 AS value FROM {db}.queue "
        "ARRAY JOIN JSONExtractKeysAndValues(raw, 'body', 'metrics', 'Float64') AS kv".replace(
            "{db}", db
        )
    )
    deadline = started + 600
    while time.perf_counter() < deadline:
        count = int(client.query(f"SELECT count() FROM {db}.points").result_rows[0][0])
        if count >= points:
            return time.perf_counter() - started
        time.sleep(0.2)
    return f"only {count:,} of {points:,} points after 600 s"


def naive_consumer(settings: Settings, events: int) -> float:
    """Row-by-row, the way a first attempt would do it: one INSERT per message."""
    from confluent_kafka import Consumer

    client = connect(settings)
    client.command(
        "CREATE TABLE IF NOT EXISTS naive_points (run_id String, name LowCardinality(String), "
        "step Int64, value Float64) ENGINE = MergeTree ORDER BY (run_id, name, step)"
    )
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "naive",
                         "auto.offset.reset": "earliest", "enable.auto.commit": True})  # fmt: skip
    consumer.subscribe([Topics(settings.topic_prefix).events])
    done = 0
    started = time.perf_counter()
    while done < events:
        message = consumer.poll(1.0)
        if message is None or message.error() is not None:
            continue
        event = orjson.loads(message.value() or b"{}")
        body = event["body"]
        rows = [[event["run_id"], k, body["step"], v] for k, v in body["metrics"].items()]
        client.insert("naive_points", rows, column_names=["run_id", "name", "step", "value"])
        done += 1
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--naive-events", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=0, help="more sink/baseline pairs")
    args = parser.parse_args()
    events = args.events - args.events % args.runs
    points = events * 10
    with local_stack(partitions=6) as stack:
        settings = stack.settings.with_overrides(sink_metrics_port=0)
        fill_seconds = fill(settings, events, args.runs)
        ours, joining, sink = runstream_sink(settings, events)
        # The same sink as before migrations 0014 and 0015 (a baseline in this run): no
        # metric_blocks view on the inserts, the stored run rows refreshed once, at the end.
        # Single runs move by 25% here: --rounds N alternates the two N times more, each into
        # a database and consumer group of its own, and the means are compared.
        fulls, bases = [ours], []
        for round_ in range(1 + args.rounds):
            for baseline in (True, False) if round_ else (True,):
                tag = f"{'base' if baseline else 'full'}{round_}"
                variant = settings.with_overrides(
                    clickhouse_database=f"{settings.clickhouse_database}_{tag}",
                    sink_group=f"{settings.sink_group}-{tag}",
                    sink_snapshot_seconds=60 if baseline else settings.sink_snapshot_seconds,
                )
                migrate(variant)
                if baseline:
                    connect(variant).command("DROP VIEW metric_blocks_mv")
                seconds, _, variant_sink = runstream_sink(variant, events)
                (bases if baseline else fulls).append(seconds)
                if not round_:
                    base_sink = variant_sink
        base = statistics.mean(bases)
        engine = kafka_engine(settings, points)
        naive = naive_consumer(settings, args.naive_events)
        db = settings.clickhouse_database
        client = connect(settings)
        stored = int(client.query(f"SELECT count() FROM {db}.metrics").result_rows[0][0])
        size = client.query(
            "SELECT sum(data_compressed_bytes), sum(rows) FROM system.parts "
            f"WHERE database = '{db}' AND table = 'metrics' AND active"
        ).result_rows[0]
    rows = [["consumer", "seconds", "events/s", "points/s", "note"]]
    rows.append(["runstream sink (1 process)", f"{ours:.2f}", f"{events / ours:,.0f}",
                 f"{points / ours:,.0f}",
                 f"{stored:,} points stored, {sink.stats.batches} batches, inserts busy "
                 f"{sink.stats.insert_seconds_total / ours:.0%} of the time, "
                 f"after {joining:.1f}s joining the group"])  # fmt: skip
    full = statistics.mean(fulls)
    rows.append(["same, as before 0014/0015 (baseline)", f"{base:.2f}", f"{events / base:,.0f}",
                 f"{points / base:,.0f}",
                 f"no metric_blocks view, run rows stored once, at the end; "
                 f"{base_sink.stats.batches} batches"])  # fmt: skip
    if args.rounds:
        rows.append([f"means of {len(fulls)} runs: sink / baseline", f"{full:.2f} / {base:.2f}",
                     "", f"{points / full:,.0f} / {points / base:,.0f}",
                     f"the sink runs at {base / full:.0%} of the baseline's rate; runs (s): "
                     f"{', '.join(f'{x:.1f}' for x in fulls)} / "
                     f"{', '.join(f'{x:.1f}' for x in bases)}"])  # fmt: skip
    if isinstance(engine, float):
        rows.append(["ClickHouse Kafka engine + MV", f"{engine:.2f}", f"{events / engine:,.0f}",
                     f"{points / engine:,.0f}", "no validation, no exactly-once"])  # fmt: skip
    else:
        rows.append(["ClickHouse Kafka engine + MV", "-", "-", "-", engine])
    rows.append(["naive consumer, insert per message", f"{naive:.2f}",
                 f"{args.naive_events / naive:,.0f}", f"{args.naive_events * 10 / naive:,.0f}",
                 f"first {args.naive_events:,} events only"])  # fmt: skip
    print(f"{events:,} events x 10 metrics from a pre-filled topic ({fill_seconds:.1f}s to fill), "
          f"{machine()}")  # fmt: skip
    print(table(rows))
    if size[1]:
        print(f"metrics table: {size[0] / size[1]:.2f} bytes per point on disk (compressed)")
    if isinstance(engine, float):
        print(f"runstream sink / Kafka engine: {engine / ours:.2f}x the engine's rate")
    print(f"runstream sink / naive consumer: {(events / ours) / (args.naive_events / naive):.0f}x")
    print("target: >= 1,000,000 points/s with one sink process")


if __name__ == "__main__":
    main()
