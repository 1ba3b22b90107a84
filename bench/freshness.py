"""Freshness: from ``run.log`` to the point being visible in ``metrics``, at a steady rate.

    python -m bench.freshness [--seconds 30] [--rate 10000]

A real local stack; ``runstream sink`` runs as its own process, as in production. A training
loop in this process logs 10 metrics per step at ``--rate`` points per second, paced by the
clock; a poller thread asks ClickHouse every 20 ms for the highest step stored. A step's
freshness is the time of the first poll that sees it minus the time ``run.log`` was called for
it: the whole path (SDK worker, Kafka, sink batch, insert, materialized view) as a reader sees
it, overstated by up to one poll.

Run twice in the same invocation: with the sink's default batching (50,000 rows or 1 s,
whichever first) and with ``RUNSTREAM_SINK_BATCH_SECONDS=0.2``, the knob that trades insert
count for freshness.
"""

from __future__ import annotations

import argparse
import bisect
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import runstream
from bench.common import local_stack, machine, percentile, table
from runstream.deploy.local.workers import child_env, settings_env
from runstream.settings import Settings
from runstream.sinks.clickhouse import connect
from runstream.sinks.migrations import migrate

POLL_SECONDS = 0.02
METRICS = 10


def measure(settings: Settings, seconds: float, rate: int, batch_seconds: float) -> list[float]:
    """Freshness of every step of one run, in seconds."""
    project, sink_group = "freshness", f"freshness-{uuid.uuid4().hex[:8]}"
    env = child_env(
        {
            **settings_env(settings),
            "RUNSTREAM_SINK_GROUP": sink_group,
            "RUNSTREAM_SINK_BATCH_SECONDS": str(batch_seconds),
            "RUNSTREAM_SINK_METRICS_PORT": "0",
        }
    )
    sink = subprocess.Popen([sys.executable, "-m", "runstream", "sink"], env=env)
    client = connect(settings)
    run = runstream.init(project=project, settings=settings)
    query = (
        f"SELECT max(step), count() FROM `{settings.clickhouse_database}`.metrics "
        "WHERE project = {p:String} AND run_id = {r:String} AND name = 'm0'"
    )
    parameters = {"p": project, "r": run.id}
    seen: list[tuple[float, int]] = []  # (poll time, highest step visible)
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            row = client.query(query, parameters=parameters).result_rows[0]
            if row[1]:
                seen.append((time.time(), int(row[0])))
            time.sleep(POLL_SECONDS)

    try:
        run.log({f"m{i}": 0.0 for i in range(METRICS)}, step=0)  # the sink joins its group
        while not seen:
            row = client.query(query, parameters=parameters).result_rows[0]
            if row[1]:
                seen.append((time.time(), int(row[0])))
            time.sleep(0.1)
        seen.clear()
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        steps = int(seconds * rate / METRICS)
        interval = METRICS / rate
        logged_at: list[float] = []
        start = time.time()
        for step in range(1, steps + 1):
            due = start + step * interval
            pause = due - time.time()
            if pause > 0:
                time.sleep(pause)
            logged_at.append(time.time())
            run.log({f"m{i}": step * 0.001 + i for i in range(METRICS)}, step=step)
        deadline = time.time() + 30
        while (not seen or seen[-1][1] < steps) and time.time() < deadline:
            time.sleep(0.05)
        stop.set()
        poller.join()
    finally:
        run.finish()
        sink.terminate()
        sink.wait(30)
    highest = [step for _, step in seen]
    freshness = []
    for step, at in enumerate(logged_at, start=1):
        first = bisect.bisect_left(highest, step)
        if first < len(seen):
            freshness.append(seen[first][0] - at)
    if len(freshness) < len(logged_at):
        raise SystemExit(f"only {len(freshness)} of {len(logged_at)} steps became visible")
    return sorted(freshness)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=int, default=10_000, help="metric points per second")
    args = parser.parse_args()
    os.environ.setdefault("RUNSTREAM_SYSTEM_METRICS_INTERVAL", "0")
    with local_stack(partitions=6) as stack, tempfile.TemporaryDirectory() as spool:
        settings = stack.settings.with_overrides(dir=Path(spool))
        migrate(settings)
        results = [
            (label, measure(settings, args.seconds, args.rate, batch_seconds))
            for label, batch_seconds in (
                ("default batching (50k rows / 1 s)", 1.0),
                ("RUNSTREAM_SINK_BATCH_SECONDS=0.2", 0.2),
            )
        ]
    print(f"{args.rate:,} points/s ({args.rate // METRICS:,} steps/s x {METRICS} metrics) for "
          f"{args.seconds:.0f} s, {machine()}")  # fmt: skip
    rows = [["sink", "steps", "p50 s", "p95 s", "p99 s", "max s"]]
    for label, values in results:
        rows.append([label, f"{len(values):,}",
                     *(f"{percentile(values, q):.3f}" for q in (0.5, 0.95, 0.99)),
                     f"{values[-1]:.3f}"])  # fmt: skip
    print(table(rows))
    print("target: p95 <= 2 s from run.log to the row being visible in metrics")


if __name__ == "__main__":
    main()
