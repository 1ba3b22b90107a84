"""Query latency on 100 million metric points over 1,000 runs, and bytes on disk per point.

    python -m bench.query_latency [--runs 1000] [--groups 20] [--metrics 10] [--steps 10000]
                                  [--reps 20] [--no-baseline] [--no-optimize]

One project (``bench``) of ``--runs`` runs in ``--groups`` groups, each run logging
``--metrics`` metrics at ``--steps`` steps: 100,000,000 points at the defaults. The schema is
the real one (``runstream migrate``) on a local ClickHouse started by the script.

Data: the points are generated inside ClickHouse (``INSERT INTO metrics SELECT ... FROM
numbers(...)``, ``--runs-per-insert`` runs per INSERT), shaped like a training loop's: losses
decaying with noise, accuracies rising, a cosine learning-rate schedule, gradient norms,
throughput, epoch; every value that a framework computes in float32 (``loss.item()``) is rounded
to float32 as it would be. The 10 metrics of a step share one ``ts`` and ``seq`` (one
``metrics_logged`` event); runs start spread over 24 days, take 0.5-1.5 s per step and log at
a random moment 0-20 ms into it (microsecond timestamps). ``run_summaries`` fills itself from
those inserts through its materialized view. Each run also gets ``run_started`` (config with
its ``lr``, a ``group``), a final heartbeat and ``summary_updated``, and, but for the
``--running`` latest, ``run_finished``: built with the event schema and inserted by the sink's
own writer, so ``runs`` fills itself the same way.

Queries, each ``--warmup`` times untimed and then ``--reps`` times timed, client-observed wall
time through clickhouse-connect and the helpers of ``runstream.sinks.queries`` (what a user's
code calls), each repetition on a different run (or metric) so one run's cached blocks do not
flatter the result:

(a) every point of one metric of one run (``queries.metric_history``);
(b) that metric cut into 1,000 buckets (``queries.downsample``, the ``downsample`` view);
(c) the project's 50 latest runs with their metric summaries (``queries.latest_runs``);
(d) the best run of every group by one metric (``queries.best_runs``).

They are measured once background merges have settled (parts as the server left them) and,
unless ``--no-optimize``, again after ``OPTIMIZE TABLE metrics FINAL`` (one part per partition).

Baseline (unless ``--no-baseline``): the same points copied into ``metrics_unordered``, a plain
MergeTree with ``ORDER BY tuple()``, no codecs (LZ4) and no materialized views, in the order
the runs sent them (by time, concurrent runs interleaved). The same Python helpers run against
it through copies of the views that read it instead, and the summaries of (c) and (d) are
computed from the raw points, as a schema without ``run_summaries`` would have to. A
``SELECT 1`` round trip is timed too: the floor under every figure (HTTP, clickhouse-connect).

"rows read" is the server's count for one execution; "server" times are ClickHouse's own
(``X-ClickHouse-Summary``), the rest is transfer and clickhouse-connect turning rows into
Python objects.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from bench.common import local_stack, machine, percentile, table
from runstream.schemas import encode, event_dict, uuid7
from runstream.sinks import queries
from runstream.sinks.batch import EventBatch, _insert
from runstream.sinks.clickhouse import connect
from runstream.sinks.migrations import migrate
from runstream.sinks.snapshots import refresh

PROJECT = "bench"
PRODUCER = {"sdk": "runstream-python", "version": "0.1.0", "host": "gpu-01", "pid": 4242}
# name -> value as SQL over: p (progress 0..1), q (run quality 0..1), u, v (noise 0..1), lr.
METRICS: dict[str, str] = {
    "train/loss": "toFloat64(toFloat32((2.3 * exp(-p * (3 + 3 * q)) + 0.05 + 0.1 * q) "
    "* (1 + 0.3 * (u - 0.5))))",
    "val/loss": "toFloat64(toFloat32((2.3 * exp(-p * (2.5 + 3 * q)) + 0.12 + 0.1 * q) "
    "* (1 + 0.06 * (u - 0.5))))",
    "train/accuracy": "toFloat64(toFloat32(least(1.0, 0.1 + (0.8 + 0.15 * q) "
    "* (1 - exp(-p * (3 + 3 * q))) + 0.04 * (u - 0.5))))",
    "val/accuracy": "toFloat64(toFloat32(least(1.0, 0.1 + (0.75 + 0.15 * q) "
    "* (1 - exp(-p * (2.5 + 3 * q))) + 0.01 * (u - 0.5))))",
    "lr": "lr * 0.5 * (1 + cos(pi() * p))",
    "grad/norm": "toFloat64(toFloat32(0.4 + 4 * exp(-4 * p) + 2 * u * u * u))",
    "throughput": "toFloat64(toFloat32(1180 + 40 * q + 60 * (u - 0.5)))",
    "epoch": "floor(p * 90)",
    "gpu/mem_gb": "toFloat64(toFloat32(31.2 + 0.8 * v))",
    "train/perplexity": "toFloat64(toFloat32(exp((2.3 * exp(-p * (3 + 3 * q)) + 0.05 "
    "+ 0.1 * q) * (1 + 0.3 * (u - 0.5)))))",
}
RUN_ID_ALPHABET = string.ascii_lowercase + string.digits  # as new_run_id() draws them
LRS = (1e-4, 3e-4, 1e-3, 3e-3)
FIRST_START = datetime(2026, 11, 1, tzinfo=timezone.utc)
BEST_BY: tuple[tuple[str, Literal["min", "max"]], ...] = (
    ("val/loss", "min"), ("val/accuracy", "max"), ("train/loss", "min"), ("train/accuracy", "max"),
)  # fmt: skip
# The queries are small; the bench's own statements (one INSERT of 10M points, OPTIMIZE FINAL
# of 100M) run for minutes, longer than clickhouse-connect's default 300 s read timeout.
LONG_TIMEOUT = 3600
UNLIMITED = {"max_execution_time": 0, "max_memory_usage": 0}
JITTER_US = 20_000  # when in its step a run logs: 0-20 ms


class Plan:
    """Who the runs are: ids, groups, configs, start times and step pace (seeded)."""

    def __init__(self, runs: int, groups: int, metrics: int, steps: int, seed: int) -> None:
        rng = random.Random(seed)
        self.runs, self.groups, self.steps = runs, groups, steps
        self.metrics = sorted(list(METRICS)[:metrics])
        ids: dict[str, None] = {}  # random 8-character ids like new_run_id()'s, but seeded
        while len(ids) < runs:
            ids["".join(rng.choice(RUN_ID_ALPHABET) for _ in range(8))] = None
        # Index order is sort-key order (ids, then metric names sorted), so that each INSERT
        # arrives sorted; start times are shuffled over the runs instead.
        self.ids = sorted(ids)
        self.group = [f"sweep-{r % groups:02d}" for r in range(runs)]
        self.lr = [LRS[rng.randrange(len(LRS))] for _ in range(runs)]
        span = timedelta(days=24).total_seconds()
        self.order = list(range(runs))  # run r is the order[r]-th to start
        rng.shuffle(self.order)
        self.start_us = [
            int((FIRST_START.timestamp() + span * self.order[r] / runs + rng.uniform(0, 600)) * 1e6)
            for r in range(runs)
        ]
        self.step_us = [int(rng.uniform(0.5, 1.5) * 1e6) for _ in range(runs)]

    def parameters(self) -> dict[str, Any]:
        return {"ids": self.ids, "lrs": self.lr, "starts": self.start_us, "paces": self.step_us,
                "names": self.metrics}  # fmt: skip


def points_sql(database: str, plan: Plan, first: int, count: int) -> str:
    """An INSERT of ``count`` points from index ``first`` on, the index enumerating (run, metric,
    step) in the table's sort order."""
    metrics, steps = len(plan.metrics), plan.steps
    values = ", ".join(f"m = {i}, {METRICS[name]}" for i, name in enumerate(plan.metrics))
    return f"""
INSERT INTO `{database}`.metrics (project, run_id, name, step, value, ts, seq)
SELECT
    '{PROJECT}',
    {{ids:Array(String)}}[r + 1],
    {{names:Array(String)}}[m + 1],
    s,
    multiIf({values}, nan),
    fromUnixTimestamp64Micro(
        {{starts:Array(Int64)}}[r + 1] + s * {{paces:Array(Int64)}}[r + 1]
        + toInt64(intHash64(r * {steps} + s) % {JITTER_US}), 'UTC'),
    toUInt64(s + 1)
FROM
(
    SELECT
        r, m, s,
        s / {steps} AS p,
        (intHash64(r + 1000003) % 1000000) / 1e6 AS q,
        intHash64(((r * {metrics} + m) * {steps}) + s) / 18446744073709551616.0 AS u,
        intHash64(bitXor((r * {steps}) + s, 6148914691236517205)) / 18446744073709551616.0 AS v,
        {{lrs:Array(Float64)}}[r + 1] AS lr
    FROM
    (
        SELECT
            intDiv(number, {metrics * steps}) AS r,
            intDiv(number, {steps}) % {metrics} AS m,
            number % {steps} AS s
        FROM numbers({first}, {count})
    )
)
"""


