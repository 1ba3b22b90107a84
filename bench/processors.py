"""Stream processors: aggregation throughput, alert latency, crash detection latency.

    python -m bench.processors [--events 400000] [--runs 100] [--seconds 20]
                               [--only throughput|alerts]

A real local stack (Kafka + ClickHouse on free ports); every worker is its own process, as in
production (``runstream processors``, ``runstream notifier``).

1. Throughput: ``--events`` events of 10 metrics (200 runs), pre-filled in the events topic,
   folded by one worker, from the worker's first commit to the commit of the last offset; once
   with the default batches (up to 20,000 events) and once one event at a time
   (``RUNSTREAM_PROCESSOR_BATCH_EVENTS=1``: a flush and a commit per event) on a hundredth of
   them. Then faust's own ceiling on the same topic: ``bench.faust_floor``, an agent that only
   counts (at most 100,000 events).
2. Alert latency: ``--runs`` runs in one process each log a step 10 times a second; every 10th
   step's loss is NaN (the next one finite again, so every NaN is a new episode). Latency = the
   webhook receiver's clock at the POST minus the alert's ``fired_at`` (the ``run.log`` call).
3. Crash detection: a training process (heartbeat every 1 s, crash timeout 3 s) is killed with
   SIGKILL; latency = the webhook receiving the ``run_failed`` (crashed) alert minus the kill.
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import psutil
from confluent_kafka import Consumer, KafkaException, TopicPartition

from bench.common import local_stack, machine, percentile, table
from bench.sink_ingest import fill
from runstream.deploy.local.admin import ensure_topics
from runstream.deploy.local.workers import child_env, settings_env
from runstream.schemas import Topics
from runstream.settings import Settings

RULES = """
[[rule]]
name = "loss-nan"
kind = "nan"
metric = "loss"
level = "error"

[[rule]]
name = "crashed"
kind = "run_failed"
"""

TRAINING = """
import sys, time, runstream
run = runstream.init(project="crash", id=sys.argv[1])
step = 0
while True:
    run.log({"loss": 1.0 / (step + 1)}, step=step)
    step += 1
    time.sleep(0.1)
"""


@contextmanager
def worker(
    settings: Settings, command: str, log: Path, **extra: str
) -> Iterator[subprocess.Popen[bytes]]:
    env = child_env({**settings_env(settings), **extra})
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "runstream", command], env=env, stdout=out, stderr=out
        )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(30)


def committed_offsets(settings: Settings, group: str, partitions: int) -> int:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": group})
    topic = Topics(settings.topic_prefix).events
    try:
        offsets = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], 10)
    except KafkaException:  # the group's coordinator is not there yet
        return 0
    finally:
        consumer.close()
    return sum(max(0, tp.offset) for tp in offsets)


def throughput(settings: Settings, events: int, batch: int, home: Path) -> tuple[float, float]:
    """(events per second, CPU cores busy) of one worker over a pre-filled topic. The cores
    are the worker process's CPU time (all its threads: librdkafka's too) over the time."""
    group = f"bench-{uuid.uuid4().hex[:6]}"
    partitions = settings.topic_partitions
    with worker(settings, "processors", home / f"throughput-{batch}.log",
                RUNSTREAM_PROCESSOR_GROUP=group,
                RUNSTREAM_PROCESSOR_BATCH_EVENTS=str(batch)) as process:  # fmt: skip
        cpu = psutil.Process(process.pid).cpu_times
        group = f"{group}-events"  # where the worker commits the events topic's offsets
        while committed_offsets(settings, group, partitions) == 0:
            time.sleep(0.2)
        started, first = time.perf_counter(), committed_offsets(settings, group, partitions)
        cpu_started = sum(cpu()[:2])
        while (done := committed_offsets(settings, group, partitions)) < events:
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
        busy = sum(cpu()[:2]) - cpu_started
    return (done - first) / elapsed, busy / elapsed


def faust_floor(settings: Settings, events: int) -> float:
    """Events per second faust delivers to an agent that only counts (bench.faust_floor)."""
    topic = Topics(settings.topic_prefix).events
    command = [sys.executable, "-m", "bench.faust_floor", settings.kafka_bootstrap, topic,
               str(events), str(settings.topic_partitions)]  # fmt: skip
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600)
    rate = re.search(r"RATE (\d+)", done.stdout)  # after the worker's terminal escapes
    return float(rate.group(1)) if rate else math.nan


RECEIVER = """
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        at = time.time()
        self.send_response(204)
        self.end_headers()
        sys.stdout.write(repr(at) + " " + body.decode() + "\\n")
        sys.stdout.flush()

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


