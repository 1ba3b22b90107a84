"""The SDK's behaviour, observed through its own spool (offline mode: no services needed)."""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

import runstream
from runstream.producers.spool import RunSpool, runs_dir
from runstream.producers.start import DisabledRun
from runstream.schemas import decode
from runstream.schemas.limits import MAX_EVENT_BYTES
from runstream.settings import Settings


def offline_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "mode": "offline",
        "dir": tmp_path / "spool",
        "system_metrics_interval": 0,
        "project": "local",
    }
    values.update(overrides)
    return Settings.load(env={}, **values)


def spooled(settings: Settings, run_id: str) -> list[dict[str, Any]]:
    spool = RunSpool.open_existing(runs_dir(settings.dir) / run_id)
    assert spool is not None, "no spool for the run"
    events = []
    for seq, data in spool.read_from(0):
        event = orjson.loads(data)
        assert event["seq"] == seq
        decode(data)  # every spooled event is valid
        events.append(event)
    return events


def of_type(events: list[dict[str, Any]], type_name: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == type_name]


def test_log_commit_false_flatten_and_step_rules(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings)
    run.log({"loss": 1.0})  # step 0
    run.log({"a": 1}, commit=False)  # step 1, collecting
    run.log({"b": {"c": 2}}, commit=False)
    run.log({"d": 3})  # completes step 1
    run.log({"loss": 0.5}, step=10)
    with caplog.at_level(logging.WARNING, logger="runstream"):
        run.log({"loss": 9.0}, step=3)  # lower than the highest: data like any other point
        run.log({"loss": 9.0}, step=4)
    run.log({"loss": 0.25})  # step 11: one past the highest step seen
    result = run.finish()
    assert result.offline and result.ok

    metrics = [
        (e["body"]["step"], e["body"]["metrics"])
        for e in of_type(spooled(settings, run.id), "metrics_logged")
    ]
    assert metrics == [
        (0, {"loss": 1.0}),
        (1, {"a": 1.0, "b/c": 2.0, "d": 3.0}),
        (10, {"loss": 0.5}),
        (3, {"loss": 9.0}),
        (4, {"loss": 9.0}),
        (11, {"loss": 0.25}),
    ]
    assert not caplog.records and run.refused == 0


def test_every_event_kind_of_the_surface(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path)
    artifact = tmp_path / "model.bin"
    artifact.write_bytes(b"weights" * 1000)
    run = runstream.init(
        settings=settings, name="surface", config={"lr": 0.1, "path": Path("/data")}, tags=["a"]
    )
    run.config.update({"batch": 32})
    run.config["epochs"] = 3
    run.config.dropout = 0.5
    assert run.config.lr == 0.1 and run.config["batch"] == 32
    run.tags = ["a", "b"]
    run.define_metric("val/*", summary="min")
    run.define_metric("acc", summary="max")
    for step, (loss, acc) in enumerate([(3.0, 0.1), (1.0, 0.9), (2.0, 0.5)]):
        run.log({"val/loss": loss, "acc": acc, "train/loss": loss}, step=step)
    run.summary["note"] = "best so far"
    run.alert("Loss spiked", "val/loss went up", level="WARN")
    run.log_artifact(artifact, type="model")
    run.log_artifact("s3://bucket/data.parquet", name="data", type="dataset")
    run.finish()

    events = spooled(settings, run.id)
    assert [e["seq"] for e in events] == list(range(len(events)))
    started = of_type(events, "run_started")[0]["body"]
    assert started["config"] == {"lr": 0.1, "path": "/data"} and started["tags"] == ["a"]
    assert started["environment"]["python"]
    updates = [e["body"]["config"] for e in of_type(events, "config_updated")]
    assert updates == [{"batch": 32}, {"epochs": 3}, {"dropout": 0.5}]
    assert of_type(events, "tags_updated")[0]["body"]["tags"] == ["a", "b"]
    assert [e["body"] for e in of_type(events, "metric_defined")] == [
        {"name": "val/*", "summary": "min"},
        {"name": "acc", "summary": "max"},
    ]
    alert = of_type(events, "alert_raised")[0]["body"]
    assert alert == {"title": "Loss spiked", "text": "val/loss went up", "level": "warn"}
    local, remote = (e["body"] for e in of_type(events, "artifact_logged"))
    assert local["name"] == "model.bin" and local["size"] == 7000
    assert local["digest"].startswith("sha256:") and local["uri"].startswith("file:///")
    assert remote["uri"] == "s3://bucket/data.parquet" and remote["size"] == 0
    summaries = [e["body"]["summary"] for e in of_type(events, "summary_updated")]
    assert summaries[0] == {"note": "best so far"}
    # The final summary carries the explicit keys only; derived ones are computed downstream.
    assert summaries[-1] == {"note": "best so far"}
    assert run.summary["acc"] == 0.9 and run.summary["train/loss"] == 2.0
    assert run.summary["val/loss"] == 1.0 and run.summary["note"] == "best so far"
    assert events[-1]["type"] == "run_finished"
    assert events[-1]["body"] == {"exit_code": 0, "status": "finished"}


