"""Train a tiny Keras 3 model and log it to runstream with RunstreamCallback.

    pip install 'runstream[keras]' torch
    runstream dev up                      # Kafka, ClickHouse and the sink, on this machine
    KERAS_BACKEND=torch python examples/keras_example.py

A small Sequential model learns y = sum(x) on random numpy data for 3 epochs with validation
data (nothing is downloaded), logging every batch (``batch/loss``, ``batch/mae``) and every
epoch (``epoch/loss``, ``epoch/val_loss``, ...) at a global batch step; then the run's metrics
are printed from ClickHouse.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "torch")  # must be set before keras is imported

import keras
import numpy as np

from runstream.integrations.keras import RunstreamCallback


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--log-freq", default="batch", help="epoch, batch or every N batches")
    args = parser.parse_args()
    log_freq = int(args.log_freq) if args.log_freq.isdigit() else args.log_freq

    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype("float32")
    vx = rng.normal(size=(64, 4)).astype("float32")
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01), loss="mse", metrics=["mae"])

    started = time.time()
    callback = RunstreamCallback(project="examples", tags=["keras"], log_freq=log_freq)
    with callback:  # ends the run as failed at once if anything in fit raises
        model.fit(
            x,
            x.sum(1, keepdims=True),
            validation_data=(vx, vx.sum(1, keepdims=True)),
            batch_size=32,
            epochs=args.epochs,
            callbacks=[callback],
            verbose=0,
        )
    assert callback.run is not None
    print(f"run {callback.run.id} finished; its metrics in ClickHouse:")
    show(callback.run.id, started)


def show(run_id: str, since: float) -> None:
    """Wait until the sink landed the session that ended (the run's last event is its
    run_finished, sent after ``since``, and the rows derived from it are there), then print
    the run's metrics."""
    from runstream.settings import Settings
    from runstream.sinks.query import render, run_query

    settings = Settings.load()
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
