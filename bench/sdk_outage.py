"""Broker killed in the middle of a run and restarted: nothing lost, nothing doubled.

    python -m bench.sdk_outage [--calls 100000] [--rate 8000]

A run logs ``--calls`` calls of 10 scalars at a steady ``--rate`` per second. After 30% of the
calls the Kafka broker is killed with SIGKILL; about 3 s later it is started again. Reported:
the caller's per-call latency while the broker was down and overall, the time finish() took to
deliver the backlog, and what a consumer finds in the topic: every sequence number once, in
order, nothing missing.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import orjson
from confluent_kafka import Consumer

import runstream
from bench.common import local_stack, machine, percentile, table
from runstream.schemas import Topics


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 120.0) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-outage",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    consumer.subscribe([topic])
    seqs: list[int] = []
    deadline = time.monotonic() + timeout
    quiet = 0
    while time.monotonic() < deadline and quiet < 4:
        batch = [m for m in consumer.consume(5000, timeout=0.5) if m.error() is None]
        seqs += [orjson.loads(m.value() or b"{}")["seq"] for m in batch]
        quiet = quiet + 1 if not batch and len(seqs) >= expected else 0
    consumer.close()
    return seqs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=8_000, help="calls per second")
    parser.add_argument("--down-seconds", type=float, default=3.0)
    args = parser.parse_args()
    with local_stack() as stack:
        settings = stack.settings.with_overrides(
            dir=Path(stack.home) / "spool", finish_timeout=120, system_metrics_interval=0
        )
        run = runstream.init(project="bench", settings=settings)
        data = {f"metric_{i}": 0.1 * i + 0.05 for i in range(10)}
        down = threading.Event()
        kill_at = int(args.calls * 0.3)

        def outage() -> None:
            stack.stop_service("kafka", kill=True)
            down.set()
            time.sleep(args.down_seconds)
            stack.start_service("kafka")
            down.clear()

        during: list[int] = []
        normal: list[int] = []
        pc = time.perf_counter_ns
        interval = 1.0 / args.rate
        start = time.perf_counter()
        killer: threading.Thread | None = None
        for i in range(args.calls):
            if i == kill_at:
                killer = threading.Thread(target=outage)
                killer.start()
                down.wait(30)
            target = start + i * interval
            while time.perf_counter() < target:
                pass
            data["metric_0"] = i * 1e-3
            t = pc()
            run.log(data)
            (during if down.is_set() else normal).append(pc() - t)
        loop = time.perf_counter() - start
        assert killer is not None
        killer.join()
        finish_started = time.perf_counter()
        result = run.finish()
        finish = time.perf_counter() - finish_started
        seqs = read_topic(settings.kafka_bootstrap, Topics(settings.topic_prefix).events,
                          result.produced)  # fmt: skip
    expected = list(range(result.produced))
    lost = len(set(expected) - set(seqs))
    doubled = len(seqs) - len(set(seqs))
    in_order = seqs == sorted(seqs)
    during.sort()
    normal.sort()
    print(f"{args.calls:,} calls at {args.rate:,}/s, broker SIGKILLed at call {kill_at:,} and "
          f"restarted after {args.down_seconds:.0f}s, {machine()}")  # fmt: skip
    print(table([
        ["phase", "calls", "p50 us", "p99 us", "p99.9 us", "max us"],
        ["broker down", f"{len(during):,}", f"{percentile(during, .5) / 1e3:.2f}",
         f"{percentile(during, .99) / 1e3:.2f}", f"{percentile(during, .999) / 1e3:.1f}",
         f"{percentile(during, 1) / 1e3:.0f}"],
        ["broker up (before and after)", f"{len(normal):,}", f"{percentile(normal, .5) / 1e3:.2f}",
         f"{percentile(normal, .99) / 1e3:.2f}", f"{percentile(normal, .999) / 1e3:.1f}",
         f"{percentile(normal, 1) / 1e3:.0f}"],
    ]))  # fmt: skip
    print(f"\nloop {loop:.1f}s; finish() {finish:.2f}s; result ok={result.ok}")
    print(f"events produced {result.produced:,}; in the topic {len(seqs):,}; lost {lost}; "
          f"doubled {doubled}; in order {in_order}")  # fmt: skip
    print("targets: 0 lost, 0 doubled, caller p99 < 100 us while the broker is down")


if __name__ == "__main__":
    main()
