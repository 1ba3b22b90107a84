"""runstream.integrations.transformers.RunstreamCallback with the real Trainer (issue 11).

Tiny models built here (a one-layer BERT from a BertConfig, a linear regressor), random data, a
handful of steps on the CPU; what the callback sent is read back from ClickHouse and compared
with the trainer's own ``state.log_history``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import torch
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

import runstream
from runstream.integrations.transformers import RunstreamCallback, split_logs
from runstream.producers.active import active_runs
from runstream.settings import Settings
from tests.helpers import records_of, rows, scalar, sink_until

pytestmark = pytest.mark.integration

# The trainer's end-of-training report: these go to the summary, not to the metrics.
END_REPORT = {"train_runtime", "train_samples_per_second", "train_steps_per_second",
              "train_loss", "total_flos"}  # fmt: skip


# --- tiny models and data -----------------------------------------------------------------------
def tiny_bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=2)  # fmt: skip
    return BertForSequenceClassification(config)


class Tokens(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 64, (n, 8), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(8, dtype=torch.long),
                "labels": self.labels[i]}  # fmt: skip


class Points(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(n)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x.sum(dim=1)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


class Regressor(torch.nn.Module):
    """A linear model in the shape the Trainer takes (a dict with ``loss``); its forward raises
    ``raises`` at call number ``fail_at``, as a failing training step would."""

    def __init__(self, fail_at: int | None = None, raises: type[BaseException] = RuntimeError):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)
        self.calls = 0
        self.fail_at = fail_at
        self.raises = raises

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
        self.calls += 1
        if self.calls == self.fail_at:
            raise self.raises(f"forward failed at call {self.calls}")
        out = self.linear(x).squeeze(-1)
        loss = torch.nn.functional.mse_loss(out, labels) if labels is not None else None
        return {"loss": loss, "logits": out}


def arguments(tmp_path: Path, **overrides: Any) -> TrainingArguments:
    options: dict[str, Any] = {
        "output_dir": str(tmp_path / "out"),
        "max_steps": 6,
        "logging_steps": 1,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "learning_rate": 1e-3,
        "report_to": "none",
        "use_cpu": True,
        "save_strategy": "no",
        "disable_tqdm": True,
        "seed": 0,
    }
    options.update(overrides)
    return TrainingArguments(**options)


# --- reading back -------------------------------------------------------------------------------
def wait_finished(settings: Settings, runs: int = 1) -> None:
    db = settings.clickhouse_database
    sink_until(
        settings,
        lambda c: scalar(settings, f"SELECT countIf(type='run_finished') FROM {db}.events") >= runs,
    )


def points(settings: Settings, run_id: str) -> dict[str, list[tuple[int, float]]]:
    found: dict[str, list[tuple[int, float]]] = {}
    for name, step, value in rows(
        settings,
        f"SELECT name, step, value FROM {settings.clickhouse_database}.metrics "
        f"WHERE run_id = '{run_id}' ORDER BY name, step, value",
    ):
        found.setdefault(name, []).append((step, value))
    return found


def expected_points(log_history: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """What the trainer logged, renamed by the documented rule (written out here, not taken
    from the integration): eval_x -> eval/x, test_x -> test/x, else train/x; the end report
    goes to the summary."""
    expected: dict[str, list[tuple[int, float]]] = {}
    for entry in log_history:
        for key, value in entry.items():
            if key == "step" or key in END_REPORT:
                continue
            if key.startswith("eval_"):
                name = "eval/" + key[len("eval_") :]
            elif key.startswith("test_"):
                name = "test/" + key[len("test_") :]
            else:
                name = "train/" + key
            expected.setdefault(name, []).append((entry["step"], float(value)))
    return {name: sorted(found) for name, found in expected.items()}


def run_row(settings: Settings, run_id: str) -> dict[str, Any]:
    (row,) = records_of(
        settings,
        f"SELECT name, status, exit_code, config, summary, tags FROM "
        f"{settings.clickhouse_database}.runs_current WHERE run_id = {{run:String}}",
        run=run_id,
    )
    row["config"] = orjson.loads(row["config"])
    row["summary"] = orjson.loads(row["summary"])
    return row


# --- the tests ----------------------------------------------------------------------------------
def test_train_and_eval_metrics_config_summary_and_status_land(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = tiny_bert()
    callback = RunstreamCallback(project="hf", name="tiny-bert", tags=["tiny"],
                                 config={"dataset": "random"}, settings=settings)  # fmt: skip
    args = arguments(tmp_path, logging_steps=2, eval_strategy="steps", eval_steps=3)
    trainer = Trainer(model=model, args=args, train_dataset=Tokens(32, 1),
                      eval_dataset=Tokens(8, 2), callbacks=[callback])  # fmt: skip
    trainer.train()

    run = callback.run
    assert run is not None and run.finished and run.project == "hf"
    wait_finished(settings)
    history = trainer.state.log_history
    got = points(settings, run.id)
    assert set(got) == {
        "train/loss", "train/grad_norm", "train/learning_rate", "train/epoch",
        "eval/loss", "eval/runtime", "eval/samples_per_second", "eval/steps_per_second",
    }  # fmt: skip
    assert got == expected_points(history)
    # The trainer's global steps, not a call counter: train logs at 2, 4, 6, evals at 3 and 6.
    assert [s for s, _ in got["train/loss"]] == [2, 4, 6]
    assert [s for s, _ in got["eval/loss"]] == [3, 6]

    row = run_row(settings, run.id)
    assert (row["name"], row["status"], row["exit_code"], row["tags"]) == (
        "tiny-bert", "finished", 0, ["tiny"],
    )  # fmt: skip
    config = row["config"]
    assert config["dataset"] == "random"  # the user's config= stays
    assert config["learning_rate"] == 1e-3 and config["per_device_train_batch_size"] == 4
    assert config["max_steps"] == 6 and config["train_batch_size"] == 4
    assert config["hidden_size"] == 16 and config["num_attention_heads"] == 2  # model config
    assert config["model/num_parameters"] == model.num_parameters()
    assert config["hub_token"] == "<HUB_TOKEN>"  # masked by TrainingArguments.to_dict()
    end_report = history[-1]
    summary = row["summary"]
    for key in END_REPORT:
        assert summary[key] == end_report[key], key
    assert summary["train/loss"] == history[-3]["loss"]  # derived: the last point
    assert not [r for r in active_runs() if r is run]
    # Nothing refused or failing on the way: no warning from runstream at all.
    assert not [r for r in caplog.records if r.name == "runstream" and r.levelno >= 30]
    assert run.refused == 0


def test_an_exception_in_a_training_step_fails_the_run_and_ends_it(
    settings: Settings, tmp_path: Path
) -> None:
    callback = RunstreamCallback(project="hf", settings=settings)
    trainer = Trainer(model=Regressor(fail_at=3), args=arguments(tmp_path),
                      train_dataset=Points(32), callbacks=[callback])  # fmt: skip
    with pytest.raises(RuntimeError, match="forward failed at call 3"):  # unchanged
        trainer.train()

    run = callback.run
    assert run is not None and run.finished  # not left open until the process exits
    wait_finished(settings)
    row = run_row(settings, run.id)
    assert (row["status"], row["exit_code"]) == ("failed", 1)
    # Steps 1 and 2 were trained and logged before the third forward raised.
    assert [s for s, _ in points(settings, run.id)["train/loss"]] == [1, 2]
    assert row["config"]["max_steps"] == 6 and "hidden_size" not in row["config"]


def test_keyboard_interrupt_kills_the_run(settings: Settings, tmp_path: Path) -> None:
    callback = RunstreamCallback(project="hf", settings=settings)
    trainer = Trainer(model=Regressor(fail_at=4, raises=KeyboardInterrupt),
                      args=arguments(tmp_path), train_dataset=Points(32),
                      callbacks=[callback])  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        trainer.train()

    run = callback.run
    assert run is not None and run.finished
    wait_finished(settings)
    row = run_row(settings, run.id)
    assert (row["status"], row["exit_code"]) == ("killed", 130)
    assert [s for s, _ in points(settings, run.id)["train/loss"]] == [1, 2, 3]


def test_only_the_world_process_zero_logs(settings: Settings, tmp_path: Path) -> None:
    callback = RunstreamCallback(project="hf", settings=settings)
    trainer = Trainer(model=Regressor(), args=arguments(tmp_path), train_dataset=Points(32),
                      eval_dataset=Points(8), callbacks=[callback])  # fmt: skip
    # What a process of rank 1 sees: the trainer's state says it is not the world process zero.
    trainer.is_world_process_zero = lambda: False
    trainer.train()
    trainer.evaluate()
    assert not trainer.state.is_world_process_zero and trainer.state.log_history
    assert callback.run is None

    # A run of rank zero's, sent after: once it landed, it is the only run of the topic.
    with runstream.init(project="hf", name="rank-zero", settings=settings):
        pass
    wait_finished(settings)
    db = settings.clickhouse_database
    assert rows(settings, f"SELECT DISTINCT name FROM {db}.runs_current") == [("rank-zero",)]
    assert sorted(p.name for p in (settings.dir / "runs").iterdir()) == [
        scalar(settings, f"SELECT any(run_id) FROM {db}.runs_current")
    ]


def test_a_run_you_pass_is_logged_into_and_left_open(settings: Settings, tmp_path: Path) -> None:
    with runstream.init(project="hf", name="mine", config={"lr": 1e-3}, settings=settings) as run:
        callback = RunstreamCallback(run=run)
        trainer = Trainer(model=Regressor(), args=arguments(tmp_path, max_steps=4),
                          train_dataset=Points(32), eval_dataset=Points(8),
                          callbacks=[callback])  # fmt: skip
        trainer.train()
        assert not run.finished  # the user's run: the user ends it
        metrics = trainer.evaluate()  # after train(): lands in the same run
        predicted = trainer.predict(Points(8)).metrics  # on_predict: test_x -> test/x
    wait_finished(settings)
    got = points(settings, run.id)
    assert got["eval/loss"] == [(4, metrics["eval_loss"])]
    assert got["test/loss"] == [(4, predicted["test_loss"])]
    assert [s for s, _ in got["train/loss"]] == [1, 2, 3, 4]
    row = run_row(settings, run.id)
    assert (row["name"], row["status"]) == ("mine", "finished")
    assert row["config"]["lr"] == 1e-3 and row["config"]["max_steps"] == 4
    assert row["summary"]["train_loss"] == trainer.state.log_history[-2]["train_loss"]


def test_a_callback_added_later_starts_a_run_per_train_and_sees_the_second_fail(
    settings: Settings, tmp_path: Path
) -> None:
    model = Regressor()
    trainer = Trainer(model=model, args=arguments(tmp_path, max_steps=2),
                      train_dataset=Points(16))  # fmt: skip
    callback = RunstreamCallback(project="hf", settings=settings)
    trainer.add_callback(callback)
    trainer.train()  # wraps train() at train begin, for the calls after this one
    first = callback.run
    assert first is not None and first.finished

    model.fail_at = model.calls + 1
    with pytest.raises(RuntimeError):
        trainer.train()
    second = callback.run
    assert second is not None and second is not first and second.finished
    wait_finished(settings, runs=2)
    assert (run_row(settings, first.id)["status"], run_row(settings, second.id)["status"]) == (
        "finished",
        "failed",
    )


def test_values_logged_after_the_run_ended_are_not_recorded_with_one_warning(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    callback = RunstreamCallback(project="hf", mode="offline", settings=settings)
    trainer = Trainer(model=Regressor(), args=arguments(tmp_path, max_steps=2),
                      train_dataset=Points(16), eval_dataset=Points(8),
                      callbacks=[callback])  # fmt: skip
    trainer.train()
    trainer.evaluate()
    trainer.evaluate()
    warnings = [r for r in caplog.records if "ended with training" in r.getMessage()]
    assert len(warnings) == 1 and "run=runstream.init" in warnings[0].getMessage()
    assert callback.run is not None and callback.run.refused == 0


def test_the_constructor_refuses_arguments_init_does_not_take() -> None:
    with pytest.raises(TypeError, match=r"'projet'.*runstream\.init"):
        RunstreamCallback(projet="typo")
    disabled = runstream.init(mode="disabled")
    with pytest.raises(TypeError, match="pass one or the other"):
        RunstreamCallback(run=disabled, project="p")
    disabled.finish()


TRAINER_KEYS = [*sorted(END_REPORT), "loss", "epoch", "grad_norm", "eval_loss", "eval_", "test_acc",
                "train_tokens_per_second", "train_mem_cpu_alloc_delta", "train_acc"]  # fmt: skip
KEYS = st.one_of(st.sampled_from(TRAINER_KEYS), st.text(min_size=1, max_size=12))


@hypothesis_settings(max_examples=60, deadline=None)
@given(st.dictionaries(KEYS, st.floats(allow_nan=False), max_size=12))
def test_every_logged_key_lands_once_under_the_documented_name(logs: dict[str, float]) -> None:
    metrics, summary = split_logs(logs)
    assert len(metrics) + len(summary) == len(logs)  # nothing lost, no two keys on one name
    for key, value in logs.items():
        if (
            key in END_REPORT
            or key.startswith("train_mem_")
            or (key.startswith("train_") and key.endswith("_per_second"))
        ):
            assert summary[key] == value
        elif key.startswith("eval_"):
            assert metrics["eval/" + key[5:]] == value
        elif key.startswith("test_"):
            assert metrics["test/" + key[5:]] == value
        else:
            assert metrics["train/" + key] == value


class Odd:
    def __repr__(self) -> str:
        return "<odd>"


def test_values_the_sdk_cannot_store_are_refused_with_a_warning_never_raised(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = tiny_bert()
    model.config.odd = Odd()  # in model.config.to_dict(), not JSON
    callback = RunstreamCallback(project="hf", mode="offline", settings=settings)
    trainer = Trainer(model=model, args=arguments(tmp_path, max_steps=2),
                      train_dataset=Tokens(16, 1), callbacks=[callback])  # fmt: skip
    trainer.log({"note": "not a number", "extra": 2.0})  # before train(): starts the run
    trainer.train()

    run = callback.run
    assert run is not None and run.finished
    assert run.refused_by_kind == {"metric": 1, "config": 1}
    assert run.config["odd"] == "<odd>" and run.config["hidden_size"] == 16
    messages = [r.getMessage() for r in caplog.records if r.name == "runstream"]
    assert any("train/note" in m for m in messages)
    assert any("config.odd" in m for m in messages)


def test_a_failing_hook_never_stops_training(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    import runstream.integrations.transformers as integration

    def broken(logs: Any) -> Any:
        raise RuntimeError("a bug in the integration")

    monkeypatch.setattr(integration, "split_logs", broken)
    callback = RunstreamCallback(project="hf", mode="offline", settings=settings)
    trainer = Trainer(model=Regressor(), args=arguments(tmp_path, max_steps=4),
                      train_dataset=Points(16), callbacks=[callback])  # fmt: skip
    trainer.train()
    assert trainer.state.global_step == 4
    raised = [r for r in caplog.records if "RunstreamCallback.on_log raised" in r.getMessage()]
    assert len(raised) == 1 and raised[0].exc_info is not None  # once, with the traceback
    assert callback.run is not None and callback.run.finished
