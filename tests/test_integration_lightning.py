"""RunstreamLogger with Lightning's real Trainer, checked in ClickHouse."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import orjson
import pytest
import torch
from hypothesis import HealthCheck, given
from hypothesis import settings as settings_
from hypothesis import strategies as st
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch.utils.data import DataLoader, TensorDataset

from runstream.integrations.lightning import RunstreamLogger
from runstream.settings import Settings
from tests.helpers import records_of, rows, scalar, sink_until

pytestmark = pytest.mark.integration


class TinyModule(LightningModule):
    """A 2-layer MLP on random tensors; remembers every value it logs, with the step."""

    def __init__(self, lr: float = 0.05, hidden: int = 8, fail_at: int | None = None,
                 interrupt_at: int | None = None) -> None:  # fmt: skip
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
        )
        self.logged: list[tuple[int, float]] = []  # (global step when logged, loss)
        self.val_logged: list[float] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.hparams["fail_at"] is not None and self.global_step == self.hparams["fail_at"]:
            raise RuntimeError("the training step failed")
        if (
            self.hparams["interrupt_at"] is not None
            and self.global_step == self.hparams["interrupt_at"]
        ):
            raise KeyboardInterrupt
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train/loss", loss)
        self.log("train/mean", loss, on_step=False, on_epoch=True)  # reduced at the epoch's end
        self.logged.append((self.global_step, float(loss.detach())))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val/loss", torch.nn.functional.mse_loss(self.net(x), y))

    def on_validation_epoch_end(self) -> None:
        if "val/loss" in self.trainer.callback_metrics:  # the mean Lightning will log
            self.val_logged.append(float(self.trainer.callback_metrics["val/loss"]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"])


def loader(n: int = 24, seed: int = 0) -> DataLoader[tuple[torch.Tensor, ...]]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=generator)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)


def trainer(tmp_path: Path, logger: RunstreamLogger, max_steps: int = 6, **kw: Any) -> Trainer:
    options: dict[str, Any] = {
        "max_steps": max_steps,
        "log_every_n_steps": 1,
        "accelerator": "cpu",
        "enable_progress_bar": False,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "default_root_dir": tmp_path,
        "logger": logger,
        "num_sanity_val_steps": 0,
    }
    options.update(kw)
    return Trainer(**options)


@pytest.fixture(autouse=True)
def _keep_sigint() -> Iterator[None]:
    # Lightning ignores SIGINT after a KeyboardInterrupt (trainer/call.py); put it back.
    previous = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, previous)


def finished_runs(settings: Settings, count: int = 1) -> None:
    db = settings.clickhouse_database
    sink_until(
        settings,
        lambda c: (
            scalar(settings, f"SELECT countIf(type='run_finished') FROM {db}.events") >= count
        ),
    )


def run_row(settings: Settings) -> dict[str, Any]:
    db = settings.clickhouse_database
    (row,) = records_of(settings, f"SELECT * FROM {db}.runs_current")
    return row


def points(settings: Settings, name: str) -> list[tuple[int, float]]:
    db = settings.clickhouse_database
    return rows(
        settings, f"SELECT step, value FROM {db}.metrics WHERE name = '{name}' ORDER BY step, seq"
    )


def test_metrics_at_lightnings_steps_hyperparameters_and_finished(
    settings: Settings, tmp_path: Path
) -> None:
    logger = RunstreamLogger(project="lit", name="tiny", tags=["cpu"], settings=settings,
                             config={"data": "random"})  # fmt: skip
    module = TinyModule(lr=0.05)
    trainer(tmp_path, logger, val_check_interval=3, limit_val_batches=2).fit(
        module, loader(), loader(8, seed=1)
    )
    finished_runs(settings)

    # a training_step's values go out at the global step the step ran at (0-based)
    assert points(settings, "train/loss") == module.logged
    assert [s for s, _ in module.logged] == [0, 1, 2, 3, 4, 5]
    # validation after every 3rd batch, at that batch's step, with the value Lightning reduced
    assert points(settings, "val/loss") == list(zip([2, 5], module.val_logged, strict=True))
    # an epoch's reduced value at the step of its last batch (one epoch of 6 batches here)
    ((step, mean),) = points(settings, "train/mean")
    assert step == 5 and mean == pytest.approx(sum(v for _, v in module.logged) / 6, rel=1e-6)
    # Lightning adds the epoch to every call of log_metrics (training, validation, epoch end)
    assert points(settings, "epoch") == [(s, 0.0) for s in (0, 1, 2, 2, 3, 4, 5, 5, 5)]

    run = run_row(settings)
    assert run["status"] == "finished" and run["exit_code"] == 0
    assert run["project"] == "lit" and run["name"] == "tiny" and run["tags"] == ["cpu"]
    assert run["run_id"] == logger.version
    config = orjson.loads(run["config"])
    # hyperparameters that are None are sent, and (as runstream's config does with None) not kept
    assert config == {"data": "random", "lr": 0.05, "hidden": 8}
    db = settings.clickhouse_database
    update = scalar(settings, f"SELECT body FROM {db}.events WHERE type = 'config_updated'")
    assert orjson.loads(update)["config"] == dict(module.hparams)
    assert logger.name == "lit"


def test_hyperparameters_are_flattened_and_callables_named_as_lightning_does(
    settings: Settings, tmp_path: Path
) -> None:
    from argparse import Namespace

    logger = RunstreamLogger(project="lit", settings=settings)
    logger.log_hyperparams(
        Namespace(optim={"name": "sgd", "betas": [0.9, 0.99]}, act=torch.nn.ReLU, n=3)
    )
    logger.log_metrics({"a": 1.0, "b": 2.0}, step=7)
    prefixed = RunstreamLogger(run=logger.experiment, prefix="stage1")
    prefixed.log_metrics({"a": 3.0}, step=8)
    prefixed.finalize("success")  # a run given with run= stays open
    assert not logger.experiment.finished
    logger.finalize("success")
    finished_runs(settings)

    config = orjson.loads(run_row(settings)["config"])
    assert config == {"optim/name": "sgd", "optim/betas": [0.9, 0.99], "act": "ReLU", "n": 3}
    assert points(settings, "a") == [(7, 1.0)] and points(settings, "b") == [(7, 2.0)]
    assert points(settings, "stage1-a") == [(8, 3.0)]


def test_a_failing_training_step_ends_the_run_failed(settings: Settings, tmp_path: Path) -> None:
    module = TinyModule(fail_at=3)
    with pytest.raises(RuntimeError, match="the training step failed"):
        trainer(tmp_path, RunstreamLogger(project="lit", settings=settings)).fit(module, loader())
    finished_runs(settings)

    run = run_row(settings)
    assert run["status"] == "failed" and run["exit_code"] == 1
    assert points(settings, "train/loss") == module.logged
    assert len(module.logged) == 3


def test_keyboard_interrupt_ends_the_run_killed(settings: Settings, tmp_path: Path) -> None:
    # Lightning catches it, calls finalize("failed") and exits with 1 (trainer/call.py).
    with pytest.raises(SystemExit):
        trainer(tmp_path, RunstreamLogger(project="lit", settings=settings)).fit(
            TinyModule(interrupt_at=2), loader()
        )
    finished_runs(settings)

    run = run_row(settings)
    assert run["status"] == "killed" and run["exit_code"] == 130
    assert [s for s, _ in points(settings, "train/loss")] == [0, 1]


def test_a_second_trainer_resumes_the_run_by_version(settings: Settings, tmp_path: Path) -> None:
    first = RunstreamLogger(project="lit", settings=settings)
    module = TinyModule()
    fit = trainer(tmp_path, first, max_steps=3)
    fit.fit(module, loader())
    checkpoint = tmp_path / "after3.ckpt"
    fit.save_checkpoint(checkpoint)
    run_id = first.version
    assert run_id is not None
    finished_runs(settings)

    second = RunstreamLogger(project="lit", version=run_id, settings=settings)
    assert second.version == run_id
    resumed = TinyModule()
    trainer(tmp_path, second, max_steps=6).fit(resumed, loader(), ckpt_path=checkpoint)
    finished_runs(settings, 2)

    db = settings.clickhouse_database
    assert scalar(settings, f"SELECT uniqExact(run_id) FROM {db}.events") == 1
    assert rows(settings, f"SELECT type FROM {db}.events WHERE type LIKE 'run_%' ORDER BY seq") == [
        ("run_started",),
        ("run_finished",),
        ("run_resumed",),
        ("run_finished",),
    ]
    expected = module.logged + resumed.logged
    assert points(settings, "train/loss") == expected
    assert [s for s, _ in expected] == [0, 1, 2, 3, 4, 5]
    assert run_row(settings)["status"] == "finished"


def test_fit_then_test_with_one_logger_stays_one_run(settings: Settings, tmp_path: Path) -> None:
    logger = RunstreamLogger(project="lit", settings=settings)
    module = TinyModule()
    fit = trainer(tmp_path, logger, max_steps=3)
    fit.fit(module, loader())
    module.test_step = module.validation_step  # type: ignore[method-assign]
    fit.test(module, loader(8, seed=1))
    finished_runs(settings, 2)

    db = settings.clickhouse_database
    assert scalar(settings, f"SELECT uniqExact(run_id) FROM {db}.events") == 1
    assert [s for s, _ in points(settings, "val/loss")] == [3]  # test_step logs under its name
    assert run_row(settings)["status"] == "finished"


def events_of_run(settings: Settings) -> list[tuple[str, str, int]]:
    """(type, status, exit code) of the run's lifecycle events, in order."""
    db = settings.clickhouse_database
    return [
        (t, orjson.loads(b).get("status", ""), orjson.loads(b).get("exit_code", -1))
        for t, b in rows(
            settings,
            f"SELECT type, body FROM {db}.events WHERE type LIKE 'run_%' ORDER BY seq",
        )
    ]


