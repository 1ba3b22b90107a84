"""runstream.integrations.accelerate.RunstreamTracker with the real Accelerator (issue 11).

A plain torch loop (a linear regressor, random data, a handful of steps on the CPU) logs with
``accelerator.log(..., step=s)``; what landed is read back from ClickHouse.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import torch
from accelerate import Accelerator
from accelerate.state import PartialState

from runstream.integrations.accelerate import RunstreamTracker
from runstream.producers.active import active_runs
from runstream.settings import Settings
from tests.helpers import records_of, rows, scalar, sink_until

pytestmark = pytest.mark.integration


def train(
    accelerator: Accelerator, steps: int = 8, fail_at: int | None = None,
    raises: type[BaseException] = RuntimeError,
) -> list[tuple[int, float, float]]:  # fmt: skip
    """A plain accelerate loop; returns the (step, loss, lr) it logged."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x = torch.randn(32, 4)
    data = torch.utils.data.TensorDataset(x, x.sum(dim=1, keepdim=True))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    logged = []
    for step, (inputs, targets) in enumerate(loader):
        if step == steps:
            break
        if step == fail_at:
            raise raises(f"step {step} failed")
        loss = torch.nn.functional.mse_loss(model(inputs), targets)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        lr = optimizer.param_groups[0]["lr"]
        accelerator.log({"train/loss": loss.item(), "lr": lr}, step=step)
        logged.append((step, loss.item(), lr))
    return logged


def wait_finished(settings: Settings) -> None:
    db = settings.clickhouse_database
    sink_until(
        settings,
        lambda c: scalar(settings, f"SELECT countIf(type='run_finished') FROM {db}.events") >= 1,
    )


def points(settings: Settings, run_id: str, name: str) -> list[tuple[int, float]]:
    return rows(
        settings,
        f"SELECT step, value FROM {settings.clickhouse_database}.metrics "
        f"WHERE run_id = '{run_id}' AND name = '{name}' ORDER BY step",
    )


def run_row(settings: Settings, run_id: str) -> dict[str, Any]:
    (row,) = records_of(
        settings,
        f"SELECT project, name, status, exit_code, config, tags, notes FROM "
        f"{settings.clickhouse_database}.runs_current WHERE run_id = {{run:String}}",
        run=run_id,
    )
    row["config"] = orjson.loads(row["config"])
    return row


