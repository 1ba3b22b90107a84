"""The ``runstream`` command line: one sub-command per entry point, all reading one Settings."""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from runstream._version import __version__
from runstream.errors import MissingExtraError, RunstreamError
from runstream.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], int]


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, not {value!r}")
    return seconds


def _add_wait(parser: argparse.ArgumentParser, waits_for: str) -> None:
    """--wait, --timeout, --interval: for init containers that must start after a Job."""
    parser.add_argument("--wait", action="store_true", help=waits_for)
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=600.0,
        metavar="SECONDS",
        help="with --wait: give up (exit 1) after this many seconds (default: %(default).0f)",
    )
    parser.add_argument(
        "--interval",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="with --wait: seconds between checks (default: %(default).0f)",
    )


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
    "clickhouse_cluster",
    "topic_partitions",
    "ui_host",
    "ui_port",
    "ui_token",
    "topic_replication",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runstream", description="runstream: experiment tracking on Kafka and ClickHouse."
    )
    parser.add_argument("--version", action="version", version=f"runstream {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from runstream.deploy.local.cli import add_dev_parser

    add_dev_parser(sub, _add_common)

    add_sink_parsers(sub, _add_common)

    from runstream.read.cli.parsers import add_read_parsers

    add_read_parsers(sub, _add_common)  # export, tail, runs ls/show

    from runstream.ui.cli import add_ui_parser

    add_ui_parser(sub, _add_common)

    sync = sub.add_parser(
        "sync", help="deliver what runs left in a local spool (offline runs, dead processes)"
    )
    _add_common(sync)
    sync.add_argument(
        "dir", nargs="?", type=Path, help="spool directory (default: RUNSTREAM_DIR or ./.runstream)"
    )
    sync.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds to wait for Kafka per run (default 300); what is not acknowledged by then "
        "stays in the spool for the next sync",
    )
    sync.add_argument(
        "--force",
        action="store_true",
        help="also sync runs whose process looks alive on this host (it may send them too: a "
        "re-send is recognised downstream by run and seq)",
    )
    sync.set_defaults(handler=_sync)
    return parser


