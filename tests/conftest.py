"""Fixtures that find real Kafka and ClickHouse services for the integration tests.

In this order: addresses given in ``RUNSTREAM_KAFKA_BOOTSTRAP`` / ``RUNSTREAM_CLICKHOUSE_URL``;
else testcontainers when a Docker engine answers (pinned image tags); else the local stack of
``runstream dev`` (Kafka from Maven jars, ClickHouse from chdb-core), started once per session on
free ports in a temporary home and stopped at the end.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from runstream.deploy.local.stack import LocalStack
from runstream.settings import Settings

KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.0"
CLICKHOUSE_IMAGE = "clickhouse/clickhouse-server:26.9"


@dataclass(frozen=True)
class Services:
    kafka_bootstrap: str
    clickhouse_url: str
    source: str  # "env", "testcontainers" or "local"
    home: Path | None = None  # the local stack's home, when the tests started one


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


def _from_testcontainers(stack: ExitStack) -> Services:
    from testcontainers.clickhouse import ClickHouseContainer
    from testcontainers.kafka import KafkaContainer

    kafka = stack.enter_context(KafkaContainer(KAFKA_IMAGE).with_kraft())
    clickhouse = stack.enter_context(ClickHouseContainer(CLICKHOUSE_IMAGE, port=8123))
    host = clickhouse.get_container_host_ip()
    url = f"http://{host}:{clickhouse.get_exposed_port(8123)}"
    return Services(kafka.get_bootstrap_server(), url, "testcontainers")


@contextlib.contextmanager
def services_only_stack(home: Path) -> Iterator[LocalStack]:
    """Kafka and ClickHouse of the local stack on free ports in ``home``, no workers."""
    stack = LocalStack(
        Settings.load(
            kafka_bootstrap=f"127.0.0.1:{free_port()}",
            kafka_controller_port=free_port(),
            clickhouse_url=f"http://127.0.0.1:{free_port()}",
            home=home,
            topic_partitions=3,
            sink_metrics_port=0,
        ),
        workers=(),
    )
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


def _from_local_stack(stack: ExitStack, home: Path) -> Services:
    local = stack.enter_context(services_only_stack(home))
    settings = local.settings
    return Services(settings.kafka_bootstrap, settings.clickhouse_url, "local", home)


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    kafka = os.environ.get("RUNSTREAM_KAFKA_BOOTSTRAP")
    clickhouse = os.environ.get("RUNSTREAM_CLICKHOUSE_URL")
    with ExitStack() as stack:
        if kafka and clickhouse:
            yield Services(kafka, clickhouse, "env")
        elif _docker_answers():
            yield _from_testcontainers(stack)
        else:
            # `make test` names the home, so its trap can stop the stack even if pytest dies.
            home = os.environ.get("RUNSTREAM_TEST_HOME")
            yield _from_local_stack(stack, Path(home) if home else tmp_path_factory.mktemp("stack"))


def isolated_settings(services: Services, prefix: str = "t", **overrides: object) -> Settings:
    """Settings with topics, a database and a consumer group of their own on the shared
    services (created and migrated): what one test, or one module, works in."""
    from runstream.deploy.local.admin import ensure_topics
    from runstream.sinks.migrations import migrate

    unique = uuid.uuid4().hex[:10]
    test_settings = Settings.load(
        kafka_bootstrap=services.kafka_bootstrap,
        clickhouse_url=services.clickhouse_url,
        topic_prefix=f"{prefix}{unique}",
        topic_partitions=3,
        clickhouse_database=f"{prefix}{unique}",
        sink_group=f"sink-{unique}",
        sink_batch_seconds=0.2,
        sink_metrics_port=0,
        **overrides,  # type: ignore[arg-type]
    )
    ensure_topics(test_settings)
    migrate(test_settings)
    return test_settings


@pytest.fixture
def settings(services: Services, tmp_path: Path) -> Settings:
    """Settings of one test: its own topics, database and consumer group on the shared services."""
    return isolated_settings(services, dir=tmp_path / "spool", finish_timeout=30.0)


# `make test` runs two pytest processes side by side (marker second_lane, the Makefile): the tests
# that start, kill or fill a stack of their own, which mostly wait (on a broker restarting, a
# session expiring), and a few long ones that wait on subprocesses, so that both lanes take
# about as long.
_OWN_STACK_FIXTURES = {"outage_stack", "own_kafka_stack", "own_clickhouse_stack"}
_OWN_STACK_MODULES = {"test_dev_stack.py"}
# Modules that mostly wait on processes of their own (the examples, a browser, racing spool
# writers, sinks killed and started again, training scripts): the second lane's stack is as good
# as the first's for them.
_WAITING_MODULES = {
    "test_examples_report.py",
    "test_ui_browser.py",
    "test_spool_projects.py",
    "test_run_snapshots.py",
    "test_sink_failures.py",
    "test_integration_lightning.py",  # these two wait on their examples' training processes
    "test_integration_keras.py",
}
_LONG_WAITS = {
    "test_a_run_of_100000_metric_names_and_a_huge_config_do_not_stop_the_processors",
    "test_a_killed_worker_resumes_from_its_changelog_with_exact_summaries",
    "test_random_damage_never_stops_sync_and_everything_intact_lands_exactly_once",
    "test_a_real_full_tmpfs_under_the_spool_loses_nothing_while_kafka_is_up",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if (
            fixtures & _OWN_STACK_FIXTURES
            or item.path.name in _OWN_STACK_MODULES
            or item.path.name in _WAITING_MODULES
            or item.name in _LONG_WAITS
        ):
            item.add_marker(pytest.mark.second_lane)