@pytest.fixture
def accelerator_state() -> Iterator[None]:
    """Each test its own accelerate state (it is process-wide, and other tests build theirs)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_a_plain_loop_lands_with_its_steps_config_and_status(
    settings: Settings, accelerator_state: None, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = RunstreamTracker(tags=["acc"], settings=settings)
    accelerator = Accelerator(cpu=True, log_with=[tracker])
    accelerator.init_trackers(
        "acc-project",
        config={"lr": 0.05, "batch_size": 4, "optimizer": "sgd"},
        init_kwargs={"runstream": {"name": "acc-run", "notes": "from init_kwargs"}},
    )
    run = accelerator.get_tracker("runstream", unwrap=True)
    assert run is tracker.tracker and run is not None and not run.finished
    logged = train(accelerator)
    accelerator.log({"eval/loss": 0.25}, step=8)
    accelerator.end_training()
    assert run.finished and not [r for r in active_runs() if r is run]

    wait_finished(settings)
    assert points(settings, run.id, "train/loss") == [(s, loss) for s, loss, _ in logged]
    assert points(settings, run.id, "lr") == [(s, 0.05) for s in range(8)]
    assert points(settings, run.id, "eval/loss") == [(8, 0.25)]
    row = run_row(settings, run.id)
    assert (row["project"], row["name"], row["notes"], row["tags"]) == (
        "acc-project", "acc-run", "from init_kwargs", ["acc"],
    )  # fmt: skip
    assert row["config"] == {"lr": 0.05, "batch_size": 4, "optimizer": "sgd"}
    assert (row["status"], row["exit_code"]) == ("finished", 0)
    assert not [r for r in caplog.records if r.name == "runstream" and r.levelno >= 30]


def test_the_constructor_wins_over_init_trackers(
    settings: Settings, accelerator_state: None
) -> None:
    tracker = RunstreamTracker(project="mine", name="ctor", mode="offline", settings=settings)
    accelerator = Accelerator(cpu=True, log_with=[tracker])
    accelerator.init_trackers("theirs", init_kwargs={"runstream": {"name": "kw", "tags": ["t"]}})
    run = tracker.tracker
    assert run is not None
    assert (run.project, run.name, run.tags) == ("mine", "ctor", ("t",))
    accelerator.end_training()
    with pytest.raises(TypeError, match="'nme'"):
        Accelerator(cpu=True, log_with=[RunstreamTracker(settings=settings)]).init_trackers(
            "p", init_kwargs={"runstream": {"nme": "typo"}}
        )


def test_an_exception_in_the_loop_fails_the_run_through_end_training_in_finally(
    settings: Settings, accelerator_state: None
) -> None:
    tracker = RunstreamTracker(project="acc", settings=settings)
    accelerator = Accelerator(cpu=True, log_with=[tracker])
    accelerator.init_trackers("ignored-by-the-constructor")
    with pytest.raises(RuntimeError, match="step 3 failed"):
        try:
            train(accelerator, fail_at=3)
        finally:
            accelerator.end_training()
    run = tracker.tracker
    assert run is not None and run.finished
    wait_finished(settings)
    row = run_row(settings, run.id)
    assert (row["project"], row["status"], row["exit_code"]) == ("acc", "failed", 1)
    assert [s for s, _ in points(settings, run.id, "train/loss")] == [0, 1, 2]


def test_keyboard_interrupt_kills_the_run(settings: Settings, accelerator_state: None) -> None:
    tracker = RunstreamTracker(project="acc", settings=settings)
    accelerator = Accelerator(cpu=True, log_with=[tracker])
    accelerator.init_trackers("acc")
    with pytest.raises(KeyboardInterrupt):
        try:
            train(accelerator, fail_at=2, raises=KeyboardInterrupt)
        finally:
            accelerator.end_training()
    run = tracker.tracker
    assert run is not None
    wait_finished(settings)
    assert (run_row(settings, run.id)["status"], run_row(settings, run.id)["exit_code"]) == (
        "killed",
        130,
    )


SCRIPT = """
import torch
from accelerate import Accelerator
from runstream.integrations.accelerate import RunstreamTracker

tracker = RunstreamTracker()
accelerator = Accelerator(cpu=True, log_with=[tracker])
accelerator.init_trackers("acc-script")
print(tracker.tracker.id, flush=True)
for step in range(5):
    if step == 3:
        raise ValueError("the loss went away")
    accelerator.log({"loss": 1.0 / (step + 1)}, step=step)
accelerator.end_training()  # never reached
"""


def test_a_script_that_dies_of_an_exception_ends_its_run_failed(settings: Settings) -> None:
    env = dict(os.environ)
    env.update(
        {
            "RUNSTREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "RUNSTREAM_TOPIC_PREFIX": settings.topic_prefix,
            "RUNSTREAM_DIR": str(settings.dir),
            "RUNSTREAM_FINISH_TIMEOUT": "30",
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 1 and "the loss went away" in done.stderr
    run_id = done.stdout.split()[0]
    wait_finished(settings)
    row = run_row(settings, run_id)
    assert (row["project"], row["status"], row["exit_code"]) == ("acc-script", "failed", 1)
    assert [s for s, _ in points(settings, run_id, "loss")] == [0, 1, 2]


def test_processes_other_than_the_main_one_start_no_run(
    settings: Settings, accelerator_state: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker = RunstreamTracker(project="acc", settings=settings)
    accelerator = Accelerator(cpu=True, log_with=[tracker])
    # What process 1 of 2 sees (accelerate's on_main_process reads these two).
    monkeypatch.setattr(PartialState, "is_main_process", property(lambda self: False))
    monkeypatch.setattr(PartialState, "use_distributed", property(lambda self: True))
    accelerator.init_trackers("acc", config={"lr": 0.1})
    accelerator.log({"loss": 1.0}, step=0)
    tracker.log({"loss": 1.0}, step=1)  # called directly: the tracker checks too
    tracker.finish()
    assert tracker.tracker is None
    assert not (settings.dir / "runs").exists() or not any((settings.dir / "runs").iterdir())