def _sync(args: argparse.Namespace, settings: Settings) -> int:
    """Exit status: 0 when every run's spool was delivered whole, 1 when anything was refused,
    not delivered, damaged, or skipped (its process is alive on this host; ``--force``)."""
    from runstream.producers.sync import ProgressBar, render, sync

    root = args.dir or settings.dir
    if args.dir is not None and not Path(args.dir).is_dir():  # a typo must not look like success
        print(f"runstream sync: {args.dir} is not a directory (the spool is {settings.dir})",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.dir is None and Path("runstream", "runs").is_dir() and Path(root) != Path("runstream"):
        # The spool's default used to be ./runstream, a name that shadows the package.
        print(
            "runstream: ./runstream holds a spool of the old default directory: deliver it "
            "with `runstream sync runstream`, then remove or rename it (a runstream/ "
            "directory here shadows the installed package for `import runstream`)",
            file=sys.stderr,
        )
    bar = ProgressBar()
    try:
        report = sync(settings, root, progress=bar, timeout=args.timeout, force=args.force)
    finally:
        bar.close()  # the bar's line ends before the table starts
    sys.stderr.flush()
    render(report, root)
    return 0 if report.ok else 1


# --- the ClickHouse side; its modules are imported only when a command runs, so the CLI works
# (and says which extra to install) where only the SDK is installed.
def add_sink_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add_common: Callable[[argparse.ArgumentParser], None],
) -> None:
    from runstream.read.cli.parsers import quiet_pipe, whole_number

    sink = sub.add_parser("sink", help="write the events topic into ClickHouse")
    add_common(sink)
    sink.add_argument("--group", dest="sink_group", help="Kafka consumer group")
    sink.add_argument("--batch-rows", dest="sink_batch_rows", type=int, help="rows per insert")
    sink.add_argument(
        "--batch-seconds", dest="sink_batch_seconds", type=float, help="max batch age"
    )
    sink.set_defaults(handler=_sink)

    query = sub.add_parser(
        "query",
        help="run read-only SQL against ClickHouse and print the result",
        description="Run one read statement (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN, EXISTS) "
        "read-only, under the read limits (RUNSTREAM_READ_MAX_EXECUTION_TIME, "
        "RUNSTREAM_READ_MAX_MEMORY_USAGE, RUNSTREAM_READ_MAX_RESULT_ROWS). Values go in "
        "{name:Type} placeholders, given with --param name=value. docs/read.md.",
    )
    add_common(query)
    query.add_argument(
        "sql",
        nargs="?",
        help='the SQL statement, e.g. "SELECT count() FROM metrics"; - reads it from stdin',
    )
    query.add_argument("-f", "--file", type=Path, help="read the SQL statement from FILE")
    query.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="value of the placeholder {NAME:Type} (repeatable); ClickHouse parses it as Type",
    )
    query.add_argument(
        "--limit",
        type=whole_number,
        metavar="N",
        help="print at most N rows (default: 1000 for the table, all for csv and json)",
    )
    query.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        help="default: table on a terminal, csv otherwise",
    )
    query.set_defaults(handler=quiet_pipe(_query))  # | head: exit 0 quietly

    migrate = sub.add_parser("migrate", help="create or upgrade the ClickHouse tables")
    add_common(migrate)
    migrate.add_argument(
        "--cluster",
        dest="clickhouse_cluster",
        help="create them on every node of this ClickHouse cluster (ReplicatedMergeTree + "
        "Distributed, ON CLUSTER)",
    )
    _add_wait(
        migrate,
        "apply nothing: wait until another process (the migrate Job) has applied every "
        "migration of this version",
    )
    migrate.set_defaults(handler=_migrate)

    processors = sub.add_parser(
        "processors", help="run a stream-processor worker: live run state, summaries, alerts"
    )
    add_common(processors)
    processors.set_defaults(handler=_processors)

    notifier = sub.add_parser("notifier", help="deliver alerts to the configured webhooks")
    add_common(notifier)
    notifier.add_argument(
        "--check",
        action="store_true",
        help="only read the webhooks file: list the webhooks, report each bad entry "
        "(exit 1 if there is one)",
    )
    notifier.set_defaults(handler=_notifier)

    alerts = sub.add_parser("alerts", help="alert rules: add, ls, rm (the processors reload them)")
    alert_commands = alerts.add_subparsers(dest="alerts_command", required=True)
    add = alert_commands.add_parser("add", help="add or replace a rule")
    add_common(add)
    add.add_argument("name", help="rule name: letters, digits, '.', '_', '-'")
    add.add_argument(
        "kind",
        choices=("threshold", "nan", "plateau", "divergence", "run_failed", "stalled", "user"),
    )
    add.add_argument("--metric", help="metric name or glob (val/*)")
    add.add_argument("--above", type=float)
    add.add_argument("--below", type=float)
    add.add_argument("--for-steps", type=int, help="threshold: consecutive steps")
    add.add_argument("--mode", choices=("min", "max"), help="plateau: which way is better")
    add.add_argument("--patience", type=int, help="plateau: steps without improvement")
    add.add_argument("--min-delta", type=float, help="plateau: smallest improvement")
    add.add_argument("--rise-pct", type=float, help="divergence: rise over the window's best")
    add.add_argument("--window", type=int, help="divergence: steps")
    add.add_argument("--after-seconds", type=float, help="stalled: seconds without a new step")
    add.add_argument("--statuses", help="run_failed: comma-separated (failed,crashed,killed)")
    add.add_argument("--project", help="project name, or * (default)")
    add.add_argument("--tags", help="comma-separated: the run must have them all")
    add.add_argument("--group", help="only runs of this group")
    add.add_argument("--level", choices=("info", "warn", "error"))
    add.set_defaults(handler=_alerts_add)
    ls = alert_commands.add_parser("ls", help="list the rules")
    add_common(ls)
    ls.set_defaults(handler=_alerts_ls)
    rm = alert_commands.add_parser("rm", help="remove a rule")
    add_common(rm)
    rm.add_argument("name")
    rm.set_defaults(handler=_alerts_rm)

    topics = sub.add_parser(
        "topics", help="create the Kafka topics that do not exist yet (events, dlq, ...)"
    )
    add_common(topics)
    topics.add_argument("--partitions", dest="topic_partitions", type=int)
    topics.add_argument("--replication", dest="topic_replication", type=int)
    _add_wait(
        topics,
        "create nothing: wait until another process (the topics Job) has created every topic "
        "of this version",
    )
    topics.set_defaults(handler=_topics)


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
        settings.clickhouse_url_redacted,
        settings.clickhouse_database,
    )
    sink.run(stop)
    return 0


