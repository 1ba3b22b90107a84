"""The read-only ClickHouse user `runstream_reader` on the real server (issue 12: "deploy/ ships a
read-only ClickHouse user with a quota for readers, separate from the sink's user, and the read
side uses it"; "hostile filter and SQL input ... refused or stopped by limits, with the database
untouched after").

The module starts a ClickHouse of its own (the local stack's, from chdb-core), so the reader is
there whatever server the other tests use; its definition is deploy/compose/clickhouse/users.xml,
byte for byte. Every hostile statement goes straight to the server as the reader through
clickhouse-connect, past runstream's screen (runstream/read/screen.py): ClickHouse itself refuses
it, and the database is the same after.
"""

from __future__ import annotations

import argparse
import os
import stat
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runstream.deploy.local import reader_user
from runstream.deploy.local.cli import _table, _up
from runstream.deploy.local.reader_user import READER_USER, local_reader
from runstream.deploy.local.stack import LocalStack
from runstream.errors import QueryError
from runstream.read import Reader
from runstream.settings import Settings
from runstream.sinks.clickhouse import connect
from runstream.sinks.migrations import migrate
from tests.conftest import free_port

GUARD_ROWS = 1000

pytestmark = pytest.mark.integration


# Named like the fixtures of tests/conftest.py's _OWN_STACK_FIXTURES: `make test` runs the tests
# that start a stack of their own in its second lane.
@pytest.fixture(scope="module")
def own_clickhouse_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """ClickHouse alone, of this module, in a home of its own; a database other than
    `runstream` (the reader's grants follow the stack's database), migrated, with a table
    `guard` of GUARD_ROWS rows."""
    settings = Settings.load(
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
        clickhouse_url=f"http://127.0.0.1:{free_port()}",
        clickhouse_database=f"rdr{uuid.uuid4().hex[:8]}",
        home=tmp_path_factory.mktemp("reader-home"),
    )
    local = LocalStack(settings, workers=())
    try:
        local.start_service("clickhouse")
        migrate(settings)
        admin = connect(settings)
        admin.command("CREATE TABLE guard (x UInt64) ENGINE = MergeTree ORDER BY x")
        admin.command(f"INSERT INTO guard SELECT number FROM numbers({GUARD_ROWS})")
        admin.command("CREATE DATABASE other")
        admin.command("CREATE TABLE other.secret (s String) ENGINE = MergeTree ORDER BY s")
        admin.command("INSERT INTO other.secret VALUES ('not for readers')")
        yield local
    finally:
        local.down()


@pytest.fixture(scope="module")
def stack(own_clickhouse_stack: LocalStack) -> LocalStack:
    return own_clickhouse_stack


@pytest.fixture(scope="module")
def settings(stack: LocalStack) -> Settings:
    return stack.settings


def as_reader(settings: Settings) -> Any:
    """A plain clickhouse-connect client as the reader: no settings of runstream's, no screen."""
    import clickhouse_connect

    found = local_reader(settings)
    assert found is not None
    user, password = found
    host, port = settings.clickhouse_host_port
    return clickhouse_connect.get_client(
        host=host,
        port=port,
        username=user,
        password=password,
        database=settings.clickhouse_database,
    )


def snapshot(settings: Settings) -> list[tuple[Any, ...]]:
    """Every database and table with its row count, and the server's uptime (as `default`)."""
    admin = connect(settings, database="default")
    tables = admin.query(
        "SELECT database, name, engine FROM system.tables "
        "WHERE database NOT IN ('system', 'INFORMATION_SCHEMA', 'information_schema') "
        "ORDER BY database, name"
    ).result_rows
    counted = [
        (db, name, admin.query(f"SELECT count() FROM `{db}`.`{name}`").result_rows[0][0])
        for db, name, engine in tables
        if engine.endswith("MergeTree")
    ]
    return [*map(tuple, tables), *counted]


@pytest.fixture
def untouched(settings: Settings) -> Iterator[Settings]:
    before = snapshot(settings)
    uptime = connect(settings).query("SELECT uptime()").result_rows[0][0]
    yield settings
    assert snapshot(settings) == before
    assert (settings.clickhouse_database, "guard", GUARD_ROWS) in before
    assert connect(settings).query("SELECT uptime()").result_rows[0][0] >= uptime


