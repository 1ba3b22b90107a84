"""The argparse side of the read commands: ``export``, ``tail``, ``runs ls``, ``runs show``.

Only argparse is imported here (the CLI starts fast and works where only the SDK is installed);
each handler imports its module when its command runs."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from runstream.settings import Settings

AddCommon = Callable[[argparse.ArgumentParser], None]


def whole_number(value: str) -> int:
    """An argparse type: a count of 0 or more."""
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if count < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value!r}")
    return count


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, not {value!r}")
    return seconds


def positive_seconds(value: str) -> float:
    """An argparse type: seconds, more than 0 and finite."""
    seconds = _seconds(value)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {value!r}")
    return seconds


def directory(value: str) -> str:
    """An argparse type: a directory path, not empty (``--out ""`` would be the current one)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("is empty: name the directory, e.g. --out ./export")
    return value


def quiet_pipe(handler: Callable[[argparse.Namespace, Settings], int]) -> Any:
    """``handler`` that exits quietly, status 0, when the reader of its stdout goes away
    (``runstream runs ls | head -1``): the reader has what it wanted. The Python docs' recipe
    ("Note on SIGPIPE", signal module): stdout is pointed at devnull, so that the interpreter's
    last flush does not fail again."""

    def run(args: argparse.Namespace, settings: Settings) -> int:
        try:
            code = handler(args, settings)
            sys.stdout.flush()
            return code
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, sys.stdout.fileno())
            finally:
                os.close(devnull)
            return 0

    return run


def column_list(value: str) -> list[str]:
    """An argparse type: ``--columns`` split at the commas outside quotes and brackets, so that
    ``config["a,b"]`` stays one column."""
    columns: list[str] = []
    current: list[str] = []
    quote = ""
    depth = 0
    escaped = False
    for ch in value:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(depth - 1, 0)
        elif ch == "," and depth == 0:
            columns.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    columns.append("".join(current).strip())
    return [c for c in columns if c]


def add_read_parsers(sub: Any, add_common: AddCommon) -> None:
    """Register ``export``, ``tail`` and ``runs`` on the ``runstream`` sub-parsers ``sub``."""
    export = sub.add_parser(
        "export",
        help="write a project's runs, metrics and system metrics to Parquet or CSV files",
        description="Stream a project's metrics, runs and system_metrics out of ClickHouse "
        "(FORMAT Parquet / CSVWithNames) into DIR/metrics.EXT, DIR/runs.EXT and "
        "DIR/system_metrics.EXT, with a progress bar; memory stays flat at any size. "
        "docs/read.md, 'runstream export'.",
    )
    add_common(export)
    export.add_argument("--project", required=True, help="the project to export")
    export.add_argument(
        "--run", action="append", metavar="RUN_ID", help="only this run (repeatable)"
    )
    export.add_argument(
        "--where", metavar="EXPR", help="only runs matching a filter, e.g. \"status == 'finished'\""
    )
    export.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    export.add_argument(
        "--out", required=True, type=directory, metavar="DIR", help="directory of the files"
    )
    export.add_argument(
        "--force", action="store_true",
        help="replace an earlier export in DIR: every runstream export file there that this "
        "export does not write is removed",
    )  # fmt: skip
    export.add_argument(
        "--tables",
        type=lambda v: [t.strip() for t in v.split(",") if t.strip()],
        metavar="T,...",
        help="which files: metrics, runs, system_metrics (default: all three)",
    )
    export.add_argument(
        "--timeout",
        type=positive_seconds,
        default=600.0,
        metavar="SECONDS",
        help="max_execution_time of each export query (default: %(default).0f)",
    )
    export.set_defaults(handler=quiet_pipe(_export))

    tail = sub.add_parser(
        "tail",
        help="follow a live run's metrics as they arrive (like tail -f)",
        description="Print a run's last steps from ClickHouse, then its metrics as they reach "
        "Kafka, one line per step ('STEP  name=value ...'), until the run ends; exit 0 when it "
        "finished, 1 when it failed, crashed or was killed. docs/read.md, 'runstream tail'.",
    )
    add_common(tail)
    tail.add_argument("run_id", metavar="RUN", help="RUN_ID, or PROJECT/RUN_ID")
    tail.add_argument("--project", help="the run's project (when its id is in several)")
    tail.add_argument(
        "-n", "--lines", type=whole_number, default=10, metavar="N",
        help="steps to print from ClickHouse first (default: %(default)s)",
    )  # fmt: skip
    tail.add_argument(
        "--lookback", type=_seconds, default=120.0, metavar="SECONDS",
        help="read Kafka from this long ago, for what the sink has not written yet "
        "(default: %(default).0f)",
    )  # fmt: skip
    tail.add_argument(
        "--wait", type=_seconds, default=10.0, metavar="SECONDS",
        help="for a run ClickHouse does not know: how long to wait for its events on Kafka "
        "(default: %(default).0f)",
    )  # fmt: skip
    tail.set_defaults(handler=quiet_pipe(_tail))

    runs = sub.add_parser("runs", help="list runs, or show one")
    commands = runs.add_subparsers(dest="runs_command", required=True, metavar="COMMAND")
    ls = commands.add_parser(
        "ls",
        help="list runs (newest first)",
        description="List runs with their status, timing and chosen config and summary values. "
        "docs/read.md, 'runstream runs'.",
    )
    add_common(ls)
    ls.add_argument("--project", help="only runs of this project")
    ls.add_argument("--where", metavar="EXPR", help="filter expression (docs/read.md, Filters)")
    ls.add_argument(
        "--sort", action="append", metavar="KEY",
        help="order by KEY (a filter name: config.lr, summary.loss, started_at...); "
        "descending with a minus, written --sort=-KEY; repeatable; default: newest first",
    )  # fmt: skip
    ls.add_argument("--limit", type=whole_number, default=50, metavar="N",
                    help="at most N runs (default: %(default)s; 0: all)")  # fmt: skip
    ls.add_argument(
        "--columns", metavar="COL,...",
        type=column_list,
        help="columns: id, project, name, status, tags, group, job_type, started_at, "
        'finished_at, runtime, last_step, exit_code, config.KEY, summary.KEY, config["a.b"]',
    )  # fmt: skip
    ls.add_argument("--format", choices=("table", "csv", "json"),
                    help="default: table on a terminal, csv otherwise")  # fmt: skip
    ls.set_defaults(handler=quiet_pipe(_runs_ls))
    show = commands.add_parser(
        "show",
        help="one run: config, summary, status, timing, last events, a sparkline per metric",
    )
    add_common(show)
    show.add_argument("run_id", metavar="RUN", help="RUN_ID, or PROJECT/RUN_ID")
    show.add_argument("--project", help="the run's project (when its id is in several)")
    show.add_argument("--format", choices=("table", "json"),
                      help="default: table on a terminal, json otherwise")  # fmt: skip
    show.set_defaults(handler=quiet_pipe(_runs_show))


def _export(args: argparse.Namespace, settings: Settings) -> int:
    from runstream.read.cli.export import export_command

    return export_command(args, settings)


def _tail(args: argparse.Namespace, settings: Settings) -> int:
    from runstream.read.cli.tail import tail_command

    return tail_command(args, settings)


def _runs_ls(args: argparse.Namespace, settings: Settings) -> int:
    from runstream.read.cli.runs import ls_command

    return ls_command(args, settings)


def _runs_show(args: argparse.Namespace, settings: Settings) -> int:
    from runstream.read.cli.runs import show_command

    return show_command(args, settings)
