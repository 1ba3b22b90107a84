"""``runstream dev up | down | status``."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from runstream.schemas import Topics
from runstream.settings import Settings


def add_dev_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add_common: Callable[[argparse.ArgumentParser], None],
) -> None:
    dev = sub.add_parser("dev", help="run the whole pipeline on this machine")
    commands = dev.add_subparsers(dest="dev_command", required=True, metavar="COMMAND")
    for name, handler, text in (
        ("up", _up, "start Kafka, ClickHouse and the workers (idempotent)"),
        ("down", _down, "stop everything `up` started"),
        ("status", _status, "say what runs, where, and whether it is healthy"),
    ):
        parser = commands.add_parser(name, help=text)
        add_common(parser)
        parser.add_argument("--home", type=Path, help="data directory (RUNSTREAM_HOME)")
        parser.add_argument("--cache-dir", type=Path, help="where the Kafka jars are kept")
        parser.add_argument("--kafka-controller-port", type=int, help="KRaft controller port")
        parser.set_defaults(handler=handler)
        if name == "up":
            parser.add_argument(
                "--no-workers", action="store_true", help="start only Kafka and ClickHouse"
            )


def _up(args: argparse.Namespace, settings: Settings) -> int:
    from runstream.deploy.local.stack import LocalStack

    stack = LocalStack(settings, workers=()) if args.no_workers else LocalStack(settings)
    started = time.monotonic()
    statuses = stack.up()
    topics = Topics(settings.topic_prefix)
    print(f"runstream dev stack is up ({time.monotonic() - started:.1f}s)")
    print(f"  Kafka       {settings.kafka_bootstrap}   topics {topics.events}, ...")
    print(f"  ClickHouse  {settings.clickhouse_url}   database {settings.clickhouse_database}")
    for status in statuses[2:]:
        print(f"  {status.name:<11} pid {status.pid}   log {status.log}")
    print(f"  data and logs in {settings.home}")
    print('Try: runstream query "SELECT run_id, count() FROM metrics GROUP BY run_id"')
    return 0


def _down(args: argparse.Namespace, settings: Settings) -> int:
    from runstream.deploy.local.stack import LocalStack

    LocalStack(settings).down()
    print("runstream dev stack stopped")
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from runstream.deploy.local.stack import LocalStack

    statuses = LocalStack(settings).status()
    for s in statuses:
        where = s.address or "-"
        pid = str(s.pid) if s.pid is not None else "-"
        print(f"{s.name:<11} {s.state:<9} pid {pid:<8} {where:<26} log {s.log}")
    return 0 if all(s.healthy for s in statuses) else 1