@pytest.mark.parametrize(
    "case",
    # (module argument, what fit raises, the run's status and exit code); Lightning turns a
    # KeyboardInterrupt into sys.exit(1) (trainer/call.py)
    [("fail_at", RuntimeError, "failed", 1), ("interrupt_at", SystemExit, "killed", 130)],
    ids=["exception", "keyboard_interrupt"],
)
def test_reading_the_logger_after_a_failed_fit_never_reopens_the_run(
    settings: Settings,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    case: tuple[str, type[BaseException], str, int],
) -> None:
    from runstream.producers.active import active_runs

    how, raised, status, exit_code = case

    logger = RunstreamLogger(project="lit", settings=settings, config={"given": 1})
    module = TinyModule(**{how: 3})
    fit = trainer(tmp_path, logger)
    with pytest.raises(raised):
        fit.fit(module, loader())
    run_id = logger.version
    assert run_id is not None

    # every read-only property, as a user (or Lightning's setup hook) reads them afterwards
    run = logger.experiment
    assert run.id == run_id and run.finished
    assert (logger.name, logger.version, logger.save_dir) == ("lit", run_id, None)
    assert logger.experiment is run and run.config["given"] == 1
    # nothing is left open for the process's exit hooks to end again
    assert all(r.id != run_id for r in active_runs())
    # writing into the ended run yourself: ignored, with the SDK's one warning
    with caplog.at_level("WARNING", logger="runstream"):
        run.log({"late": 1.0})
        run.log({"late": 2.0})
    assert [r.message for r in caplog.records if "after finish()" in r.message] == [
        f"runstream: run {run_id}: log() after finish() is ignored, as is every later call "
        "(warned once)"
    ]
    # a phase that logs nothing (predict) reads `experiment` and logs the same hyperparameters
    # again: the run stays ended
    module.predict_step = lambda batch, batch_idx: module.net(batch[0])  # type: ignore[method-assign]
    fit.predict(module, loader(8, seed=1))
    assert logger.experiment is run and all(r.id != run_id for r in active_runs())
    finished_runs(settings)

    assert events_of_run(settings) == [("run_started", "", -1), ("run_finished", status, exit_code)]
    row = run_row(settings)
    assert (row["status"], row["exit_code"]) == (status, exit_code)
    db = settings.clickhouse_database
    assert scalar(settings, f"SELECT count() FROM {db}.events WHERE type = 'run_resumed'") == 0
    # the hyperparameters once (at fit), the config given once (at run_started)
    assert scalar(settings, f"SELECT count() FROM {db}.events WHERE type = 'config_updated'") == 1
    assert points(settings, "late") == []
    assert orjson.loads(row["config"])["given"] == 1