def test_bad_input_never_raises_and_keeps_what_is_valid(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    np = pytest.importorskip("numpy")
    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings, config={"weights": np.ones(2), "obj": object()})
    with caplog.at_level(logging.WARNING, logger="runstream"):
        run.log(
            {
                "text": "hello",
                "list": [1, 2],
                "none": None,
                "": 1.0,
                5: 2.0,
                "nan": math.nan,
                "np": np.float32(1.5),
                "bool": True,
                "名前 / with spaces": -math.inf,
            }
        )
        run.log({f"m{i}": float(i) for i in range(5000)})
        run.log({"only": "strings"})  # nothing valid: no event at all
        run.alert("x", level="catastrophic")
    run.finish()
    metrics = of_type(spooled(settings, run.id), "metrics_logged")
    first = metrics[0]["body"]["metrics"]
    assert first == {"5": 2.0, "nan": "NaN", "np": 1.5, "名前 / with spaces": "-Infinity"}
    assert len(metrics[1]["body"]["metrics"]) == 5000
    assert len(metrics) == 2
    text = caplog.text
    for name in ("text", "list", "none", "bool", "only"):
        assert repr(name) in text
    assert "catastrophic" in text


def test_disabled_mode_does_nothing(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path, mode="disabled")
    run = runstream.init(settings=settings, config={"a": 1})
    assert isinstance(run, DisabledRun)
    run.log({"loss": 1.0})
    run.config["b"] = 2
    run.alert("nothing")
    assert run.finish().produced == 0
    assert not settings.dir.exists()


def test_several_runs_in_one_process_are_independent(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path)
    first = runstream.init(settings=settings, name="first")
    second = runstream.init(settings=settings, name="second")
    assert runstream.run is second
    for step in range(5):
        first.log({"x": step})
        second.log({"y": step * 2})
    runstream.log({"z": 1.0})  # the current run: second
    second.finish()
    assert runstream.run is first
    first.finish()
    assert runstream.run is None
    a = of_type(spooled(settings, first.id), "metrics_logged")
    b = of_type(spooled(settings, second.id), "metrics_logged")
    assert [e["body"]["metrics"] for e in a] == [{"x": float(s)} for s in range(5)]
    assert len(b) == 6 and b[-1]["body"]["metrics"] == {"z": 1.0}


