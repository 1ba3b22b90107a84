"""The examples print the rows of the run they just trained, never a stale one: each waits for
the row it prints (the run's ``runs_current`` row with its final status), not only for the
``run_finished`` event (issue 11, round 2, fault 11)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from runstream.settings import Settings
from tests.helpers import scalar, sink_until

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(settings: Settings, tmp_path: Path, *argv: str) -> str:
    """Run an example against the test's topics and database, with a sink landing its events
    until its run is finished in ``runs_current``; its output."""
    env = dict(os.environ)
    env.update(
        {
            "RUNSTREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "RUNSTREAM_CLICKHOUSE_URL": settings.clickhouse_url,
            "RUNSTREAM_TOPIC_PREFIX": settings.topic_prefix,
            "RUNSTREAM_CLICKHOUSE_DATABASE": settings.clickhouse_database,
            "RUNSTREAM_DIR": str(tmp_path / "example-spool"),
            "RUNSTREAM_SYSTEM_METRICS_INTERVAL": "0",
        }
    )
    db = settings.clickhouse_database
    with subprocess.Popen(
        [sys.executable, str(EXAMPLES / argv[0]), *argv[1:]], env=env, cwd=tmp_path, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    ) as process:  # fmt: skip
        sink_until(
            settings,
            lambda c: (
                scalar(settings, f"SELECT count() FROM {db}.runs_current WHERE status != 'running'")
                == 1
            ),
            timeout=120,
        )
        out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, out
    return out


@pytest.mark.integration
def test_train_example_reports_every_step_of_its_run(settings: Settings, tmp_path: Path) -> None:
    out = run_example(settings, tmp_path, "train.py", "--steps", "30")
    row = next(line for line in out.splitlines() if re.match(r"\W*loss\W", line))
    assert re.search(r"\b30\b", row), out  # points: every step of this run
    assert not (tmp_path / "runstream").exists()  # the spool never shadows the package


@pytest.mark.integration
def test_transformers_example_reports_the_finished_run(settings: Settings, tmp_path: Path) -> None:
    out = run_example(settings, tmp_path, "transformers_example.py", "--steps", "4")
    status = out.split("Status, some config and the summary:", 1)[1]
    assert "finished" in status and "running" not in status, out


@pytest.mark.integration
def test_accelerate_example_reports_the_finished_run(settings: Settings, tmp_path: Path) -> None:
    out = run_example(settings, tmp_path, "accelerate_example.py", "--epochs", "2")
    status = out.split("Status and config:", 1)[1]
    assert "finished" in status and "running" not in status, out