def _query_text(args: argparse.Namespace) -> str | None:
    """The SQL of ``runstream query``: the argument, ``-f FILE`` or stdin (``-``); None (with
    the reason on stderr) when there is none or more than one."""
    if args.file is not None and args.sql is not None:
        print("runstream query: give the SQL as an argument or with -f FILE, not both",
              file=sys.stderr)  # fmt: skip
        return None
    if args.file is not None:
        try:
            return str(args.file.read_text(encoding="utf-8"))
        except OSError as exc:
            print(f"runstream query: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
            return None
    if args.sql == "-":
        return sys.stdin.read()
    if args.sql is None:
        print("runstream query: give the SQL as an argument, with -f FILE, or - to read stdin",
              file=sys.stderr)  # fmt: skip
        return None
    return str(args.sql)


def _query(args: argparse.Namespace, settings: Settings) -> int:
    """Exit status: 0 with the result printed, 1 when ClickHouse refused the query or a limit
    stopped it (ClickHouse's message on stderr), 2 when it was refused before sending (not one
    read statement, a table function reaching outside, a bad --param)."""
    from runstream.errors import ReadRefusedError
    from runstream.read import Reader
    from runstream.read.cli.output import choose_format
    from runstream.sinks.query import parse_params, write_result

    sql = _query_text(args)
    if sql is None:
        return 2
    try:
        params = parse_params(args.param)
        with Reader(settings) as reader:
            reader.prepare(sql, params)  # refuse before connecting
            fmt = choose_format(args.format, sys.stdout)
            write_result(reader, sql, params, fmt, sys.stdout, limit=args.limit)
    except ReadRefusedError as exc:
        print(f"runstream query: refused: {exc}", file=sys.stderr)
        return 2
    return 0


def wait_until(
    what: str,
    check: Callable[[], str | None],
    *,
    timeout: float,
    interval: float,
    done: str,
    explain: Callable[[Exception], str] = str,
) -> int:
    """Call ``check`` every ``interval`` seconds until it returns None (what it waits for is
    there: print ``done``, return 0), for up to ``timeout`` seconds (then say why on stderr and
    return 1). ``check`` returns the reason to wait; an exception it raises (the service still
    starting) is one too, told by ``explain``, except a missing extra, which waiting cannot fix.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            reason = check()
        except MissingExtraError:
            raise
        except Exception as exc:
            reason = (explain(exc).strip().splitlines() or [type(exc).__name__])[0]
        if reason is None:
            print(done, flush=True)
            return 0
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            print(
                f"runstream: error: gave up after {timeout:.0f}s waiting for {what}: {reason}",
                file=sys.stderr,
                flush=True,
            )
            return 1
        print(f"waiting for {what}: {reason}", flush=True)
        time.sleep(min(interval, remaining))


def _redact(text: str, settings: Settings) -> str:
    """``text`` without the ClickHouse password: error messages quote the URL, and what the
    waits print lands in every pod's log."""
    text = text.replace(settings.clickhouse_url, settings.clickhouse_url_redacted)
    password = urlsplit(settings.clickhouse_url).password
    if password:  # as given, and percent-decoded, wherever else it shows
        for form in (password, unquote(password)):
            text = text.replace(form, "***")
    return text


def _missing_migrations(settings: Settings) -> str | None:
    from runstream.sinks.clickhouse import connect
    from runstream.sinks.migrations import applied, available

    wanted = {m.version for m in available()}
    client = connect(settings, database="default")
    missing = wanted - applied(client, settings.clickhouse_database)
    return f"migrations {sorted(missing)} not applied yet" if missing else None


def _missing_topics(settings: Settings) -> str | None:
    """Why the topics are not ready: missing, or without a usable leader; None when they are."""
    from confluent_kafka.admin import AdminClient

    from runstream.schemas.topics import Topics

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "log_level": 0})
    found = admin.list_topics(timeout=10.0).topics
    wanted = [spec.name for spec in Topics(settings.topic_prefix).specs()]
    missing = [name for name in wanted if name not in found or found[name].error is not None]
    return f"topics {', '.join(missing)} not there yet" if missing else None


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    if args.wait:
        return wait_until(
            "runstream migrate",
            lambda: _missing_migrations(settings),
            timeout=args.timeout,
            interval=args.interval,
            done="schema is up to date",
            explain=lambda exc: _redact(str(exc), settings),
        )
    from runstream.sinks.migrations import migrate

    applied = migrate(settings)
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0


