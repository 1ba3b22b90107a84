"""Shared by the benchmarks: a real local stack on free ports, percentiles, output."""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from runstream.deploy.local.admin import ensure_topics
from runstream.deploy.local.stack import LocalStack
from runstream.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def local_stack(partitions: int = 6) -> Iterator[LocalStack]:
    """Kafka and ClickHouse, for real, in a temporary home; stopped on the way out."""
    with tempfile.TemporaryDirectory(prefix="runstream-bench-") as home:
        stack = LocalStack(
            Settings.load(
                kafka_bootstrap=f"127.0.0.1:{free_port()}",
                kafka_controller_port=free_port(),
                clickhouse_url=f"http://127.0.0.1:{free_port()}",
                home=Path(home),
                topic_partitions=partitions,
                sink_metrics_port=0,
            ),
            workers=(),
        )
        try:
            stack.up()
            ensure_topics(stack.settings)
            yield stack
        finally:
            stack.down()


def percentile(sorted_values: list[int] | list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, int(q * len(sorted_values)))
    return float(sorted_values[index])


def machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def python() -> str:
    return sys.executable
