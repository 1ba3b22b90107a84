"""RunstreamCallback with Keras 3's real fit (torch backend), checked in ClickHouse."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported; no tensorflow here

from pathlib import Path
from typing import Any

import keras
import numpy as np
import orjson
import pytest

from runstream.integrations.keras import RunstreamCallback
from runstream.settings import Settings
from tests.helpers import records_of, rows, scalar, sink_until

pytestmark = pytest.mark.integration

assert keras.backend.backend() == "torch"


class Recorder(keras.callbacks.Callback):  # type: ignore[misc]
    """What Keras itself reported to callbacks: (epoch, batch, logs) and (epoch, logs)."""

    def __init__(self) -> None:
        super().__init__()
        self.epoch = 0
        self.batches: list[tuple[int, int, dict[str, float]]] = []
        self.epochs: list[tuple[int, dict[str, float]]] = []

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.batches.append((self.epoch, batch, {k: float(v) for k, v in (logs or {}).items()}))

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.epochs.append((epoch, {k: float(v) for k, v in (logs or {}).items()}))


class Flags:
    """Shared by a layer and a callback (a plain object: Keras would copy a dict attribute)."""

    fail = False
    interrupt = False


class FailAt(keras.layers.Layer):  # type: ignore[misc]
    """Identity, until the flags say to raise (set by a callback at a chosen batch)."""

    def __init__(self, flags: Flags, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.flags = flags

    def call(self, x: Any) -> Any:
        if self.flags.fail:
            raise RuntimeError("the layer failed")
        if self.flags.interrupt:
            raise KeyboardInterrupt
        return x


class Trigger(keras.callbacks.Callback):  # type: ignore[misc]
    def __init__(self, flags: Flags, name: str, at_batch: int) -> None:
        super().__init__()
        self.flags, self.name, self.at_batch = flags, name, at_batch

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        if batch == self.at_batch:
            setattr(self.flags, self.name, True)


def tiny_model(flag: Flags | None = None, lr: float = 0.01) -> keras.Model:
    layers: list[Any] = [keras.Input((4,)), keras.layers.Dense(8, activation="relu")]
    if flag is not None:
        layers.append(FailAt(flag))
    layers.append(keras.layers.Dense(1))
    model = keras.Sequential(layers, name="tiny")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss="mse", metrics=["mae"])
    return model


def data(n: int, seed: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, x.sum(axis=1, keepdims=True)


def finished(settings: Settings) -> dict[str, Any]:
    db = settings.clickhouse_database
    sink_until(
        settings,
        lambda c: scalar(settings, f"SELECT countIf(type='run_finished') FROM {db}.events") == 1,
    )
    (run,) = records_of(settings, f"SELECT * FROM {db}.runs_current")
    return run


def points(settings: Settings, name: str) -> list[tuple[int, float]]:
    db = settings.clickhouse_database
    return rows(
        settings, f"SELECT step, value FROM {db}.metrics WHERE name = '{name}' ORDER BY step"
    )


def names(settings: Settings) -> set[str]:
    db = settings.clickhouse_database
    return {n for (n,) in rows(settings, f"SELECT DISTINCT name FROM {db}.metrics")}


def test_batch_and_epoch_metrics_at_the_global_batch_step(settings: Settings) -> None:
    keras.utils.set_random_seed(0)
    model = tiny_model(lr=0.01)
    recorder = Recorder()
    callback = RunstreamCallback(project="k", name="tiny", settings=settings, log_freq="batch",
                                 config={"data": "random"})  # fmt: skip
    x, y = data(12, 0)
    model.fit(x, y, batch_size=4, epochs=2, validation_data=data(8, 1), verbose=0,
              callbacks=[recorder, callback])  # fmt: skip
    run = finished(settings)

    assert run["status"] == "finished" and run["exit_code"] == 0 and run["name"] == "tiny"
    assert [(e, b) for e, b, _ in recorder.batches] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1),
                                                        (1, 2)]  # fmt: skip
    # batch b of epoch e at step 3e + b: the counter goes on across epochs
    for key in ("loss", "mae"):
        assert points(settings, f"batch/{key}") == [
            (3 * e + b, logs[key]) for e, b, logs in recorder.batches
        ]
    assert points(settings, "batch/learning_rate") == [(s, pytest.approx(0.01)) for s in range(6)]
    # an epoch's values at the step of its last batch, validation ones included
    for key in ("loss", "mae", "val_loss", "val_mae"):
        assert points(settings, f"epoch/{key}") == [(3 * e + 2, logs[key]) for e, logs in
                                                    recorder.epochs]  # fmt: skip
    assert points(settings, "epoch/epoch") == [(2, 0.0), (5, 1.0)]
    assert points(settings, "epoch/learning_rate") == [(2, pytest.approx(0.01)),
                                                       (5, pytest.approx(0.01))]  # fmt: skip
    assert names(settings) == {
        *(f"batch/{k}" for k in ("loss", "mae", "learning_rate")),
        *(f"epoch/{k}" for k in ("loss", "mae", "val_loss", "val_mae", "epoch", "learning_rate")),
    }

    config = orjson.loads(run["config"])
    assert config["data"] == "random"
    assert config["optimizer"]["name"].startswith("adam")
    assert config["optimizer"]["learning_rate"] == pytest.approx(0.01)
    assert config["model"]["name"] == "tiny"
    assert [layer["class_name"] for layer in config["model"]["layers"]] == [
        "InputLayer",
        "Dense",
        "Dense",
    ]
    assert config["fit"] == {"epochs": 2, "steps": 3}


def test_epoch_logging_by_default_and_every_nth_batch(settings: Settings) -> None:
    model = tiny_model()
    recorder = Recorder()
    callback = RunstreamCallback(project="k", settings=settings, log_freq=2)
    x, y = data(12, 0)
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[recorder, callback])
    finished(settings)
    # batches 0 and 2 of each epoch (wandb's rule: the index within the epoch)
    assert points(settings, "batch/loss") == [
        (3 * e + b, logs["loss"]) for e, b, logs in recorder.batches if b % 2 == 0
    ]
    assert [s for s, _ in points(settings, "epoch/loss")] == [2, 5]

    assert RunstreamCallback(log_freq="epoch")._batch_every is None
    with pytest.raises(ValueError, match="log_freq"):
        RunstreamCallback(log_freq=0)
    with pytest.raises(TypeError, match=r"'projet'.*runstream\.init \(project, name"):
        RunstreamCallback(projet="k")


def test_a_failing_batch_ends_the_run_failed(settings: Settings) -> None:
    flag = Flags()
    model = tiny_model(flag)
    recorder = Recorder()
    callback = RunstreamCallback(project="k", settings=settings, log_freq="batch")
    x, y = data(12, 0)
    with pytest.raises(RuntimeError, match="the layer failed"):
        model.fit(x, y, batch_size=4, epochs=2, verbose=0,
                  callbacks=[recorder, Trigger(flag, "fail", 2), callback])  # fmt: skip
    assert callback.run is not None and callback.run.finished  # ended before fit raised
    assert "train_function" not in vars(model) or model.train_function.__name__ != "guarded"
    run = finished(settings)

    assert run["status"] == "failed" and run["exit_code"] == 1
    assert points(settings, "batch/loss") == [(b, logs["loss"]) for _, b, logs in recorder.batches]
    assert len(recorder.batches) == 2


def test_keyboard_interrupt_in_a_batch_ends_the_run_killed(settings: Settings) -> None:
    flag = Flags()
    callback = RunstreamCallback(project="k", settings=settings)
    x, y = data(12, 0)
    with pytest.raises(KeyboardInterrupt):
        tiny_model(flag).fit(x, y, batch_size=4, epochs=1, verbose=0,
                             callbacks=[Trigger(flag, "interrupt", 1), callback])  # fmt: skip
    run = finished(settings)
    assert run["status"] == "killed" and run["exit_code"] == 130


@pytest.mark.parametrize(
    "case",
    # (flag the layer raises on, what fit raises, the run's status and exit code)
    [("fail", RuntimeError, "failed", 1), ("interrupt", KeyboardInterrupt, "killed", 130)],
    ids=["exception", "keyboard_interrupt"],
)
def test_reading_the_callback_after_a_failed_fit_never_reopens_the_run(
    settings: Settings, case: tuple[str, type[BaseException], str, int]
) -> None:
    from runstream.producers.active import active_runs

    flag_name, raised, status, exit_code = case
    flag = Flags()
    model = tiny_model(flag)
    callback = RunstreamCallback(project="k", settings=settings, config={"given": 1})
    x, y = data(12, 0)
    with pytest.raises(raised):
        model.fit(x, y, batch_size=4, epochs=1, verbose=0,
                  callbacks=[Trigger(flag, flag_name, 1), callback])  # fmt: skip
    run = callback.run
    assert run is not None and run.finished
    # what a user reads afterwards, and evaluate/predict given the same callback
    assert callback.run is run and run.config["given"] == 1 and callback.global_step == 1
    setattr(flag, flag_name, False)
    model.evaluate(x, y, batch_size=4, verbose=0, callbacks=[callback])
    model.predict(x, batch_size=4, verbose=0, callbacks=[callback])
    assert callback.run is run and run.finished
    assert all(r.id != run.id for r in active_runs())  # nothing for the exit hooks to end
    row = finished(settings)

    assert (row["status"], row["exit_code"]) == (status, exit_code)
    db = settings.clickhouse_database
    assert rows(settings, f"SELECT type FROM {db}.events WHERE type LIKE 'run_%' ORDER BY seq") == [
        ("run_started",),
        ("run_finished",),
    ]
    assert scalar(settings, f"SELECT count() FROM {db}.events WHERE type = 'config_updated'") == 0


def test_an_exception_outside_the_step_ends_the_run_when_leaving_the_with_block(
    settings: Settings,
) -> None:
    class Broken(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            raise ValueError("a callback failed")

    x, y = data(8, 0)
    callback = RunstreamCallback(project="k", settings=settings)
    with pytest.raises(ValueError, match="a callback failed"), callback:
        tiny_model().fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[callback, Broken()])
    run = finished(settings)
    assert run["status"] == "failed"
    assert [s for s, _ in points(settings, "epoch/loss")] == [1]


def test_a_second_fit_continues_the_run_and_its_steps(settings: Settings) -> None:
    import runstream

    model = tiny_model()
    recorder = Recorder()
    x, y = data(8, 0)
    run = runstream.init(project="k", settings=settings, config={"mine": 1})
    callback = RunstreamCallback(run=run, log_freq="batch")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[recorder, callback])
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[recorder, callback])
    assert not run.finished  # the user's run: the user finishes it
    run.finish()
    row = finished(settings)

    assert points(settings, "batch/loss") == [
        (i, logs["loss"]) for i, (_, _, logs) in enumerate(recorder.batches)
    ]
    assert [s for s, _ in points(settings, "epoch/loss")] == [1, 3]
    config = orjson.loads(row["config"])
    assert config["mine"] == 1 and config["optimizer"]["name"].startswith("adam")


def test_the_example_runs(settings: Settings, tmp_path: Path) -> None:
    from tests.test_integration_lightning import run_example

    out = run_example("keras_example.py", settings, tmp_path)
    assert "batch/loss" in out and "epoch/val_loss" in out
    run = finished(settings)
    assert run["status"] == "finished" and "keras" in run["tags"]
    # 256 samples in batches of 32: 8 batches an epoch, 3 epochs
    assert [s for s, _ in points(settings, "batch/loss")] == list(range(24))
    assert [s for s, _ in points(settings, "epoch/val_loss")] == [7, 15, 23]


def test_without_keras_the_import_says_which_extra_to_install() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['keras'] = None\n"
        "from runstream.errors import MissingExtraError\n"
        "try:\n    import runstream.integrations.keras\n"
        "except MissingExtraError as exc:\n    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'runstream[keras]'" in done.stdout