def test_test_after_a_failed_fit_continues_the_run_and_ends_it_finished(
    settings: Settings, tmp_path: Path
) -> None:
    from runstream.producers.active import active_runs

    logger = RunstreamLogger(project="lit", settings=settings, config={"given": 1})
    module = TinyModule(fail_at=3)
    fit = trainer(tmp_path, logger)
    with pytest.raises(RuntimeError):
        fit.fit(module, loader())
    _ = logger.experiment.id, logger.name, logger.version  # reads change nothing
    module.test_step = module.validation_step  # type: ignore[method-assign]
    fit.test(module, loader(8, seed=1))  # logs: the same run goes on, and ends as test ends
    assert all(r.id != logger.version for r in active_runs())
    finished_runs(settings, 2)

    assert events_of_run(settings) == [
        ("run_started", "", -1),
        ("run_finished", "failed", 1),
        ("run_resumed", "", -1),
        ("run_finished", "finished", 0),
    ]
    row = run_row(settings)
    assert (row["status"], row["exit_code"]) == ("finished", 0)
    db = settings.clickhouse_database
    assert scalar(settings, f"SELECT uniqExact(run_id) FROM {db}.events") == 1
    # test's value at the step the failed fit stopped at (3 optimizer steps ran: 0, 1, 2)
    assert [s for s, _ in points(settings, "val/loss")] == [3]
    # the config as it stood (config= and the hyperparameters), not config= alone again
    config = orjson.loads(row["config"])
    assert config == {"given": 1, "lr": 0.05, "hidden": 8, "fail_at": 3}


