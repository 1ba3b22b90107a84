"""``runstream dev``: the local stack started for real, on its own ports and home."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import runstream
from runstream.cli import main
from runstream.deploy.local.kafka import KafkaLayout
from runstream.deploy.local.stack import LocalStack
from runstream.errors import StackError
from runstream.settings import Settings
from tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def stack_settings(home: Path) -> Settings:
    return Settings.load(
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
        clickhouse_url=f"http://127.0.0.1:{free_port()}",
        home=home,
        finish_timeout=30.0,
        dir=home / "spool",
    )


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[LocalStack]:
    stack = LocalStack(stack_settings(tmp_path / "home"))
    yield stack
    stack.down()


def cli_args(settings: Settings) -> list[str]:
    return [
        "--home", str(settings.home),
        "--kafka", settings.kafka_bootstrap,
        "--kafka-controller-port", str(settings.kafka_controller_port),
        "--clickhouse", settings.clickhouse_url,
    ]  # fmt: skip


def count(settings: Settings, sql: str) -> int:
    from runstream.sinks.clickhouse import connect

    return int(connect(settings).query(sql).result_rows[0][0])


def wait_for(predicate: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return
        except Exception:
            pass
        time.sleep(0.25)
    raise AssertionError("condition not reached in time")


def test_up_twice_then_down_up_keeps_data(
    own_stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = own_stack.settings
    assert main(["dev", "up", *cli_args(settings)]) == 0
    first = {s.name: s.pid for s in own_stack.status()}
    assert set(first) == {"kafka", "clickhouse", "sink"}
    assert all(first.values())

    # Up again: nothing restarts.
    assert main(["dev", "up", *cli_args(settings)]) == 0
    assert {s.name: s.pid for s in own_stack.status()} == first
    assert main(["dev", "status", *cli_args(settings)]) == 0
    assert "healthy" in capsys.readouterr().out

    # After `dev up`, a training script's run lands in ClickHouse with nothing else started.
    run = runstream.init(project="dev-stack", settings=settings)
    for step in range(100):
        run.log({"loss": 1.0 / (step + 1), "acc": step / 100}, step=step)
    assert run.finish().ok
    wait_for(lambda: count(settings, "SELECT count() FROM runstream.metrics") == 200)

    assert main(["dev", "down", *cli_args(settings)]) == 0
    assert main(["dev", "status", *cli_args(settings)]) == 1
    assert all(s.state == "stopped" for s in own_stack.status())

    assert main(["dev", "up", *cli_args(settings)]) == 0
    assert count(settings, "SELECT count() FROM runstream.metrics") == 200
    # Kafka kept its data too: the events are still in the topic, and the committed offsets
    # mean the restarted sink does not write them twice.
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "check"})
    low_high = [
        consumer.get_watermark_offsets(TopicPartition("runstream.events", p), timeout=10)
        for p in range(settings.topic_partitions)
    ]
    consumer.close()
    in_kafka = sum(high - low for low, high in low_high)
    time.sleep(2)
    assert count(settings, "SELECT count() FROM runstream.events") == in_kafka
    assert count(settings, "SELECT countIf(type = 'metrics_logged') FROM runstream.events") == 100


def test_port_taken_by_another_process_is_named(tmp_path: Path) -> None:
    settings = stack_settings(tmp_path / "home")
    _, port = settings.clickhouse_host_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        stack = LocalStack(settings, workers=())
        try:
            with pytest.raises(StackError, match=f"port {port}.*RUNSTREAM_CLICKHOUSE_URL"):
                stack.up()
        finally:
            stack.down()


def test_clickhouse_data_dir_locked_by_another_server(tmp_path: Path) -> None:
    settings = stack_settings(tmp_path / "home")
    stack = LocalStack(settings, workers=())
    other_port = free_port()
    other = subprocess.Popen(
        [
            sys.executable, "-m", "runstream.deploy.local.clickhouse_server",
            "--data-dir", str(stack.clickhouse_data),
            "--run-dir", str(tmp_path / "other-run"),
            "--http-port", str(other_port),
        ],
    )  # fmt: skip
    try:
        wait_for(lambda: socket.create_connection(("127.0.0.1", other_port), 1).close() is None)
        with pytest.raises(StackError, match="ClickHouse exited during start-up") as caught:
            stack._start_clickhouse(time.monotonic() + 60)
        assert "locked" in str(caught.value)
    finally:
        other.terminate()
        other.wait(30)
        stack.down()


def test_missing_java_and_maven_say_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no java, no mvn
    layout = KafkaLayout(
        Settings.load(home=tmp_path / "home", cache_dir=tmp_path / "cache", env=os.environ)
    )
    with pytest.raises(StackError, match="JDK"):
        layout.java()
    with pytest.raises(StackError, match="Maven"):
        layout.fetch_jars()
