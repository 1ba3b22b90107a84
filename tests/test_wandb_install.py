"""``runstream.wandb.install()``: ``import wandb`` resolves to the shim, and the unmodified wandb
integrations of transformers (``WandbCallback``) and accelerate (``WandBTracker``) log to
runstream with the libraries' own steps, checked in ClickHouse."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

import runstream.wandb
from runstream.settings import Settings
from tests.helpers import rows, scalar, sink_until

pytestmark = pytest.mark.integration


@pytest.fixture
def shim(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    for key in list(os.environ):
        if key.startswith("WANDB_"):
            monkeypatch.delenv(key)
    module = runstream.wandb.install()
    yield module
    runstream.wandb.teardown()
    runstream.wandb.uninstall()


def stack_env(settings: Settings) -> dict[str, str]:
    """What a process (or wandb.init() called by a library) reads to reach this test's stack."""
    return {
        "RUNSTREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "RUNSTREAM_TOPIC_PREFIX": settings.topic_prefix,
        "RUNSTREAM_DIR": str(settings.dir),
        "RUNSTREAM_FINISH_TIMEOUT": "30",
    }


def test_install_makes_import_wandb_resolve_to_the_shim() -> None:
    assert "wandb" not in sys.modules or sys.modules["wandb"] is not runstream.wandb
    # The real wandb is not in the test suite's environment, but `make bench` installs it (a
    # peer); uninstall() must then leave it as it found it.
    real = importlib.util.find_spec("wandb")
    module = runstream.wandb.install()
    try:
        assert runstream.wandb.install() is module is runstream.wandb  # idempotent
        import wandb
        import wandb.sdk
        from wandb.sdk.lib import RunDisabled
        from wandb.sdk.lib.config_util import ConfigError
        from wandb.wandb_run import Run

        assert wandb is runstream.wandb and wandb.sdk.lib.RunDisabled is RunDisabled
        assert Run is runstream.Run and issubclass(RunDisabled, Run)
        assert issubclass(ConfigError, Exception)
        from wandb.sdk.wandb_run import Run as SdkRun

        assert SdkRun is Run and wandb.util.generate_id() and wandb.env.set_project
        # What the libraries ask to decide whether wandb is there.
        assert importlib.util.find_spec("wandb") is not None
        assert importlib.util.find_spec("wandb.sdk") is not None
        assert importlib.metadata.version("wandb") == wandb.__version__
        assert importlib.metadata.metadata("wandb")["Name"] == "wandb"
        from accelerate.utils import is_wandb_available as accelerate_has_wandb
        from transformers.integrations.integration_utils import is_wandb_available

        assert is_wandb_available() and accelerate_has_wandb()
        from lightning_utilities.core.imports import RequirementCache

        assert bool(RequirementCache("wandb>=0.12.10"))  # Lightning's check (docs/wandb.md)
    finally:
        runstream.wandb.uninstall()
        runstream.wandb.uninstall()  # idempotent
    assert "wandb" not in sys.modules and "wandb.sdk.lib" not in sys.modules
    after = importlib.util.find_spec("wandb")
    if real is None:
        assert after is None
        with pytest.raises(importlib.metadata.PackageNotFoundError):
            importlib.metadata.version("wandb")
    else:
        assert after is not None and after.origin == real.origin


def test_uninstall_puts_back_what_was_there() -> None:
    import types

    real = types.ModuleType("wandb")
    sys.modules["wandb"] = real
    try:
        runstream.wandb.install()
        assert sys.modules["wandb"] is runstream.wandb
        runstream.wandb.uninstall()
        assert sys.modules["wandb"] is real
    finally:
        sys.modules.pop("wandb", None)


# --- transformers' WandbCallback, unmodified ----------------------------------------------------
class Pairs:
    """A torch Dataset of dicts: random token ids and labels for a tiny sequence classifier."""

    def __init__(self, n: int, seed: int) -> None:
        import torch

        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 64, (n, 8), generator=generator)
        self.labels = torch.randint(0, 2, (n,), generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, object]:
        import torch

        return {"input_ids": self.ids[i], "attention_mask": torch.ones(8, dtype=torch.long),
                "labels": self.labels[i]}  # fmt: skip


