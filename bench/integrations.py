"""What each integration costs a training step: the same tiny loop with and without runstream.

    python -m bench.integrations [--steps 300] [--trials 5] [--only transformers,keras]

For each library (Hugging Face Trainer, Lightning, Keras 3 on torch, accelerate) one process
trains a tiny model (an MLP on random tensors, batch 16, CPU) ``--trials`` times on each of three
sides, interleaved so that drift on the machine hits all alike: without a logger, with a no-op
logger of the library's own kind (what the library itself spends on having any logger: Lightning
gathers and converts the logged values only when one exists), and with the runstream integration
logging every step, online against a real local Kafka broker. Each step's wall time is taken at
the library's own step-end hook; the table gives the median step time of each side (the median
over trials of each trial's median), the ratios, and the noise: the spread of the no-logger
trials' medians (max/min), against which the ratios are read.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap

from bench.common import local_stack, machine, table

COMMON = """
import json, os, statistics, sys, time
os.environ.setdefault("KERAS_BACKEND", "torch")
STEPS, TRIALS = int(sys.argv[1]), int(sys.argv[2])
WARMUP = 10
import torch
torch.manual_seed(0)
torch.set_num_threads(1)

def median_step(ends):
    gaps = [b - a for a, b in zip(ends, ends[1:])][WARMUP:]
    return statistics.median(gaps)

SIDES = ["none", "noop", "runstream"]

def trials(train):
    out = {side: [] for side in SIDES}
    for trial in range(TRIALS):
        order = SIDES[trial % 3:] + SIDES[:trial % 3]  # each side first in turn
        for side in order:
            out[side].append(median_step(train(side)))
    print(json.dumps(out))
"""

TRANSFORMERS = """
from torch import nn
from torch.nn import functional as F
from transformers import Trainer, TrainerCallback, TrainingArguments
from runstream.integrations.transformers import RunstreamCallback

class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 2))
    def forward(self, x, labels=None):
        logits = self.net(x)
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}

data = [{"x": torch.randn(32), "labels": int(i % 2)} for i in range(16 * 64)]

class Timer(TrainerCallback):
    def __init__(self): self.ends = []
    def on_step_end(self, args, state, control, **kwargs): self.ends.append(time.perf_counter())

class Noop(TrainerCallback):
    def on_log(self, args, state, control, logs=None, **kwargs): pass

def train(side):
    timer = Timer()
    extra = {"none": [], "noop": [Noop()], "runstream": [RunstreamCallback(project="bench")]}
    callbacks = [timer] + extra[side]
    args = TrainingArguments(output_dir=os.environ["BENCH_DIR"], max_steps=STEPS, logging_steps=1,
        per_device_train_batch_size=16, report_to="none", use_cpu=True, save_strategy="no",
        disable_tqdm=True)
    Trainer(model=Tiny(), args=args, train_dataset=data, callbacks=callbacks).train()
    return timer.ends

trials(train)
"""

LIGHTNING = """
import logging
logging.getLogger("lightning").setLevel(logging.ERROR)
import lightning as L
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset
from runstream.integrations.lightning import RunstreamLogger

class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 2))
    def training_step(self, batch, index):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train/loss", loss)
        return loss
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

data = TensorDataset(torch.randn(16 * 64, 32), torch.randint(0, 2, (16 * 64,)))

class Timer(L.Callback):
    def __init__(self): self.ends = []
    def on_train_batch_end(self, *args, **kwargs): self.ends.append(time.perf_counter())

from lightning.pytorch.loggers import Logger

class Noop(Logger):
    name = "noop"
    version = "0"
    def log_metrics(self, metrics, step=None): pass
    def log_hyperparams(self, params, *args, **kwargs): pass

def train(side):
    timer = Timer()
    logger = {"none": False, "noop": Noop(), "runstream": RunstreamLogger(project="bench")}[side]
    trainer = L.Trainer(max_steps=STEPS, log_every_n_steps=1, logger=logger, callbacks=[timer],
        accelerator="cpu", enable_progress_bar=False, enable_checkpointing=False,
        enable_model_summary=False, default_root_dir=os.environ["BENCH_DIR"])
    trainer.fit(Tiny(), DataLoader(data, batch_size=16))
    return timer.ends

