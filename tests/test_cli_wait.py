"""`runstream migrate --wait` and `runstream topics --wait`: the Kubernetes init containers that
hold the sinks until the migrate Job has run, and the processors and the notifier until the topics
Job has. Fakes stand for ClickHouse and Kafka's admin client: this is the waiting logic only.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import pytest

from runstream import cli
from runstream.errors import ClickHouseError, MissingExtraError
from runstream.schemas.topics import Topics
from runstream.sinks import clickhouse, migrations

EVERY_MIGRATION = {m.version for m in migrations.available()}
EVERY_TOPIC = [spec.name for spec in Topics("runstream").specs()]
PASSWORD = "hunter2"
URL = f"http://runstream:{PASSWORD}@clickhouse:8123"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the command line counts: no RUNSTREAM_* of the machine running the tests."""
    for key in [k for k in os.environ if k.startswith("RUNSTREAM_")]:
        monkeypatch.delenv(key)


class Clock:
    """Stands for the time module in runstream.cli: sleeping advances it, instantly."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(cli, "time", fake)
    return fake


class ClickHouse:
    """A ClickHouse client that knows a set of applied migrations (None: no database yet) and
    records any statement it is given."""

    def __init__(self, applied: set[int] | None) -> None:
        self.applied = applied
        self.commands: list[str] = []

    def command(self, sql: str) -> None:
        self.commands.append(sql)

    def query(self, sql: str) -> Any:
        if self.applied is None:
            raise RuntimeError("Code: 81. DB::Exception: Database runstream does not exist")
        return SimpleNamespace(result_rows=[(v,) for v in sorted(self.applied)])


class Admin:
    """A Kafka AdminClient that lists a set of topics (None: no broker answers) and records any
    topic it is asked to create."""

    def __init__(self, topics: dict[str, Any] | None) -> None:
        self.topics = topics
        self.created: list[Any] = []

    def list_topics(self, timeout: float) -> Any:
        if self.topics is None:
            raise RuntimeError('KafkaError{code=_TRANSPORT,val=-195,str="Failed to get metadata"}')
        return SimpleNamespace(topics=self.topics)

    def create_topics(self, topics: list[Any], **kwargs: Any) -> dict[str, Any]:
        self.created += topics
        return {}


def connect_in_turn(monkeypatch: pytest.MonkeyPatch, *clients: ClickHouse) -> list[Any]:
    """Each connection gets the next client; returns the (settings, kwargs) of each."""
    answers = list(clients)
    calls: list[Any] = []

    def connect(settings: Any, **kwargs: Any) -> ClickHouse:
        calls.append((settings, kwargs))
        return answers.pop(0)

    monkeypatch.setattr(clickhouse, "connect", connect)
    return calls


def admins_in_turn(monkeypatch: pytest.MonkeyPatch, *admins: Admin) -> list[dict[str, Any]]:
    """Each AdminClient made is the next admin; returns the config of each."""
    from confluent_kafka import admin

    answers = list(admins)
    configs: list[dict[str, Any]] = []

    def admin_client(config: dict[str, Any]) -> Admin:
        configs.append(config)
        return answers.pop(0)

    monkeypatch.setattr(admin, "AdminClient", admin_client)
    return configs


def topics(*names: str, error: Any = None) -> dict[str, Any]:
    return {name: SimpleNamespace(error=error) for name in names}


# --- the flags ----------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["migrate", "topics"])
def test_wait_is_off_by_default_with_ten_minutes_of_patience(command: str) -> None:
    args = cli.build_parser().parse_args([command])
    assert (args.wait, args.timeout, args.interval) == (False, 600.0, 5.0)
    args = cli.build_parser().parse_args([command, "--wait", "--timeout", "90", "--interval", "2"])
    assert (args.wait, args.timeout, args.interval) == (True, 90.0, 2.0)


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "soon"])
def test_timeout_and_interval_are_seconds(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    for flag in ("--timeout", "--interval"):
        with pytest.raises(SystemExit) as exit_:
            cli.build_parser().parse_args(["migrate", "--wait", flag, value])
        assert exit_.value.code == 2
        assert flag in capsys.readouterr().err


def test_without_wait_migrate_and_topics_still_do_the_work(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from runstream.deploy.local import admin

    monkeypatch.setattr(migrations, "migrate", lambda settings: ["0001_init"])
    monkeypatch.setattr(admin, "ensure_topics", lambda settings: ["runstream.events"])
    assert cli.main(["migrate"]) == 0
    assert cli.main(["topics"]) == 0
    assert capsys.readouterr().out == "applied: 0001_init\ncreated: runstream.events\n"


# --- the loop -----------------------------------------------------------------------------------
def test_wait_until_checks_until_nothing_is_missing(
    clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    reasons: list[str | None] = ["a is missing", "b is missing", None]
    code = cli.wait_until(
        "the thing", lambda: reasons.pop(0), timeout=60, interval=5, done="the thing is there"
    )
    assert code == 0 and not reasons
    assert clock.slept == [5, 5]
    said = capsys.readouterr()
    assert said.out == (
        "waiting for the thing: a is missing\n"
        "waiting for the thing: b is missing\n"
        "the thing is there\n"
    )
    assert said.err == ""


def test_wait_until_gives_up_at_the_timeout_with_exit_1(
    clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    checks: list[float] = []

    def check() -> str:
        checks.append(clock.now)
        return "still missing"

    code = cli.wait_until("the thing", check, timeout=12, interval=5, done="there")
    assert code == 1
    # The last sleep ends at the deadline, where one more check is made.
    assert clock.slept == [5, 5, 2]
    assert checks == [1000, 1005, 1010, 1012]
    said = capsys.readouterr()
    assert said.out.count("waiting for the thing: still missing\n") == 3
    assert said.err == "runstream: error: gave up after 12s waiting for the thing: still missing\n"


def test_wait_until_checks_once_with_no_timeout(
    clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.wait_until("x", lambda: None, timeout=0, interval=5, done="ok") == 0
    assert cli.wait_until("x", lambda: "no", timeout=0, interval=5, done="ok") == 1
    assert clock.slept == []
    assert "gave up after 0s waiting for x: no" in capsys.readouterr().err


def test_an_exception_while_checking_is_a_reason_to_wait(
    clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    outcomes: list[Exception | None] = [
        ConnectionRefusedError("connection refused\nmore detail"),
        RuntimeError(),  # no message: its type says something
        None,
    ]

    def check() -> str | None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return None

    code = cli.wait_until(
        "x", check, timeout=60, interval=1, done="ok", explain=lambda exc: str(exc).upper()
    )
    assert code == 0 and not outcomes
    assert capsys.readouterr().out == (
        "waiting for x: CONNECTION REFUSED\nwaiting for x: RuntimeError\nok\n"
    )


def test_a_missing_extra_is_no_reason_to_wait(
    clock: Clock, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def connect(*args: Any, **kwargs: Any) -> Any:
        raise MissingExtraError("the ClickHouse sink", "sinks", "clickhouse_connect")

    monkeypatch.setattr(clickhouse, "connect", connect)
    assert cli.main(["migrate", "--wait"]) == 1
    assert clock.slept == []
    assert "runstream: error: the ClickHouse sink needs" in capsys.readouterr().err


# --- migrate --wait -----------------------------------------------------------------------------
def test_migrate_wait_waits_for_every_migration_and_applies_none(
    clock: Clock, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clients = [
        ClickHouse(applied=None),  # no database yet
        ClickHouse(applied=set()),
        ClickHouse(applied=EVERY_MIGRATION - {max(EVERY_MIGRATION)}),
        ClickHouse(applied=EVERY_MIGRATION),
    ]
    calls = connect_in_turn(monkeypatch, *clients)
    argv = ["migrate", "--wait", "--clickhouse", URL, "--database", "rs", "--interval", "3"]
    assert cli.main(argv) == 0
    assert len(calls) == 4 and clock.slept == [3, 3, 3]
    for settings, kwargs in calls:
        assert (settings.clickhouse_url, settings.clickhouse_database) == (URL, "rs")
        assert kwargs == {"database": "default"}
    assert not [sql for client in clients for sql in client.commands]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("waiting for runstream migrate: Code: 81.")
    assert lines[1] == f"waiting for runstream migrate: migrations {sorted(EVERY_MIGRATION)} " + (
        "not applied yet"
    )
    assert lines[2] == f"waiting for runstream migrate: migrations [{max(EVERY_MIGRATION)}] " + (
        "not applied yet"
    )
    assert lines[3:] == ["schema is up to date"]


def test_migrate_wait_times_out_with_exit_1(
    clock: Clock, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    connect_in_turn(monkeypatch, *[ClickHouse(applied=set()) for _ in range(4)])
    assert cli.main(["migrate", "--wait", "--timeout", "15"]) == 1
    assert clock.slept == [5, 5, 5]
    said = capsys.readouterr()
    assert said.out.count("waiting for runstream migrate: migrations [") == 3
    assert said.err.startswith("runstream: error: gave up after 15s waiting for runstream migrate:")
    assert said.err.rstrip().endswith("not applied yet")


@pytest.mark.parametrize(
    ("url", "passwords", "redacted"),
    [
        (URL, [PASSWORD], "http://runstream:***@clickhouse:8123"),
        (  # percent-encoded in the URL: neither form may show
            "https://runstream:p%40ss%3Aw0rd@clickhouse:8443",
            ["p%40ss%3Aw0rd", "p@ss:w0rd"],
            "https://runstream:***@clickhouse:8443",
        ),
    ],
)
@pytest.mark.usefixtures("clock")
def test_migrate_wait_never_prints_the_password(
    url: str,
    passwords: list[str],
    redacted: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    errors = [
        ClickHouseError(f"cannot connect to ClickHouse at {url}: connection refused"),
        RuntimeError(f"HTTPDriver for {url} received ClickHouse error code 516"),
        RuntimeError(f"Authentication failed: password is incorrect: {passwords[-1]}"),
    ]

    def connect(*args: Any, **kwargs: Any) -> Any:
        raise errors.pop(0) if errors else ClickHouseError(f"at {url}\n{passwords[0]}")

    monkeypatch.setattr(clickhouse, "connect", connect)
    assert cli.main(["migrate", "--wait", "--clickhouse", url, "--timeout", "20"]) == 1
    said = capsys.readouterr()
    text = said.out + said.err
    assert not [password for password in passwords if password in text]
    assert f"cannot connect to ClickHouse at {redacted}: connection refused" in said.out
    assert f"HTTPDriver for {redacted} received" in said.out
    assert "password is incorrect: ***" in said.out
    assert "gave up after 20s" in said.err


# --- topics --wait ------------------------------------------------------------------------------
def test_topics_wait_waits_for_every_topic_and_creates_none(
    clock: Clock, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    last = EVERY_TOPIC[-1]
    every = topics(*EVERY_TOPIC)
    admins = [
        Admin(None),  # Kafka still starting
        Admin({}),
        Admin(topics(*EVERY_TOPIC[:-1])),
        Admin(every | topics(last, error="LEADER_NOT_AVAILABLE")),
        Admin(every | topics("someone.elses")),
    ]
    configs = admins_in_turn(monkeypatch, *admins)
    argv = ["topics", "--wait", "--kafka", "k1:9092,k2:9092", "--topic-prefix", "runstream"]
    assert cli.main([*argv, "--partitions", "12"]) == 0
    assert [c["bootstrap.servers"] for c in configs] == ["k1:9092,k2:9092"] * 5
    assert clock.slept == [5] * 4
    assert not [t for admin in admins for t in admin.created]
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "waiting for runstream topics: cannot list the topics on k1:9092,k2:9092: "
        'KafkaError{code=_TRANSPORT,val=-195,str="Failed to get metadata"}',
        f"waiting for runstream topics: topics {', '.join(EVERY_TOPIC)} not there yet",
        f"waiting for runstream topics: topics {last} not there yet",
        f"waiting for runstream topics: topics {last} not there yet",
        "every topic exists",
    ]


def test_topics_wait_follows_the_prefix(
    clock: Clock, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    admins_in_turn(monkeypatch, Admin(topics(*EVERY_TOPIC)))
    monkeypatch.setenv("RUNSTREAM_TOPIC_PREFIX", "prod")
    assert cli.main(["topics", "--wait", "--timeout", "0"]) == 1
    assert "topics prod.events" in capsys.readouterr().err


def test_topics_wait_times_out_with_exit_1(
    clock: Clock, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    admins_in_turn(monkeypatch, *[Admin(None) for _ in range(3)])
    assert cli.main(["topics", "--wait", "--timeout", "10"]) == 1
    assert clock.slept == [5, 5]
    said = capsys.readouterr()
    assert said.out.count("waiting for runstream topics: cannot list the topics") == 2
    assert said.err == (
        "runstream: error: gave up after 10s waiting for runstream topics: cannot list the "
        'topics on 127.0.0.1:9092: KafkaError{code=_TRANSPORT,val=-195,str="Failed to get '
        'metadata"}\n'
    )