class Receiver:
    """A webhook endpoint in a process of its own, as a real one would be (in the bench's
    process, which runs the 100 training runs, it shared their interpreter and measured that);
    records when each alert version arrived."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        self.process = subprocess.Popen(
            [sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.process.stdout.readline())}/"
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            at, _, body = line.partition(" ")
            self.arrivals.append((float(at), orjson.loads(body)))

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def seconds_since(payload: dict[str, Any], at: float) -> float:
    return at - datetime.fromisoformat(payload["fired_at"].replace("Z", "+00:00")).timestamp()


def alert_latency(settings: Settings, runs: int, seconds: float, receiver: Receiver) -> list[float]:
    import runstream

    active = [runstream.init(project="alerts", settings=settings) for _ in range(runs)]
    steps = int(seconds * 10)
    start = time.time()
    for step in range(steps):
        pause = start + step * 0.1 - time.time()
        if pause > 0:
            time.sleep(pause)
        loss = float("nan") if step % 10 == 5 else 1.0 / (step + 1)
        for run in active:
            run.log({"loss": loss, "acc": step / steps}, step=step)
    time.sleep(3)
    for run in active:
        run.finish()
    return sorted(
        seconds_since(p, at)
        for at, p in receiver.arrivals
        if p["rule"] == "loss-nan" and p["event"] == "alert.fired" and p["project"] == "alerts"
    )


def crash_latency(settings: Settings, receiver: Receiver, home: Path, tries: int) -> list[float]:
    import os
    import signal

    latencies = []
    for attempt in range(tries):
        run_id = f"crash-{attempt}-{uuid.uuid4().hex[:6]}"
        env = child_env({**settings_env(settings), "RUNSTREAM_HEARTBEAT_INTERVAL": "1",
                         "RUNSTREAM_DIR": str(home / "spool")})  # fmt: skip
        process = subprocess.Popen([sys.executable, "-c", TRAINING, run_id], env=env)
        time.sleep(4)
        os.kill(process.pid, signal.SIGKILL)
        killed = time.time()
        process.wait()
        deadline = killed + 60
        while time.time() < deadline:
            arrived = [at for at, p in receiver.arrivals
                       if p["run_id"] == run_id and p["rule"] == "crashed"]  # fmt: skip
            if arrived:
                latencies.append(arrived[0] - killed)
                break
            time.sleep(0.05)
    return latencies


def alerting(
    settings: Settings, home: Path, args: argparse.Namespace
) -> tuple[list[float], list[float]]:
    """Alert latencies, then crash detection latencies."""
    # Topics of their own: no backlog from the throughput part in front of them.
    settings = settings.with_overrides(topic_prefix="alerting", dir=home / "spool")
    ensure_topics(settings)
    rules = home / "alerts.toml"
    rules.write_text(RULES)
    receiver = Receiver()
    hooks = home / "webhooks.toml"
    hooks.write_text(f'[[webhook]]\nurl = "{receiver.url}"\nsecret = "bench"\n')
    extra = {"RUNSTREAM_ALERT_RULES": str(rules), "RUNSTREAM_WEBHOOKS": str(hooks),
             "RUNSTREAM_PROCESSOR_GROUP": "alerting",
             "RUNSTREAM_PROCESSOR_HEARTBEAT_TIMEOUT": "3"}  # fmt: skip
    try:
        with worker(settings, "processors", home / "alerting.log", **extra), \
                worker(settings, "notifier", home / "notifier.log", **extra):  # fmt: skip
            time.sleep(12)  # the workers start and join their groups
            alerts = alert_latency(settings, args.runs, args.seconds, receiver)
            crashes = crash_latency(settings, receiver, home, args.crashes)
    finally:
        receiver.close()
    return alerts, crashes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--crashes", type=int, default=3)
    parser.add_argument("--only", choices=["throughput", "alerts"], help="one part only")
    args = parser.parse_args()
    batched = one_by_one = cores = floor = math.nan
    alerts: list[float] = []
    crashes: list[float] = []
    with local_stack(partitions=6) as stack, tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        settings = stack.settings
        if args.only != "alerts":
            fill(settings, args.events, 200)
            batched, cores = throughput(settings, args.events, 20_000, home)
            one_by_one, _ = throughput(settings, args.events // 100, 1, home)
            floor = faust_floor(settings, min(args.events, 100_000))
        if args.only != "throughput":
            alerts, crashes = alerting(settings, home, args)
    print(f"{machine()}")
    print(table([
        ["aggregation, one worker", "events/s", "points/s"],
        ["batches (up to 20,000 events)", f"{batched:,.0f}", f"{batched * 10:,.0f}"],
        ["one event at a time", f"{one_by_one:,.0f}", f"{one_by_one * 10:,.0f}"],
        ["faust alone: an agent that only counts", f"{floor:,.0f}", "-"],
    ]))  # fmt: skip
    print(
        f"batching: {batched / one_by_one:.1f}x; the batched worker kept {cores:.2f} cores busy: "
        f"{batched / cores:,.0f} events per CPU-second; target >= 50,000 events/s on one core"
    )
    print()
    print(table([
        ["latency", "samples", "p50 s", "p95 s", "max s"],
        [f"NaN alert at the webhook ({args.runs} runs x 10 steps/s)", f"{len(alerts):,}",
         f"{percentile(alerts, 0.5):.3f}", f"{percentile(alerts, 0.95):.3f}",
         f"{alerts[-1]:.3f}" if alerts else "-"],
        ["crashed alert after SIGKILL (heartbeat 1 s, timeout 3 s)", f"{len(crashes)}",
         f"{percentile(sorted(crashes), 0.5):.3f}", f"{percentile(sorted(crashes), 0.95):.3f}",
         f"{max(crashes):.3f}" if crashes else "-"],
    ]))  # fmt: skip
    print("target: alert p95 <= 1 s")


if __name__ == "__main__":
    main()
