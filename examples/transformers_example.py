"""A Hugging Face Trainer that logs to runstream through RunstreamCallback.

    pip install 'runstream[transformers]'
    runstream dev up                      # Kafka, ClickHouse and the sink, on this machine
    python examples/transformers_example.py

A one-layer BERT built from a tiny BertConfig (nothing is downloaded) learns a made-up
classification of random token sequences for a few dozen steps on the CPU, evaluating every 10
steps. The callback logs the trainer's metrics at its global step (train/loss,
train/learning_rate, train/grad_norm, eval/loss, ...), records TrainingArguments and the model
config as the run's config and the trainer's end-of-training report as its summary. Then the
script waits for the run to land in ClickHouse and prints what is there.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from runstream.integrations.transformers import RunstreamCallback
from runstream.settings import Settings


class RandomTokens(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """Sequences of 16 random tokens; the label says whether token 1 occurs more than token 2."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 32, (n, 16), generator=g)
        self.labels = ((self.ids == 1).sum(1) > (self.ids == 2).sum(1)).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.ids[i],
            "attention_mask": torch.ones(16, dtype=torch.long),
            "labels": self.labels[i],
        }


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
        "The trainer's metrics, at its global steps": """
            SELECT name, groupArray(step) AS steps, round(argMax(value, step), 6) AS last
            FROM (SELECT * FROM metrics WHERE run_id = {run:String} ORDER BY step)
            GROUP BY name ORDER BY name""",
        "Status, some config and the summary": """
            SELECT status, JSONExtractFloat(config, 'learning_rate') AS lr,
                   JSONExtractInt(config, 'hidden_size') AS hidden_size,
                   JSONExtractFloat(summary, 'train_runtime') AS train_runtime,
                   JSONExtractFloat(summary, 'train_loss') AS train_loss
            FROM runs_current WHERE run_id = {run:String}""",
    }
    for title, sql in questions.items():
        print(f"\n{title}:\n  {' '.join(sql.split())}\n")
        # The run id travels as a query parameter ({run:String}), never pasted into the SQL.
        params = {"run": run_id} if "{run:String}" in sql else None
        print(render(*run_query(settings, sql, params), "table"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--lr", type=float, default=2e-3)
    options = parser.parse_args()

    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(
            vocab_size=32,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=16,
            num_labels=2,
        )
    )
    callback = RunstreamCallback(project="examples", tags=["transformers", "tiny-bert"])
    with tempfile.TemporaryDirectory() as output_dir:
        args = TrainingArguments(
            output_dir=output_dir,
            max_steps=options.steps,
            learning_rate=options.lr,
            per_device_train_batch_size=16,
            per_device_eval_batch_size=32,
            logging_steps=5,
            eval_strategy="steps",
            eval_steps=10,
            save_strategy="no",
            report_to="none",  # runstream is the callback below, not a report_to name
            use_cpu=True,
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=RandomTokens(512, seed=1),
            eval_dataset=RandomTokens(128, seed=2),
            callbacks=[callback],
        )
        trainer.train()

    run = callback.run
    assert run is not None  # started at train begin, finished at train end
    print(f"run {run.id}: {trainer.state.global_step} steps")
    wait_until_landed(run.settings, run.id)
    report(run.settings, run.id)


if __name__ == "__main__":
    main()
