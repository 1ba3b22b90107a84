"""``runstream tail`` against the real Kafka and ClickHouse: a subprocess follows a run the SDK
logs in this process, prints each step as it arrives and ends with the run's status; a run that
ClickHouse already holds prints its last steps first; unknown runs and Ctrl-C (issue 12, "CLI")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import runstream
from runstream import cli
from runstream.settings import Settings
from tests.helpers import scalar, sink_until

ROOT = Path(__file__).resolve().parents[1]


def tail_args(settings: Settings, *args: str) -> list[str]:
    return [
        "tail", "--kafka", settings.kafka_bootstrap, "--clickhouse", settings.clickhouse_url,
        "--database", settings.clickhouse_database, "--topic-prefix", settings.topic_prefix,
        *args,
    ]  # fmt: skip


def start_tail(settings: Settings, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen(
        [sys.executable, "-m", "runstream", *tail_args(settings, *args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def sdk(settings: Settings) -> Settings:
    return settings.with_overrides(system_metrics_interval=0, heartbeat_interval=3600)


def test_tail_follows_a_live_run_until_it_finishes(settings: Settings) -> None:
    run = runstream.init(project="tail", config={"lr": 0.1}, settings=sdk(settings))
    run.log({"loss": 1.0, "acc": 0.5}, step=0)  # before tail starts: read back from Kafka
    tail = start_tail(settings, run.id, "--wait", "30")
    try:
        time.sleep(1.5)  # tail is reading by now; the rest arrives while it follows
        for step in range(1, 4):
            run.log({"loss": 1.0 / (step + 1), "acc": 0.5 + step / 10}, step=step)
            time.sleep(0.2)
        run.log({"loss": float("nan")}, step=4)
        assert run.finish(exit_code=3).ok
        out, err = tail.communicate(timeout=30)
    finally:
        tail.kill()
    assert tail.returncode == 1, err  # the run failed
    assert out.splitlines() == [
        "0  acc=0.5 loss=1",
        "1  acc=0.6 loss=0.5",
        "2  acc=0.7 loss=0.3333333333333333",
        "3  acc=0.8 loss=0.25",
        "4  loss=nan",
        f"run tail/{run.id} failed (exit code 3)",
    ]


def test_a_run_clickhouse_holds_prints_its_last_steps_first(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    run = runstream.init(project="tail", settings=sdk(settings))
    for step in range(20):
        run.log({"x": step * 2}, step=step)
    assert run.finish().ok
    db = settings.clickhouse_database
    sink_until(
        settings,
        lambda c: (
            scalar(settings, f"SELECT count() FROM {db}.runs_current WHERE status = 'finished'")
            == 1
        ),
    )
    assert cli.main(tail_args(settings, run.id, "-n", "3")) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "17  x=34",
        "18  x=36",
        "19  x=38",
        f"run tail/{run.id} finished (exit code 0)",
    ]


def test_unknown_run_and_ctrl_c(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(tail_args(settings, "no-such-run", "--wait", "1")) == 1
    err = capsys.readouterr().err
    assert "'no-such-run' not found" in err and "runs ls" in err
    run = runstream.init(project="tail", settings=sdk(settings))
    run.log({"x": 1.0}, step=0)
    tail = start_tail(settings, run.id, "--wait", "30")
    try:
        deadline = time.monotonic() + 20
        line = tail.stdout.readline() if tail.stdout else ""  # it is following
        assert line == "0  x=1\n" and time.monotonic() < deadline
        tail.send_signal(signal.SIGINT)
        out, err = tail.communicate(timeout=10)
    finally:
        tail.kill()
        run.finish()
    assert (tail.returncode, out, err) == (130, "", "")


def test_a_running_run_continues_after_clickhouses_steps_without_repeating_them(
    settings: Settings,
) -> None:
    run = runstream.init(project="tail", settings=sdk(settings))
    for step in range(5):
        run.log({"x": float(step)}, step=step)
    db = settings.clickhouse_database
    sink_until(settings, lambda c: scalar(settings, f"SELECT count() FROM {db}.metrics") == 5)
    tail = start_tail(settings, run.id, "-n", "2")  # ClickHouse: 3, 4; Kafka replays 0-4 too
    try:
        assert tail.stdout is not None
        assert [tail.stdout.readline(), tail.stdout.readline()] == ["3  x=3\n", "4  x=4\n"]
        time.sleep(1.0)
        run.log({"x": 5.5}, step=5)
        assert run.finish().ok
        out, err = tail.communicate(timeout=30)
    finally:
        tail.kill()
    assert tail.returncode == 0, err
    assert out.splitlines() == ["5  x=5.5", f"run tail/{run.id} finished (exit code 0)"]


def test_same_run_id_in_two_projects(settings: Settings, tmp_path: Path) -> None:
    """#2, #3, #7, #8, #12: a bare id in two projects is refused naming both; PROJECT/RUN_ID (the
    project holding a '/') and --project each follow only their run; names are escaped; -n 0
    prints only what arrives after it starts; a failed run's tail exits 1."""
    a = runstream.init(project="team/vision", id="dupe", settings=sdk(settings),
                       dir=tmp_path / "a")  # fmt: skip
    b = runstream.init(project="other", id="dupe", settings=sdk(settings), dir=tmp_path / "b")
    a.log({"x": 0.0}, step=0)
    b.log({"y": 100.0}, step=0)
    db = settings.clickhouse_database
    sink_until(settings, lambda c: scalar(settings, f"SELECT count() FROM {db}.metrics") == 2)
    ambiguous = start_tail(settings, "dupe", "--wait", "1")
    out, err = ambiguous.communicate(timeout=30)
    assert (ambiguous.returncode, out) == (2, ""), err
    assert "several projects (other, team/vision)" in err and "--project other" in err
    assert "runstream tail other/dupe" in err
    tail_a = start_tail(settings, "team/vision/dupe", "-n", "5")
    tail_b = start_tail(settings, "dupe", "--project", "other", "-n", "0")
    try:
        assert tail_a.stdout is not None
        assert tail_a.stdout.readline() == "0  x=0\n"  # from ClickHouse
        time.sleep(2.0)  # both follow Kafka by now
        for step in (1, 2):
            a.log({"x": float(step), "evil\x1b[31mname\nnl": 1.5}, step=step)
            b.log({"y": 100.0 + step}, step=step)
        assert b.finish(exit_code=2).ok  # failed: ends tail_b (exit 1), not tail_a
        out_b, err_b = tail_b.communicate(timeout=30)
        time.sleep(0.5)
        assert tail_a.poll() is None
        assert a.finish().ok
        out_a, err_a = tail_a.communicate(timeout=30)
    finally:
        tail_a.kill()
        tail_b.kill()
    assert (tail_b.returncode, err_b) == (1, "")
    assert out_b.splitlines() == ["1  y=101", "2  y=102", "run other/dupe failed (exit code 2)"]
    assert (tail_a.returncode, err_a) == (0, "")
    assert out_a.splitlines() == [
        "1  evil\\x1b[31mname\\nnl=1.5 x=1",
        "2  evil\\x1b[31mname\\nnl=1.5 x=2",
        "run team/vision/dupe finished (exit code 0)",
    ]


def test_kafka_unreachable_is_one_line_and_exit_1(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    args = tail_args(settings, "no-such-run", "--wait", "1")
    args[args.index("--kafka") + 1] = "127.0.0.1:1"  # a closed port
    started = time.monotonic()
    assert cli.main(args) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and time.monotonic() - started < 20
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "runstream: error: cannot read Kafka at 127.0.0.1:1"
    )


def test_a_closed_pipe_exits_quietly(settings: Settings) -> None:
    """#4: `runstream tail RUN | head -1` (the reader gone before the lines come): no traceback,
    exit 0."""
    run = runstream.init(project="tail", settings=sdk(settings))
    for step in range(3):
        run.log({"x": float(step)}, step=step)
    assert run.finish().ok
    db = settings.clickhouse_database
    sink_until(
        settings,
        lambda c: (
            scalar(settings, f"SELECT count() FROM {db}.runs_current WHERE status = 'finished'")
            == 1
        ),
    )
    tail = start_tail(settings, run.id, "-n", "3")
    assert tail.stdout is not None
    tail.stdout.close()  # before the interpreter has even started: every write fails
    _, err = tail.communicate(timeout=30)
    assert (tail.returncode, err) == (0, "")
