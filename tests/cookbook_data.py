"""Generated runs for tests/test_sql_cookbook.py: what the SDK would send for a small sweep
(sizes x learning rates x seeds) with diverged, crashed, still running, early-stopped and
overfitting runs, plus a second project; and how to seed them into a migrated database."""

from __future__ import annotations

import json
import math
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from runstream.settings import Settings
from runstream.sinks.clickhouse import connect
from tests.helpers import land_events

PROJECT = "vision"
OTHER = "nlp"  # a second project: none of its runs may show up in a `vision` answer
EPOCH = 50  # steps per epoch: val/loss, val/acc, lr and epoch are logged at multiples of it
SIZES = ("s", "m", "l")
LRS = (0.0003, 0.001, 0.003)
SEEDS = (0, 1, 2)


@dataclass
class Run:
    project: str
    run_id: str
    config: dict[str, Any]
    group: str
    tags: list[str]
    started: datetime
    dt: float  # seconds per step
    status: str  # finished, failed, crashed, running
    points: dict[str, dict[int, float]] = field(default_factory=dict)  # metric -> step -> value
    heartbeats: list[tuple[datetime, int]] = field(default_factory=list)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    finished_at: datetime | None = None
    user_alerts: list[str] = field(default_factory=list)  # titles of `run.alert(...)`

    def ts(self, step: int) -> datetime:
        return self.started + timedelta(microseconds=round(step * self.dt * 1e6))

    @property
    def last_event_at(self) -> datetime:
        times = [self.ts(max(self.points["loss"]))] + [t for t, _ in self.heartbeats]
        return max(times + ([self.finished_at] if self.finished_at else []))

    def series(self, metric: str) -> list[tuple[int, float]]:
        return sorted(self.points.get(metric, {}).items())


@dataclass
class World:
    now: datetime
    runs: list[Run]
    alerts: list[dict[str, Any]]  # every version of every alert, as the table holds them

    def of(self, project: str = PROJECT) -> list[Run]:
        return [r for r in self.runs if r.project == project]

    def run(self, run_id: str) -> Run:
        return next(r for r in self.runs if r.run_id == run_id)


