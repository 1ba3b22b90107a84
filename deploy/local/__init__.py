"""The local stack of ``runstream dev up | down | status``: the whole pipeline on one machine.

No Docker needed: Apache Kafka 4.0 (KRaft, one combined broker+controller node) runs from jars
that Maven fetches once from Maven Central into ``settings.cache_dir``, and ClickHouse 26.9 runs
from the chdb-core wheel (the ``local`` extra), serving HTTP (and the native protocol) on
loopback. ``up`` then creates the topics and the tables and starts the pipeline's workers (the
sink). Every process is a detached background process tracked by a pid file, so the stack
outlives the command that started it; data and logs live in ``settings.home`` and survive
``down`` then ``up``.

Modules, one job each:

- :mod:`.stack`: :class:`~.stack.LocalStack` (up, down, status) and ``ServiceStatus``
- :mod:`.kafka`: the broker's jars, configuration, storage format, command line and health
- :mod:`.clickhouse`: the launcher's side of ClickHouse: paths, command line, health, stop
- :mod:`.clickhouse_server`: the process that serves ClickHouse from chdb-core
- :mod:`.reader_user`: its users: ``default`` and the read side's ``runstream_reader`` (the
  definition of ``deploy/compose/clickhouse/users.xml``, a password kept in the home)
- :mod:`.workers`: which workers run and with which environment
- :mod:`.admin`: topic creation (also used by the tests and by anyone pointing at a real Kafka)
- :mod:`.processes`, :mod:`.ports`: pid files, detached processes, locks, ports
- :mod:`.cli`: the ``runstream dev`` sub-commands

This is for development and tests only: nothing is authenticated but the reader (ClickHouse's
``default`` has no password), so both services refuse to listen beyond loopback.
"""
