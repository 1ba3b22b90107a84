"""A typical wandb training script runs unchanged on runstream.wandb, for real."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from runstream.settings import Settings
from tests.helpers import rows, scalar, sink_until

pytestmark = pytest.mark.integration

WANDB_SCRIPT = """
import argparse
import math

import runstream.wandb as wandb

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.01)
parser.add_argument("--epochs", type=int, default=3)
args = parser.parse_args([])

run = wandb.init(project="compat", entity="my-team", config=args, tags=["baseline"],
                 job_type="train", reinit=True, settings=wandb.Settings(mode="online"))
wandb.config.update({"batch_size": 32})
wandb.define_metric("val/loss", summary="min")
wandb.define_metric("val/acc", summary="best", goal="maximize")
for epoch in range(wandb.config.epochs):
    for i in range(10):
        wandb.log({"train/loss": 1.0 / (epoch * 10 + i + 1), "lr": wandb.config["lr"]})
    wandb.log({"val/loss": 0.5 / (epoch + 1), "val/acc": 0.9 - epoch * 0.05, "epoch": epoch})
wandb.run.summary["best_epoch"] = 0
wandb.alert(title="Training done", text=f"run {wandb.run.id}", level=wandb.AlertLevel.WARN)
print(run.id, run.name, run.project)
wandb.finish()
"""


def test_a_typical_wandb_script_runs_unchanged(settings: Settings) -> None:
    env = dict(os.environ)
    env.update(
        {
            "RUNSTREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "RUNSTREAM_TOPIC_PREFIX": settings.topic_prefix,
            "RUNSTREAM_DIR": str(settings.dir),
            "RUNSTREAM_FINISH_TIMEOUT": "30",
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(WANDB_SCRIPT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    run_id, name, project = done.stdout.split()
    assert name == run_id and project == "compat"

    db = settings.clickhouse_database
    sink_until(
        settings,
        lambda c: scalar(settings, f"SELECT countIf(type='run_finished') FROM {db}.events") == 1,
    )
    assert scalar(settings, f"SELECT count() FROM {db}.metrics WHERE name = 'train/loss'") == 30
    assert rows(
        settings, f"SELECT step FROM {db}.metrics WHERE name = 'val/loss' ORDER BY step"
    ) == [
        (10,),
        (21,),
        (32,),
    ]
    started = orjson.loads(
        scalar(settings, f"SELECT body FROM {db}.events WHERE type='run_started'")
    )
    assert started["config"] == {"lr": 0.01, "epochs": 3} and started["tags"] == ["baseline"]
    assert started["job_type"] == "train"
    final = orjson.loads(
        scalar(
            settings,
            f"SELECT body FROM {db}.events WHERE type='summary_updated' ORDER BY seq DESC LIMIT 1",
        )
    )["summary"]
    assert final == {"best_epoch": 0}  # explicit keys only; derived ones come from the points
    assert scalar(settings, f"SELECT min(value) FROM {db}.metrics WHERE name = 'val/loss'") == (
        0.5 / 3
    )
    alert = orjson.loads(
        scalar(settings, f"SELECT body FROM {db}.events WHERE type='alert_raised'")
    )
    assert alert == {"title": "Training done", "text": f"run {run_id}", "level": "warn"}


def test_wandb_log_takes_sync_and_unknown_keywords_without_raising(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from runstream import wandb

    wandb.log({"x": 1.0})  # no run yet: ignored, warned once, never raised
    run = wandb.init(project="p", mode="offline", dir=str(tmp_path))
    wandb.log({"x": 1.0}, step=0, commit=True, sync=False)
    wandb.log({"x": 2.0}, step=1, extra_kw=1)
    run.finish()
    assert run.refused_by_kind.get("argument") == 1
    assert any("extra_kw" in r.getMessage() for r in caplog.records)
