"""Sub-commands of the ClickHouse side: ``sink``, ``query`` and ``migrate``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from runstream.settings import Settings


def add_sink_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add_common: Callable[[argparse.ArgumentParser], None],
) -> None:
    sink = sub.add_parser("sink", help="write the events topic into ClickHouse")
    add_common(sink)
    sink.add_argument("--group", dest="sink_group", help="Kafka consumer group")
    sink.add_argument("--batch-rows", dest="sink_batch_rows", type=int, help="rows per insert")
    sink.add_argument(
        "--batch-seconds", dest="sink_batch_seconds", type=float, help="max batch age"
    )
    sink.set_defaults(handler=_sink)

    query = sub.add_parser("query", help="run SQL against ClickHouse and print the result")
    add_common(query)
    query.add_argument("sql", help='the SQL statement, e.g. "SELECT count() FROM metrics"')
    query.add_argument("--format", choices=("table", "csv", "json"), default="table")
    query.set_defaults(handler=_query)

    migrate = sub.add_parser("migrate", help="create or upgrade the ClickHouse tables")
    add_common(migrate)
    migrate.set_defaults(handler=_migrate)


def _sink(args: argparse.Namespace, settings: Settings) -> int:
    from runstream.sinks.consumer import Sink

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()  # finish the batch in hand and commit it, then exit

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sink = Sink(settings)
    logging.getLogger("runstream.sink").info(
        "sink consuming %s from %s into %s/%s",
        sink.topics.events,
        settings.kafka_bootstrap,
        settings.clickhouse_url,
        settings.clickhouse_database,
    )
    sink.run(stop)
    return 0


def _query(args: argparse.Namespace, settings: Settings) -> int:
    from runstream.sinks.query import render, run_query

    columns, rows = run_query(settings, args.sql)
    sys.stdout.write(render(columns, rows, args.format))
    return 0


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from runstream.sinks.migrations import migrate

    applied = migrate(settings)
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0
