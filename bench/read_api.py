"""Python read API (runstream.Api): runs and history into DataFrames, timed.

Seeds one database with ``--runs`` runs (a run_started and a summary_updated event each, so the
views derive config and summary as for real runs) and one run with ``--points`` points of one
metric and ``--keys`` metrics of ``--points // 10`` points, then times, ``--reps`` times each
(median, best):

- ``api.runs(project).to_pandas()`` over every run (targets: 100,000 runs in < 1 s);
- ``run.history("loss").to_pandas()`` (10M points at >= 5M points/s);
- ``run.history(keys)`` pivoted in ClickHouse; ``run.history("loss", samples=1000)``;
- ``run.scan_history("loss")`` over 1M points.

Uses ``RUNSTREAM_CLICKHOUSE_URL`` when set, else a local stack of its own. The seed goes through
the ordinary client (``INSERT ... SELECT`` from ``numbers()``), never through the read layer.

    python -m bench.read_api --runs 100000 --points 10000000
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
import uuid
from collections.abc import Callable, Iterator

from bench.common import local_stack, machine
from runstream.settings import Settings
from runstream.sinks.clickhouse import connect
from runstream.sinks.migrations import migrate

T0 = "toDateTime64('2026-01-01 00:00:00', 6, 'UTC')"


@contextlib.contextmanager
def clickhouse_url() -> Iterator[str]:
    url = os.environ.get("RUNSTREAM_CLICKHOUSE_URL")
    if url:
        yield url
        return
    with local_stack() as stack:
        yield stack.settings.clickhouse_url


def seed(settings: Settings, runs: int, points: int, keys: int) -> None:
    client = connect(settings)
    db = f"`{settings.clickhouse_database}`"
    no_async = {"async_insert": 0}
    started = time.perf_counter()
    # The big run: its run_started event, then its points straight into `metrics`.
    client.command(
        f"INSERT INTO {db}.events (event_id, schema_version, type, project, run_id, seq, ts, "
        "producer_sdk, producer_version, producer_host, producer_pid, body, kafka_partition, "
        f"kafka_offset) SELECT generateUUIDv4(), 1, 'run_started', 'big', 'big', 0, {T0}, "
        "'bench', '0', 'h', 1, '{\"name\":\"big\",\"config\":{}}', 0, 0",
        settings=no_async,
    )
    client.command(
        f"INSERT INTO {db}.metrics SELECT 'big', 'big', 'loss', number, sin(number / 1000), "
        f"{T0} + toIntervalMicrosecond(number), number + 1 FROM numbers({points})",
        settings=no_async,
    )
    for k in range(keys):
        client.command(
            f"INSERT INTO {db}.metrics SELECT 'big', 'big', 'm{k}', number * 10, "
            f"cos(number / 100 + {k}), {T0} + toIntervalMicrosecond(number * 10), "
            f"number + 1 FROM numbers({points // 10})",
            settings=no_async,
        )
    # Many runs: a run_started (config) and a summary_updated (summary) each.
    client.command(
        f"INSERT INTO {db}.events (event_id, schema_version, type, project, run_id, seq, ts, "
        "producer_sdk, producer_version, producer_host, producer_pid, body, kafka_partition, "
        "kafka_offset) "
        "SELECT generateUUIDv4(), 1, if(k = 0, 'run_started', 'summary_updated'), 'many', "
        f"concat('r', toString(n)), k, {T0} + toIntervalSecond(n), 'bench', '0', 'h', 1, "
        'if(k = 0, concat(\'{"name":"run\', toString(n), \'","config":{"lr":\', '
        'toString(n / 1e5), \',"batch":\', toString(n % 7), \'},"tags":["a"]}\'), '
        'concat(\'{"summary":{"loss":\', toString(1 / (n + 1)), \',"acc":\', '
        "toString((n % 100) / 100), '}}')), 0, 0 "
        f"FROM (SELECT number AS n FROM numbers({runs})) ARRAY JOIN [0, 1] AS k",
        settings=no_async,
    )
    print(f"seeded in {time.perf_counter() - started:.1f} s")


def timed(label: str, reps: int, call: Callable[[], int]) -> None:
    """Run ``call`` (which returns a row count) ``reps`` times; print median, best, rows/s."""
    seconds: list[float] = []
    rows = 0
    for _ in range(reps):
        started = time.perf_counter()
        rows = call()
        seconds.append(time.perf_counter() - started)
    median = statistics.median(seconds)
    print(
        f"{label:<40} median {median:7.3f} s  best {min(seconds):7.3f} s  "
        f"{rows:>11,} rows  {rows / median / 1e6:6.2f}M rows/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--points", type=int, default=10_000_000)
    parser.add_argument("--keys", type=int, default=3, help="extra metrics for the pivot")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    import runstream

    print(machine())
    with clickhouse_url() as url:
        settings = Settings.load(
            clickhouse_url=url, clickhouse_database=f"bench_read_{uuid.uuid4().hex[:8]}"
        )
        migrate(settings)
        seed(settings, args.runs, args.points, args.keys)
        with runstream.Api(settings=settings) as api:
            run = api.run("big", project="big")
            keys = [f"m{k}" for k in range(args.keys)]
            timed("runs(project).to_pandas()", args.reps,
                  lambda: len(api.runs("many").to_pandas()))  # fmt: skip
            timed('history("loss").to_pandas()', args.reps,
                  lambda: len(run.history("loss").to_pandas()))  # fmt: skip
            timed(f"history({len(keys)} keys, pivoted).to_pandas()", args.reps,
                  lambda: len(run.history(keys).to_pandas()))  # fmt: skip
            timed('history("loss", samples=1000)', args.reps,
                  lambda: len(run.history("loss", samples=1000)))  # fmt: skip
            timed('scan_history("loss"), 1M points', 1,
                  lambda: sum(1 for _ in run.scan_history("loss", max_step=999_999)))  # fmt: skip
        connect(settings).command(f"DROP DATABASE `{settings.clickhouse_database}`")


if __name__ == "__main__":
    main()
