"""Train a tiny Lightning model and log it to runstream with RunstreamLogger.

    pip install 'runstream[lightning]'
    runstream dev up                      # Kafka, ClickHouse and the sink, on this machine
    python examples/lightning_example.py

A 2-layer MLP learns y = sum(x) on random tensors for 60 steps (nothing is downloaded), logging
train and validation loss at Lightning's global step; then the run's metrics are printed from
ClickHouse. ``--version RUN_ID`` continues an earlier run instead of starting one.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from runstream.integrations.lightning import RunstreamLogger


class Regressor(LightningModule):
    def __init__(self, lr: float = 0.05, hidden: int = 16) -> None:
        super().__init__()
        self.save_hyperparameters()  # -> the run's config: lr, hidden
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val/loss", torch.nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"])


def loader(n: int, seed: int) -> DataLoader[tuple[torch.Tensor, ...]]:
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(seed))
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--version", help="the id of a run to continue")
    args = parser.parse_args()

    started = time.time()
    logger = RunstreamLogger(project="examples", version=args.version, tags=["lightning"])
    trainer = Trainer(
        max_steps=args.steps,
        logger=logger,
        log_every_n_steps=5,
        val_check_interval=20,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_checkpointing=False,
    )
    trainer.fit(Regressor(), loader(320, 0), loader(64, 1))
    print(f"run {logger.version} finished; its metrics in ClickHouse:")
    show(logger, started)


def show(logger: RunstreamLogger, since: float) -> None:
    """Wait until the sink landed the session that ended (the run's last event is its
    run_finished, sent after ``since``, and the rows derived from it are there), then print
    the run's metrics."""
    from runstream.settings import Settings
    from runstream.sinks.query import render, run_query

    settings = Settings.load()
    run_id = logger.version
    # The metrics printed, not only the events: the sink writes the events first and the
    # tables derived from them after; the run's row in runs_current (status no longer
    # running) comes with the last of them.
    # Values travel as query parameters ({name:Type}), never pasted into the SQL.
    params = {"run": run_id, "since": int(since * 1e6)}
    landed = """SELECT (SELECT argMax(type, seq) = 'run_finished'
                                AND toUnixTimestamp64Micro(max(ts)) >= {since:Int64}
                         FROM events WHERE run_id = {run:String})
                        AND (SELECT count() FROM runs_current
                             WHERE run_id = {run:String} AND status != 'running') = 1
                        AND (SELECT count() FROM metrics WHERE run_id = {run:String}) > 0"""
    deadline = time.monotonic() + 60
    while not run_query(settings, landed, params)[1][0][0]:
        if time.monotonic() > deadline:
            raise SystemExit("the run did not reach ClickHouse in 60s: is the sink running?")
        time.sleep(0.5)
    sql = """SELECT name, count() AS points, min(step) AS first_step, max(step) AS last_step,
                     argMax(value, step) AS last FROM metrics WHERE run_id = {run:String}
              GROUP BY name ORDER BY name"""
    print(render(*run_query(settings, sql, {"run": run_id}), "table"))


if __name__ == "__main__":
    main()