def test_with_a_prefix_the_epoch_lightning_adds_is_prefixed_too(
    settings: Settings, tmp_path: Path
) -> None:
    module = TinyModule()
    logger = RunstreamLogger(project="lit", settings=settings, prefix="stage1")
    trainer(tmp_path, logger, max_steps=3).fit(module, loader())
    finished_runs(settings)

    db = settings.clickhouse_database
    names = {n for (n,) in rows(settings, f"SELECT DISTINCT name FROM {db}.metrics")}
    assert names == {"stage1-train/loss", "stage1-train/mean", "stage1-epoch"}  # no "epoch"
    # every call of log_metrics carries it: 3 training steps and the epoch's end at step 2
    assert points(settings, "stage1-epoch") == [(0, 0.0), (1, 0.0), (2, 0.0), (2, 0.0)]
    assert points(settings, "stage1-train/loss") == module.logged


def test_other_ranks_log_nothing(settings: Settings, tmp_path: Path) -> None:
    logger = RunstreamLogger(project="lit", settings=settings)
    saved = rank_zero_only.rank
    rank_zero_only.rank = 1
    try:
        trainer(tmp_path, logger).fit(TinyModule(), loader())
        assert logger.version is None
        assert type(logger.experiment).__name__ == "_DummyExperiment"
    finally:
        rank_zero_only.rank = saved
    assert logger._run is None
    assert not (settings.dir / "runs").exists() or not any((settings.dir / "runs").iterdir())
    db = settings.clickhouse_database
    assert scalar(settings, f"SELECT count() FROM {db}.events") == 0


def test_log_model_records_checkpoints_as_model_artifacts(
    settings: Settings, tmp_path: Path
) -> None:
    logger = RunstreamLogger(project="lit", settings=settings, log_model="all")
    checkpoints = ModelCheckpoint(every_n_train_steps=2, save_top_k=-1)
    trainer(tmp_path, logger, callbacks=[checkpoints], enable_checkpointing=True).fit(
        TinyModule(), loader()
    )
    finished_runs(settings)

    db = settings.clickhouse_database
    bodies = [orjson.loads(b) for (b,) in rows(
        settings, f"SELECT body FROM {db}.events WHERE type = 'artifact_logged' ORDER BY seq"
    )]  # fmt: skip
    saved = sorted(p.name for p in Path(checkpoints.dirpath or "").glob("*.ckpt"))
    assert len(saved) == 3 and len(bodies) == 3
    assert {b["name"] for b in bodies} == {f"model-{logger.version}"}
    assert {b["type"] for b in bodies} == {"model"}
    assert sorted(unquote(Path(b["uri"]).name) for b in bodies) == saved
    assert all(b["uri"].startswith("file://") and b["size"] > 0 for b in bodies)
    # checkpoints go where Lightning's loggers put them: <root>/<name>/<version>/checkpoints
    assert Path(checkpoints.dirpath or "") == tmp_path / "lit" / str(logger.version) / "checkpoints"


