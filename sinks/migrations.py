"""Versioned ClickHouse schema migrations, applied by ``runstream migrate`` and at sink start.

Each file ``ddl/NNNN_name.sql`` is one migration: statements separated by ``;`` at line ends,
with ``{database}`` standing for the configured database. Applied versions are recorded in
``schema_migrations``; every statement is written to be safe to run again (IF NOT EXISTS, and
backfills that skip what they already wrote), so a crash between a statement and its record only
repeats harmless work.

The files are written for one server. :func:`render` turns each statement into its form for a
ClickHouse cluster: every table becomes a Replicated* table ``<name>_local`` on each node plus a
Distributed table ``<name>`` over them (sharded by run id, so a run's events, metrics and derived
rows live on one shard), materialized views read and write the ``_local`` tables of their own
shard, and every DDL statement runs ON CLUSTER. Readers and the sink keep using the plain names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runstream.errors import ClickHouseError
from runstream.settings import Settings
from runstream.sinks.clickhouse import connect

DDL_DIR = Path(__file__).parent / "ddl"
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    def statements(self, database: str, cluster: str | None = None) -> list[str]:
        text = self.path.read_text(encoding="utf-8").replace("{database}", f"`{database}`")
        lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
        parts = [s.strip() for s in re.split(r";\s*$", "\n".join(lines), flags=re.M) if s.strip()]
        return [rendered for part in parts for rendered in render(part, cluster)]


_CREATE_TABLE = re.compile(r"^CREATE TABLE IF NOT EXISTS (`[^`]+`)\.(\w+)(\s*\()")
_ENGINE = re.compile(r"\bENGINE\s*=\s*(\w*)MergeTree\b(\(([^()]*)\))?")
_CREATE_VIEW = re.compile(
    r"^CREATE (OR REPLACE VIEW|VIEW IF NOT EXISTS|MATERIALIZED VIEW IF NOT EXISTS) "
    r"(`[^`]+`\.\w+)(?=\s)"
)
_MV_TARGET = re.compile(r"\bTO (`[^`]+`)\.(\w+)")
_MV_SOURCE = re.compile(r"\b(FROM|JOIN)(\s+)(`[^`]+`)\.(\w+)")
# Where a shard's replicas meet in ZooKeeper/Keeper; {shard}, {replica}, {database} and {table}
# are the server's macros, expanded by ClickHouse on each node.
REPLICA_PATH = "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'"


def render(statement: str, cluster: str | None) -> list[str]:
    """The statements that apply ``statement`` on one server (``cluster=None``: itself, unchanged)
    or on every node of ``cluster``.

    Knows the statement shapes the migration files use: CREATE TABLE with a *MergeTree engine,
    CREATE [MATERIALIZED] VIEW and INSERT ... SELECT (backfills); anything else is refused in
    cluster mode rather than run on one node only.
    """
    if cluster is None:
        return [statement]
    on_cluster = f"ON CLUSTER `{cluster}`"
    table = _CREATE_TABLE.match(statement)
    if table is not None:
        database, name, paren = table.groups()
        engine = _ENGINE.search(statement)
        if engine is None:
            raise ClickHouseError(f"cannot render for a cluster, no *MergeTree engine: {name}")
        kind, _, args = engine.groups()
        engine_args = REPLICA_PATH + (f", {args}" if args else "")
        local = (
            f"CREATE TABLE IF NOT EXISTS {database}.{name}_local {on_cluster}{paren}"
            + statement[table.end() : engine.start()]
            + f"ENGINE = Replicated{kind}MergeTree({engine_args})"
            + statement[engine.end() :]
        )
        has_run_id = re.search(r"^\s*run_id\s", statement, re.M) is not None
        shard_key = "cityHash64(run_id)" if has_run_id else "rand()"
        distributed = (
            f"CREATE TABLE IF NOT EXISTS {database}.{name} {on_cluster} AS {database}.{name}_local "
            f"ENGINE = Distributed(`{cluster}`, '{database.strip('`')}', '{name}_local', "
            f"{shard_key})"
        )
        return [local, distributed]
    view = _CREATE_VIEW.match(statement)
    if view is not None:
        head = f"CREATE {view.group(1)} {view.group(2)} {on_cluster}"
        body = statement[view.end() :]
        if view.group(1).startswith("MATERIALIZED"):
            # A materialized view fires on inserts into the node's own shard: it must read and
            # write the _local tables, not the Distributed ones (that would fire on the node that
            # received the insert, and write every row through the network again).
            body = _MV_TARGET.sub(r"TO \1.\2_local", body, count=1)
            body = _MV_SOURCE.sub(r"\1\2\3.\4_local", body)
        return [head + body]
    if statement.startswith("INSERT INTO "):
        # Backfills read Distributed tables joined with Distributed tables; every table is
        # sharded by run id, so each shard can answer the join with its own local tables.
        setting = "distributed_product_mode = 'local'"
        if re.search(r"\bSETTINGS\b[^()]*$", statement):
            return [f"{statement}, {setting}"]
        return [f"{statement}\nSETTINGS {setting}"]
    raise ClickHouseError(f"cannot render this statement for a cluster: {statement[:80]!r}")


def available() -> list[Migration]:
    found = []
    for path in sorted(DDL_DIR.glob("*.sql")):
        match = _FILE.match(path.name)
        if match is None:
            raise ClickHouseError(f"migration file {path} is not named NNNN_name.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path))
    return found


def applied(client: Any, database: str) -> set[int]:
    result = client.query(f"SELECT version FROM `{database}`.schema_migrations FINAL")
    return {int(row[0]) for row in result.result_rows}


def migrate(
    settings: Settings, client: Any | None = None, *, cluster: str | None = None
) -> list[str]:
    """Apply every migration not applied yet; returns the names of those applied now.

    ``cluster`` (default: the settings' ``clickhouse_cluster``) names the
    ClickHouse cluster to create the schema on; see :func:`render`.
    """
    database = settings.clickhouse_database
    cluster = cluster or settings.clickhouse_cluster
    client = client or connect(settings, database="default")
    on_cluster = f" ON CLUSTER `{cluster}`" if cluster else ""
    engine = f"ReplicatedReplacingMergeTree({REPLICA_PATH})" if cluster else "ReplacingMergeTree"
    try:
        client.command(f"CREATE DATABASE IF NOT EXISTS `{database}`{on_cluster}")
        client.command(
            f"CREATE TABLE IF NOT EXISTS `{database}`.schema_migrations{on_cluster} ("
            " version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)"
            f") ENGINE = {engine} ORDER BY version"
        )
        done = applied(client, database)
        now_applied = []
        for migration in available():
            if migration.version in done:
                continue
            for statement in migration.statements(database, cluster):
                client.command(statement)
            client.insert(
                f"`{database}`.schema_migrations",
                [[migration.version, migration.name]],
                column_names=["version", "name"],
            )
            now_applied.append(f"{migration.version:04d}_{migration.name}")
        return now_applied
    except ClickHouseError:
        raise
    except Exception as exc:
        raise ClickHouseError(f"migrating database {database!r} failed: {exc}") from exc