def test_runs_started_while_the_worker_is_busy_all_land(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: the worker iterated over its runs while the caller added one
    ("dictionary changed size during iteration"), seen with 100 runs in one process."""
    settings = offline_settings(tmp_path, heartbeat_interval=0.001)
    runs = []
    for index in range(150):
        runs.append(runstream.init(settings=settings))
        for run in runs[-5:]:
            run.log({"i": float(index)})
    for run in runs:
        run.finish()
    assert "unexpected error in the background worker" not in caplog.text
    assert all(of_type(spooled(settings, run.id), "run_finished") for run in runs)


def test_forked_child_cannot_corrupt_the_parents_run(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings)
    run.log({"before": 1.0})
    pid = os.fork()
    if pid == 0:  # a DataLoader worker, say: logging here must not touch the parent's run
        run.log({"child": 1.0})
        run.finish()
        os._exit(0)
    os.waitpid(pid, 0)
    run.log({"after": 1.0})
    run.finish()
    metrics = [e["body"]["metrics"] for e in of_type(spooled(settings, run.id), "metrics_logged")]
    assert metrics == [{"before": 1.0}, {"after": 1.0}]
    assert len(of_type(spooled(settings, run.id), "run_finished")) == 1


def test_system_metrics_are_sampled_in_the_background(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path, system_metrics_interval=0.1)
    run = runstream.init(settings=settings)
    time.sleep(0.5)
    run.finish()
    samples = of_type(spooled(settings, run.id), "system_metrics")
    assert len(samples) >= 2
    assert {"cpu.percent", "memory.percent", "proc.rss_bytes"} <= set(
        samples[-1]["body"]["metrics"]
    )


SCRIPT = """
import os, signal, sys, time
import runstream
from runstream.settings import Settings
settings = Settings.load(mode="offline", dir=sys.argv[1], system_metrics_interval=0)
run = runstream.init(settings=settings, id="child-run")
for step in range(10):
    run.log({"loss": 1.0 / (step + 1)})
how = sys.argv[2]
if how == "exception":
    raise RuntimeError("training diverged")
if how == "sigterm":
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)
if how == "exit":
    sys.exit(0)
if how == "interrupt":
    raise KeyboardInterrupt
"""


@pytest.mark.parametrize(
    ("how", "returncode", "status", "exit_code"),
    [
        ("exception", 1, "failed", 1),
        ("sigterm", -signal.SIGTERM, "killed", 128 + signal.SIGTERM),
        ("exit", 0, "finished", 0),
        ("interrupt", -signal.SIGINT, "killed", 130),  # Python dies of SIGINT, as it should
    ],
)
def test_the_run_ends_with_the_right_status_however_the_program_ends(
    tmp_path: Path, how: str, returncode: int, status: str, exit_code: int
) -> None:
    spool = tmp_path / "spool"
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), str(spool), how],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == returncode, done.stderr
    events = spooled(offline_settings(tmp_path), "child-run")
    assert len(of_type(events, "metrics_logged")) == 10
    finished = of_type(events, "run_finished")
    assert [e["body"] for e in finished] == [{"exit_code": exit_code, "status": status}]
    if how == "exception":
        assert "training diverged" in done.stderr  # the program's own traceback still shows


def test_an_event_too_large_for_kafka_is_split_without_a_gap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = offline_settings(tmp_path)
    run = runstream.init(settings=settings)
    sent = {f"metric/with/a/long/name/{i}": float(i) for i in range(60_000)}
    with caplog.at_level(logging.WARNING, logger="runstream"):
        run.log(sent, step=5)
        run.log({"loss": 1.0})
    run.finish()
    events = spooled(settings, run.id)
    assert [e["seq"] for e in events] == list(range(len(events)))  # no gap
    assert all(len(orjson.dumps(e)) <= MAX_EVENT_BYTES for e in events)
    logged = of_type(events, "metrics_logged")
    assert len(logged) > 2 and {e["body"]["step"] for e in logged[:-1]} == {5}
    merged = {k: v for e in logged[:-1] for k, v in e["body"]["metrics"].items()}
    assert merged == sent
    assert logged[-1]["body"] == {"step": 6, "metrics": {"loss": 1.0}}
    assert not caplog.records  # nothing was lost: no warning


def test_finish_does_not_wait_for_other_runs_stuck_on_a_dead_broker(tmp_path: Path) -> None:
    dead = Settings.load(
        env={},
        kafka_bootstrap="127.0.0.1:9",  # nothing listens there
        dir=tmp_path / "dead",
        finish_timeout=0.2,
        system_metrics_interval=0,
    )
    stuck = runstream.init(settings=dead)
    stuck.log({"loss": 1.0})
    assert not stuck.finish().ok  # its events stay in the spool, and in the producer's queue

    other = runstream.init(settings=offline_settings(tmp_path, finish_timeout=20))
    other.log({"loss": 1.0})
    started = time.monotonic()
    assert other.finish().ok
    assert time.monotonic() - started < 2.0
