"""faust's own floor: an agent that only counts, reading a pre-filled topic in batches.

    python -m bench.faust_floor <bootstrap> <topic> <events> <partitions>

Point it at a topic filled the way ``bench.processors`` fills one (``bench.sink_ingest.fill``),
to set the processors' rate against what faust itself delivers to an agent on this machine.
Prints ``RATE <events/s>`` and exits. ``bench.processors`` runs it on its own topic.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import uuid
from typing import Any


def main() -> None:
    import faust
    from faust.worker import Worker

    bootstrap, topic_name, events, partitions = (
        sys.argv[1],
        sys.argv[2],
        int(sys.argv[3]),
        int(sys.argv[4]),
    )
    app = faust.App(
        f"faust-floor-{uuid.uuid4().hex[:6]}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        topic_partitions=partitions,
        broker_max_poll_records=10_000,
        stream_buffer_maxsize=50_000,
        datadir=tempfile.mkdtemp(prefix="faust-floor-"),
    )
    topic = app.topic(topic_name, key_serializer="raw", value_serializer="raw")
    seen = [0]
    started: list[float] = []
    last = [0.0]

    def report() -> None:
        print(f"RATE {seen[0] / max(1e-9, last[0] - started[0]):.0f}", flush=True)
        # Not app.stop(): faust then waits for acks of events the agent has long counted
        # (Consumer.wait_empty) and was seen to hang there. The measurement is done.
        shutil.rmtree(app.conf.datadir, ignore_errors=True)
        os._exit(0)

    @app.agent(topic)
    async def count(stream: Any) -> None:
        async for batch in stream.take_events(2000, within=0.05):
            if not started:
                started.append(time.perf_counter())
            seen[0] += len(batch)
            last[0] = time.perf_counter()
            if seen[0] >= events:
                report()

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]
    async def quiet() -> None:
        # A partition the group never handed over must not hang the bench: report what came.
        if started and time.perf_counter() - last[0] > 5:
            report()

    Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main()
