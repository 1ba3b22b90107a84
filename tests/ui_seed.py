"""A project for the UI tests, inserted straight into ``events`` (the materialized views derive
``metrics``, ``runs_current``, ...) with INSERT ... SELECT from numbers(): seconds, not minutes.

``python -m tests.ui_seed`` seeds the database of RUNSTREAM_CLICKHOUSE_DATABASE (for a look at
the UI by hand: ``runstream ui --database ...``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from runstream.settings import Settings
from runstream.sinks.clickhouse import connect
from runstream.sinks.snapshots import refresh

PROJECT = "vision"
OTHER_PROJECT = "nlp"
BIG_RUN = "bigrun01"
BIG_POINTS = 1_000_000
SPIKE_STEP = 654_321
SPIKE_VALUE = 1000.0
NAN_STEP = 123_456  # one NaN inside the big run, in a bucket of a thousand points
LIVE_RUN = "live0001"
NAN_RUN = "nanrun01"
START = "2026-11-28 10:00:00"


@dataclass(frozen=True)
class SeedRun:
    run_id: str
    name: str
    group: str
    tags: list[str]
    config: dict[str, Any]
    status: str  # finished, failed, running
    steps: int
    project: str = PROJECT


def seed_runs() -> list[SeedRun]:
    runs: list[SeedRun] = []
    i = 0
    for opt in ("adam", "sgd"):
        for lr in (1e-3, 3e-3, 1e-2):
            for seed in (0, 1):
                runs.append(
                    SeedRun(
                        run_id=f"r{i:03d}abc",
                        name=f"resnet-{opt}-lr{lr:g}-s{seed}",
                        group=f"sweep-{opt}",
                        tags=["baseline"] if lr == 1e-3 else ["sweep"],
                        config={
                            "lr": lr,
                            "batch_size": 128 if opt == "adam" else 256,
                            "optimizer": {"name": opt, "momentum": 0.9},
                            "seed": seed,
                            "model": "resnet18",
                        },
                        status="failed" if i == 7 else "finished",
                        steps=2000,
                    )
                )
                i += 1
    runs.append(
        SeedRun(
            LIVE_RUN,
            "resnet-live",
            "sweep-adam",
            ["live"],
            {
                "lr": 1e-3,
                "batch_size": 128,
                "optimizer": {"name": "adam"},
                "seed": 9,
                "model": "resnet50",
            },
            "running",
            500,
        )
    )
    runs.append(
        SeedRun(NAN_RUN, "diverged", "", ["nan"], {"lr": 1.0, "model": "resnet18"}, "failed", 300)
    )
    runs.append(
        SeedRun(BIG_RUN, "big-million", "", ["big"], {"lr": 1e-4, "model": "vit"}, "finished", 0)
    )
    runs.append(
        SeedRun(
            "nlp00001",
            "bert-base",
            "",
            [],
            {"lr": 5e-5, "model": "bert"},
            "finished",
            100,
            project=OTHER_PROJECT,
        )
    )
    return runs


_EVENT_COLUMNS = (
    "event_id, schema_version, type, project, run_id, seq, ts, producer_sdk, producer_version, "
    "producer_host, producer_pid, body, kafka_partition, kafka_offset"
)


def _events(client: Any, rows: list[tuple[str, str, str, int, str, str]]) -> None:
    """rows: (type, project, run_id, seq, ts SQL expression, body JSON)."""
    values = ", ".join(
        f"(generateUUIDv4(), 1, {_s(t)}, {_s(p)}, {_s(r)}, {seq}, {ts}, 'python', '0', 'seed', 1, "
        f"{_s(body)}, 0, 0)"
        for t, p, r, seq, ts, body in rows
    )
    client.command(f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES {values}")


def _s(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def seed(
    settings: Settings, big_points: int = BIG_POINTS, spike_step: int = SPIKE_STEP
) -> list[SeedRun]:
    """Insert the seed project into the (migrated) database of ``settings``; the big run has
    ``big_points`` points of ``loss``, flat but for SPIKE_VALUE at ``spike_step``."""
    client = connect(settings)
    runs = seed_runs()
    for k, run in enumerate(runs):
        t0 = f"toDateTime64('{START}', 6, 'UTC') + INTERVAL {k * 3600} SECOND"
        started = {
            "name": run.name,
            "config": run.config,
            "tags": run.tags,
            "group": run.group,
            "job_type": "train",
            "notes": f"seeded run {run.name}",
        }
        _events(client, [("run_started", run.project, run.run_id, 0, t0, json.dumps(started))])
        seq = 1
        if run.steps:
            # One metrics_logged event per step: loss decays with the lr, acc rises, noise from
            # a hash so that each run differs; val/loss every 100 steps.
            lr = float(run.config["lr"])
            speed = 200 + 40 * math.log10(lr) * -1
            client.command(
                f"INSERT INTO events ({_EVENT_COLUMNS}) SELECT generateUUIDv4(), 1, "
                f"'metrics_logged', {_s(run.project)}, {_s(run.run_id)}, {seq} + number, "
                f"{t0} + INTERVAL (number + 1) * 50 MILLISECOND, 'python', '0', 'seed', 1, "
                'concat(\'{"step":\', toString(number), \',"metrics":{"loss":\', '
                f"toString(2.5 * exp(-number / {speed}) + 0.1 + "
                f"(cityHash64(number, {_s(run.run_id)}) % 1000) / 8000.0), "
                f"',\"acc\":', toString(1 - exp(-number / {speed * 1.3}) * 0.9), "
                f"',\"lr\":', toString({lr} * (1 - number / {run.steps})), "
                "if(number % 100 = 99, concat(',\"val/loss\":', "
                f"toString(2.6 * exp(-number / {speed}) + 0.15)), ''), "
                "if(number % 50 = 0, concat(',\"epoch\":', toString(intDiv(number, 50))), ''), "
                "'}}'), 0, 0 "
                f"FROM numbers({run.steps})"
            )
            seq += run.steps
        if run.run_id.startswith("r"):
            # define_metric("val/loss", step_metric="epoch"): the charts may plot it by epoch.
            body = json.dumps({"name": "val/loss", "step_metric": "epoch"})
            _events(client, [("metric_defined", run.project, run.run_id, seq, t0, body)])
            seq += 1
        if run.run_id == NAN_RUN:
            _events(
                client,
                [
                    (
                        "metrics_logged",
                        run.project,
                        run.run_id,
                        seq,
                        f"{t0} + INTERVAL 60 SECOND",
                        '{"step":300,"metrics":{"loss":"NaN"}}',
                    ),
                    (
                        "metrics_logged",
                        run.project,
                        run.run_id,
                        seq + 1,
                        f"{t0} + INTERVAL 61 SECOND",
                        '{"step":301,"metrics":{"loss":"Infinity"}}',
                    ),
                    (
                        "metrics_logged",
                        run.project,
                        run.run_id,
                        seq + 2,
                        f"{t0} + INTERVAL 62 SECOND",
                        '{"step":302,"metrics":{"loss":1.5}}',
                    ),
                ],
            )
            seq += 3
        if run.run_id == BIG_RUN:
            # A million points of one metric straight into `metrics` (what metrics_mv would
            # write), flat at about 1 but for one spike and one NaN.
            nan_step = NAN_STEP * big_points // BIG_POINTS
            client.command(
                "INSERT INTO metrics (project, run_id, name, step, value, ts, seq) "
                f"SELECT {_s(run.project)}, {_s(run.run_id)}, 'loss', number, "
                f"multiIf(number = {spike_step}, {SPIKE_VALUE}, number = {nan_step}, nan, "
                "1 + sin(number / 5000) / 10), "
                f"{t0} + INTERVAL number MILLISECOND, {seq} + number FROM numbers({big_points})"
            )
            seq += big_points
        if run.run_id in ("r000abc", LIVE_RUN):
            client.command(
                f"INSERT INTO events ({_EVENT_COLUMNS}) SELECT generateUUIDv4(), 1, "
                f"'system_metrics', {_s(run.project)}, {_s(run.run_id)}, {seq} + number, "
                f"{t0} + INTERVAL number * 10 SECOND, 'python', '0', 'seed', 1, "
                'concat(\'{"metrics":{"cpu.percent":\', toString(40 + number % 30), '
                "',\"proc.rss_bytes\":', toString(1200000000 + number * 3000000), '}}'), 0, 0 "
                "FROM numbers(12)"
            )
            seq += 12
        if run.run_id == "r000abc":
            hist = []
            for j in range(5):
                edges = [x / 10 - 1 for x in range(21)]
                counts = [math.exp(-(((x - 10 + j) / 4) ** 2)) * 100 for x in range(20)]
                body = {
                    "step": j * 400,
                    "histograms": {"gradients/fc.weight": {"bins": edges, "counts": counts}},
                }
                hist.append(
                    (
                        "histogram_logged",
                        run.project,
                        run.run_id,
                        seq,
                        f"{t0} + INTERVAL {j * 20} SECOND",
                        json.dumps(body),
                    )
                )
                seq += 1
            _events(client, hist)
        if run.run_id in (NAN_RUN, "r007abc"):
            alert = {"level": "ERROR", "title": f"{run.name} diverged", "text": "loss is NaN"}
            _events(
                client,
                [
                    (
                        "alert_raised",
                        run.project,
                        run.run_id,
                        seq,
                        f"{t0} + INTERVAL 63 SECOND",
                        json.dumps(alert),
                    )
                ],
            )
            seq += 1
        if run.status != "running":
            body = {"status": run.status, "exit_code": 0 if run.status == "finished" else 1}
            _events(
                client,
                [
                    (
                        "run_finished",
                        run.project,
                        run.run_id,
                        seq,
                        f"{t0} + INTERVAL 30 MINUTE",
                        json.dumps(body),
                    )
                ],
            )
    refresh(client, settings.clickhouse_database)  # as the sink does after its writes
    return runs


def drop(settings: Settings) -> None:
    """Drop the seeded database (a million points is worth giving back)."""
    connect(settings).command(f"DROP DATABASE IF EXISTS `{settings.clickhouse_database}`")


if __name__ == "__main__":
    from runstream.sinks.migrations import migrate

    s = Settings.load()
    migrate(s)
    seed(s)
    print(f"seeded {s.clickhouse_database}")