trials(train)
"""

KERAS = """
import keras
import numpy as np
from runstream.integrations.keras import RunstreamCallback

x = np.random.rand(16 * STEPS, 32).astype("float32")
y = np.random.randint(0, 2, 16 * STEPS)

class Timer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.ends = []
    def on_train_batch_end(self, batch, logs=None): self.ends.append(time.perf_counter())

class Noop(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None): pass

def train(side):
    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(2)])
    model.compile(optimizer="sgd",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    timer = Timer()
    extra = {"none": [], "noop": [Noop()],
             "runstream": [RunstreamCallback(project="bench", log_freq="batch")]}
    callbacks = [timer] + extra[side]
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=callbacks)
    return timer.ends

trials(train)
"""

ACCELERATE = """
from accelerate import Accelerator
from torch import nn
from torch.nn import functional as F
from runstream.integrations.accelerate import RunstreamTracker

from accelerate.tracking import GeneralTracker

class Noop(GeneralTracker):
    name = "noop"
    requires_logging_directory = False
    main_process_only = True
    tracker = None
    def __init__(self): super().__init__()
    def store_init_configuration(self, values): pass
    def log(self, values, step=None, **kwargs): pass

def train(side):
    runstream_tracker = [RunstreamTracker(project="bench")]
    trackers = {"none": None, "noop": [Noop()], "runstream": runstream_tracker}[side]
    accelerator = Accelerator(cpu=True, log_with=trackers)
    accelerator.init_trackers("bench")
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model, optimizer = accelerator.prepare(model, optimizer)
    ends = []
    for step in range(STEPS):
        x, y = torch.randn(16, 32), torch.randint(0, 2, (16,))
        loss = F.cross_entropy(model(x), y)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        accelerator.log({"train/loss": loss.item()}, step=step)
        ends.append(time.perf_counter())
    accelerator.end_training()
    return ends

trials(train)
"""

LIBRARIES = {
    "transformers": TRANSFORMERS,
    "lightning": LIGHTNING,
    "keras": KERAS,
    "accelerate": ACCELERATE,
}


def run_library(
    name: str, code: str, steps: int, trials: int, env: dict[str, str]
) -> dict[str, list[float]] | str:
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as workdir:
        full_env = {**os.environ, **env, "BENCH_DIR": workdir, "RUNSTREAM_DIR": workdir,
                    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(COMMON + code), str(steps), str(trials)],
            env=full_env,
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode
        return f"failed: {last}"
    result: dict[str, list[float]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=300, help="training steps per trial")
    parser.add_argument("--trials", type=int, default=5, help="trials per side")
    parser.add_argument("--only", default=",".join(LIBRARIES), help="comma-separated libraries")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]

    results: dict[str, dict[str, list[float]] | str] = {}
    with local_stack() as stack:
        env = {"RUNSTREAM_KAFKA_BOOTSTRAP": stack.settings.kafka_bootstrap}
        for name in chosen:
            results[name] = run_library(name, LIBRARIES[name], args.steps, args.trials, env)
    print(f"training-step time, tiny MLP, batch 16, CPU; {machine()}")
    print(f"{args.trials} trials per side, {args.steps} steps each, runstream logging every step")
    rows = [
        [
            "library",
            "no logger (ms)",
            "no-op logger (ms)",
            "runstream (ms)",
            "runstream / no logger",
            "runstream / no-op",
            "noise (no-logger spread)",
        ]
    ]
    for name, result in results.items():
        if isinstance(result, str):
            rows.append([name, result, "", "", "", "", ""])
            continue
        none = statistics.median(result["none"]) * 1000
        noop = statistics.median(result["noop"]) * 1000
        with_rs = statistics.median(result["runstream"]) * 1000
        spread = max(result["none"]) / min(result["none"])
        ratios = [f"{with_rs / none:.3f}", f"{with_rs / noop:.3f}", f"{spread:.3f}"]
        rows.append([name, f"{none:.3f}", f"{noop:.3f}", f"{with_rs:.3f}", *ratios])
    print(table(rows))


if __name__ == "__main__":
    main()
