"""run.watch on a torch module: gradient and parameter histograms every log_freq steps, named
and stepped as wandb does, landing in ClickHouse; never an exception into training."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import runstream
from runstream import wandb
from runstream.settings import Settings
from tests.helpers import records_of, scalar, sink_until
from tests.test_sdk_local import of_type, offline_settings, spooled

NAMES = ["0.weight", "0.bias", "2.weight", "2.bias"]


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def train(run: Any, model: torch.nn.Module, steps: int, record: dict[int, Any] | None = None,
          first: int = 0) -> None:  # fmt: skip
    """A plain loop that logs its loss at its own step; ``record`` gets, per step, what the
    histograms should show (the parameters as the forward pass saw them, the gradients)."""
    # Plain SGD by hand: torch.optim imports torch._dynamo, seconds of a test for nothing.
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    for step in range(first, first + steps):
        seen = {n: p.detach().clone() for n, p in model.named_parameters()}
        for p in model.parameters():
            p.grad = None
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        if record is not None:
            grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
            record[step] = (seen, grads)
        with torch.no_grad():
            for p in model.parameters():
                p.sub_(0.1 * p.grad)
        run.log({"loss": loss.item()}, step=step)


@pytest.mark.integration
def test_watch_lands_gradient_and_parameter_histograms_at_the_expected_steps(
    settings: Settings,
) -> None:
    run = runstream.init(settings=settings, project="watch")
    model = mlp()
    run.watch(model, log="all", log_freq=2)
    record: dict[int, Any] = {}
    train(run, model, 6, record)
    run.finish()

    db = settings.clickhouse_database
    sink_until(settings, lambda c: scalar(settings, f"SELECT count() FROM {db}.histograms") == 24)
    rows = records_of(settings, f"SELECT name, step, bins, counts FROM {db}.histograms "
                      "ORDER BY name, step")  # fmt: skip
    by_name: dict[str, list[int]] = {}
    for row in rows:
        by_name.setdefault(row["name"], []).append(row["step"])
    # Every second call (2, 4, 6 of a 0-based loop: steps 1, 3, 5), as wandb's log_freq.
    assert by_name == {f"{kind}/{n}": [1, 3, 5] for kind in ("gradients", "parameters")
                       for n in NAMES}  # fmt: skip
    for row in rows:
        kind, name = row["name"].split("/", 1)
        seen, grads = record[row["step"]]
        expected = runstream.Histogram((grads if kind == "gradients" else seen)[name])
        assert row["bins"] == expected.bins
        assert row["counts"] == [float(c) for c in expected.counts]
        assert sum(row["counts"]) == seen[name].numel()
    assert scalar(settings, f"SELECT count() FROM {db}.metrics WHERE name = 'loss'") == 6


def test_gradients_only_by_default_names_of_a_second_model_and_unwatch(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings)
    first, second = mlp(), mlp()
    run.watch([first, second], log_freq=1)
    train(run, first, 1)
    train(run, second, 1, first=1)
    run.unwatch(first)
    train(run, first, 1, first=2)  # not watched any more
    train(run, second, 1, first=3)
    run.unwatch()
    train(run, second, 1, first=4)
    run.finish()
    events = of_type(spooled(settings, run.id), "histogram_logged")
    assert [(e["body"]["step"], sorted(e["body"]["histograms"])) for e in events] == [
        (0, sorted(f"gradients/{n}" for n in NAMES)),
        (1, sorted(f"gradients/graph_1{n}" for n in NAMES)),
        (3, sorted(f"gradients/graph_1{n}" for n in NAMES)),
    ]


def test_watch_follows_the_runs_step_and_stops_at_finish(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings)
    model = mlp()
    run.watch(model, log="parameters", log_freq=1)
    x = torch.randn(2, 4)
    model(x)  # before any log(): the step the next log() takes, 0
    run.log({"a": 1.0})
    run.log({"b": 1.0}, commit=False)  # collecting step 1
    model(x)
    run.log({"c": 1.0})
    run.finish()
    model(x)  # after finish(): the hooks remove themselves, nothing is sent or raised
    assert len(model._forward_hooks) == 0
    events = of_type(spooled(settings, run.id), "histogram_logged")
    assert [e["body"]["step"] for e in events] == [0, 1]
    assert sorted(events[0]["body"]["histograms"]) == sorted(f"parameters/{n}" for n in NAMES)


def test_watch_never_raises_into_training(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = runstream.init(settings=offline_settings(tmp_path))
    with caplog.at_level(logging.WARNING, logger="runstream"):
        run.watch("not a model")
        run.watch(object(), log="all")
        run.watch(mlp(), log="weights")  # wandb knows no such value either
        model = mlp()
        run.watch(model, log="all", log_freq=1)

        def broken(*_: Any, **__: Any) -> Any:
            raise RuntimeError("no histogram today")

        monkeypatch.setattr("runstream.producers.watch.Histogram", broken)
        train(run, model, 3)
    run.finish()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("watch() takes torch.nn.Module models, not" in m for m in messages) == 1
    assert sum("log must be 'gradients', 'parameters', 'all' or None" in m for m in messages) == 1
    # One warning per histogram name (the parameters' one, each gradient's), not per step.
    assert sum("no histogram today" in m for m in messages) == 5
    assert run.refused_by_kind["argument"] == 3
    assert run.refused_by_kind["media"] == 3 * (1 + 4)  # per step: parameters, 4 gradients


def test_wandb_watch_and_unwatch_use_the_current_run(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path)
    wandb.watch(mlp())  # no run: a warning, nothing else
    run = runstream.init(settings=settings)
    model = mlp()
    wandb.watch(model, log="gradients", log_freq=2)
    train(run, model, 4)
    wandb.unwatch(model)
    train(run, model, 2, first=4)
    run.finish()
    events = of_type(spooled(settings, run.id), "histogram_logged")
    assert [e["body"]["step"] for e in events] == [1, 3]


def test_import_runstream_does_not_import_torch() -> None:
    code = "import sys, runstream, runstream.wandb; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