# --- the definition -----------------------------------------------------------------------------
def test_the_local_reader_is_deploys_file_byte_for_byte(stack: LocalStack) -> None:
    run_dir = stack.clickhouse.run_dir
    copied = run_dir / reader_user.USERS_D / reader_user.READER_XML
    assert copied.read_bytes() == reader_user.DEPLOY_USERS_XML.read_bytes()
    # Only the database of the grants differs, in a file of its own derived from deploy's.
    grants = (run_dir / reader_user.USERS_D / reader_user.DATABASE_XML).read_text()
    db = stack.settings.clickhouse_database
    assert f"GRANT SELECT ON {db}.*" in grants
    assert "runstream.*" not in grants
    password = reader_user.password_path(stack.home)
    assert stat.S_IMODE(password.stat().st_mode) == 0o600
    assert len(password.read_text().strip()) >= 32


def test_the_database_file_is_left_out_for_runstream(tmp_path: Path) -> None:
    reader_user.write_users_config(tmp_path, "other_db")
    assert (tmp_path / reader_user.USERS_D / reader_user.DATABASE_XML).exists()
    assert reader_user.granted_database(tmp_path) == "other_db"
    reader_user.write_users_config(tmp_path, "runstream")
    assert not (tmp_path / reader_user.USERS_D / reader_user.DATABASE_XML).exists()
    assert reader_user.granted_database(tmp_path) == "runstream"
    assert "GRANT SELECT ON x_y.*" in reader_user.database_grants("x_y")


def test_the_password_is_generated_once(tmp_path: Path) -> None:
    first = reader_user.ensure_password(tmp_path)
    assert reader_user.ensure_password(tmp_path) == first
    assert reader_user.ensure_password(tmp_path / "other") != first


def test_the_server_has_the_reader_with_profile_quota_and_grants(settings: Settings) -> None:
    admin = connect(settings, database="default")
    users = dict(admin.query("SELECT name, storage FROM system.users").result_rows)
    assert users == {"default": "users_xml", READER_USER: "users_xml"}
    assert admin.query("SELECT type FROM system.user_directories").result_rows == [("users_xml",)]
    quota = admin.query(
        "SELECT duration, max_queries, max_errors, max_result_rows, max_read_rows, "
        "max_execution_time FROM system.quota_limits WHERE quota_name = {q:String}",
        parameters={"q": READER_USER},
    ).result_rows
    assert quota == [(3600, 20000, 2000, 2_000_000_000, 200_000_000_000, 14400)]
    grants = {r[0] for r in as_reader(settings).query("SHOW GRANTS").result_rows}
    db = settings.clickhouse_database
    assert grants == {
        f"GRANT SELECT ON {db}.* TO {READER_USER}",
        f"GRANT CREATE TEMPORARY TABLE ON *.* TO {READER_USER}",
    }


def test_the_reader_starts_read_only_under_deploys_limits(settings: Settings) -> None:
    got = (
        as_reader(settings)
        .query(
            "SELECT currentUser(), getSetting('readonly'), getSetting('max_execution_time'), "
            "getSetting('max_memory_usage'), getSetting('max_result_rows'), "
            "getSetting('result_overflow_mode'), getSetting('timeout_overflow_mode')"
        )
        .result_rows
    )
    assert got == [(READER_USER, 2, 30.0, 2147483648, 10000000, "throw", "throw")]


def test_the_quota_counts_the_readers_queries(settings: Settings) -> None:
    client = as_reader(settings)

    def used() -> int:
        rows = client.query(
            "SELECT quota_name, queries FROM system.quota_usage WHERE quota_name = {q:String}",
            parameters={"q": READER_USER},
        ).result_rows
        assert len(rows) == 1
        return int(rows[0][1])

    before = used()
    client.query("SELECT count() FROM guard")
    assert used() >= before + 1


# --- the read side uses it ----------------------------------------------------------------------
def test_the_read_side_reads_as_the_reader_by_default(untouched: Settings) -> None:
    with Reader(untouched) as reader:
        assert reader.query("SELECT currentUser()").rows == [(READER_USER,)]
        assert reader.query("SELECT count() FROM guard").rows == [(GUARD_ROWS,)]
        assert reader.query("SELECT count() FROM runs_current").rows == [(0,)]


def test_limits_past_the_readers_constraints_are_refused_with_a_hint(untouched: Settings) -> None:
    with (
        Reader(untouched, max_execution_time=1000) as reader,
        pytest.raises(QueryError, match=r"greater than 600.*RUNSTREAM_READ_") as refused,
    ):
        reader.query("SELECT 1")
    assert refused.value.code == 452


def test_a_configured_user_wins_over_the_local_reader(settings: Settings) -> None:
    chosen = settings.with_overrides(read_clickhouse_user="default")
    with Reader(chosen) as reader:
        assert reader.query("SELECT currentUser()").rows == [("default",)]


