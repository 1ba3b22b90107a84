"""Reading runs back: ``runstream.Api`` and ``runstream export`` against MLflow and a floor.

    python -m bench.read_api [--runs 100000] [--points 10000000] [--export-points 100000000]
                             [--mlflow-runs 5000] [--mlflow-points 100000] [--reps 3]
                             [--skip-export] [--parts abc]

Everything runs on a local Kafka + ClickHouse started by the script (bench/common.py), with the
real schema (``runstream migrate``). Three measurements, each with its peers in the same run:

(a) ``api.runs(project).to_pandas()`` over ``--runs`` runs, each with config, tags and a summary
    derived from 5 metrics (issue 12's target: 100,000 runs under 1 s). Floor: the same rows as
    an Arrow table straight from clickhouse-connect (``SELECT * FROM runs_current``), the least
    any client can do. Peer: MLflow's ``mlflow.search_runs()`` (a pandas DataFrame) over
    ``--mlflow-runs`` runs with as many params and metrics, in a sqlite store (creating 100,000
    MLflow runs takes hours, so its rate is compared: runs per second).
(b) ``run.history(keys=[metric]).to_pandas()`` of one metric with ``--points`` points (target
    >= 5M points/s). Floor: the same two columns as Arrow from clickhouse-connect. Peer:
    ``MlflowClient.get_metric_history`` of one metric with ``--mlflow-points`` points in a
    sqlite store (points per second).
(c) ``runstream export --format parquet`` of ``--export-points`` points (target: peak RSS under
    500 MB at 100M points): wall time and the peak RSS of the export process. Peer: what one
    writes by hand without it, ``client.query_df(...)`` then ``DataFrame.to_parquet`` in a
    process of its own, at a tenth of the size (its memory grows with the data).

Points are generated inside ClickHouse (bench/query_latency.py's training-shaped curves);
runs' lifecycle events go through the sink's writer, so every view fills itself as in
production. Each timing is the median of ``--reps`` repetitions after one warm-up.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from bench.common import local_stack, machine, table
from bench.query_latency import UNLIMITED, Plan, lifecycle_events, points_sql
from runstream.settings import Settings
from runstream.sinks.clickhouse import connect
from runstream.sinks.migrations import migrate

PROJECT = "bench"  # bench/query_latency.py's points and lifecycle events go to this project


def median_seconds(call: Callable[[], Any], reps: int) -> tuple[float, Any]:
    """(median wall seconds of ``reps`` calls after one untimed warm-up, last result)."""
    result = call()
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def part(plan: Plan, first: int, count: int) -> Plan:
    """Runs ``first`` .. ``first + count`` of ``plan`` as a plan of their own."""
    sub = copy.copy(plan)
    sub.runs = min(count, plan.runs - first)
    for name in ("ids", "group", "lr", "start_us", "step_us"):
        setattr(sub, name, getattr(plan, name)[first : first + sub.runs])
    sub.order = list(range(sub.runs))  # only "finished or still running" reads it: all finish
    return sub


def seed(client: Any, database: str, plan: Plan) -> None:
    """Points of ``plan`` and its runs' lifecycle events (run_started with config and tags, a
    heartbeat, summary_updated, run_finished), in parts of at most 2,000 runs and 10M points:
    the plan's arrays travel as URL parameters, and one INSERT of 400,000 lifecycle events
    outgrows the server's memory in the run_fields view."""
    per_run = len(plan.metrics) * plan.steps
    runs_per_part = max(1, min(2_000, 10_000_000 // per_run))
    for first_run in range(0, plan.runs, runs_per_part):
        sub = part(plan, first_run, runs_per_part)
        total = sub.runs * per_run
        for first in range(0, total, 10_000_000):
            client.command(points_sql(database, sub, first, min(10_000_000, total - first)),
                           parameters=sub.parameters(), settings=UNLIMITED)  # fmt: skip
        lifecycle_events(client, database, sub, running=0, failed=0)


def drop_points(client: Any, database: str) -> None:
    """Start each measurement from an empty project (one project name: the plan's)."""
    for name in ("metrics", "run_summaries", "events", "runs", "run_fields", "run_snapshots"):
        client.command(f"TRUNCATE TABLE IF EXISTS `{database}`.{name}")


# --- peers in their own processes: MLflow (sqlite store) and the by-hand export -------------

MLFLOW_RUNS = """
import json, os, sys, time
import mlflow
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
mlflow.set_tracking_uri("sqlite:///" + os.path.join(sys.argv[1], "mlflow.db"))
client = MlflowClient()
experiment = client.create_experiment("bench")
runs = int(sys.argv[2])
for r in range(runs):
    run = client.create_run(experiment)
    now = int(time.time() * 1000)
    client.log_batch(run.info.run_id,
        metrics=[Metric(k, r * 1e-3 + i, now, 3) for i, k in enumerate(
            ["train/loss", "val/loss", "train/accuracy", "val/accuracy", "lr"])],
        params=[Param(k, str(v)) for k, v in {"lr": 1e-3, "batch_size": 256, "epochs": 90,
                "seed": r, "optim": "adamw", "layers": "[64, 128, 256, 512]"}.items()])
    client.set_terminated(run.info.run_id)
times = []
for _ in range(int(sys.argv[3]) + 1):
    started = time.perf_counter()
    frame = mlflow.search_runs(experiment_ids=[experiment], max_results=runs)
    times.append(time.perf_counter() - started)
assert len(frame) == runs, len(frame)
times = sorted(times[1:])
print(json.dumps({"seconds": times[len(times) // 2], "runs": runs}))
"""

MLFLOW_HISTORY = """
import json, os, sys, time
import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
mlflow.set_tracking_uri("sqlite:///" + os.path.join(sys.argv[1], "mlflow.db"))
client = MlflowClient()
run = client.create_run(client.create_experiment("history"))
points = int(sys.argv[2])
now = int(time.time() * 1000)
for first in range(0, points, 1000):  # log_batch takes at most 1,000 metrics per call
    steps = range(first, min(points, first + 1000))
    client.log_batch(run.info.run_id,
                     metrics=[Metric("train/loss", 1.0 / (s + 1), now + s, s) for s in steps])
times = []
for _ in range(int(sys.argv[3]) + 1):
    started = time.perf_counter()
    history = client.get_metric_history(run.info.run_id, "train/loss")
    times.append(time.perf_counter() - started)
assert len(history) == points, len(history)
times = sorted(times[1:])
print(json.dumps({"seconds": times[len(times) // 2], "points": points}))
"""

BY_HAND_EXPORT = """
import json, sys, time
import clickhouse_connect
client = clickhouse_connect.get_client(dsn=sys.argv[1], database=sys.argv[2],
                                       send_receive_timeout=3600)
started = time.perf_counter()
frame = client.query_df("SELECT project, run_id, name, step, ts, value FROM metrics "
                        "WHERE project = {p:String} ORDER BY run_id, name, step",
                        parameters={"p": sys.argv[3]}, settings={"max_execution_time": 0})
frame.to_parquet(sys.argv[4])
print(json.dumps({"seconds": time.perf_counter() - started, "rows": len(frame)}))
"""


def peak_rss(command: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Run ``command``; (wall seconds, peak RSS in bytes of it and its children, stdout)."""
    started = time.perf_counter()
    process = psutil.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    peak = 0
    while process.poll() is None:
        try:
            rss = process.memory_info().rss + sum(
                c.memory_info().rss for c in process.children(recursive=True)
            )
        except psutil.Error:
            rss = 0
        peak = max(peak, rss)
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    out, err = process.communicate()
    if process.returncode:
        raise RuntimeError(f"{command[:4]} failed ({process.returncode}): {err.decode()[-2000:]}")
    return seconds, peak, out.decode()


def peer(code: str, *args: str) -> dict[str, Any] | str:
    with tempfile.TemporaryDirectory(prefix="runstream-bench-peer-") as work:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(code), work, *args],
                              check=False, capture_output=True, text=True)  # fmt: skip
        if done.returncode:
            return f"failed: {done.stderr.strip().splitlines()[-1:]}"
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result


# --- the three measurements ---------------------------------------------------------------


def bench_runs(settings: Settings, client: Any, args: argparse.Namespace) -> list[list[str]]:
    import runstream

    database = settings.clickhouse_database
    plan = Plan(runs=args.runs, groups=20, metrics=5, steps=4, seed=1)
    print(f"(a) seeding {args.runs:,} runs ...", flush=True)
    seed(client, database, plan)
    api = runstream.Api(settings=settings)
    ours, frame = median_seconds(lambda: api.runs(PROJECT).to_pandas(), args.reps)
    assert len(frame) == args.runs, len(frame)
    page, runs = median_seconds(
        lambda: api.runs(PROJECT, where='summary["val/loss"] < 1', order_by="-summary.lr",
                         limit=50),
        args.reps,
    )  # fmt: skip
    floor, _ = median_seconds(
        lambda: client.query_arrow(
            "SELECT * FROM runs_current WHERE project = {p:String}", parameters={"p": PROJECT}
        ),
        args.reps,
    )
    print("(a) MLflow ...", flush=True)
    mlflow = peer(MLFLOW_RUNS, str(args.mlflow_runs), str(args.reps))
    rows = [
        ["(a) runs with summaries", "runs", "seconds", "runs/s", "vs MLflow"],
        ["api.runs().to_pandas()", f"{args.runs:,}", f"{ours:.3f}",
         f"{args.runs / ours:,.0f}", ""],
        ["api.runs(where, order_by, limit=50)", f"{runs.total:,} match", f"{page:.3f}", "", ""],
        ["floor: clickhouse-connect query_arrow", f"{args.runs:,}", f"{floor:.3f}",
         f"{args.runs / floor:,.0f}", ""],
    ]  # fmt: skip
    if isinstance(mlflow, dict):
        rate = mlflow["runs"] / mlflow["seconds"]
        rows[1][4] = f"{args.runs / ours / rate:.0f}x"
        rows.append(["MLflow search_runs (sqlite)", f"{mlflow['runs']:,}",
                     f"{mlflow['seconds']:.3f}", f"{rate:,.0f}", "1x"])  # fmt: skip
    else:
        rows.append(["MLflow search_runs (sqlite)", "", mlflow, "", ""])
    api.close()
    drop_points(client, database)
    return rows


def bench_history(settings: Settings, client: Any, args: argparse.Namespace) -> list[list[str]]:
    import runstream

    database = settings.clickhouse_database
    plan = Plan(runs=1, groups=1, metrics=1, steps=args.points, seed=2)
    print(f"(b) seeding one metric of {args.points:,} points ...", flush=True)
    seed(client, database, plan)
    metric = plan.metrics[0]
    api = runstream.Api(settings=settings)
    run = api.run(plan.ids[0])
    ours, frame = median_seconds(lambda: run.history(keys=[metric]).to_pandas(), args.reps)
    assert len(frame) == args.points, len(frame)
    floor, _ = median_seconds(
        lambda: client.query_arrow(
            "SELECT step, value FROM metrics WHERE project = {p:String} AND run_id = {r:String} "
            "AND name = {n:String} ORDER BY step",
            parameters={"p": PROJECT, "r": plan.ids[0], "n": metric},
        ),
        args.reps,
    )
    print("(b) MLflow ...", flush=True)
    mlflow = peer(MLFLOW_HISTORY, str(args.mlflow_points), str(args.reps))
    rows = [
        ["(b) history of one metric", "points", "seconds", "points/s", "vs MLflow"],
        ["run.history(keys=[m]).to_pandas()", f"{args.points:,}", f"{ours:.3f}",
         f"{args.points / ours / 1e6:.2f}M", ""],
        ["floor: clickhouse-connect query_arrow", f"{args.points:,}", f"{floor:.3f}",
         f"{args.points / floor / 1e6:.2f}M", ""],
    ]  # fmt: skip
    if isinstance(mlflow, dict):
        rate = mlflow["points"] / mlflow["seconds"]
        rows[1][4] = f"{args.points / ours / rate:.0f}x"
        rows.append(["MLflow get_metric_history (sqlite)", f"{mlflow['points']:,}",
                     f"{mlflow['seconds']:.3f}", f"{rate / 1e3:.0f}k", "1x"])  # fmt: skip
    else:
        rows.append(["MLflow get_metric_history (sqlite)", "", mlflow, "", ""])
    api.close()
    drop_points(client, database)
    return rows


def bench_export(settings: Settings, client: Any, args: argparse.Namespace) -> list[list[str]]:
    database = settings.clickhouse_database
    runs = max(1, args.export_points // 100_000)
    plan = Plan(runs=runs, groups=20, metrics=10, steps=10_000, seed=3)
    points = runs * 100_000
    print(f"(c) seeding {points:,} points over {runs:,} runs ...", flush=True)
    seed(client, database, plan)
    env = dict(os.environ, RUNSTREAM_CLICKHOUSE_URL=settings.clickhouse_url,
               RUNSTREAM_CLICKHOUSE_DATABASE=database)  # fmt: skip
    rows = [["(c) export to Parquet", "points", "seconds", "points/s", "peak RSS"]]
    with tempfile.TemporaryDirectory(prefix="runstream-bench-export-") as out:
        seconds, rss, _ = peak_rss(
            [sys.executable, "-m", "runstream", "export", "--project", PROJECT,
             "--format", "parquet", "--out", out], env,
        )  # fmt: skip
        size = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
        rows.append([f"runstream export ({size / 1e6:,.0f} MB written)", f"{points:,}",
                     f"{seconds:.1f}", f"{points / seconds / 1e6:.2f}M",
                     f"{rss / 2**20:,.0f} MiB"])  # fmt: skip
    # The by-hand peer at a tenth of the size: its memory grows with the data.
    share = max(1, runs // 10)
    client.command(
        "CREATE TABLE IF NOT EXISTS tenth ENGINE = MergeTree ORDER BY (run_id, name, step) "
        "AS SELECT * FROM metrics WHERE 0"
    )
    client.command(
        "INSERT INTO tenth SELECT * FROM metrics WHERE run_id IN {ids:Array(String)}",
        parameters={"ids": plan.ids[:share]},
        settings=UNLIMITED,
    )
    client.command("RENAME TABLE metrics TO metrics_all, tenth TO metrics")
    try:
        with tempfile.TemporaryDirectory(prefix="runstream-bench-export-") as out:
            seconds, rss, _ = peak_rss(
                [sys.executable, "-c", BY_HAND_EXPORT, settings.clickhouse_url, database,
                 PROJECT, str(Path(out) / "metrics.parquet")],
            )  # fmt: skip
            tenth = share * 100_000
            rows.append(["by hand: query_df + to_parquet", f"{tenth:,}", f"{seconds:.1f}",
                         f"{tenth / seconds / 1e6:.2f}M", f"{rss / 2**20:,.0f} MiB"])  # fmt: skip
    finally:
        client.command("RENAME TABLE metrics TO tenth, metrics_all TO metrics")
        client.command("DROP TABLE tenth")
    drop_points(client, database)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--points", type=int, default=10_000_000)
    parser.add_argument("--export-points", type=int, default=100_000_000)
    parser.add_argument("--mlflow-runs", type=int, default=2_000)
    parser.add_argument("--mlflow-points", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--skip-export", action="store_true")
    parser.add_argument("--parts", default="abc", help="which measurements: abc all")
    args = parser.parse_args()
    print(machine())
    with local_stack(partitions=1) as stack:
        settings = stack.settings
        migrate(settings)
        # The bench's own statements (an INSERT of 10M points) outlast the default 300 s.
        client = connect(settings, send_receive_timeout=3600)
        parts = {"a": bench_runs, "b": bench_history, "c": bench_export}
        for name, measure in parts.items():
            if name in args.parts and not (name == "c" and args.skip_export):
                print()
                print(table(measure(settings, client, args)), flush=True)


if __name__ == "__main__":
    main()