def generate(client: Any, database: str, plan: Plan, per_insert: int) -> float:
    total = plan.runs * len(plan.metrics) * plan.steps
    chunk = per_insert * len(plan.metrics) * plan.steps
    # INSERT ... SELECT squashes rows into blocks of min_insert_block_size_rows (~1M), one part
    # each, merged in the background afterwards. Blocks of a whole chunk (10M rows) made the
    # insert slower here (8 s instead of 6 s per 10M points), not faster. The rows come in
    # sort-key order, so the writer's sort is only a check.
    started = time.perf_counter()
    for first in range(0, total, chunk):
        count = min(chunk, total - first)
        client.command(points_sql(database, plan, first, count), parameters=plan.parameters(),
                       settings=UNLIMITED)  # fmt: skip
        progress("metrics", first + count, total, started)
    return time.perf_counter() - started


def progress(table_name: str, done: int, total: int, started: float) -> None:
    elapsed = time.perf_counter() - started
    print(f"  {table_name}: {done:,} of {total:,} points, {elapsed:.0f}s "
          f"({done / elapsed / 1e6:.2f}M points/s)", flush=True)  # fmt: skip


def iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lifecycle_events(client: Any, database: str, plan: Plan, running: int, failed: int) -> int:
    """run_started, a last heartbeat, summary_updated and (but for ``running`` runs, the most
    recently started) run_finished, through the sink's writer."""
    batch = EventBatch()
    offset = 0
    for r, run_id in enumerate(plan.ids):
        start, end = plan.start_us[r], plan.start_us[r] + plan.steps * plan.step_us[r]
        finished = plan.order[r] < plan.runs - running  # the latest started still run
        every = max(1, plan.runs // max(1, failed))
        status = "failed" if finished and failed and plan.order[r] % every == every // 2 else None
        bodies: list[tuple[str, int, int, dict[str, Any]]] = [
            ("run_started", 0, start - 5_000_000, {
                "name": f"{plan.group[r]}-lr{plan.lr[r]:g}-{r}",
                "config": {"lr": plan.lr[r], "batch_size": 256, "epochs": 90, "seed": r,
                           "optim": {"name": "adamw", "betas": [0.9, 0.999]},
                           "layers": [64, 128, 256, 512]},
                "tags": ["bench", plan.group[r]], "group": plan.group[r], "job_type": "train",
                "notes": "", "environment": {"python": "3.11.7", "hostname": "gpu-01"},
            }),
            ("heartbeat", plan.steps + 1, end, {"step": plan.steps - 1}),
            ("summary_updated", plan.steps + 2, end, {"summary": {"epochs_done": 90}}),
        ]  # fmt: skip
        if finished:
            code, text = (1, "failed") if status else (0, "finished")
            bodies.append(("run_finished", plan.steps + 3, end + 2_000_000,
                           {"exit_code": code, "status": text}))  # fmt: skip
        for type_name, seq, ts, body in bodies:
            event = event_dict(id=uuid7(), type=type_name, project=PROJECT, run_id=run_id,
                               seq=seq, ts=iso(ts), producer=PRODUCER, body=body)  # fmt: skip
            batch.add("events", 0, offset, run_id.encode(), encode(event))
            offset += 1
    if batch.dead_letters:
        raise RuntimeError(f"events refused: {batch.dead_letters[0].reason}")
    refused = _insert(client, database, batch.accepted, f"bench-query-latency-{uuid7()}")
    if refused:
        raise RuntimeError(f"ClickHouse refused events: {refused[0][1]}")
    refresh(client, database, [(PROJECT, run_id) for run_id in plan.ids])  # as the sink does
    return len(batch.accepted)


def settle(client: Any, database: str, table_name: str, limit: float) -> tuple[int, float]:
    """Wait until no merge of ``table_name`` runs and its part count holds for 10 s (at most
    ``limit`` s); (active parts, seconds waited)."""
    started = time.perf_counter()
    last, stable_since = -1, started
    while True:
        merging, parts = client.query(
            f"SELECT (SELECT count() FROM system.merges WHERE database = '{database}' "
            f"AND table = '{table_name}'), (SELECT count() FROM system.parts "
            f"WHERE database = '{database}' AND table = '{table_name}' AND active)"
        ).result_rows[0]
        now = time.perf_counter()
        if merging or parts != last:
            last, stable_since = int(parts), now
        elif now - stable_since >= 10:
            return int(parts), now - started
        if now - started >= limit:
            return int(parts), now - started
        time.sleep(1)


def size(client: Any, database: str, table_name: str) -> dict[str, float]:
    rows, compressed, uncompressed, on_disk, parts = client.query(
        "SELECT sum(rows), sum(data_compressed_bytes), sum(data_uncompressed_bytes), "
        f"sum(bytes_on_disk), count() FROM system.parts WHERE database = '{database}' "
        f"AND table = '{table_name}' AND active"
    ).result_rows[0]
    columns = client.query(
        "SELECT column, sum(column_data_compressed_bytes) FROM system.parts_columns "
        f"WHERE database = '{database}' AND table = '{table_name}' AND active "
        "GROUP BY column ORDER BY 2 DESC"
    ).result_rows
    result = {"rows": rows, "compressed": compressed, "uncompressed": uncompressed,
              "on_disk": on_disk, "parts": parts}  # fmt: skip
    result.update({f"column:{name}": float(b) for name, b in columns})
    return {k: float(v) for k, v in result.items()}


def per_point(sizes: dict[str, float]) -> str:
    rows = sizes["rows"] or 1
    columns = ", ".join(
        f"{k.split(':', 1)[1]} {v / rows:.2f}" for k, v in sizes.items() if k.startswith("column:")
    )
    return (
        f"{sizes['on_disk'] / rows:.2f} bytes/point on disk ({sizes['compressed'] / rows:.2f} "
        f"compressed data, {sizes['uncompressed'] / rows:.1f} uncompressed; {columns}), "
        f"{int(sizes['rows']):,} rows in {int(sizes['parts'])} parts"
    )


class Client:
    """A clickhouse-connect client that keeps the server's own time of its last query and can
    send queries to other tables and views (``redirect``: name -> name): the helpers of
    ``runstream.sinks.queries`` then run unchanged against the baseline."""

    def __init__(self, client: Any, database: str, redirect: dict[str, str] | None = None) -> None:
        self.client = client
        self.database = database
        self.redirect = redirect or {}
        self.server_ms = float("nan")
        self.read_rows = 0

    def rewrite(self, sql: str) -> str:
        if not self.redirect:
            return sql
        names = "|".join(re.escape(n) for n in self.redirect)
        return re.sub(rf"`?{self.database}`?\.`?({names})\b`?",
                      lambda m: f"`{self.database}`.{self.redirect[m.group(1)]}", sql)  # fmt: skip

    def query(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        result = self.client.query(self.rewrite(sql), *args, **kwargs)
        self.server_ms = int(result.summary.get("elapsed_ns", "0")) / 1e6 or float("nan")
        self.read_rows = int(result.summary.get("read_rows", "0"))
        return result


@dataclass
class Timing:
    client_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    rows: int = 0
    read_rows: int = 0


def timed(client: Client, calls: list[Callable[[], int]], warmup: int) -> Timing:
    """Each call after the first ``warmup``: wall time in the client and the server's own time
    (sorted), and the rows the last one returned."""
    timing = Timing()
    for i, call in enumerate(calls):
        started = time.perf_counter()
        timing.rows = call()
        elapsed = (time.perf_counter() - started) * 1000
        if i >= warmup:
            timing.client_ms.append(elapsed)
            timing.server_ms.append(client.server_ms)
            timing.read_rows = max(timing.read_rows, client.read_rows)
    timing.client_ms.sort()
    timing.server_ms.sort()
    return timing


def measure(client: Client, plan: Plan, warmup: int, reps: int, seed: int) -> dict[str, Timing]:
    """(a) to (d), each on another run (or metric) every repetition."""
    database = client.database
    rng = random.Random(seed)
    n = warmup + reps
    runs = rng.sample(plan.ids, min(n, len(plan.ids)))
    runs = (runs * (n // len(runs) + 1))[:n]
    metric = "train/loss" if "train/loss" in plan.metrics else plan.metrics[0]
    best = [(m, g) for m, g in BEST_BY if m in plan.metrics] or [(metric, "min")]

    def history(run: str) -> Callable[[], int]:
        return lambda: len(queries.metric_history(client, database, run, metric))

    def downsample(run: str) -> Callable[[], int]:
        return lambda: len(queries.downsample(client, database, run, metric, 1000))

    def ping() -> int:
        return len(client.query("SELECT 1").result_rows)

    def latest() -> int:
        return len(queries.latest_runs(client, database, PROJECT, 50))

    def best_runs(i: int) -> Callable[[], int]:
        name, goal = best[i % len(best)]
        return lambda: len(queries.best_runs(client, database, PROJECT, name, goal))

    return {
        "ping": timed(client, [ping] * n, warmup),
        "history": timed(client, [history(r) for r in runs], warmup),
        "downsample": timed(client, [downsample(r) for r in runs], warmup),
        "latest": timed(client, [latest] * n, warmup),
        "best": timed(client, [best_runs(i) for i in range(n)], warmup),
    }


def baseline(client: Any, database: str, plan: Plan, per_insert: int) -> tuple[float, Client]:
    """``metrics_unordered`` and copies of the views reading it (or the raw points instead of
    ``run_summaries``); (seconds to generate it, a client whose queries go to them)."""
    db = f"`{database}`"
    client.command(
        f"CREATE TABLE {db}.metrics_unordered (project LowCardinality(String), run_id String, "
        "name LowCardinality(String), step Int64, value Float64, ts DateTime64(6, 'UTC'), "
        "seq UInt64) ENGINE = MergeTree ORDER BY tuple()"
    )
    # The same points in the order the runs sent them (by time, a step's metrics together), one
    # time slice of about chunk points per INSERT.
    total, low, high = client.query(
        f"SELECT count(), toUnixTimestamp64Micro(min(ts)), toUnixTimestamp64Micro(max(ts)) + 1 "
        f"FROM {db}.metrics"
    ).result_rows[0]
    slices = max(1, math.ceil(total / (per_insert * len(plan.metrics) * plan.steps)))
    bounds = [low + (high - low) * i // slices for i in range(slices + 1)]
    started = time.perf_counter()
    for i in range(slices):
        client.command(
            f"INSERT INTO {db}.metrics_unordered SELECT project, run_id, name, step, value, ts, "
            f"seq FROM {db}.metrics WHERE ts >= fromUnixTimestamp64Micro({bounds[i]}, 'UTC') "
            f"AND ts < fromUnixTimestamp64Micro({bounds[i + 1]}, 'UTC') "
            "ORDER BY ts, run_id, name",
            settings=UNLIMITED,
        )
        done = int(client.query(f"SELECT count() FROM {db}.metrics_unordered").result_rows[0][0])
        progress("metrics_unordered", done, total, started)
    seconds = time.perf_counter() - started
    # What run_summaries_current says, computed from the raw points at query time.
    client.command(
        f"""CREATE VIEW {db}.run_summaries_raw AS
SELECT project, run_id, name,
    argMax(value, (step, seq)) AS last,
    min(if(isNaN(value), NULL, value)) AS min,
    max(if(isNaN(value), NULL, value)) AS max,
    avgIf(value, NOT isNaN(value)) AS mean,
    count() AS count,
    countIf(isNaN(value)) AS nan_count,
    if(min IS NULL, NULL, argMinIf(step, (value, step), NOT isNaN(value))) AS step_of_min,
    if(max IS NULL, NULL, argMaxIf(step, (value, -step), NOT isNaN(value))) AS step_of_max,
    min(step) AS first_step, max(step) AS last_step, max(ts) AS last_ts
FROM {db}.metrics_unordered
GROUP BY project, run_id, name"""
    )
    tables = Client(client, database, {"metrics": "metrics_unordered",
                                       "run_summaries_current": "run_summaries_raw"})  # fmt: skip
    views = ("downsample", "latest_runs", "best_runs")  # metric_history: plain SQL on metrics
    for view in views:
        ddl = client.query(
            "SELECT create_table_query FROM system.tables WHERE database = {db:String} "
            "AND name = {name:String}",
            parameters={"db": database, "name": view},
        ).result_rows[0][0]
        ddl = re.sub(rf"^CREATE VIEW `?{database}`?\.`?{view}`? ", f"CREATE VIEW {db}.{view}_raw ",
                     tables.rewrite(ddl))  # fmt: skip
        client.command(ddl)
    return seconds, Client(client, database, {**tables.redirect, **{v: f"{v}_raw" for v in views}})


def ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q):,.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--metrics", type=int, default=10, choices=range(1, len(METRICS) + 1))
    parser.add_argument("--steps", type=int, default=10_000, help="points per run and metric")
    parser.add_argument("--runs-per-insert", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--baseline-reps", type=int, default=5)
    parser.add_argument("--running", type=int, default=50, help="runs without run_finished")
    parser.add_argument("--failed", type=int, default=40, help="runs finished as 'failed'")
    parser.add_argument("--settle", type=float, default=300, help="max seconds for merges")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--no-baseline", dest="baseline", action="store_false")
    parser.add_argument("--no-optimize", dest="optimize", action="store_false")
    args = parser.parse_args()
    plan = Plan(args.runs, args.groups, args.metrics, args.steps, args.seed)
    points = args.runs * args.metrics * args.steps
    began = time.perf_counter()
    results: dict[str, dict[str, Timing]] = {}
    sizes: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    with local_stack(partitions=1) as stack:
        settings = stack.settings
        migrate(settings)
        database = settings.clickhouse_database
        raw = connect(settings, send_receive_timeout=LONG_TIMEOUT)
        client = Client(raw, database)
        print(f"generating {points:,} points: {args.runs:,} runs x {args.metrics} metrics x "
              f"{args.steps:,} steps, {args.groups} groups", flush=True)  # fmt: skip
        seconds["generate"] = generate(raw, database, plan, args.runs_per_insert)
        events = lifecycle_events(raw, database, plan, args.running, args.failed)
        parts, seconds["settle"] = settle(raw, database, "metrics", args.settle)
        sizes["merged"] = size(raw, database, "metrics")
        print(f"  merges settled after {seconds['settle']:.0f}s: {parts} parts; timing queries",
              flush=True)  # fmt: skip
        results["merged"] = measure(client, plan, args.warmup, args.reps, args.seed)
        if args.optimize:
            started = time.perf_counter()
            raw.command(f"OPTIMIZE TABLE `{database}`.metrics FINAL")
            seconds["optimize"] = time.perf_counter() - started
            sizes["optimized"] = size(raw, database, "metrics")
            print(f"  OPTIMIZE FINAL {seconds['optimize']:.0f}s; timing queries again", flush=True)
            results["optimized"] = measure(client, plan, args.warmup, args.reps, args.seed + 1)
        if args.baseline:
            seconds["baseline"], unordered = baseline(raw, database, plan, args.runs_per_insert)
            settle(raw, database, "metrics_unordered", args.settle)
            sizes["baseline"] = size(raw, database, "metrics_unordered")
            print("  timing the baseline", flush=True)
            results["baseline"] = measure(unordered, plan, 1, args.baseline_reps, args.seed + 2)
        summaries = raw.query(
            f"SELECT count() FROM `{database}`.run_summaries_current"
        ).result_rows[0][0]

    labels = {
        "ping": "round trip: SELECT 1",
        "history": "(a) history of one metric of one run",
        "downsample": "(b) 1,000-bucket downsample, one run",
        "latest": "(c) 50 latest runs with summaries",
        "best": "(d) best run per group by a metric",
    }
    header = ["query", "rows", "rows read", "p50 ms", "p95 ms", "server p50"]
    if "optimized" in results:
        header += ["OPTIMIZEd: p50", "p95", "server p50"]
    if "baseline" in results:
        header += ["baseline p50", "rows read", "baseline/ours"]
    header.append("< 200 ms (p95)")
    rows = [header]
    met = []
    for key, label in labels.items():
        ours = results["merged"][key]
        row = [label, f"{ours.rows:,}", f"{ours.read_rows:,}", ms(ours.client_ms, 0.5),
               ms(ours.client_ms, 0.95), ms(ours.server_ms, 0.5)]  # fmt: skip
        worst = percentile(ours.client_ms, 0.95)
        if "optimized" in results:
            opt = results["optimized"][key]
            row += [ms(opt.client_ms, 0.5), ms(opt.client_ms, 0.95), ms(opt.server_ms, 0.5)]
            worst = max(worst, percentile(opt.client_ms, 0.95))
        if "baseline" in results:
            base = results["baseline"][key]
            ratio = percentile(base.client_ms, 0.5) / percentile(ours.client_ms, 0.5)
            row += [ms(base.client_ms, 0.5), f"{base.read_rows:,}",
                    "-" if key == "ping" else f"{ratio:,.0f}x"]  # fmt: skip
        if key == "ping":
            row.append("-")
        else:
            met.append(worst < 200)
            row.append("met" if met[-1] else "NOT met")
        rows.append(row)
    print()
    print(f"{points:,} points ({args.runs:,} runs x {args.metrics} metrics x {args.steps:,} "
          f"steps, {args.groups} groups), {events:,} lifecycle events, {summaries:,} run "
          f"summaries; {machine()}")  # fmt: skip
    print(f"generated in {seconds['generate']:.0f}s "
          f"({points / seconds['generate'] / 1e6:.2f}M points/s, summaries included); "
          f"{args.reps} timed repetitions after {args.warmup} warm-up, each on another run "
          f"(or metric); baseline: {args.baseline_reps} after 1")  # fmt: skip
    print(table(rows))
    print(f"metrics, as merged in the background: {per_point(sizes['merged'])}")
    if "optimized" in sizes:
        print(f"metrics, after OPTIMIZE FINAL ({seconds['optimize']:.0f}s): "
              f"{per_point(sizes['optimized'])}")  # fmt: skip
    if "baseline" in sizes:
        print(f"baseline metrics_unordered (ORDER BY tuple(), LZ4, generated in "
              f"{seconds['baseline']:.0f}s): {per_point(sizes['baseline'])}")  # fmt: skip
    print(f"target: each query under 200 ms: {sum(met)} of {len(met)} met (p95, client wall "
          f"time); {sizes['merged']['on_disk'] / max(1, sizes['merged']['rows']):.2f} bytes on "
          f"disk per point; {time.perf_counter() - began:.0f}s in all")  # fmt: skip


if __name__ == "__main__":
    main()
