"""The ``runstream`` command line: one sub-command per entry point, all reading one Settings."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from runstream._version import __version__
from runstream.errors import RunstreamError
from runstream.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], int]


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kafka", dest="kafka_bootstrap", help="Kafka bootstrap servers")
    parser.add_argument("--clickhouse", dest="clickhouse_url", help="ClickHouse HTTP URL")
    parser.add_argument("--database", dest="clickhouse_database", help="ClickHouse database")
    parser.add_argument("--topic-prefix", dest="topic_prefix", help="prefix of topic names")


SETTINGS_ARGS = (
    "kafka_bootstrap",
    "clickhouse_url",
    "clickhouse_database",
    "topic_prefix",
    "home",
    "cache_dir",
    "kafka_controller_port",
    "sink_group",
    "sink_batch_rows",
    "sink_batch_seconds",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runstream", description="runstream: experiment tracking on Kafka and ClickHouse."
    )
    parser.add_argument("--version", action="version", version=f"runstream {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from runstream.deploy.local.cli import add_dev_parser

    add_dev_parser(sub, _add_common)

    from runstream.sinks.cli import add_sink_parsers

    add_sink_parsers(sub, _add_common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.load(
            **{name: getattr(args, name) for name in SETTINGS_ARGS if hasattr(args, name)}
        )
        handler: Handler = args.handler
        return handler(args, settings)
    except RunstreamError as exc:
        print(f"runstream: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