def test_another_server_database_or_user_does_not_pick_the_local_reader(settings: Settings) -> None:
    assert local_reader(settings) is not None
    other_port = settings.with_overrides(clickhouse_url=f"http://127.0.0.1:{free_port()}")
    assert local_reader(other_port) is None
    host, port = settings.clickhouse_host_port
    named = settings.with_overrides(clickhouse_url=f"http://default:@{host}:{port}")
    assert local_reader(named) is None
    assert local_reader(settings.with_overrides(home=settings.home / "nowhere")) is None
    assert local_reader(settings.with_overrides(clickhouse_database="other")) is None


def test_dev_up_and_status_tell_the_reader(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    table = _table(stack.status())
    assert f"reader {READER_USER}" in table
    assert str(reader_user.password_path(stack.home)) in table
    # `dev up`'s summary, from what up() returns (this module's stack runs no Kafka).
    monkeypatch.setattr(LocalStack, "up", lambda self, timeout: stack.status())
    assert _up(argparse.Namespace(no_workers=True, timeout=1.0), stack.settings) == 0
    out = capsys.readouterr().out
    assert f"reader user       {READER_USER}, password in " in out
    assert str(reader_user.password_path(stack.home)) in out


# --- hostile input, straight to the server ------------------------------------------------------
ACCESS_DENIED = 497
READONLY = 164
CONSTRAINT = 452
SYNTAX = 62

HOSTILE: list[tuple[str, int]] = [
    # several statements in one: the HTTP interface runs one only
    ("SELECT 1; DROP TABLE guard", SYNTAX),
    ("SELECT count() FROM guard; DROP DATABASE {db}", SYNTAX),
    # outside sources: each needs its own grant
    ("SELECT * FROM file('/etc/passwd', 'LineAsString')", ACCESS_DENIED),
    ("SELECT * FROM file('/etc/passwd')", ACCESS_DENIED),
    ("SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')", ACCESS_DENIED),
    ("SELECT * FROM remote('127.0.0.1', system.one)", ACCESS_DENIED),
    ("SELECT * FROM executable('cat /etc/passwd', 'TSV', 'x String')", ACCESS_DENIED),
    ("INSERT INTO FUNCTION file('/tmp/runstream-evil.tsv', 'TSV', 'x UInt8') VALUES (1)", 0),
    # writes, DDL
    ("INSERT INTO guard VALUES (1)", ACCESS_DENIED),
    ("INSERT INTO guard SELECT number FROM numbers(10)", ACCESS_DENIED),
    ("DROP TABLE guard", ACCESS_DENIED),
    ("DROP DATABASE {db}", ACCESS_DENIED),
    ("DROP DATABASE other", ACCESS_DENIED),
    ("TRUNCATE TABLE guard", ACCESS_DENIED),
    ("ALTER TABLE guard DELETE WHERE 1", ACCESS_DENIED),
    ("ALTER TABLE guard ADD COLUMN y UInt8", ACCESS_DENIED),
    ("CREATE TABLE evil (x UInt8) ENGINE = MergeTree ORDER BY x", ACCESS_DENIED),
    ("CREATE DATABASE evil", ACCESS_DENIED),
    ("RENAME TABLE guard TO g2", ACCESS_DENIED),
    ("OPTIMIZE TABLE guard FINAL", ACCESS_DENIED),
    # the server itself (this server is the module's own: SHUTDOWN would only stop it)
    ("SYSTEM SHUTDOWN", ACCESS_DENIED),
    ("SYSTEM KILL", ACCESS_DENIED),
    ("SYSTEM STOP MERGES guard", ACCESS_DENIED),
    ("SYSTEM DROP DNS CACHE", ACCESS_DENIED),
    ("KILL QUERY WHERE 1", ACCESS_DENIED),
    # other data and the access rights
    ("SELECT * FROM other.secret", ACCESS_DENIED),
    ("SELECT name FROM system.users", ACCESS_DENIED),
    ("GRANT ALL ON *.* TO " + READER_USER, ACCESS_DENIED),
    ("CREATE USER evil IDENTIFIED BY 'x'", ACCESS_DENIED),
    # lifting the limits: readonly=2 keeps readonly, the constraints keep the rest
    ("SELECT count() FROM guard SETTINGS readonly = 0", READONLY),
    ("SET readonly = 0", READONLY),
    ("SELECT count() FROM guard SETTINGS readonly = 1", READONLY),
    ("SELECT count() FROM guard SETTINGS max_result_rows = 0", CONSTRAINT),
    ("SELECT count() FROM guard SETTINGS max_execution_time = 0", CONSTRAINT),
    ("SELECT count() FROM guard SETTINGS max_execution_time = 100000", CONSTRAINT),
    ("SELECT count() FROM guard SETTINGS max_memory_usage = 0", CONSTRAINT),
    ("SELECT count() FROM guard SETTINGS max_memory_usage = 100000000000", CONSTRAINT),
    ("SELECT count() FROM guard SETTINGS max_threads = 1000", CONSTRAINT),
]


@pytest.mark.parametrize(("sql", "code"), HOSTILE, ids=[sql for sql, _ in HOSTILE])
def test_clickhouse_refuses_hostile_sql_from_the_reader(
    untouched: Settings, sql: str, code: int
) -> None:
    client = as_reader(untouched)
    with pytest.raises(Exception, match=r"Code: \d+") as refused:
        client.query(sql.replace("{db}", untouched.clickhouse_database))
    text = str(refused.value)
    if code:
        assert f"Code: {code}." in text, text
    else:  # writing through a table function: refused, by readonly or by a missing grant
        assert f"Code: {READONLY}." in text or f"Code: {ACCESS_DENIED}." in text, text
    assert not os.path.exists("/tmp/runstream-evil.tsv")
    assert client.query("SELECT count() FROM guard").result_rows == [(GUARD_ROWS,)]


def test_limits_stop_endless_huge_and_greedy_queries(untouched: Settings) -> None:
    """What the reader may still do (lower its limits) stops what it asks for."""
    client = as_reader(untouched)
    stopped = [
        ("SELECT count() FROM numbers(1000000000000) SETTINGS max_execution_time = 1", 159),
        ("SELECT number FROM numbers(1000) SETTINGS max_result_rows = 10", 396),
        (
            "SELECT length(groupArray(number)) FROM numbers(20000000) "
            "SETTINGS max_memory_usage = 8388608",
            241,
        ),
    ]
    for sql, code in stopped:
        with pytest.raises(Exception, match=rf"Code: {code}\."):
            client.query(sql)


def test_the_default_user_keeps_full_rights(untouched: Settings) -> None:
    """The sink, migrations and tests use `default`: it still writes and creates."""
    admin = connect(untouched)
    assert admin.query("SELECT currentUser(), getSetting('readonly')").result_rows == [
        ("default", 0)
    ]
    admin.command("CREATE TABLE scratch (x UInt8) ENGINE = Memory")
    admin.command("INSERT INTO scratch VALUES (1)")
    assert admin.query("SELECT count() FROM scratch").result_rows == [(1,)]
    admin.command("DROP TABLE scratch")


# --- Kubernetes ---------------------------------------------------------------------------------
def _flatten(element: ET.Element, prefix: str, into: dict[str, list[str]]) -> None:
    """users.xml as the clickhouse-operator's "name/setting" keys: one list of values a key."""
    children = [child for child in element if isinstance(child.tag, str)]
    if not children:
        into.setdefault(prefix, []).append((element.text or "").strip())
    for child in children:
        _flatten(child, f"{prefix}/{child.tag}", into)


def test_the_kubernetes_patch_says_what_compose_users_xml_says() -> None:
    import yaml

    users = ET.parse(reader_user.DEPLOY_USERS_XML).getroot()
    patch_path = reader_user.DEPLOY_USERS_XML.parents[2] / "k8s" / "clickhouse" / "users-patch.yaml"
    configuration = yaml.safe_load(patch_path.read_text())["spec"]["configuration"]
    for section in ("profiles", "quotas", "users"):
        wanted: dict[str, list[str]] = {}
        found = users.find(section)
        assert found is not None, section
        for element in found:
            if isinstance(element.tag, str):
                _flatten(element, element.tag, wanted)
        got = {
            key: [str(v) for v in value] if isinstance(value, list) else [str(value)]
            for key, value in configuration[section].items()
        }
        if section == "users":
            # The password: compose's from_env, the operator's Secret reference (rendered by
            # the operator as from_env too).
            assert wanted.pop(f"{READER_USER}/password") == [""]
            password = users.find(f"users/{READER_USER}/password")
            assert password is not None and password.get("from_env") == reader_user.PASSWORD_ENV
            secret = configuration["users"][f"{READER_USER}/password"]["valueFrom"]["secretKeyRef"]
            assert secret == {"name": "runstream-clickhouse-reader", "key": "password"}
            del got[f"{READER_USER}/password"]
        assert got == wanted, section
