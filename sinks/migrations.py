"""Versioned ClickHouse schema migrations, applied by ``runstream migrate`` and at sink start.

Each file ``ddl/NNNN_name.sql`` is one migration: statements separated by ``;`` at line ends,
with ``{database}`` standing for the configured database. Applied versions are recorded in
``schema_migrations``; every statement is written to be safe to run again (IF NOT EXISTS), so a
crash between a statement and its record only repeats harmless work.
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

    def statements(self, database: str) -> list[str]:
        text = self.path.read_text(encoding="utf-8").replace("{database}", f"`{database}`")
        lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
        return [s.strip() for s in re.split(r";\s*$", "\n".join(lines), flags=re.M) if s.strip()]


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


def migrate(settings: Settings, client: Any | None = None) -> list[str]:
    """Apply every migration not applied yet; returns the names of those applied now."""
    database = settings.clickhouse_database
    client = client or connect(settings, database="default")
    try:
        client.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
        client.command(
            f"CREATE TABLE IF NOT EXISTS `{database}`.schema_migrations ("
            " version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)"
            ") ENGINE = ReplacingMergeTree ORDER BY version"
        )
        done = applied(client, database)
        now_applied = []
        for migration in available():
            if migration.version in done:
                continue
            for statement in migration.statements(database):
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