def _processors(args: argparse.Namespace, settings: Settings) -> int:
    from runstream.processors.app import run_worker

    return run_worker(settings)


def _notifier(args: argparse.Namespace, settings: Settings) -> int:
    from runstream.processors.notifier import run_notifier

    if args.check:
        return _check_webhooks(settings)
    return run_notifier(settings)


def _check_webhooks(settings: Settings) -> int:
    """``runstream notifier --check``: what the notifier would deliver to, and what it skips."""
    from runstream.processors.webhook_config import load_webhooks

    path = settings.webhooks_path
    found = load_webhooks(path)
    if not path.exists():
        print(f"no webhooks file at {path}: the notifier delivers nothing")
    for route in found.routes:
        webhook = route.webhook
        wants = [
            f"{what} {', '.join(sorted(values))}"
            for what, values in (("levels", route.levels), ("projects", route.projects))
            if values
        ]
        print(
            f"ok       {webhook.name} ({webhook.display_url}, {webhook.format}"
            f"{', signed' if webhook.secret else ''}"
            f"{', allow_private' if webhook.allow_private else ''}"
            f"{'; ' + '; '.join(wants) if wants else ''})"
        )
    for problem in found.problems:
        print(f"error    {problem}")
    return 1 if found.problems else 0


_RULE_OPTIONS = (
    "metric", "above", "below", "for_steps", "mode", "patience", "min_delta", "rise_pct",
    "window", "after_seconds", "project", "group", "level",
)  # fmt: skip


def _alerts_add(args: argparse.Namespace, settings: Settings) -> int:
    from runstream.processors.rules import RuleSet

    rule: dict[str, Any] = {"name": args.name, "kind": args.kind}
    rule.update({k: getattr(args, k) for k in _RULE_OPTIONS if getattr(args, k) is not None})
    for name in ("tags", "statuses"):
        if getattr(args, name):
            rule[name] = [part.strip() for part in getattr(args, name).split(",") if part.strip()]
    path = settings.alert_rules_path
    rules = RuleSet.load(path) if path.exists() else RuleSet()
    replaced = args.name in rules
    if replaced:
        rules.replace(rule)
    else:
        rules.add(rule)
    _write_atomically(path, rules.dump())
    print(f"{'replaced' if replaced else 'added'} rule {args.name!r} in {path}")
    return 0


def _alerts_ls(args: argparse.Namespace, settings: Settings) -> int:
    from runstream.processors.rules import RuleSet

    path = settings.alert_rules_path
    rules = RuleSet.load(path) if path.exists() else RuleSet()
    if not len(rules):
        print(f"no alert rules in {path}; add one with 'runstream alerts add'")
        return 0
    for rule in rules:
        details = rule.model_dump(exclude={"name", "kind"}, exclude_defaults=True)
        text = ", ".join(f"{k}={v}" for k, v in details.items())
        print(f"{rule.name:24} {rule.kind:11} {text}")
    return 0


def _alerts_rm(args: argparse.Namespace, settings: Settings) -> int:
    from runstream.processors.rules import RuleSet

    path = settings.alert_rules_path
    rules = RuleSet.load(path) if path.exists() else RuleSet()
    rules.remove(args.name)
    _write_atomically(path, rules.dump())
    print(f"removed rule {args.name!r} from {path}")
    return 0


def _write_atomically(path: Path, text: str) -> None:
    # The processors reload the file when it changes: they must never read half of it.
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def _topics(args: argparse.Namespace, settings: Settings) -> int:
    if args.wait:
        return wait_until(
            "runstream topics",
            lambda: _missing_topics(settings),
            timeout=args.timeout,
            interval=args.interval,
            done="every topic exists",
            explain=lambda exc: f"cannot list the topics on {settings.kafka_bootstrap}: {exc}",
        )
    from runstream.deploy.local.admin import ensure_topics

    created = ensure_topics(settings)
    print("created: " + ", ".join(created) if created else "every topic exists")
    return 0


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