def test_the_older_pytorch_lightning_trainer_takes_the_logger_too(
    settings: Settings, tmp_path: Path
) -> None:
    # `lightning` depends on `pytorch_lightning` (the same code under its old name); the logger
    # is duck-typed enough for its Trainer.
    import pytorch_lightning

    class Old(pytorch_lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(4, 1)
            self.logged: list[tuple[int, float]] = []

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("loss", loss)
            self.logged.append((self.global_step, float(loss.detach())))
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.05)

    module = Old()
    pytorch_lightning.Trainer(
        max_steps=3, log_every_n_steps=1, accelerator="cpu", enable_progress_bar=False,
        enable_checkpointing=False, enable_model_summary=False, default_root_dir=tmp_path,
        logger=RunstreamLogger(project="lit", settings=settings),
    ).fit(module, loader())  # fmt: skip
    finished_runs(settings)
    assert points(settings, "loss") == module.logged and len(module.logged) == 3
    assert run_row(settings)["status"] == "finished"


flat_keys = st.text(st.characters(codec="utf-8", exclude_characters="/"), min_size=1, max_size=8)
leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.text(max_size=8)
    | (st.floats(allow_nan=False, allow_infinity=False))
)
nested = st.recursive(leaves, lambda inner: st.dictionaries(flat_keys, inner, max_size=3),
                      max_leaves=8)  # fmt: skip


@settings_(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=st.dictionaries(flat_keys, nested, max_size=4))
def test_hyperparameters_land_in_the_config_as_lightning_flattens_them(
    offline_logger: RunstreamLogger, params: dict[str, Any]
) -> None:
    from lightning.fabric.utilities.logger import _flatten_dict

    offline_logger.log_hyperparams(params)
    config = offline_logger.experiment.config
    for key, value in _flatten_dict(params).items():
        if value is None or value == {}:  # None removes a key; an empty dict has no leaves
            assert key not in config or config[key] in (None, {})
        else:
            assert config[key] == value


@pytest.fixture(scope="module")
def offline_logger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunstreamLogger]:
    logger = RunstreamLogger(project="lit", mode="offline", dir=tmp_path_factory.mktemp("spool"))
    yield logger
    logger.finalize("success")


def test_a_pickled_logger_carries_the_run_id_not_the_run(tmp_path: Path) -> None:
    import pickle

    logger = RunstreamLogger(project="lit", mode="offline", dir=tmp_path, log_model=True)
    run_id = logger.experiment.id
    copy = pickle.loads(pickle.dumps(logger))
    assert copy._run is None and copy.version == run_id and copy._log_model is True
    logger.finalize("success")
    assert logger.experiment.finished is True  # read after finalize: the ended run
    logger.log_metrics({"a": 1.0}, step=1)  # written again: the same run, continued
    assert logger.experiment.finished is False
    assert logger.experiment.id == logger.version == run_id
    logger.finalize("failed")

    with pytest.raises(TypeError, match=r"'offline'.*runstream\.init \(project, name"):
        RunstreamLogger(offline=True)  # WandbLogger's; here mode="offline"
    with pytest.raises(ValueError, match="version='a' and id='b'"):
        RunstreamLogger(version="a", id="b")
    with pytest.raises(ValueError, match="log_model"):
        RunstreamLogger(log_model="best")  # type: ignore[arg-type]


def test_the_example_runs(settings: Settings, tmp_path: Path) -> None:
    out = run_example("lightning_example.py", settings, tmp_path)
    assert "train/loss" in out and "val/loss" in out and "epoch" in out
    run = run_row(settings)
    assert run["status"] == "finished" and orjson.loads(run["config"]) == {"lr": 0.05, "hidden": 16}
    assert [s for s, _ in points(settings, "val/loss")] == [19, 39, 59]


def run_example(script: str, settings: Settings, tmp_path: Path) -> str:
    """Run examples/<script> against the test's topics and database, with a sink landing its
    events while it waits for them; its output."""
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    env.update(
        {
            "RUNSTREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "RUNSTREAM_CLICKHOUSE_URL": settings.clickhouse_url,
            "RUNSTREAM_TOPIC_PREFIX": settings.topic_prefix,
            "RUNSTREAM_CLICKHOUSE_DATABASE": settings.clickhouse_database,
            "RUNSTREAM_DIR": str(tmp_path / "example-spool"),
        }
    )
    example = Path(__file__).parent.parent / "examples" / script
    with subprocess.Popen(
        [sys.executable, str(example)], env=env, cwd=tmp_path, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    ) as process:  # fmt: skip
        finished_runs(settings)
        out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, out
    return out
