"""``runstream dev``: the local stack started for real, on its own ports and home.

Each test gets its own home and free ports; the Kafka jars come from the shared cache
(RUNSTREAM_CACHE_DIR when set, which Settings.load reads, else ~/.cache/runstream), so they are
downloaded once.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import runstream
from runstream.cli import main
from runstream.deploy.local.clickhouse import ClickHouseLayout
from runstream.deploy.local.kafka import KafkaLayout, new_cluster_id
from runstream.deploy.local.ports import port_open
from runstream.deploy.local.processes import PidFile
from runstream.deploy.local.stack import LocalStack
from runstream.deploy.local.workers import WorkerSpec
from runstream.errors import StackError
from runstream.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def free_ports(count: int) -> list[int]:
    """Distinct free ports: all sockets stay bound until every port is picked."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def stack_settings(home: Path, **overrides: Any) -> Settings:
    kafka, controller, clickhouse, ui = free_ports(4)
    return Settings.load(
        kafka_bootstrap=f"127.0.0.1:{kafka}",
        kafka_controller_port=controller,
        clickhouse_url=f"http://127.0.0.1:{clickhouse}",
        ui_port=ui,
        home=home,
        finish_timeout=30.0,
        dir=home / "spool",
        **overrides,
    )


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A fresh home; whatever a test started there is stopped afterwards, even on failure."""
    home = tmp_path / "home"
    yield home
    LocalStack(Settings.load(home=home, env={}), workers=()).down()


def cli_args(settings: Settings) -> list[str]:
    return [
        "--home", str(settings.home),
        "--kafka", settings.kafka_bootstrap,
        "--kafka-controller-port", str(settings.kafka_controller_port),
        "--clickhouse", settings.clickhouse_url,
    ]  # fmt: skip


def clickhouse(settings: Settings) -> Any:
    import clickhouse_connect

    host, port = settings.clickhouse_host_port
    return clickhouse_connect.get_client(host=host, port=port, settings={"async_insert": 0})


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(0.25)
    raise AssertionError("condition not reached in time")


def consume_all(settings: Settings, topic: str, expected: int) -> list[bytes]:
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"check-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while len(values) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                values.append(message.value() or b"")
    finally:
        consumer.close()
    return values


def test_up_is_idempotent_and_down_then_up_keeps_the_data(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = stack_settings(home)
    stack = LocalStack(settings, workers=())
    args = ["--no-workers", *cli_args(settings)]
    assert main(["dev", "up", *args]) == 0
    out = capsys.readouterr().out
    assert settings.kafka_bootstrap in out and settings.clickhouse_url in out
    assert "runstream.events" in out and str(home / "logs") in out
    first = {s.name: s.pid for s in stack.status()}
    assert set(first) == {"kafka", "clickhouse"} and all(first.values())

    # Up again: nothing restarts, and it is quick.
    started = time.monotonic()
    assert main(["dev", "up", *args]) == 0
    assert time.monotonic() - started < 5
    assert {s.name: s.pid for s in stack.status()} == first
    assert main(["dev", "status", *cli_args(settings)]) == 0
    assert "healthy" in capsys.readouterr().out

    # Data in both services...
    ch = clickhouse(settings)
    ch.command("CREATE TABLE default.kept (id UInt32, name String) ENGINE = MergeTree ORDER BY id")
    ch.insert("default.kept", [[1, "survives"]], column_names=["id", "name"])
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    producer.produce("runstream.events", key=b"run-1", value=b"kept-message")
    assert producer.flush(30) == 0

    assert main(["dev", "down", *cli_args(settings)]) == 0
    assert all(s.state == "stopped" for s in stack.status())
    assert main(["dev", "status", *cli_args(settings)]) == 1
    assert not list((home / "run").glob("*.pid"))

    # ...is still there after a restart.
    assert main(["dev", "up", *args]) == 0
    assert clickhouse(settings).query("SELECT id, name FROM default.kept").result_rows == [
        (1, "survives")
    ]
    assert consume_all(settings, "runstream.events", 1) == [b"kept-message"]


def test_workers_get_the_stack_settings_and_stop_first(home: Path) -> None:
    settings = stack_settings(home, topic_prefix="wk", clickhouse_database="wkdb")
    echo = WorkerSpec(
        "echo",
        [
            sys.executable, "-c",
            "import os, time; print(os.environ['RUNSTREAM_KAFKA_BOOTSTRAP'], "
            "os.environ['RUNSTREAM_TOPIC_PREFIX'], os.environ['RUNSTREAM_CLICKHOUSE_DATABASE'], "
            "flush=True); time.sleep(600)",
        ],
    )  # fmt: skip
    stack = LocalStack(settings, workers=[echo])
    statuses = {s.name: s for s in stack.up()}
    assert statuses["echo"].healthy and statuses["echo"].pid
    wait_for(lambda: (home / "logs" / "echo.log").read_text().strip() != "")
    assert (home / "logs" / "echo.log").read_text().split() == [
        settings.kafka_bootstrap, "wk", "wkdb"
    ]  # fmt: skip
    from confluent_kafka.admin import AdminClient

    topics = AdminClient({"bootstrap.servers": settings.kafka_bootstrap}).list_topics(timeout=10)
    assert "wk.events" in topics.topics
    databases = "SELECT name FROM system.databases WHERE name = 'wkdb'"
    assert clickhouse(settings).query(databases).result_rows == [("wkdb",)]
    # A worker that cannot start is reported by `up`, with its log.
    broken = WorkerSpec("broken", [sys.executable, "-c", "raise SystemExit('no such thing')"])
    with pytest.raises(StackError, match=r"(?s)worker 'broken'.*exited.*no such thing"):
        LocalStack(settings, workers=[echo, broken]).up()
    echo_pid = statuses["echo"].pid
    assert {s.name: s.pid for s in LocalStack(settings, workers=[echo]).status()}[
        "echo"
    ] == echo_pid

    LocalStack(settings, workers=()).down()  # stops the workers it finds, not only its own
    assert all(s.state == "stopped" for s in stack.status())


def test_default_up_runs_the_workers_and_a_run_lands_in_clickhouse(home: Path) -> None:
    settings = stack_settings(home)
    stack = LocalStack(settings)  # the default workers: sink, processors, notifier, ui
    workers = {"sink", "processors", "notifier", "ui"}
    assert {s.name for s in stack.up()} == {"kafka", "clickhouse", *workers}
    assert all(s.healthy for s in stack.status())

    run = runstream.init(project="dev-stack", settings=settings)
    for step in range(100):
        run.log({"loss": 1.0 / (step + 1), "acc": step / 100}, step=step)
    assert run.finish().ok
    count = "SELECT count() FROM runstream.metrics"
    wait_for(lambda: clickhouse(settings).query(count).result_rows[0][0] == 200)
    live = "SELECT status, last_step FROM runstream.live_runs_current"  # via the processors
    wait_for(lambda: clickhouse(settings).query(live).result_rows == [("finished", 99)])

    stack.down()
    assert [s.state for s in stack.status()] == ["stopped"] * 6
    stack.up()
    assert clickhouse(settings).query(count).result_rows[0][0] == 200


@pytest.mark.parametrize(
    ("service", "setting"),
    [("clickhouse", "RUNSTREAM_CLICKHOUSE_URL"), ("kafka", "RUNSTREAM_KAFKA_BOOTSTRAP")],
)
def test_a_port_taken_by_another_process_is_named(home: Path, service: str, setting: str) -> None:
    settings = stack_settings(home)
    port = (
        settings.clickhouse_host_port[1] if service == "clickhouse" else settings.kafka_host_port[1]
    )
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(StackError, match=f"port {port} .*{setting}"):
            LocalStack(settings, workers=()).up()
    # Checked before anything starts: nothing is left half-running.
    assert not list((home / "run").glob("*.pid"))


def test_clickhouse_data_dir_locked_by_another_server(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = stack_settings(home)
    stack = LocalStack(settings, workers=())
    (other_port,) = free_ports(1)
    other = subprocess.Popen(
        [
            sys.executable, "-m", "runstream.deploy.local.clickhouse_server",
            "--data-dir", str(stack.clickhouse.data),
            "--run-dir", str(tmp_path / "other-run"),
            "--http-port", str(other_port),
        ],
    )  # fmt: skip
    try:
        wait_for(lambda: port_open("127.0.0.1", other_port))
        with pytest.raises(StackError, match=f"locked by process {other.pid}"):
            stack.up()
        # Should the lock be taken between that check and the start, the server's own error,
        # from its log, says the same.
        monkeypatch.setattr(ClickHouseLayout, "data_locked_by", lambda self: None)
        with pytest.raises(StackError, match="ClickHouse exited during start-up") as caught:
            stack.up()
        assert "locked" in str(caught.value)
        assert str(stack.clickhouse.log) in str(caught.value)
    finally:
        other.terminate()
        other.wait(30)


def test_a_broker_that_dies_on_start_is_reported_with_its_log(home: Path) -> None:
    # -Xms256m with -Xmx1m: the JVM refuses to start.
    settings = stack_settings(home, kafka_heap="1m")
    with pytest.raises(StackError, match=r"(?s)Kafka exited during start-up.*heap size") as caught:
        LocalStack(settings, workers=()).up()
    assert "kafka.stdout.log" in str(caught.value)
    assert PidFile(home / "run" / "kafka.pid").read() is None


def test_refuses_to_serve_clickhouse_beyond_loopback(tmp_path: Path) -> None:
    settings = Settings.load(home=tmp_path, clickhouse_url="http://10.1.2.3:8123", env={})
    with pytest.raises(StackError, match="loopback"):
        LocalStack(settings).up()


def test_a_pid_file_naming_another_process_is_stale(home: Path) -> None:
    # After a reboot the recorded pid may belong to an unrelated process: never signal it.
    (home / "run").mkdir(parents=True)
    (home / "run" / "kafka.pid").write_text(f"{os.getpid()} 12345.0 127.0.0.1:9092\n")
    stack = LocalStack(stack_settings(home), workers=())
    assert stack.status()[0].state == "stopped"
    assert not (home / "run" / "kafka.pid").exists()
    (home / "run" / "kafka.pid").write_text(f"{os.getpid()} 12345.0\n")
    stack.down()  # this very test process survives
    PidFile(home / "run" / "self.pid").write(os.getpid())
    assert PidFile(home / "run" / "self.pid").read() == os.getpid()


def test_missing_or_old_java_and_missing_maven_say_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))  # no java, no mvn
    monkeypatch.delenv("JAVA_HOME", raising=False)
    layout = KafkaLayout(
        Settings.load(home=tmp_path / "home", cache_dir=tmp_path / "cache", env={})
    )
    with pytest.raises(StackError, match="JDK 17"):
        layout.java()
    with pytest.raises(StackError, match="Maven"):
        layout.fetch_jars()
    old_java = bin_dir / "java"
    old_java.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    old_java.chmod(0o755)
    with pytest.raises(StackError, match="is Java 11"):
        layout.java()


def test_cluster_ids_look_like_kafkas() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