def test_transformers_wandb_callback_logs_at_the_trainers_global_steps(
    settings: Settings, shim: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key, value in stack_env(settings).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("WANDB_PROJECT", "hf")
    monkeypatch.setenv("WANDB_LOG_MODEL", "end")  # builds a wandb.Artifact at train end
    import torch
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments
    from transformers.integrations import WandbCallback

    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                   intermediate_size=32, max_position_embeddings=16, num_labels=2)
    )  # fmt: skip
    output_dir = str(tmp_path / "out")
    args = TrainingArguments(
        output_dir=output_dir,
        run_name=output_dir,  # the case WandbCallback warns about with wandb.termwarn
        max_steps=6,
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=3,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        learning_rate=1e-3,
        save_strategy="no",
        report_to=["wandb"],
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=Pairs(24, 1), eval_dataset=Pairs(8, 2))
    assert any(isinstance(c, WandbCallback) for c in trainer.callback_handler.callbacks)
    trainer.train()
    import wandb

    run = wandb.run
    assert run is not None and run.labels == {"code": "transformers_trainer"}
    assert run.name == output_dir and run.project == "hf"
    wandb.finish()

    history = trainer.state.log_history
    train_loss = {h["step"]: h["loss"] for h in history if "loss" in h}
    eval_loss = {h["step"]: h["eval_loss"] for h in history if "eval_loss" in h}
    assert sorted(train_loss) == [1, 2, 3, 4, 5, 6] and sorted(eval_loss) == [3, 6]

    db = settings.clickhouse_database
    sink_until(settings, lambda c: scalar(settings, f"SELECT countIf(status = 'finished') FROM "
                                          f"{db}.runs_current") == 1)  # fmt: skip
    got = rows(settings, f"SELECT step, value FROM {db}.metrics WHERE name = 'train/loss' "
               "ORDER BY step")  # fmt: skip
    assert [s for s, _ in got] == [1, 2, 3, 4, 5, 6]
    assert [v for _, v in got] == pytest.approx([train_loss[s] for s in range(1, 7)], rel=1e-6)
    got = rows(settings, f"SELECT step, value FROM {db}.metrics WHERE name = 'eval/loss' "
               "ORDER BY step")  # fmt: skip
    assert [s for s, _ in got] == [3, 6]
    assert [v for _, v in got] == pytest.approx([eval_loss[3], eval_loss[6]], rel=1e-6)
    steps = rows(settings, f"SELECT DISTINCT step FROM {db}.metrics ORDER BY step")
    assert steps == [(s,) for s in range(1, 7)]  # no call counter anywhere
    assert rows(settings, f"SELECT step, value FROM {db}.metrics WHERE "
                "name = 'train/global_step' AND step = 6 LIMIT 1") == [(6, 6.0)]  # fmt: skip
    config = orjson.loads(scalar(settings, f"SELECT config FROM {db}.runs_current"))
    assert config["learning_rate"] == 1e-3 and config["max_steps"] == 6
    assert config["hidden_size"] == 16  # the model config
    assert config["model/num_parameters"] == model.num_parameters()
    assert "allow_val_change" not in config
    summary = orjson.loads(scalar(settings, f"SELECT summary FROM {db}.runs_current"))
    assert summary["train_loss"] == pytest.approx(trainer.state.log_history[-1]["train_loss"])
    step_metric = scalar(settings, f"SELECT step_metric FROM {db}.metric_definitions_current "
                         "WHERE name = '*'")  # fmt: skip
    assert step_metric == "train/global_step"


# --- accelerate's WandBTracker, unmodified --------------------------------------------------------
ACCELERATE_SCRIPT = """
import runstream.wandb

runstream.wandb.install()  # before accelerate decides which trackers exist

from accelerate import Accelerator

accelerator = Accelerator(log_with="wandb", cpu=True)
accelerator.init_trackers("accel", config={"lr": 0.05, "epochs": 2},
                          init_kwargs={"wandb": {"name": "accel-run", "tags": ["a"]}})
for step in range(5):
    accelerator.log({"loss": 1.0 / (step + 1), "nested": {"acc": step / 10}}, step=step * 10)
import wandb
print(wandb.run.id)
accelerator.end_training()
assert wandb.run is None
"""


def test_accelerate_wandb_tracker_logs_with_its_steps(settings: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(stack_env(settings))
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(ACCELERATE_SCRIPT)],
        env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split()[-1]
    db = settings.clickhouse_database
    sink_until(settings, lambda c: scalar(settings, f"SELECT countIf(status = 'finished') FROM "
                                          f"{db}.runs_current") == 1)  # fmt: skip
    assert rows(settings, f"SELECT run_id, project, name, tags FROM {db}.runs_current") == [
        (run_id, "accel", "accel-run", ["a"])
    ]
    got = rows(settings, f"SELECT name, step, value FROM {db}.metrics ORDER BY name, step")
    assert got == [("loss", s * 10, 1.0 / (s + 1)) for s in range(5)] + [
        ("nested/acc", s * 10, s / 10) for s in range(5)
    ]
    config = orjson.loads(scalar(settings, f"SELECT config FROM {db}.runs_current"))
    assert config == {"lr": 0.05, "epochs": 2}


# --- Lightning's WandbLogger, unmodified ----------------------------------------------------------
def test_lightning_wandb_logger_logs_at_the_trainers_global_steps(
    settings: Settings, shim: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Lightning checks the wandb distribution (RequirementCache("wandb>=0.12.10")): the record
    install() registers answers it, so WandbLogger runs; RunstreamLogger is the supported way."""
    for key, value in stack_env(settings).items():
        monkeypatch.setenv(key, value)
    import lightning as L
    import torch
    from lightning.pytorch.loggers import WandbLogger

    class Regression(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)
            self.losses: list[float] = []

        def training_step(self, batch: list[torch.Tensor], _: int) -> torch.Tensor:
            x, y = batch
            loss = ((self.layer(x) - y) ** 2).mean()
            self.losses.append(float(loss))
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
    logger = WandbLogger(project="lit", name="lit-run", save_dir=str(tmp_path))
    logger.log_hyperparams({"lr": 0.1, "batch": 8})
    module = Regression()
    trainer = L.Trainer(max_steps=4, logger=logger, log_every_n_steps=1, accelerator="cpu",
                        enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False, default_root_dir=str(tmp_path))  # fmt: skip
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=8))
    import wandb

    wandb.finish()
    db = settings.clickhouse_database
    sink_until(settings, lambda c: scalar(settings, f"SELECT countIf(status = 'finished') FROM "
                                          f"{db}.runs_current") == 1)  # fmt: skip
    assert rows(settings, f"SELECT project, name FROM {db}.runs_current") == [("lit", "lit-run")]
    got = rows(settings, f"SELECT step, value FROM {db}.metrics WHERE name = 'train_loss' "
               "ORDER BY step")  # fmt: skip
    assert [s for s, _ in got] == [0, 1, 2, 3]
    assert [v for _, v in got] == pytest.approx(module.losses, rel=1e-6)
    config = orjson.loads(scalar(settings, f"SELECT config FROM {db}.runs_current"))
    assert config == {"lr": 0.1, "batch": 8}