def _curve(
    rng: random.Random, run: Run, last: int, *, every: int, kind: str, overfit: float
) -> None:
    """loss every `every` steps; val/loss, val/acc, lr and epoch at each epoch boundary."""
    lr, pts = run.config["lr"], run.points
    speed = {0.0003: 120.0, 0.001: 70.0, 0.003: 45.0}[lr]
    for step in range(0, last + 1, every):
        loss = 0.3 + 2.0 * math.exp(-step / speed) + rng.gauss(0, 0.02)
        if kind == "nan" and step >= last - 2 * every:
            loss = math.nan
        if kind == "inf" and step == last:
            loss = math.inf
        if kind == "rising" and step > last - 60:
            loss = 0.5 * (1.02 ** (step - (last - 60)))
        pts.setdefault("loss", {})[step] = loss
    for step in range(0, last + 1, EPOCH):
        pts.setdefault("epoch", {})[step] = float(step // EPOCH)
        pts.setdefault("lr", {})[step] = lr * 0.5 ** (step // EPOCH)
        if step == 0:
            continue
        val = 0.4 + 1.5 * math.exp(-step / speed) + overfit * max(0, step - 150) / 100
        val += rng.gauss(0, 0.01)
        if kind == "nan" and step >= last - 2 * every:
            val = math.nan
        pts.setdefault("val/loss", {})[step] = val
        acc = 1.0 - val / 3 + rng.gauss(0, 0.01) if math.isfinite(val) else 0.1
        pts.setdefault("val/acc", {})[step] = acc


def generate(now: datetime, seed: int = 12) -> World:
    rng = random.Random(seed)
    runs: list[Run] = []
    used_hours: set[int] = set()

    def start_hours(recent: bool) -> int:  # hours ago; never near the 24-hour edge of question 15
        while True:
            h = rng.randint(2, 21) if recent else rng.randint(27, 200)
            if h not in used_hours and not 22 <= h <= 26:
                used_hours.add(h)
                return h

    special = {
        ("l", 0.003, 0): ("nan", "failed"),
        ("l", 0.003, 1): ("rising", "finished"),
        ("m", 0.003, 2): ("inf", "crashed"),
        ("m", 0.0003, 2): ("stale", "running"),
        ("l", 0.0003, 2): ("silent", "running"),  # running, never sent a heartbeat
        ("s", 0.0003, 2): ("fresh", "running"),
    }
    for size in SIZES:
        for lr in LRS:
            for seed_ in SEEDS:
                kind, status = special.get((size, lr, seed_), ("ok", "finished"))
                config: dict[str, Any] = {
                    "model_size": size,
                    "lr": lr,
                    "seed": seed_,
                    "optimizer": rng.choice(["adam", "sgd"]),
                    "gpus": rng.choice([1, 2, 4, 8]),
                    "max_steps": 300,
                    "data": {"augment": rng.random() < 0.5, "name": "imagenet-mini"},
                }
                if rng.random() < 0.4:
                    config["warmup"] = rng.choice([100, 200])
                # Seed 0 is a baseline; its lr=0.001 runs finished within the day, lr=0.0003
                # ones before: question 15 has some of each.
                tags = ["sweep"] + (["baseline"] if seed_ == 0 or rng.random() < 0.3 else [])
                recent = (seed_, lr) == (0, 0.001) or (seed_ != 0 and rng.random() < 0.3)
                run = Run(
                    PROJECT,
                    f"{size}-{lr}-{seed_}".replace(".", "_"),
                    config,
                    f"size-{size}",
                    tags,
                    now,
                    rng.uniform(0.5, 2.0),
                    status,
                )
                every = rng.choice([10, 25])
                last = 300
                if kind == "ok" and rng.random() < 0.3:
                    last = rng.choice([150, 200, 250])  # early stopped
                if kind in ("nan", "inf"):
                    last = 150
                if kind in ("stale", "silent", "fresh"):
                    last = {"stale": 200, "silent": 150, "fresh": 100}[kind]
                _curve(rng, run, last, every=every, kind=kind, overfit=rng.choice([0.0, 0.0, 0.3]))
                last_logged = max(run.points["loss"])
                if kind in ("stale", "silent", "fresh"):
                    end = now - timedelta(minutes={"stale": 30, "silent": 20, "fresh": 1}[kind])
                    run.started = end - timedelta(seconds=last_logged * run.dt)
                    if kind != "silent":
                        run.heartbeats = [
                            (run.ts(s), s) for s in range(0, last_logged + 1, EPOCH)
                        ] + [(end, last_logged)]
                else:
                    run.started = now - timedelta(hours=start_hours(recent), seconds=rng.random())
                    run.finished_at = run.ts(last_logged) + timedelta(seconds=1)
                    run.heartbeats = [(run.ts(s), s) for s in range(0, last_logged + 1, 100)]
                if status == "finished":
                    for e in range(1, rng.randint(1, 3) + 1):
                        run.artifacts.append(
                            {
                                "name": f"model-{run.run_id}",
                                "type": "model",
                                "digest": f"d{rng.getrandbits(48):012x}",
                                "size": rng.randint(1_000, 50_000_000),
                                "uri": f"file:///ckpt/{run.run_id}/{e}",
                                "aliases": [f"v{e - 1}"],
                            }
                        )
                runs.append(run)
    # The other project: plain finished runs, GPU hours of their own.
    for i in range(5):
        run = Run(
            OTHER,
            f"nlp-{i}",
            {"lr": 0.001, "gpus": 8, "max_steps": 300, "model_size": "s", "optimizer": "adam"},
            "size-s",
            ["sweep", "baseline"],
            now - timedelta(hours=start_hours(rng.random() < 0.3)),
            1.0,
            "finished",
        )
        _curve(rng, run, 300, every=10, kind="ok", overfit=0.0)
        run.finished_at = run.ts(300) + timedelta(seconds=1)
        run.artifacts.append(
            {"name": "m", "type": "model", "digest": "x", "size": 10**12, "uri": "file:///x"}
        )
        runs.append(run)

    alerts: list[dict[str, Any]] = []
    vision = [r for r in runs if r.project == PROJECT]
    for run in vision:
        if run.status in ("failed", "crashed"):
            run.user_alerts = ["the loss is not finite"] * 2
    for i, run in enumerate(rng.sample(vision, 8)):
        rule = ["loss_nan", "val_loss_plateau", "gpu_idle"][i % 3]
        fired = run.ts(100)
        alert = {
            "alert_id": f"a{i}",
            "rule": rule,
            "project": PROJECT,
            "run_id": run.run_id,
            "metric": "loss",
            "level": "WARN",
            "title": rule,
            "fired_at": fired,
            "resolved_at": None,
            "updated_at": fired,
        }
        alerts.append(alert)
        if i % 2:  # resolved later: a second version of the same alert
            later = fired + timedelta(minutes=5)
            alerts.append(alert | {"resolved_at": later, "updated_at": later})
    alerts.append(alerts[0] | {"project": OTHER, "run_id": "nlp-0", "alert_id": "other"})
    return World(now, runs, alerts)


def _events(run: Run) -> Iterator[tuple[str, datetime, dict[str, Any]]]:
    """(type, ts, body) of a run in seq order, as the Python SDK would send them."""
    yield (
        "run_started",
        run.started,
        {"name": run.run_id, "config": run.config, "tags": run.tags, "group": run.group},
    )
    yield "metric_defined", run.started, {"name": "val/acc", "summary": "max", "goal": "maximize"}
    yield "metric_defined", run.started, {"name": "loss", "step_metric": "epoch"}
    beats = list(run.heartbeats)
    steps = sorted({s for series in run.points.values() for s in series})
    for step in steps:
        while beats and beats[0][0] <= run.ts(step):
            t, s = beats.pop(0)
            yield "heartbeat", t, {"step": s}
        metrics = {
            name: _json_float(series[step]) for name, series in run.points.items() if step in series
        }
        yield "metrics_logged", run.ts(step), {"step": step, "metrics": metrics}
    for t, s in beats:
        yield "heartbeat", t, {"step": s}
    for title in run.user_alerts:
        yield "alert_raised", run.ts(steps[-1]), {"title": title, "level": "ERROR"}
    for artifact in run.artifacts:
        yield "artifact_logged", run.ts(steps[-1]), artifact
    # Every run reads the dataset: use = 1 rows must not count as logged artifacts.
    yield (
        "artifact_logged",
        run.started,
        {
            "name": "data",
            "type": "dataset",
            "digest": "ds",
            "size": 7,
            "uri": "s3://d",
            "use": True,
        },
    )
    if run.finished_at is not None:
        code = 0 if run.status == "finished" else 1
        yield "run_finished", run.finished_at, {"status": run.status, "exit_code": code}


def _json_float(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


ALERT_COLUMNS = [
    "alert_id", "rule", "project", "run_id", "metric", "level", "title", "text", "fired_at",
    "resolved_at", "updated_at",
]  # fmt: skip


def seed(settings: Settings, world: World) -> None:
    """The runs' events into `events` (one insert, as one sink batch), the alerts into `alerts`."""
    rows: list[list[Any]] = []
    for run in world.runs:
        for seq, (type_, ts, body) in enumerate(_events(run)):
            rows.append(
                [
                    uuid.uuid4(), 1, type_, run.project, run.run_id, seq, ts, "runstream-python",
                    "test", "host", 1, json.dumps(body), 0, len(rows),
                ]
            )  # fmt: skip
    land_events(settings, rows)
    client = connect(settings)
    alert_rows = [[a.get(c, "") for c in ALERT_COLUMNS] for a in world.alerts]
    client.insert("alerts", alert_rows, column_names=ALERT_COLUMNS, settings={"async_insert": 0})
