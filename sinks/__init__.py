"""The ClickHouse side: schema migrations, the sink (Kafka -> ClickHouse) and queries.

Needs the ``sinks`` extra: ``pip install 'runstream[sinks]'``.
"""
