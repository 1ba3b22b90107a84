"""A small training loop that logs to runstream, then asks ClickHouse about it.

    runstream dev up           # Kafka, ClickHouse and the sink, on this machine
    python examples/train.py

It fits y = 3x - 1 with gradient descent in plain Python, logging loss and weights every step,
then waits for the sink to land the run and prints SQL answers from ClickHouse.
"""

from __future__ import annotations

import argparse
import random
import time

import runstream
from runstream.settings import Settings


def train(run: runstream.Run, steps: int, lr: float) -> None:
    rng = random.Random(0)
    data = [(x, 3 * x - 1 + rng.gauss(0, 0.1)) for x in (rng.uniform(-1, 1) for _ in range(256))]
    w, b = 0.0, 0.0
    for step in range(steps):
        batch = rng.sample(data, 32)
        grad_w = sum(2 * (w * x + b - y) * x for x, y in batch) / len(batch)
        grad_b = sum(2 * (w * x + b - y) for x, y in batch) / len(batch)
        w, b = w - lr * grad_w, b - lr * grad_b
        loss = sum((w * x + b - y) ** 2 for x, y in batch) / len(batch)
        run.log(
            {"loss": loss, "params": {"w": w, "b": b}, "grad/norm": abs(grad_w) + abs(grad_b)},
            step=step,
        )


def wait_until_landed(settings: Settings, run_id: str, timeout: float = 60.0) -> None:
    """Wait for the rows report() prints: the run's row of ``runs_current`` with its final
    status (not ``running``). Its ``run_finished`` in ``events`` is not enough: the sink writes
    the events first and the tables derived from them after, so a report read then could show
    a stale row (status running, zeros)."""
    from runstream.sinks.clickhouse import connect

    client = connect(settings)
    sql = (
        "SELECT count() FROM runs_current WHERE run_id = {run:String} AND status != 'running' "
        "AND run_id IN (SELECT run_id FROM events WHERE run_id = {run:String} "
        "AND type = 'run_finished')"
    )
    deadline = time.monotonic() + timeout
    while client.query(sql, parameters={"run": run_id}).result_rows[0][0] == 0:
        if time.monotonic() > deadline:
            raise SystemExit(
                f"run {run_id} did not reach ClickHouse in {timeout:.0f}s: is the sink running?"
            )
        time.sleep(0.2)


def report(settings: Settings, run_id: str) -> None:
    from runstream.sinks.query import render, run_query

    questions = {
        "Each metric of this run": """
            SELECT name, count() AS points, min(value) AS min, max(value) AS max,
                   argMax(value, step) AS last
            FROM metrics WHERE run_id = {run:String} GROUP BY name ORDER BY name""",
        "Loss every 100 steps": """
            SELECT intDiv(step, 100) * 100 AS from_step, round(avg(value), 5) AS mean_loss
            FROM metrics WHERE run_id = {run:String} AND name = 'loss'
            GROUP BY from_step ORDER BY from_step""",
        "Runs of the project, best loss first": """
            SELECT run_id, min(value) AS best_loss, max(step) + 1 AS steps
            FROM metrics WHERE project = 'examples' AND name = 'loss'
            GROUP BY run_id ORDER BY best_loss LIMIT 5""",
    }
    for title, sql in questions.items():
        print(f"\n{title}:\n  {' '.join(sql.split())}\n")
        # The run id travels as a query parameter ({run:String}), never pasted into the SQL.
        params = {"run": run_id} if "{run:String}" in sql else None
        print(render(*run_query(settings, sql, params), "table"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=1_000)
    parser.add_argument("--lr", type=float, default=0.05)
    args = parser.parse_args()

    started = time.perf_counter()
    with runstream.init(project="examples", config={"lr": args.lr, "steps": args.steps}) as run:
        train(run, args.steps, args.lr)
    elapsed = time.perf_counter() - started
    print(f"run {run.id}: {args.steps} steps logged and delivered in {elapsed:.2f}s")

    wait_until_landed(run.settings, run.id)
    report(run.settings, run.id)


if __name__ == "__main__":
    main()
