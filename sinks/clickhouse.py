"""The connection to ClickHouse, shared by the sink, migrations and ``runstream query``."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from runstream._extras import require
from runstream.errors import ClickHouseError
from runstream.settings import Settings


def connect(settings: Settings, *, database: str | None = None, **kwargs: Any) -> Any:
    """A clickhouse-connect client for ``settings.clickhouse_url``.

    ``database`` defaults to the settings' database; pass ``"default"`` to connect before the
    database exists (migrations do).
    """
    clickhouse_connect = require("clickhouse_connect", part="the ClickHouse sink", extra="sinks")
    parts = urlsplit(settings.clickhouse_url)
    host, port = settings.clickhouse_host_port
    try:
        return clickhouse_connect.get_client(
            host=host,
            port=port,
            username=parts.username or "default",
            password=parts.password or "",
            secure=parts.scheme == "https",
            database=database or settings.clickhouse_database,
            # Inserts are made idempotent with deduplication tokens, which async inserts would
            # bypass; ClickHouse 26.2+ turns async_insert on by default, so say it explicitly.
            settings={"async_insert": 0},
            **kwargs,
        )
    except Exception as exc:
        if "UNKNOWN_DATABASE" in str(exc):
            raise ClickHouseError(
                f"database {database or settings.clickhouse_database!r} does not exist on "
                f"{settings.clickhouse_url_redacted}; create it with 'runstream migrate'"
            ) from exc
        raise ClickHouseError(
            f"cannot connect to ClickHouse at {settings.clickhouse_url_redacted}: {exc}. "
            "Is it running? "
            "Start the local stack with 'runstream dev up' or set RUNSTREAM_CLICKHOUSE_URL."
        ) from exc
