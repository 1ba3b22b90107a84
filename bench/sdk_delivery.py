"""Sustained delivery: calls per second with every event acknowledged by Kafka, and finish().

    python -m bench.sdk_delivery [--calls 100000] [--repeat 3]

One training process logs ``--calls`` calls of 10 scalars as fast as it can, then calls
``finish()``. Reported: the loop's calls/s, calls/s until Kafka acknowledged the last event
(the figure that counts), how long ``finish()`` took, and a check with a consumer that the topic
holds exactly the run's events. The process first logs one step and waits for it, so the
producer's connection set-up (about 0.5 s for an idempotent producer to get its id) is not
counted; the cold figure is printed too.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap

from confluent_kafka import Consumer, TopicPartition

from bench.common import local_stack, machine, table
from runstream.schemas import Topics

TRAINING = """
import json, sys, time
import runstream
from runstream.settings import Settings
calls, warm = int(sys.argv[1]), sys.argv[2] == "warm"
run = runstream.init(project="bench", settings=Settings.load(system_metrics_interval=0))
data = {f"metric_{i}": 0.1 * i + 0.05 for i in range(10)}
if warm:
    run.log(data)
    run._worker.flush(30)
start = time.perf_counter()
for i in range(calls):
    data["metric_0"] = i * 1e-3
    run.log(data)
loop = time.perf_counter() - start
result = run.finish()
total = time.perf_counter() - start
print(json.dumps({"run": run.id, "loop": loop, "total": total, "finish": total - loop,
                  "produced": result.produced, "delivered": result.delivered, "ok": result.ok}))
"""


def count_messages(bootstrap: str, topic: str, partitions: int) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-count"})
    total = 0
    for p in range(partitions):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        total += high - low
    consumer.close()
    return total


def main() -> None:
    import json
    import os
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = [["run", "loop calls/s", "acked calls/s", "finish s", "events in topic", "ok"]]
    with local_stack() as stack:
        settings = stack.settings
        topic = Topics(settings.topic_prefix).events
        in_topic = 0
        for attempt in range(args.repeat + 1):
            mode = "cold" if attempt == 0 else "warm"
            with tempfile.TemporaryDirectory() as spool:
                env = {**os.environ, "RUNSTREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                       "RUNSTREAM_DIR": spool, "RUNSTREAM_FINISH_TIMEOUT": "60"}  # fmt: skip
                done = subprocess.run(
                    [sys.executable, "-c", textwrap.dedent(TRAINING), str(args.calls), mode],
                    env=env, capture_output=True, text=True, timeout=600, check=True,
                )  # fmt: skip
            r = json.loads(done.stdout.strip().splitlines()[-1])
            before = in_topic
            in_topic = count_messages(settings.kafka_bootstrap, topic, settings.topic_partitions)
            expected = args.calls + 3 + (1 if mode == "warm" else 0)  # start, summary, finish
            rows.append([
                f"{mode} {attempt}", f"{args.calls / r['loop']:,.0f}",
                f"{args.calls / r['total']:,.0f}", f"{r['finish']:.2f}",
                f"{in_topic - before:,} (expected {expected:,})",
                str(r["ok"] and in_topic - before == expected),
            ])  # fmt: skip
    print(f"{args.calls:,} calls of 10 scalars, every event acknowledged (acks=all), {machine()}")
    print(table(rows))
    print("targets: >= 200,000 acked calls/s, finish() under 1 s")


if __name__ == "__main__":
    main()
