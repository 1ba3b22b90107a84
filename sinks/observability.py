"""What the sink says about itself: counters, a Prometheus ``/metrics`` endpoint, a status line."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

logger = logging.getLogger("runstream.sink")


@dataclass
class SinkStats:
    """Updated by the sink's thread only; read (racily, harmlessly) by the metrics endpoint."""

    batches: int = 0
    events: int = 0
    rows: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    insert_failures: int = 0
    last_batch_rows: int = 0
    last_insert_seconds: float = 0.0
    insert_seconds_total: float = 0.0
    lag_messages: int = 0
    partitions: int = 0
    paused: bool = False
    started: float = field(default_factory=time.time)

    def record_batch(self, *, events: int, rows: int, dead_letters: int, duplicates: int) -> None:
        self.batches += 1
        self.events += events
        self.rows += rows
        self.dead_letters += dead_letters
        self.duplicates += duplicates
        self.last_batch_rows = rows

    def record_insert(self, seconds: float) -> None:
        self.last_insert_seconds = seconds
        self.insert_seconds_total += seconds

    def prometheus(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        lines = []
        for attribute, kind, text in EXPOSED:
            suffix = "_total" if kind == "counter" and not attribute.endswith("_total") else ""
            name = f"runstream_sink_{attribute}{suffix}"
            value = float(getattr(self, attribute))
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {_number(value)}"]
        return "\n".join(lines) + "\n"


EXPOSED = (
    ("events", "counter", "Events written to ClickHouse."),
    ("rows", "counter", "Rows written (events and metric points)."),
    ("batches", "counter", "Batches written and committed."),
    ("dead_letters", "counter", "Messages sent to the dead-letter topic."),
    ("duplicates", "counter", "Events sent again by a producer and left out."),
    ("insert_failures", "counter", "Inserts that failed and were retried."),
    ("insert_seconds_total", "counter", "Time spent in inserts."),
    ("last_insert_seconds", "gauge", "Duration of the last insert."),
    ("last_batch_rows", "gauge", "Rows in the last batch."),
    ("lag_messages", "gauge", "Messages behind the end of the topic."),
    ("partitions", "gauge", "Partitions assigned to this sink."),
    ("paused", "gauge", "1 while ClickHouse refuses inserts and consumption is paused."),
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
