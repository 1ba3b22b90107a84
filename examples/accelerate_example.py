"""A plain accelerate training loop that logs to runstream through RunstreamTracker.

    pip install 'runstream[accelerate]'
    runstream dev up                      # Kafka, ClickHouse and the sink, on this machine
    python examples/accelerate_example.py
    accelerate launch examples/accelerate_example.py   # several processes: the main one logs

A two-layer MLP fits y = sin(x0) + x1 * x2 on random data for a few epochs on the CPU.
``init_trackers`` names the project and passes the run's name and tags to runstream
(``init_kwargs={"runstream": {...}}``); ``accelerator.log(..., step=step)`` logs at the loop's
own step; ``end_training()`` in ``finally:`` ends the run ``finished``, or ``failed`` when the
loop raised. Then the script waits for the run to land in ClickHouse and prints what is there.
"""

from __future__ import annotations

import argparse
import time

import torch
from accelerate import Accelerator

from runstream.integrations.accelerate import RunstreamTracker
from runstream.settings import Settings


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
        "The loop's metrics, at its steps": """
            SELECT name, count() AS points, min(step) AS first_step, max(step) AS last_step,
                   round(argMax(value, step), 5) AS last
            FROM metrics WHERE run_id = {run:String} GROUP BY name ORDER BY name""",
        "Status and config": """
            SELECT project, name, status, config FROM runs_current WHERE run_id = {run:String}""",
    }
    for title, sql in questions.items():
        print(f"\n{title}:\n  {' '.join(sql.split())}\n")
        # The run id travels as a query parameter ({run:String}), never pasted into the SQL.
        params = {"run": run_id} if "{run:String}" in sql else None
        print(render(*run_query(settings, sql, params), "table"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-2)
    options = parser.parse_args()

    tracker = RunstreamTracker(tags=["accelerate", "mlp"])
    accelerator = Accelerator(cpu=True, log_with=[tracker])
    accelerator.init_trackers(
        "examples",
        config={"lr": options.lr, "epochs": options.epochs, "hidden": 32},
        init_kwargs={"runstream": {"name": "accelerate-mlp"}},
    )

    torch.manual_seed(0)
    x = torch.randn(1024, 3)
    y = (torch.sin(x[:, 0]) + x[:, 1] * x[:, 2]).unsqueeze(1)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=64, shuffle=True
    )
    model = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

    step = 0
    try:
        for epoch in range(options.epochs):
            for inputs, targets in loader:
                loss = torch.nn.functional.mse_loss(model(inputs), targets)
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
                accelerator.log({"train/loss": loss.item(), "epoch": epoch}, step=step)
                step += 1
    finally:
        accelerator.end_training()  # finished; failed/killed if the loop raised

    run = tracker.tracker
    if accelerator.is_main_process and run is not None:
        print(f"run {run.id}: {step} steps")
        wait_until_landed(run.settings, run.id)
        report(run.settings, run.id)


if __name__ == "__main__":
    main()
