"""What the sink says about itself: counters, a Prometheus ``/metrics`` endpoint, a status line."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

logger = logging.getLogger("runstream.sink")


UNHEALTHY_AFTER_SECONDS = 60.0
"""A sink behind the end of its partitions that has committed nothing for this long is stuck."""


@dataclass
class SinkStats:
    """Updated by the sink's thread only; read (racily, harmlessly) by the metrics endpoint."""

    batches: int = 0
    events: int = 0
    rows: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    insert_failures: int = 0
    kafka_failures: int = 0
    last_batch_rows: int = 0
    last_insert_seconds: float = 0.0
    insert_seconds_total: float = 0.0
    lag_messages: int = 0
    partition_lag: dict[tuple[str, int], int] = field(default_factory=dict)
    """Messages behind the end per (topic, partition), counted from the last commit."""
    partitions: int = 0
    paused: bool = False
    started: float = field(default_factory=time.time)
    last_write_at: float | None = None
    """Unix time of the last batch written and committed."""
    behind_since: float | None = None
    """Unix time the lag was first seen above zero, since it was last zero."""
    unhealthy_after: float = UNHEALTHY_AFTER_SECONDS

    def record_batch(self, *, events: int, rows: int, dead_letters: int, duplicates: int) -> None:
        self.batches += 1
        self.events += events
        self.rows += rows
        self.dead_letters += dead_letters
        self.duplicates += duplicates
        self.last_batch_rows = rows
        self.last_write_at = time.time()

    def record_insert(self, seconds: float) -> None:
        self.last_insert_seconds = seconds
        self.insert_seconds_total += seconds

    def observe_lag(self, lags: dict[tuple[str, int], int]) -> None:
        self.partition_lag = dict(lags)
        self.lag_messages = sum(lags.values())
        if self.lag_messages == 0:
            self.behind_since = None
        elif self.behind_since is None:
            self.behind_since = time.time()

    @property
    def seconds_since_last_write(self) -> float:
        """Since the last batch committed (since the start when there was none)."""
        return time.time() - (self.last_write_at or self.started)

    @property
    def stalled_seconds(self) -> float:
        """How long the sink has been behind without committing anything; 0 when caught up."""
        if self.behind_since is None:
            return 0.0
        return time.time() - max(self.behind_since, self.last_write_at or 0.0)

    @property
    def healthy(self) -> bool:
        """False when the sink is behind and has made no progress for ``unhealthy_after`` s
        (ClickHouse or Kafka away or refusing, a batch it cannot get past)."""
        return self.stalled_seconds <= self.unhealthy_after

    def prometheus(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        lines = []
        for attribute, kind, text in EXPOSED:
            suffix = "_total" if kind == "counter" and not attribute.endswith("_total") else ""
            name = f"runstream_sink_{attribute}{suffix}"
            value = float(getattr(self, attribute))
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {_number(value)}"]
        name = "runstream_sink_partition_lag_messages"
        lines += [
            f"# HELP {name} Messages behind the end of one partition, from the last commit.",
            f"# TYPE {name} gauge",
        ]
        for (topic, partition), lag in sorted(self.partition_lag.items()):
            lines.append(f'{name}{{topic="{topic}",partition="{partition}"}} {lag}')
        return "\n".join(lines) + "\n"


EXPOSED = (
    ("events", "counter", "Events written to ClickHouse."),
    ("rows", "counter", "Rows written (events and metric points)."),
    ("batches", "counter", "Batches written and committed."),
    ("dead_letters", "counter", "Messages sent to the dead-letter topic."),
    ("duplicates", "counter", "Events sent again by a producer and left out."),
    ("insert_failures", "counter", "Inserts that failed and were retried."),
    ("kafka_failures", "counter", "Dead-letter writes and commits that failed and were retried."),
    ("insert_seconds_total", "counter", "Time spent in inserts."),
    ("last_insert_seconds", "gauge", "Duration of the last insert."),
    ("last_batch_rows", "gauge", "Rows in the last batch."),
    ("lag_messages", "gauge", "Messages behind the end of the topics, from the last commit."),
    ("seconds_since_last_write", "gauge", "Seconds since the last batch was committed."),
    ("stalled_seconds", "gauge", "Seconds behind without committing anything (0: keeping up)."),
    ("healthy", "gauge", "0 when stalled for longer than the limit, else 1."),
    ("partitions", "gauge", "Partitions assigned to this sink."),
    ("paused", "gauge", "1 while an insert, a dead letter or a commit is being retried."),
    ("started", "gauge", "Unix time the sink started."),
)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class MetricsServer:
    """``GET /metrics`` in a daemon thread; binding failures are logged, never fatal."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self.server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever, name="sink-metrics", daemon=True
        )
        self._thread.start()

    @classmethod
    def start(cls, port: int, stats: SinkStats, host: str = "127.0.0.1") -> MetricsServer | None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "try /metrics")
                    return
                body = stats.prometheus().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None  # scrapes every few seconds would drown the sink's log

        try:
            server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            logger.warning("no /metrics endpoint: cannot listen on %s:%d: %s", host, port, exc)
            return None
        logger.info("metrics on http://%s:%d/metrics", host, server.server_address[1])
        return cls(server)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def scrape(url: str, timeout: float = 2.0) -> dict[str, float]:
    """Read a ``/metrics`` page into ``{name: value}`` (for ``runstream dev status``)."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition(" ")
            values[name] = float(value)
    return values
