"""``runstream dev up | down | status``: the local stack from the command line."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from runstream.settings import Settings

if TYPE_CHECKING:  # the CLI builds this parser for every command: import the stack only when used
    from runstream.deploy.local.stack import ServiceStatus


def add_dev_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add_common: Callable[[argparse.ArgumentParser], None],
) -> None:
    dev = sub.add_parser(
        "dev",
        help="run Kafka, ClickHouse and the pipeline's workers on this machine",
        description="The local stack: Kafka (KRaft, jars from Maven Central) and ClickHouse "
        "(chdb-core) on loopback, with their data and logs in RUNSTREAM_HOME (~/.runstream).",
    )
    commands = dev.add_subparsers(dest="dev_command", required=True, metavar="COMMAND")
    for name, handler, text in (
        ("up", _up, "start Kafka, ClickHouse and the workers; idempotent"),
        ("down", _down, "stop everything `up` started; the data stays"),
        ("status", _status, "what runs, where, whether it is healthy (exit 1 if not all)"),
    ):
        parser = commands.add_parser(name, help=text, description=text)
        add_common(parser)
        parser.add_argument(
            "--home", dest="home", type=Path, help="data and logs of the stack (RUNSTREAM_HOME)"
        )
        parser.add_argument(
            "--cache-dir",
            dest="cache_dir",
            type=Path,
            help="where the Kafka jars are kept (RUNSTREAM_CACHE_DIR)",
        )
        parser.add_argument(
            "--kafka-controller-port",
            dest="kafka_controller_port",
            type=int,
            help="port of Kafka's KRaft controller (RUNSTREAM_KAFKA_CONTROLLER_PORT)",
        )
        if name in ("up", "down"):
            parser.add_argument(
                "--timeout",
                type=float,
                default=180.0 if name == "up" else 30.0,
                help="seconds to wait for the services (default: %(default)s)",
            )
        if name == "up":
            parser.add_argument(
                "--no-workers", action="store_true", help="start only Kafka and ClickHouse"
            )
        parser.set_defaults(handler=handler)


def _up(args: argparse.Namespace, settings: Settings) -> int:
    from runstream.deploy.local.reader_user import READER_USER, local_reader, password_path
    from runstream.deploy.local.stack import LocalStack
    from runstream.schemas.topics import Topics

    stack = LocalStack(settings, workers=() if args.no_workers else None)
    started = time.monotonic()
    statuses = stack.up(timeout=args.timeout)
    elapsed = time.monotonic() - started
    by_name = {s.name: s for s in statuses}
    topics = ", ".join(spec.name for spec in Topics(settings.topic_prefix).specs())
    print(f"runstream dev stack is up ({elapsed:.1f}s)")
    print(f"  Kafka bootstrap   {settings.kafka_bootstrap}{_pid(by_name['kafka'].pid)}")
    print(f"  ClickHouse        {settings.clickhouse_url}{_pid(by_name['clickhouse'].pid)}")
    print(f"  database          {settings.clickhouse_database}")
    if local_reader(settings) is not None:
        # The read side (runstream query, runstream.Api, the UI) finds it by itself.
        print(f"  reader user       {READER_USER}, password in {password_path(settings.home)}")
    print(f"  topics            {topics}")
    for status in statuses[2:]:
        print(f"  {status.name + ' worker':<17} {status.state}{_pid(status.pid)}")
    if "ui" in by_name:
        from runstream.ui.cli import ui_address

        print(f"  {'web UI':<17} {ui_address(settings.ui_host, settings.ui_port)}")
    print(f"  logs              {stack.logs}")
    print(f"  data              {settings.home}")
    print("Stop it with: runstream dev down")
    return 0


def _down(args: argparse.Namespace, settings: Settings) -> int:
    from runstream.deploy.local.stack import LocalStack

    LocalStack(settings).down(timeout=args.timeout)
    print(f"runstream dev stack stopped; its data stays in {settings.home}")
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from runstream.deploy.local.stack import LocalStack

    statuses = LocalStack(settings).status()
    print(_table(statuses))
    return 0 if all(s.healthy for s in statuses) else 1


def _pid(pid: int | None) -> str:
    return f"   (pid {pid})" if pid is not None else ""


def _table(statuses: Sequence[ServiceStatus]) -> str:
    rows = [("SERVICE", "STATE", "PID", "ADDRESS", "LOG", "DETAIL")]
    for s in statuses:
        pid = str(s.pid) if s.pid is not None else "-"
        rows.append((s.name, s.state, pid, s.address or "-", str(s.log), s.detail))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
