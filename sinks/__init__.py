"""The ClickHouse side: schema migrations, the sink (Kafka -> ClickHouse) and queries.

Needs the ``sinks`` extra: ``pip install 'runstream[sinks]'``.
"""

from runstream._extras import require_installed

require_installed("clickhouse_connect", part="runstream.sinks", extra="sinks")
